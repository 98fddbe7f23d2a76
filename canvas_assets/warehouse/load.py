"""Layer-1 loads: bulk upsert, soft delete and score history, in the caller's single transaction.

For each table of a `TransformResult`:

1. read the previous state of the incoming keys (deleted_at, and for enrollments the scores) inside the
   same transaction, before writing, so the comparison is against exactly what this load replaces;
2. upsert on the natural key with `INSERT ... ON CONFLICT DO UPDATE`. Only the columns PRESENT in the frame
   are written, so a profile that does not fetch a column group leaves what a richer sync stored (new rows
   get NULL there); `synced_at` is set and `deleted_at` cleared on every row present;
3. for enrollments with score columns, append a `canvas_score_history` row for each enrollment that is new
   (with a score) or whose scores changed;
4. with `full_refresh`, soft-delete the rows of the given courses that this load did not touch
   (`deleted_at = synced_at` where deleted_at is null and synced_at is older), except rows whose record
   was quarantined (a malformed record is not a deletion). Students are global: never soft-deleted.

A re-run with unchanged data changes nothing but `synced_at` and adds no history.

Speed (DESIGN §3: loading must not be the bottleneck). Per-row work in Python is what limits bulk loads, so
values are prepared column-wise with numpy/pandas and handed to the driver in bulk:
- SQLite: the compiled upsert is run with the driver's `executemany` over plain tuples, in batches;
- PostgreSQL (psycopg2): the frame is `COPY`ed into a temporary table, and the upsert is
  `INSERT ... SELECT ... ON CONFLICT DO UPDATE` from it, in batches. Measured on the 2-core CI machine,
  executemany with multi-row VALUES ("insertmanyvalues") tops out near 5,000 rows/s for a 28-column
  enrollment frame (client-side quoting of every parameter plus parsing huge statements); COPY is an order
  of magnitude faster (see benchmarks/load_benchmark.py);
- any other driver: SQLAlchemy Core executemany.
"""

from __future__ import annotations

import io
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass, field
from datetime import datetime
from itertools import repeat
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
KEY_CHUNK = 5000  # keys per IN (...) when reading the previous state
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


def sqlite_timestamp(at: datetime) -> str:
    return utc(at).replace(tzinfo=None).isoformat(sep=" ", timespec="microseconds")


def copy_texts(series: pd.Series) -> list[str]:
    """One column in PostgreSQL's COPY text format (`\\N` for NULL, backslash escapes)."""
    dtype = series.dtype
    mask = series.isna().to_numpy()
    if isinstance(dtype, pd.DatetimeTZDtype):
        text = np.datetime_as_string(_naive_us(series), unit="us", timezone="UTC")
    elif isinstance(dtype, np.dtype) and dtype.kind in "iu":
        text = series.to_numpy().astype(str)
    elif isinstance(dtype, np.dtype) and dtype.kind == "b":
        text = np.where(series.to_numpy(), "t", "f")
    elif isinstance(dtype, np.dtype) and dtype.kind == "f":
        text = series.to_numpy().astype(str)
    elif isinstance(dtype, pd.Int64Dtype) or (dtype.kind in "iu" and not isinstance(dtype, np.dtype)):
        text = series.to_numpy(dtype="int64", na_value=0).astype(str)
    elif dtype.kind == "b" and not isinstance(dtype, np.dtype):
        text = np.where(series.to_numpy(dtype=bool, na_value=False), "t", "f")
    elif dtype.kind == "f" and not isinstance(dtype, np.dtype):
        text = series.to_numpy(dtype="float64", na_value=np.nan).astype(str)
    else:
        out = []
        for v, m in zip(series.to_numpy(dtype=object).tolist(), mask.tolist(), strict=False):
            if m or v is None:
                out.append(_COPY_NULL)
                continue
            s = v if isinstance(v, str) else str(v)
            if "\\" in s or "\t" in s or "\n" in s or "\r" in s:
                s = s.translate(_COPY_ESCAPES)
            out.append(s)
        return out
    values = text.tolist()
    if mask.any():
        for i in np.flatnonzero(mask).tolist():
            values[i] = _COPY_NULL
    return values


def _key_values(frame: pd.DataFrame, key: list[str]) -> list[Any]:
    if len(key) == 1:
        return python_values(frame[key[0]])
    return list(zip(*(python_values(frame[c]) for c in key), strict=False))


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


def _uses_copy(conn: sa.Connection) -> bool:
    return conn.dialect.name == "postgresql" and conn.dialect.driver == "psycopg2"


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
    """Load one table's frame (see the module docstring). Runs inside the caller's transaction."""
    target = table(name)
    stats = TableLoadStats(name)
    key = [c.name for c in target.primary_key.columns]
    frame = prepare_frame(frame, target, key)
    has_deleted_at = "deleted_at" in target.c

    if len(frame):
        keys = _key_values(frame, key)
        score_columns = (
            [c for c in SCORE_COLUMNS if c in frame.columns] if name == "canvas_enrollments" else []
        )
        read = ["deleted_at"] if has_deleted_at else []
        if score_columns:
            read.extend(SCORE_COLUMNS)

        temp = _copy_to_temp(conn, target, frame) if _uses_copy(conn) else None
        if temp is not None:
            previous = _previous_state_joined(conn, target, temp, key, read)
        else:
            previous = _previous_state(conn, target, key, keys, read)

        stats.upserted = len(keys)
        stats.inserted = sum(1 for k in keys if k not in previous)
        if has_deleted_at:
            stats.restored = sum(1 for k in keys if k in previous and previous[k][0] is not None)
        history = (
            _score_history(frame, keys, previous, score_columns, run_id, synced_at) if score_columns else []
        )

        columns = list(frame.columns)
        update_columns = [c for c in columns if c not in key] + ["synced_at"]
        if has_deleted_at:
            update_columns.append("deleted_at")
        if temp is not None:
            _upsert_from_temp(conn, target, temp, key, columns, update_columns, synced_at, len(frame))
        elif conn.dialect.name == "sqlite":
            _upsert_sqlite(conn, target, key, frame, update_columns, synced_at)
        else:
            _upsert_core(conn, target, key, frame, update_columns, synced_at)

        if history:
            bulk_insert(conn, table("canvas_score_history"), pd.DataFrame(history))
            stats.history_rows = len(history)

    scope = COURSE_SCOPE_COLUMN.get(name)
    if full_refresh and scope is not None and has_deleted_at and course_ids:
        stats.soft_deleted = _soft_delete(conn, target, scope, course_ids, synced_at, rejected, name)
    return stats


# --- upserts ----------------------------------------------------------------------------------------------
def _upsert_statement(
    dialect_insert: Any, target: sa.Table, key: list[str], update_columns: list[str]
) -> Any:
    stmt = dialect_insert
    return stmt.on_conflict_do_update(index_elements=key, set_={c: stmt.excluded[c] for c in update_columns})


def _upsert_sqlite(
    conn: sa.Connection,
    target: sa.Table,
    key: list[str],
    frame: pd.DataFrame,
    update_columns: list[str],
    synced_at: datetime,
) -> None:
    """The compiled upsert run by sqlite3's executemany over plain tuples (no per-row SQLAlchemy work)."""
    values: dict[str, Iterable[Any]] = {c: sqlite_values(frame[c]) for c in frame.columns}
    values["synced_at"] = repeat(sqlite_timestamp(synced_at))
    if "deleted_at" in update_columns:
        values["deleted_at"] = repeat(None)
    insert = sqlite.insert(target).values({c: sa.bindparam(c) for c in values})
    compiled = _upsert_statement(insert, target, key, update_columns).compile(dialect=conn.dialect)
    order = list(compiled.positiontup or ())
    assert sorted(order) == sorted(values), (order, list(values))
    rows = list(zip(*(values[c] for c in order), strict=False))
    for index, batch in enumerate(chunks(rows, BATCH_ROWS)):
        conn.exec_driver_sql(compiled.string, list(batch))
        _after_batch(target.name, index, len(batch))


def _upsert_core(
    conn: sa.Connection,
    target: sa.Table,
    key: list[str],
    frame: pd.DataFrame,
    update_columns: list[str],
    synced_at: datetime,
) -> None:
    """Any other driver: SQLAlchemy Core executemany (RETURNING keeps "insertmanyvalues" batching on)."""
    extra: dict[str, Any] = {"synced_at": synced_at}
    if "deleted_at" in update_columns:
        extra["deleted_at"] = None
    columns = [*frame.columns, *extra]
    lists: list[Iterable[Any]] = [python_values(frame[c]) for c in frame.columns]
    lists.extend(repeat(v) for v in extra.values())
    rows = [dict(zip(columns, row, strict=False)) for row in zip(*lists, strict=False)]
    stmt = _upsert_statement(postgresql.insert(target), target, key, update_columns).returning(
        *(target.c[c] for c in key)
    )
    for index, batch in enumerate(chunks(rows, BATCH_ROWS)):
        conn.execute(stmt, list(batch))
        _after_batch(target.name, index, len(batch))


def _copy(conn: sa.Connection, table_name: str, columns: Sequence[str], frame: pd.DataFrame) -> None:
    quote = conn.dialect.identifier_preparer.quote
    texts = [copy_texts(frame[c]) for c in frame.columns]
    body = "\n".join(map("\t".join, zip(*texts, strict=False)))
    if not body:
        return
    cursor = conn.connection.dbapi_connection.cursor()  # type: ignore[union-attr]
    try:
        cursor.copy_expert(
            f"COPY {quote(table_name)} ({', '.join(quote(c) for c in columns)}) FROM STDIN",
            io.StringIO(body + "\n"),
            size=1 << 20,
        )
    finally:
        cursor.close()


def _copy_to_temp(conn: sa.Connection, target: sa.Table, frame: pd.DataFrame) -> sa.Table:
    """COPY the frame (plus a row number `_n`) into a temporary table that vanishes at commit/rollback."""
    quote = conn.dialect.identifier_preparer.quote
    name = f"_load_{target.name}"
    columns = list(frame.columns)
    conn.exec_driver_sql(f"DROP TABLE IF EXISTS {quote(name)}")
    conn.exec_driver_sql(
        f"CREATE TEMPORARY TABLE {quote(name)} ON COMMIT DROP AS "
        f"SELECT {', '.join(quote(c) for c in columns)} FROM {quote(target.name)} WITH NO DATA"
    )
    conn.exec_driver_sql(f"ALTER TABLE {quote(name)} ADD COLUMN _n bigint")
    numbered = frame.assign(_n=np.arange(len(frame), dtype="int64"))
    _copy(conn, name, [*columns, "_n"], numbered)
    temp = sa.Table(
        name,
        sa.MetaData(),
        *(sa.Column(c, target.c[c].type) for c in columns),
        sa.Column("_n", sa.BigInteger()),
    )
    return temp


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
    managed: list[Any] = [
        sa.cast(sa.literal(synced_at, UTCDateTime()), target.c.synced_at.type).label("synced_at")
    ]
    if "deleted_at" in update_columns:
        managed.append(sa.cast(sa.null(), target.c.deleted_at.type).label("deleted_at"))
    names = [*columns, *(m.name for m in managed)]
    for index, start in enumerate(range(0, n_rows, COPY_BATCH_ROWS)):
        source = sa.select(*(temp.c[c] for c in columns), *managed).where(
            temp.c._n >= start, temp.c._n < start + COPY_BATCH_ROWS
        )
        insert = postgresql.insert(target).from_select(names, source)
        conn.execute(_upsert_statement(insert, target, key, update_columns))
        _after_batch(target.name, index, min(COPY_BATCH_ROWS, n_rows - start))


def bulk_insert(conn: sa.Connection, target: sa.Table, frame: pd.DataFrame) -> None:
    """Append rows (no conflicts expected): COPY on PostgreSQL, executemany elsewhere."""
    if not len(frame):
        return
    for column in frame.columns:
        if isinstance(target.c[column].type, UTCDateTime) and frame[column].dtype != TS_DTYPE:
            frame[column] = _to_utc(frame[column])
    if _uses_copy(conn):
        _copy(conn, target.name, list(frame.columns), frame)
        return
    if conn.dialect.name == "sqlite":
        values = [sqlite_values(frame[c]) for c in frame.columns]
        compiled = (
            sa.insert(target)
            .values({c: sa.bindparam(c) for c in frame.columns})
            .compile(dialect=conn.dialect)
        )
        position = {c: i for i, c in enumerate(frame.columns)}
        order = [position[c] for c in compiled.positiontup or ()]
        rows = [tuple(row[i] for i in order) for row in zip(*values, strict=False)]
        for batch in chunks(rows, BATCH_ROWS):
            conn.exec_driver_sql(compiled.string, list(batch))
        return
    lists = [python_values(frame[c]) for c in frame.columns]
    rows_dicts = [dict(zip(frame.columns, row, strict=False)) for row in zip(*lists, strict=False)]
    for batch in chunks(rows_dicts, BATCH_ROWS):
        conn.execute(sa.insert(target), list(batch))


# --- previous state and score history ---------------------------------------------------------------------
def _previous_state(
    conn: sa.Connection, target: sa.Table, key: list[str], keys: list[Any], columns: list[str]
) -> dict[Any, tuple[Any, ...]]:
    """Existing rows of the incoming keys: key -> values of `columns` (before this load writes)."""
    selected = [target.c[c] for c in columns]
    previous: dict[Any, tuple[Any, ...]] = {}
    if len(key) == 1:
        k = target.c[key[0]]
        for chunk in chunks(keys, KEY_CHUNK):
            for row in conn.execute(sa.select(k, *selected).where(k.in_(chunk))):
                previous[row[0]] = tuple(row[1:])
        return previous
    # Composite key (course_id, user_id): read the incoming courses, keep the incoming keys.
    incoming = set(keys)
    key_columns = [target.c[c] for c in key]
    courses = sorted({k[0] for k in incoming})
    for chunk in chunks(courses, KEY_CHUNK):
        for row in conn.execute(sa.select(*key_columns, *selected).where(key_columns[0].in_(chunk))):
            composite = tuple(row[: len(key)])
            if composite in incoming:
                previous[composite] = tuple(row[len(key) :])
    return previous


def _previous_state_joined(
    conn: sa.Connection, target: sa.Table, temp: sa.Table, key: list[str], columns: list[str]
) -> dict[Any, tuple[Any, ...]]:
    """As `_previous_state`, with the incoming keys already in the COPY table: one join."""
    on = sa.and_(*(target.c[k] == temp.c[k] for k in key))
    query = sa.select(*(target.c[k] for k in key), *(target.c[c] for c in columns)).select_from(
        target.join(temp, on)
    )
    n = len(key)
    previous: dict[Any, tuple[Any, ...]] = {}
    for row in conn.execute(query):
        previous[row[0] if n == 1 else tuple(row[:n])] = tuple(row[n:])
    return previous


def _score_history(
    frame: pd.DataFrame,
    ids: list[Any],
    previous: dict[Any, tuple[Any, ...]],
    score_columns: list[str],
    run_id: str,
    recorded_at: datetime,
) -> list[dict[str, Any]]:
    """History rows for enrollments that are new with a score, or whose present score columns changed.

    `previous` maps id -> (deleted_at, *SCORE_COLUMNS). A history row holds the scores as they stand after
    the load: the incoming values, and the stored ones for score columns the frame does not carry.
    """
    new_scores = list(zip(*(python_values(frame[c]) for c in score_columns), strict=False))
    course_ids = python_values(frame["course_id"])
    user_ids = python_values(frame["user_id"]) if "user_id" in frame.columns else [None] * len(frame)
    history = []
    for enrollment_id, course_id, user_id, scores in zip(ids, course_ids, user_ids, new_scores, strict=False):
        new = dict(zip(score_columns, scores, strict=False))
        old = previous.get(enrollment_id)
        if old is None:
            if all(v is None for v in scores):
                continue
            state = new
        else:
            stored = dict(zip(SCORE_COLUMNS, old[1:], strict=False))
            if all(stored[c] == v for c, v in new.items()):
                continue
            state = {**stored, **new}
        history.append(
            {
                "enrollment_id": enrollment_id,
                "course_id": course_id,
                "user_id": user_id,
                "recorded_at": recorded_at,
                "current_score": state.get("current_score"),
                "final_score": state.get("final_score"),
                "current_grade": state.get("current_grade"),
                "final_grade": state.get("final_grade"),
                "run_id": run_id,
            }
        )
    return history


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
