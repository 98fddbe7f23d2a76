"""Layer-1 loads: bulk upsert, soft delete and score history, in the caller's single transaction.

For each table of a `TransformResult`, the frame is first bulk-copied into a temporary table (gone at
rollback, dropped after use); everything else is set-based SQL between that table and the target, inside
the one transaction `Warehouse.load` opens:

1. count the incoming keys that are new, and those that were soft-deleted (restored);
2. for enrollments with score columns, append a `canvas_score_history` row for each enrollment that is new
   (with a score) or whose scores changed. This runs before the upsert, so it compares with exactly the
   values this load replaces;
3. upsert on the natural key, `INSERT ... SELECT ... ON CONFLICT DO UPDATE` (both dialects), in batches.
   Only the columns PRESENT in the frame are written, so a profile that does not fetch a column group
   leaves what a richer sync stored (new rows get NULL there); `synced_at` is set and `deleted_at` cleared
   on every row present;
4. with `full_refresh`, soft-delete the rows of the given courses that this load did not touch
   (`deleted_at = synced_at` where deleted_at is null and synced_at is older), except rows whose record
   was quarantined (a malformed record is not a deletion). Students are global: never soft-deleted.

A re-run with unchanged data changes nothing but `synced_at` and adds no history.

Speed (DESIGN §3: loading must not be the bottleneck). Per-row Python work is what limits bulk loads, so
values are encoded column-wise with numpy/pandas and handed to the driver in bulk: PostgreSQL (psycopg2)
gets one `COPY ... FROM STDIN`, SQLite the driver's `executemany` over plain tuples, other drivers
SQLAlchemy Core executemany. Measured on the 2-core CI machine, executemany of
`insert().on_conflict_do_update()` with multi-row VALUES ("insertmanyvalues"; SQLAlchemy 2.1 only batches
an ON CONFLICT insert when it has RETURNING) tops out near 5,000 rows/s for the 28-column enrollment
frame, most of it psycopg2 quoting every parameter client-side; COPY plus INSERT ... SELECT is several
times faster (benchmarks/load_benchmark.py).
"""

from __future__ import annotations

import io
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from datetime import datetime
from typing import Any

import numpy as np
import pandas as pd
import sqlalchemy as sa
from sqlalchemy.dialects import postgresql, sqlite

from canvas_assets.transform.base import Rejected, TransformResult
from canvas_assets.warehouse.models import CANVAS_ID_COLUMN, COURSE_SCOPE_COLUMN, UTCDateTime, table
from canvas_assets.warehouse.staging import chunks, utc

BATCH_ROWS = 5000  # rows per executemany batch (SQLite, generic drivers)
COPY_BATCH_ROWS = 50_000  # rows per INSERT ... SELECT from the COPY table (PostgreSQL)
SCORE_COLUMNS = ("current_score", "final_score", "current_grade", "final_grade")
MANAGED_COLUMNS = ("synced_at", "deleted_at")


def _after_batch(table_name: str, batch_index: int, rows: int) -> None:
    """Called after each upsert batch. A seam for tests that need a failure half-way through a load."""


@dataclass
class TableLoadStats:
    table: str
    upserted: int = 0  # rows written (inserted + updated)
    inserted: int = 0  # keys that were not in the table before
    soft_deleted: int = 0  # rows of the loaded courses that vanished
    restored: int = 0  # soft-deleted rows that came back
    history_rows: int = 0  # canvas_score_history rows appended

    @property
    def updated(self) -> int:
        return self.upserted - self.inserted


@dataclass
class LoadStats:
    tables: dict[str, TableLoadStats] = field(default_factory=dict)

    def _sum(self, name: str) -> int:
        return sum(getattr(s, name) for s in self.tables.values())

    @property
    def upserted(self) -> int:
        return self._sum("upserted")

    @property
    def inserted(self) -> int:
        return self._sum("inserted")

    @property
    def soft_deleted(self) -> int:
        return self._sum("soft_deleted")

    @property
    def restored(self) -> int:
        return self._sum("restored")

    @property
    def history_rows(self) -> int:
        return self._sum("history_rows")

    def to_metadata(self) -> dict[str, Any]:
        """Flat figures for Dagster metadata: totals plus `<table>.<figure>`."""
        meta: dict[str, Any] = {
            "rows_upserted": self.upserted,
            "rows_inserted": self.inserted,
            "rows_soft_deleted": self.soft_deleted,
            "rows_restored": self.restored,
            "score_history_rows": self.history_rows,
        }
        for name, s in self.tables.items():
            for key, value in asdict(s).items():
                if key != "table":
                    meta[f"{name}.{key}"] = value
        return meta


# --- frame preparation and column encodings ---------------------------------------------------------------
TS_DTYPE = pd.DatetimeTZDtype(unit="us", tz="UTC")
_COPY_NULL = "\\N"
_COPY_ESCAPES = str.maketrans({"\\": "\\\\", "\t": "\\t", "\n": "\\n", "\r": "\\r"})


def prepare_frame(frame: pd.DataFrame, target: sa.Table, key: list[str]) -> pd.DataFrame:
    """Validate columns, drop the ones the loader manages, bring timestamps to UTC, dedupe keys."""
    frame = frame.drop(columns=[c for c in MANAGED_COLUMNS if c in frame.columns])
    unknown = [c for c in frame.columns if c not in target.c]
    if unknown:
        raise ValueError(f"{target.name}: columns not in the table: {unknown}")
    if len(frame) == 0:
        return frame
    missing_key = [c for c in key if c not in frame.columns]
    if missing_key:
        raise ValueError(f"{target.name}: key columns missing from the frame: {missing_key}")
    for column in frame.columns:
        if isinstance(target.c[column].type, UTCDateTime) and frame[column].dtype != TS_DTYPE:
            frame[column] = _to_utc(frame[column])
    if frame.duplicated(subset=key).any():
        frame = frame.drop_duplicates(subset=key, keep="last")
    return frame.reset_index(drop=True)


def _to_utc(series: pd.Series) -> pd.Series:
    if isinstance(series.dtype, pd.DatetimeTZDtype):
        return series.dt.tz_convert("UTC").astype(TS_DTYPE)
    if series.dtype.kind == "M":  # naive: taken as UTC
        return series.dt.tz_localize("UTC").astype(TS_DTYPE)
    return pd.to_datetime(series, utc=True, format="ISO8601").astype(TS_DTYPE)


def _naive_us(series: pd.Series) -> np.ndarray:
    return np.asarray(series.dt.tz_localize(None).to_numpy(), dtype="datetime64[us]")


def python_values(series: pd.Series) -> list[Any]:
    """Plain Python values (None for NaN/NA/NaT; int, not numpy.int64). Timestamps: naive UTC datetimes."""
    dtype = series.dtype
    if isinstance(dtype, pd.DatetimeTZDtype):
        return list(_naive_us(series).astype(object).tolist())
    if isinstance(dtype, np.dtype) and dtype.kind in "iub":
        return list(series.tolist())
    if isinstance(dtype, np.dtype) and dtype.kind == "O":
        return [None if v is None or v is pd.NA or (isinstance(v, float) and v != v) else v for v in series]
    return list(series.to_numpy(dtype=object, na_value=None).tolist())


def sqlite_values(series: pd.Series) -> list[Any]:
    """Values as SQLite stores them; timestamps in SQLAlchemy's SQLite text format (UTC)."""
    if isinstance(series.dtype, pd.DatetimeTZDtype):
        text = np.datetime_as_string(_naive_us(series), unit="us")
        mask = series.isna().to_numpy()
        return [
            None if m else s[:10] + " " + s[11:] for s, m in zip(text.tolist(), mask.tolist(), strict=False)
        ]
    return python_values(series)


def copy_texts(series: pd.Series) -> list[str]:
    """One column in PostgreSQL's COPY text format (`\\N` for NULL, backslash escapes).

    Numbers and timestamps are formatted by numpy (non-null values only); strings are escaped only when the
    column contains a character that needs it, which one scan of the joined column tells.
    """
    dtype = series.dtype
    mask = series.isna().to_numpy()
    if isinstance(dtype, pd.StringDtype):
        present = series.dropna().tolist()
        values = series.to_numpy(dtype=object, na_value=_COPY_NULL).tolist()
        if _needs_escape("\x00".join(present)):
            values = [
                _COPY_NULL if m else _copy_escape(v) for v, m in zip(values, mask.tolist(), strict=True)
            ]
        return values
    if isinstance(dtype, pd.DatetimeTZDtype):
        raw: np.ndarray = _naive_us(series)
    elif dtype.kind in "iufb":
        na_value: Any = {"i": 0, "u": 0, "f": np.nan, "b": False}[dtype.kind]
        raw = (
            series.to_numpy()
            if isinstance(dtype, np.dtype)
            else series.to_numpy(dtype.numpy_dtype, na_value=na_value)
        )
    else:
        return [
            _COPY_NULL if m or v is None else _copy_escape(v if isinstance(v, str) else str(v))
            for v, m in zip(series.to_numpy(dtype=object).tolist(), mask.tolist(), strict=True)
        ]
    if not mask.any():
        return _format(raw)
    out = np.full(len(raw), _COPY_NULL, dtype=object)
    keep = ~mask
    out[keep] = _format(raw[keep])
    return list(out.tolist())


def _format(values: np.ndarray) -> list[str]:
    if values.dtype.kind == "M":
        return list(np.datetime_as_string(values, unit="us", timezone="UTC").tolist())
    if values.dtype.kind == "b":
        return list(np.where(values, "t", "f").tolist())
    if values.dtype.kind == "f":
        return list(map(repr, values.tolist()))  # shortest repr that round-trips exactly
    return list(map(str, values.tolist()))


def _needs_escape(s: str) -> bool:
    return "\\" in s or "\t" in s or "\n" in s or "\r" in s


def _copy_escape(s: str) -> str:
    return s.translate(_COPY_ESCAPES) if _needs_escape(s) else s


# --- the load -------------------------------------------------------------------------------------------
def load_result(
    conn: sa.Connection,
    result: TransformResult,
    *,
    course_ids: Sequence[int],
    run_id: str,
    synced_at: datetime,
    full_refresh: bool,
) -> LoadStats:
    synced_at = utc(synced_at)
    course_ids = sorted({int(c) for c in course_ids})
    stats = LoadStats()
    for name, frame in result.tables.items():
        stats.tables[name] = load_table(
            conn,
            name,
            frame,
            course_ids=course_ids,
            run_id=run_id,
            synced_at=synced_at,
            full_refresh=full_refresh,
            rejected=[r for r in result.rejected if _rejected_table(r, result) == name],
        )
    return stats


def _rejected_table(r: Rejected, result: TransformResult) -> str | None:
    if r.table:
        return r.table
    return next(iter(result.tables), None) if len(result.tables) == 1 else None


def load_table(
    conn: sa.Connection,
    name: str,
    frame: pd.DataFrame,
    *,
    course_ids: Sequence[int],
    run_id: str,
    synced_at: datetime,
    full_refresh: bool,
    rejected: Sequence[Rejected] = (),
) -> TableLoadStats:
    """Load one table's frame (see the module docstring). Runs inside the caller's transaction.

    The frame is first bulk-copied into a temporary table; counting new and restored rows, the score
    history and the upsert are then set-based SQL between that table and the target.
    """
    target = table(name)
    stats = TableLoadStats(name)
    key = [c.name for c in target.primary_key.columns]
    frame = prepare_frame(frame, target, key)
    has_deleted_at = "deleted_at" in target.c

    if len(frame):
        columns = list(frame.columns)
        temp = _stage(conn, target, frame)
        on = sa.and_(*(target.c[k] == temp.c[k] for k in key))
        stats.upserted = len(frame)
        stats.inserted, stats.restored = _count_new_and_restored(
            conn, target, temp, on, key[0], has_deleted_at
        )
        score_columns = [c for c in SCORE_COLUMNS if c in columns] if name == "canvas_enrollments" else []
        if score_columns:
            stats.history_rows = _append_score_history(
                conn, target, temp, on, score_columns, run_id, synced_at
            )
        update_columns = [c for c in columns if c not in key] + ["synced_at"]
        if has_deleted_at:
            update_columns.append("deleted_at")
        _upsert_from_temp(conn, target, temp, key, columns, update_columns, synced_at, len(frame))
        conn.exec_driver_sql(f"DROP TABLE {conn.dialect.identifier_preparer.quote(temp.name)}")

    scope = COURSE_SCOPE_COLUMN.get(name)
    if full_refresh and scope is not None and has_deleted_at and course_ids:
        stats.soft_deleted = _soft_delete(conn, target, scope, course_ids, synced_at, rejected, name)
    return stats


# --- staging the frame in a temporary table ---------------------------------------------------------------
def _uses_copy(conn: sa.Connection) -> bool:
    return conn.dialect.name == "postgresql" and conn.dialect.driver == "psycopg2"


def _stage(conn: sa.Connection, target: sa.Table, frame: pd.DataFrame) -> sa.Table:
    """Bulk-copy the frame, numbered by `_n`, into a temporary table (gone at rollback, dropped after use)."""
    columns = list(frame.columns)
    temp = sa.Table(
        f"_load_{target.name}",
        sa.MetaData(),
        *(sa.Column(c, target.c[c].type) for c in columns),
        # The batch number ranges over `_n`: as the key (SQLite: the rowid) each batch reads only its rows.
        sa.Column(
            "_n", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), primary_key=True, autoincrement=False
        ),
        prefixes=["TEMPORARY"],
        postgresql_on_commit="DROP",
    )
    conn.exec_driver_sql(f"DROP TABLE IF EXISTS {conn.dialect.identifier_preparer.quote(temp.name)}")
    temp.create(conn)
    numbered = frame.assign(_n=np.arange(len(frame), dtype="int64"))
    if _uses_copy(conn):
        _copy(conn, temp.name, numbered)
    elif conn.dialect.name == "sqlite":
        compiled = (
            sa.insert(temp)
            .values({c: sa.bindparam(c) for c in numbered.columns})
            .compile(dialect=conn.dialect)
        )
        values = {c: sqlite_values(numbered[c]) for c in numbered.columns}
        rows = list(zip(*(values[c] for c in compiled.positiontup or ()), strict=True))
        for batch in chunks(rows, BATCH_ROWS):
            conn.exec_driver_sql(compiled.string, list(batch))
    else:
        lists = [python_values(numbered[c]) for c in numbered.columns]
        dicts = [dict(zip(numbered.columns, row, strict=True)) for row in zip(*lists, strict=True)]
        for batch in chunks(dicts, BATCH_ROWS):
            conn.execute(sa.insert(temp), list(batch))
    return temp


def _copy(conn: sa.Connection, table_name: str, frame: pd.DataFrame) -> None:
    """PostgreSQL COPY ... FROM STDIN of a frame, encoded column-wise."""
    quote = conn.dialect.identifier_preparer.quote
    texts = [copy_texts(frame[c]) for c in frame.columns]
    body = "\n".join(map("\t".join, zip(*texts, strict=True)))
    cursor = conn.connection.dbapi_connection.cursor()  # type: ignore[union-attr]
    try:
        cursor.copy_expert(
            f"COPY {quote(table_name)} ({', '.join(quote(c) for c in frame.columns)}) FROM STDIN",
            io.StringIO(body + "\n"),
            size=1 << 20,
        )
    finally:
        cursor.close()


# --- set-based steps ----------------------------------------------------------------------------------------
def _literal(value: Any, column: sa.Column[Any], conn: sa.Connection) -> Any:
    """A constant for INSERT ... SELECT. PostgreSQL needs the type spelled out; SQLite must not get a CAST
    (CAST(... AS DATETIME) has NUMERIC affinity there and would turn the text into a number)."""
    expr: Any = sa.null() if value is None else sa.literal(value, column.type)
    if conn.dialect.name == "postgresql":
        return sa.cast(expr, column.type)
    return expr


def _count_new_and_restored(
    conn: sa.Connection, target: sa.Table, temp: sa.Table, on: Any, first_key: str, has_deleted_at: bool
) -> tuple[int, int]:
    new = sa.func.coalesce(sa.func.sum(sa.case((target.c[first_key].is_(None), 1), else_=0)), 0)
    restored: Any = sa.literal(0)
    if has_deleted_at:
        restored = sa.func.coalesce(sa.func.sum(sa.case((target.c.deleted_at.is_not(None), 1), else_=0)), 0)
    row = conn.execute(sa.select(new, restored).select_from(temp.outerjoin(target, on))).one()
    return int(row[0]), int(row[1])


def _append_score_history(
    conn: sa.Connection,
    target: sa.Table,
    temp: sa.Table,
    on: Any,
    score_columns: list[str],
    run_id: str,
    recorded_at: datetime,
) -> int:
    """Append history for enrollments new with a score, or whose (present) score columns changed.

    Runs before the upsert, so `target` still holds the previous values. A history row holds the scores as
    they stand after the load: the incoming values, and the stored ones for columns the frame lacks.
    """
    history = table("canvas_score_history")
    is_new = target.c.id.is_(None)
    has_score = sa.or_(*(temp.c[c].is_not(None) for c in score_columns))
    changed = sa.or_(*(temp.c[c].is_distinct_from(target.c[c]) for c in score_columns))
    after = {c: (temp.c[c] if c in score_columns else target.c[c]) for c in SCORE_COLUMNS}
    user_id = temp.c.user_id if "user_id" in temp.c else target.c.user_id
    source = (
        sa.select(
            temp.c.id,
            temp.c.course_id,
            user_id,
            _literal(recorded_at, history.c.recorded_at, conn),
            *(after[c] for c in SCORE_COLUMNS),
            _literal(run_id, history.c.run_id, conn),
        )
        .select_from(temp.outerjoin(target, on))
        .where(sa.or_(sa.and_(is_new, has_score), sa.and_(~is_new, changed)))
    )
    names = ["enrollment_id", "course_id", "user_id", "recorded_at", *SCORE_COLUMNS, "run_id"]
    result = conn.execute(sa.insert(history).from_select(names, source))
    return int(result.rowcount or 0)


def _upsert_from_temp(
    conn: sa.Connection,
    target: sa.Table,
    temp: sa.Table,
    key: list[str],
    columns: list[str],
    update_columns: list[str],
    synced_at: datetime,
    n_rows: int,
) -> None:
    """INSERT ... SELECT ... ON CONFLICT DO UPDATE in batches of `_n` ranges (a hook runs after each)."""
    managed = [_literal(synced_at, target.c.synced_at, conn).label("synced_at")]
    if "deleted_at" in update_columns:
        managed.append(_literal(None, target.c.deleted_at, conn).label("deleted_at"))
    names = [*columns, *(m.name for m in managed)]
    dialect_insert = postgresql.insert if conn.dialect.name == "postgresql" else sqlite.insert
    batch_rows = COPY_BATCH_ROWS if _uses_copy(conn) else BATCH_ROWS
    for index, start in enumerate(range(0, n_rows, batch_rows)):
        source = sa.select(*(temp.c[c] for c in columns), *managed).where(
            temp.c._n >= start, temp.c._n < start + batch_rows
        )
        stmt = dialect_insert(target).from_select(names, source)
        stmt = stmt.on_conflict_do_update(
            index_elements=key, set_={c: stmt.excluded[c] for c in update_columns}
        )
        conn.execute(stmt)
        _after_batch(target.name, index, min(batch_rows, n_rows - start))


def _soft_delete(
    conn: sa.Connection,
    target: sa.Table,
    scope: str,
    course_ids: Sequence[int],
    synced_at: datetime,
    rejected: Sequence[Rejected],
    name: str,
) -> int:
    id_column = target.c[CANVAS_ID_COLUMN[name]]
    quarantined = sorted({r.canvas_id for r in rejected if r.canvas_id is not None})
    total = 0
    for chunk in chunks(list(course_ids)):
        stmt = (
            sa.update(target)
            .where(
                target.c[scope].in_(chunk),
                target.c.deleted_at.is_(None),
                target.c.synced_at < synced_at,
            )
            .values(deleted_at=synced_at)
        )
        if quarantined:
            stmt = stmt.where(id_column.not_in(quarantined))
        total += conn.execute(stmt).rowcount or 0
    return total
