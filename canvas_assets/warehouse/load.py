"""Layer-1 loads: change-only upsert, soft delete and score history, in the caller's single transaction.

For each table of a `TransformResult`, the frame is first bulk-copied into a temporary table `_load_<table>`
(PostgreSQL: COPY; gone at rollback, dropped after use); everything else is set-based SQL between that table
and the target, inside the one transaction `Warehouse.load` opens:

1. diff: one join of the incoming rows with the target collects, in a temporary `_diff_<table>`, the rows
   that are new, that were soft-deleted (restored), or whose values differ (`IS DISTINCT FROM`, NULL-safe)
   in the columns PRESENT in the frame. Unchanged rows are never touched again: a re-sync of identical
   Canvas data writes no Layer-1 row at all (PostgreSQL's n_tup_upd / n_tup_ins stay put, no row lock,
   no index entry, no WAL), and a re-sync in which k records changed writes exactly those k rows;
2. for enrollments with score columns, a `canvas_score_history` row for each enrollment that is new (with
   a score) or whose scores differ from the stored ones; computed in the diff, before any write, so it
   compares with exactly the values this load replaces;
3. `UPDATE ... FROM` the changed rows and `INSERT ... SELECT` the new ones, in batches of `_n` ranges
   (a hook runs after each). Only the columns present in the frame are written, so a profile that does not
   fetch a column group leaves what a richer sync stored (new rows get NULL there); `deleted_at` is cleared
   on restored rows;
4. with `full_refresh`, soft-delete the rows of the given courses that are not among this load's keys
   (`NOT EXISTS` in `_load_<table>`; `deleted_at` = the load's `synced_at`), except rows whose record was
   quarantined (a malformed record is not a deletion). Students are global: never soft-deleted;
5. one `canvas_course_sync` row per (entity, course) of the load records that Canvas confirmed the course's
   rows at `synced_at` (`confirmed_at`), when those records were fetched (`fetched_at`, from staging) and,
   when this load wrote any row of the course, `changed_at`. Rows carry no per-row sync time (that would
   force a write of every row on every sync); this table is where "last synced" lives.

Speed (DESIGN §3: loading must not be the bottleneck). Per-row Python work is what limits bulk loads, so
values are encoded column-wise with numpy/pandas and handed to the driver in bulk: PostgreSQL (psycopg2)
gets one `COPY ... FROM STDIN`, SQLite the driver's `executemany` over plain tuples, other drivers
SQLAlchemy Core executemany. The comparison runs in the database (a hash join), so a re-sync costs one
COPY plus one join (benchmarks/load_benchmark.py).
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

from canvas_assets.transform.base import TS_DTYPE, Rejected, TransformResult
from canvas_assets.warehouse.models import (
    CANVAS_ID_COLUMN,
    COURSE_SCOPE_COLUMN,
    UTCDateTime,
    table,
)
from canvas_assets.warehouse.staging import IN_CHUNK, chunks, utc

BATCH_ROWS = 5000  # rows per executemany batch into the temporary table, and per write batch (SQLite)
COPY_BATCH_ROWS = 1_000_000  # rows per write batch (PostgreSQL): one statement for a whole ranged run
SCORE_COLUMNS = ("current_score", "final_score", "current_grade", "final_grade")
# Columns the loader manages; a frame may not set them. `synced_at` is accepted (and ignored) for frames
# built before the per-row column was dropped.
MANAGED_COLUMNS = ("synced_at", "deleted_at")
PG_WORK_MEM = "128MB"  # per load transaction: the diff's hash joins stay in memory


def _after_batch(table_name: str, batch_index: int, rows: int) -> None:
    """Called after each write batch. A seam for tests that need a failure half-way through a load."""


@dataclass
class TableLoadStats:
    table: str
    rows: int = 0  # rows in the load
    inserted: int = 0  # keys that were not in the table before
    updated: int = 0  # existing rows written because a value changed or they were restored
    unchanged: int = 0  # rows present and identical: not written
    soft_deleted: int = 0  # rows of the loaded courses that vanished
    restored: int = 0  # soft-deleted rows that came back (counted in `updated`)
    history_rows: int = 0  # canvas_score_history rows appended

    @property
    def upserted(self) -> int:
        """Rows written by the upsert (inserted + updated)."""
        return self.inserted + self.updated

    @property
    def written(self) -> int:
        """Every Layer-1 row this load wrote: inserted, updated and soft-deleted."""
        return self.inserted + self.updated + self.soft_deleted


@dataclass
class LoadStats:
    tables: dict[str, TableLoadStats] = field(default_factory=dict)
    courses_confirmed: int = 0  # (entity, course) confirmations written to canvas_course_sync
    courses_changed: int = 0  # of those, courses in which this load wrote a row

    def _sum(self, name: str) -> int:
        return sum(getattr(s, name) for s in self.tables.values())

    @property
    def rows(self) -> int:
        return self._sum("rows")

    @property
    def upserted(self) -> int:
        return self._sum("upserted")

    @property
    def inserted(self) -> int:
        return self._sum("inserted")

    @property
    def updated(self) -> int:
        return self._sum("updated")

    @property
    def unchanged(self) -> int:
        return self._sum("unchanged")

    @property
    def soft_deleted(self) -> int:
        return self._sum("soft_deleted")

    @property
    def restored(self) -> int:
        return self._sum("restored")

    @property
    def history_rows(self) -> int:
        return self._sum("history_rows")

    @property
    def written(self) -> int:
        return self._sum("written")

    def to_metadata(self) -> dict[str, Any]:
        """Flat figures for Dagster metadata: totals plus `<table>.<figure>`."""
        meta: dict[str, Any] = {
            "rows_loaded": self.rows,
            "rows_written": self.written,
            "rows_upserted": self.upserted,
            "rows_inserted": self.inserted,
            "rows_updated": self.updated,
            "rows_unchanged": self.unchanged,
            "rows_soft_deleted": self.soft_deleted,
            "rows_restored": self.restored,
            "score_history_rows": self.history_rows,
            "courses_confirmed": self.courses_confirmed,
            "courses_changed": self.courses_changed,
        }
        for name, s in self.tables.items():
            for key, value in asdict(s).items():
                if key != "table":
                    meta[f"{name}.{key}"] = value
            meta[f"{name}.upserted"] = s.upserted
        return meta


# --- frame preparation and column encodings ---------------------------------------------------------------


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


# --- PostgreSQL binary COPY ---------------------------------------------------------------------------------
_PG_EPOCH_US = 946_684_800_000_000  # 2000-01-01T00:00:00Z in microseconds since the Unix epoch
_BINARY_HEADER = b"PGCOPY\n\xff\r\n\x00" + b"\x00\x00\x00\x00" + b"\x00\x00\x00\x00"


def _binary_column(series: pd.Series, sql_type: Any) -> tuple[np.ndarray, np.ndarray | None, np.ndarray]:
    """One column for binary COPY: (byte length per row, -1 for NULL; the fixed-width values as a (rows, width)
    uint8 array, or None for text; the concatenated UTF-8 payload of the non-null text values)."""
    mask = series.isna().to_numpy()
    dtype = series.dtype
    empty = np.zeros(0, dtype=np.uint8)
    if isinstance(sql_type, (sa.Text, sa.String)) or not (
        isinstance(dtype, pd.DatetimeTZDtype) or dtype.kind in "iufb"
    ):
        values = series.to_numpy(dtype=object)[~mask].tolist() if mask.any() else series.tolist()
        if not isinstance(dtype, pd.StringDtype):
            values = [v if isinstance(v, str) else str(v) for v in values]
        lengths = np.full(len(series), -1, dtype=np.int64)
        if not values:
            return lengths, None, empty
        joined = np.frombuffer("\x00".join(values).encode("utf-8"), dtype=np.uint8)
        separators = np.flatnonzero(joined == 0)
        if len(separators) != len(values) - 1:
            raise ValueError(f"{series.name}: text with a NUL character cannot be stored in PostgreSQL")
        ends = np.append(separators, len(joined))
        starts = np.concatenate(([0], separators + 1))
        lengths[~mask] = ends - starts
        payload = joined if len(separators) == 0 else np.delete(joined, separators)
        return lengths, None, payload
    if isinstance(dtype, pd.DatetimeTZDtype):
        raw = _naive_us(series).view("int64") - _PG_EPOCH_US
        fixed = raw.astype(">i8")
    elif isinstance(sql_type, sa.Boolean):
        fixed = np.asarray(series.to_numpy(dtype=bool, na_value=False), dtype=np.uint8)
    elif isinstance(sql_type, sa.Float):
        fixed = series.to_numpy(dtype="float64", na_value=np.nan).astype(">f8")
    else:
        width = ">i8" if isinstance(sql_type, sa.BigInteger) else ">i4"
        if dtype.kind == "f":
            ints = np.nan_to_num(series.to_numpy(dtype="float64")).astype("int64")
        else:
            ints = series.to_numpy(dtype="int64", na_value=0)
        fixed = ints.astype(width)
    size = fixed.dtype.itemsize
    lengths = np.where(mask, -1, size).astype(np.int64)
    return lengths, fixed.view(np.uint8).reshape(len(series), size), empty


def binary_copy_rows(frame: pd.DataFrame, types: Sequence[Any]) -> tuple[np.ndarray, np.ndarray]:
    """Encode the frame as PostgreSQL binary COPY rows: (one uint8 buffer of every row, without header or
    trailer; the byte offset of each row in it, plus the end). Column-wise numpy: no per-value Python work
    but one `str.join` and one `encode` per text column."""
    n, ncol = len(frame), len(frame.columns)
    columns = [_binary_column(frame[c], t) for c, t in zip(frame.columns, types, strict=True)]
    lengths = np.stack([c[0] for c in columns], axis=1) if ncol else np.zeros((n, 0), np.int64)
    field_sizes = 4 + np.maximum(lengths, 0)
    row_sizes = 2 + field_sizes.sum(axis=1)
    offsets = np.zeros(n + 1, dtype=np.int64)
    np.cumsum(row_sizes, out=offsets[1:])
    buf = np.zeros(int(offsets[-1]), dtype=np.uint8)
    row_start = offsets[:-1]
    counts = np.frombuffer(np.array([ncol], dtype=">i2").tobytes(), dtype=np.uint8)
    buf[row_start[:, None] + np.arange(2)] = counts
    field_start = row_start[:, None] + 2 + np.cumsum(field_sizes, axis=1) - field_sizes
    for j, (col_lengths, fixed, payload) in enumerate(columns):
        start = field_start[:, j]
        buf[start[:, None] + np.arange(4)] = col_lengths.astype(">i4").view(np.uint8).reshape(n, 4)
        present = col_lengths >= 0
        if fixed is not None:
            width = fixed.shape[1]
            buf[(start[present] + 4)[:, None] + np.arange(width)] = fixed[present]
        elif len(payload):
            _place_text(buf, start[present] + 4, col_lengths[present], payload)
    return buf, offsets


SCATTER_BYTES = 1 << 22  # text payload placed per vectorised step (bounds the index array: 8 bytes a byte)


def _place_text(buf: np.ndarray, starts: np.ndarray, sizes: np.ndarray, payload: np.ndarray) -> None:
    """Copy the concatenated text `payload` into `buf`, value i (`sizes[i]` bytes) at `starts[i]`.

    Vectorised over groups of values holding about SCATTER_BYTES, so that long text (HTML descriptions,
    syllabi) never needs an index array the size of the whole column."""
    ends = np.cumsum(sizes)
    first = 0
    while first < len(sizes):
        base = int(ends[first - 1]) if first else 0
        last = max(int(np.searchsorted(ends, base + SCATTER_BYTES, side="right")), first + 1)
        group = sizes[first:last]
        total = int(ends[last - 1]) - base
        if len(group) == 1:
            buf[int(starts[first]) : int(starts[first]) + total] = payload[base : base + total]
        else:
            within = np.cumsum(group) - group
            buf[np.arange(total) + np.repeat(starts[first:last] - within, group)] = payload[
                base : base + total
            ]
        first = last


def _copy_binary(conn: sa.Connection, table_name: str, columns: Sequence[str], rows: np.ndarray) -> None:
    """COPY ... FROM STDIN (FORMAT binary) of encoded rows (see `binary_copy_rows`)."""
    quote = conn.dialect.identifier_preparer.quote
    data = io.BytesIO()
    data.write(_BINARY_HEADER)
    data.write(rows.data)
    data.write(b"\xff\xff")
    data.seek(0)
    cursor = conn.connection.dbapi_connection.cursor()  # type: ignore[union-attr]
    try:
        cursor.copy_expert(
            f"COPY {quote(table_name)} ({', '.join(quote(c) for c in columns)}) FROM STDIN (FORMAT binary)",
            data,
            size=1 << 22,
        )
    finally:
        cursor.close()


def _select_rows(buf: np.ndarray, offsets: np.ndarray, rows: np.ndarray) -> np.ndarray:
    """The encoded rows at positions `rows` (ascending), as one buffer."""
    sizes = offsets[1:] - offsets[:-1]
    keep = np.zeros(len(sizes), dtype=bool)
    keep[rows] = True
    return buf[np.repeat(keep, sizes)]


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
    changed: set[int] = set()
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
            changed_courses=changed,
        )
    changed &= set(course_ids)
    record_confirmations(conn, result.entity, course_ids, changed, run_id=run_id, at=synced_at)
    stats.courses_confirmed = len(course_ids)
    stats.courses_changed = len(changed)
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
    changed_courses: set[int] | None = None,
) -> TableLoadStats:
    """Load one table's frame (see the module docstring). Runs inside the caller's transaction.

    `changed_courses`, when given, receives the courses (of a course-scoped table) in which a row was written.
    """
    target = table(name)
    stats = TableLoadStats(name)
    key = [c.name for c in target.primary_key.columns]
    frame = prepare_frame(frame, target, key)
    has_deleted_at = "deleted_at" in target.c
    scope = COURSE_SCOPE_COLUMN.get(name)
    changed = changed_courses if changed_courses is not None else set()
    q = conn.dialect.identifier_preparer.quote
    temp: str | None = None

    if len(frame):
        columns = list(frame.columns)
        staged = _stage(conn, target, frame)
        temp = staged.name
        score_columns = [c for c in SCORE_COLUMNS if c in columns] if name == "canvas_enrollments" else []
        diff = _diff(conn, target, temp, key, columns, score_columns, has_deleted_at)
        stats.rows = len(frame)
        counts = conn.execute(
            sa.text(
                "SELECT COUNT(*), COALESCE(SUM(CASE WHEN is_new THEN 1 ELSE 0 END), 0), "
                f"COALESCE(SUM(CASE WHEN restored THEN 1 ELSE 0 END), 0) FROM {q(diff)}"
            )
        ).one()
        written, stats.inserted, stats.restored = int(counts[0]), int(counts[1]), int(counts[2])
        stats.updated = written - stats.inserted
        stats.unchanged = stats.rows - written
        new_rows: np.ndarray | None = None
        if staged.rows is not None:
            # PostgreSQL: new rows go straight into the table by COPY (a multi-row insert), not INSERT ... SELECT.
            new_rows = _new_positions(conn, diff, stats.inserted, stats.rows)
        if score_columns and written:
            stats.history_rows = _append_score_history(
                conn, target, temp, diff, key, score_columns, run_id, synced_at, frame, new_rows
            )
        # Batch by batch over the whole load (a batch without a changed row costs nothing but the hook).
        _write_changes(
            conn, target, staged, diff, key, columns, has_deleted_at, len(frame), new_rows, written > 0
        )
        if written and scope is not None and scope in columns:
            changed.update(
                int(c)
                for c in conn.execute(
                    sa.text(f"SELECT DISTINCT s.{q(scope)} FROM {q(temp)} s JOIN {q(diff)} d ON d._n = s._n")
                ).scalars()
            )
        conn.exec_driver_sql(f"DROP TABLE {q(diff)}")

    if full_refresh and scope is not None and has_deleted_at and course_ids:
        deleted = _soft_delete(conn, target, scope, course_ids, synced_at, rejected, name, temp, key)
        stats.soft_deleted = len(deleted)
        changed.update(deleted)
    if temp is not None:
        conn.exec_driver_sql(f"DROP TABLE {q(temp)}")
    return stats


def _new_positions(conn: sa.Connection, diff: str, inserted: int, rows: int) -> np.ndarray:
    """The `_n` of the new rows, ascending (all or none need no query)."""
    if inserted == 0:
        return np.zeros(0, dtype=np.int64)
    if inserted == rows:
        return np.arange(rows, dtype=np.int64)
    cursor = conn.connection.dbapi_connection.cursor()  # type: ignore[union-attr]
    try:
        cursor.execute(
            f"SELECT _n FROM {conn.dialect.identifier_preparer.quote(diff)} WHERE is_new ORDER BY _n"
        )
        return np.fromiter((r[0] for r in cursor.fetchall()), dtype=np.int64, count=inserted)
    finally:
        cursor.close()


# --- staging the frame in a temporary table ---------------------------------------------------------------
def _uses_copy(conn: sa.Connection) -> bool:
    return conn.dialect.name == "postgresql" and conn.dialect.driver == "psycopg2"


@dataclass
class _Staged:
    name: str  # the temporary table
    rows: np.ndarray | None = None  # PostgreSQL: the frame's rows encoded for binary COPY ...
    offsets: np.ndarray | None = None  # ... and where each starts


def _stage(conn: sa.Connection, target: sa.Table, frame: pd.DataFrame) -> _Staged:
    """Bulk-copy the frame, numbered by `_n` (0, 1, ...), into a temporary table (gone at rollback, dropped
    after use). PostgreSQL: binary COPY, `_n` an identity column; the encoded rows are kept for the new rows'
    own COPY into the target."""
    columns = list(frame.columns)
    quote = conn.dialect.identifier_preparer.quote
    name = f"_load_{target.name}"
    conn.exec_driver_sql(f"DROP TABLE IF EXISTS {quote(name)}")
    if _uses_copy(conn):
        ddl = ", ".join(f"{quote(c)} {target.c[c].type.compile(dialect=conn.dialect)}" for c in columns)
        conn.exec_driver_sql(
            f"CREATE TEMPORARY TABLE {quote(name)} ({ddl}, "
            "_n BIGINT GENERATED ALWAYS AS IDENTITY (START WITH 0 MINVALUE 0)) ON COMMIT DROP"
        )
        rows, offsets = binary_copy_rows(frame, [target.c[c].type for c in columns])
        _copy_binary(conn, name, columns, rows)
        return _Staged(name, rows, offsets)
    temp = sa.Table(
        name,
        sa.MetaData(),
        *(sa.Column(c, target.c[c].type) for c in columns),
        # The batch number ranges over `_n`: as the key (SQLite: the rowid) each batch reads only its rows.
        sa.Column(
            "_n", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), primary_key=True, autoincrement=False
        ),
        prefixes=["TEMPORARY"],
        postgresql_on_commit="DROP",
    )
    temp.create(conn)
    numbered = frame.assign(_n=np.arange(len(frame), dtype="int64"))
    if conn.dialect.name == "sqlite":
        compiled = (
            sa.insert(temp)
            .values({c: sa.bindparam(c) for c in numbered.columns})
            .compile(dialect=conn.dialect)
        )
        values = {c: sqlite_values(numbered[c]) for c in numbered.columns}
        tuples = list(zip(*(values[c] for c in compiled.positiontup or ()), strict=True))
        for batch in chunks(tuples, BATCH_ROWS):
            conn.exec_driver_sql(compiled.string, list(batch))
    else:
        lists = [python_values(numbered[c]) for c in numbered.columns]
        dicts = [dict(zip(numbered.columns, row, strict=True)) for row in zip(*lists, strict=True)]
        for batch in chunks(dicts, BATCH_ROWS):
            conn.execute(sa.insert(temp), list(batch))
    return _Staged(name)


# --- set-based steps ----------------------------------------------------------------------------------------
def _distinct(conn: sa.Connection, left: Sequence[str], right: Sequence[str]) -> str:
    """NULL-safe "some value differs" between two equally long lists of column expressions."""
    if conn.dialect.name == "postgresql":
        if len(left) == 1:
            return f"{left[0]} IS DISTINCT FROM {right[0]}"
        return f"({', '.join(left)}) IS DISTINCT FROM ({', '.join(right)})"
    return "(" + " OR ".join(f"{a} IS NOT {b}" for a, b in zip(left, right, strict=True)) + ")"


def _on_commit_drop(conn: sa.Connection) -> str:
    return " ON COMMIT DROP" if conn.dialect.name == "postgresql" else ""


def _diff(
    conn: sa.Connection,
    target: sa.Table,
    temp: str,
    key: list[str],
    columns: list[str],
    score_columns: list[str],
    has_deleted_at: bool,
) -> str:
    """Collect the incoming rows that must be written in a temporary table `_diff_<table>`:
    `_n` (the row of the load table), `is_new`, `restored` (was soft-deleted) and `scored` (needs a score
    history row). One join of the load table with the target; unchanged rows do not appear."""
    q = conn.dialect.identifier_preparer.quote
    name = f"_diff_{target.name}"
    on = " AND ".join(f"t.{q(k)} = s.{q(k)}" for k in key)
    values = [c for c in columns if c not in key]
    is_new = f"t.{q(key[0])} IS NULL"
    conditions = [is_new]
    restored = "t.deleted_at IS NOT NULL" if has_deleted_at else "1 = 0"
    if has_deleted_at:
        conditions.append(restored)
    if values:
        conditions.append(_distinct(conn, [f"t.{q(c)}" for c in values], [f"s.{q(c)}" for c in values]))
    scored = "1 = 0"
    if score_columns:
        has_score = " OR ".join(f"s.{q(c)} IS NOT NULL" for c in score_columns)
        differs = _distinct(conn, [f"t.{q(c)}" for c in score_columns], [f"s.{q(c)}" for c in score_columns])
        scored = f"CASE WHEN {is_new} THEN ({has_score}) ELSE ({differs}) END"
    conn.exec_driver_sql(f"DROP TABLE IF EXISTS {q(name)}")
    conn.exec_driver_sql(
        f"CREATE TEMPORARY TABLE {q(name)}{_on_commit_drop(conn)} AS "
        f"SELECT s._n AS _n, {is_new} AS is_new, {restored} AS restored, {scored} AS scored "
        f"FROM {q(temp)} s LEFT JOIN {q(target.name)} t ON {on} WHERE {' OR '.join(conditions)}"
    )
    return name


def _append_score_history(
    conn: sa.Connection,
    target: sa.Table,
    temp: str,
    diff: str,
    key: list[str],
    score_columns: list[str],
    run_id: str,
    recorded_at: datetime,
    frame: pd.DataFrame,
    new_rows: np.ndarray | None,
) -> int:
    """Append history for the enrollments the diff marked: new with a score, or with changed scores.

    Runs before the writes, so `target` still holds the previous values. A history row holds the scores as
    they stand after the load: the incoming values, and the stored ones for columns the frame lacks. With
    `new_rows` (PostgreSQL), the new enrollments' rows are built from the frame and COPYed.
    """
    total = 0
    if new_rows is not None and len(new_rows):
        total += _copy_new_history(conn, frame, new_rows, score_columns, run_id, recorded_at)
    q = conn.dialect.identifier_preparer.quote
    temp_columns = set(score_columns)
    need_target = len(score_columns) < len(SCORE_COLUMNS)
    after = [f"s.{q(c)}" if c in temp_columns else f"t.{q(c)}" for c in SCORE_COLUMNS]
    join_target = ""
    if need_target:
        on = " AND ".join(f"t.{q(k)} = s.{q(k)}" for k in key)
        join_target = f" LEFT JOIN {q(target.name)} t ON {on}"
    names = ["enrollment_id", "course_id", "user_id", "recorded_at", *SCORE_COLUMNS, "run_id"]
    stmt = sa.text(
        f"INSERT INTO canvas_score_history ({', '.join(q(n) for n in names)}) "
        f"SELECT s.id, s.course_id, s.user_id, :recorded_at, {', '.join(after)}, :run_id "
        f"FROM {q(diff)} d JOIN {q(temp)} s ON s._n = d._n{join_target} WHERE d.scored"
        + (" AND NOT d.is_new" if new_rows is not None else "")
    ).bindparams(sa.bindparam("recorded_at", type_=UTCDateTime()), sa.bindparam("run_id", type_=sa.String()))
    result = conn.execute(stmt, {"recorded_at": recorded_at, "run_id": run_id})
    return total + int(result.rowcount or 0)


def _copy_new_history(
    conn: sa.Connection,
    frame: pd.DataFrame,
    new_rows: np.ndarray,
    score_columns: list[str],
    run_id: str,
    recorded_at: datetime,
) -> int:
    """COPY the history rows of new enrollments that have a score (they have no stored scores)."""
    new = frame.iloc[new_rows]
    new = new[new[score_columns].notna().any(axis=1).to_numpy()]
    if not len(new):
        return 0
    history = table("canvas_score_history")
    n = len(new)
    rows = pd.DataFrame(
        {
            "enrollment_id": new["id"].to_numpy(),
            "course_id": new["course_id"].to_numpy(),
            "user_id": new["user_id"].to_numpy(),
            "recorded_at": pd.Series(
                np.full(n, np.datetime64(utc(recorded_at).replace(tzinfo=None), "us"))
            ).dt.tz_localize("UTC"),
        }
    )
    for c in SCORE_COLUMNS:
        if c in score_columns:
            rows[c] = new[c].to_numpy()
        else:
            rows[c] = pd.Series([None] * n, dtype="float64" if c.endswith("_score") else "string")
    rows["run_id"] = pd.Series([run_id] * n, dtype="string")
    encoded, _ = binary_copy_rows(rows, [history.c[c].type for c in rows.columns])
    _copy_binary(conn, history.name, list(rows.columns), encoded)
    return n


def _write_changes(
    conn: sa.Connection,
    target: sa.Table,
    staged: _Staged,
    diff: str,
    key: list[str],
    columns: list[str],
    has_deleted_at: bool,
    n_rows: int,
    new_rows: np.ndarray | None,
    any_written: bool = True,
) -> None:
    """UPDATE the changed rows and INSERT the new ones, in batches of `_n` ranges (a hook runs after each;
    with nothing to write, only the hook).

    Only rows of the diff are touched: an unchanged row is neither written nor locked. With `new_rows`
    (PostgreSQL) the new rows are COPYed from the encoded frame instead of INSERT ... SELECT."""
    q = conn.dialect.identifier_preparer.quote
    t = q(target.name)
    values = [c for c in columns if c not in key]
    assignments = [f"{q(c)} = s.{q(c)}" for c in values]
    if has_deleted_at:
        assignments.append("deleted_at = NULL")
    match = " AND ".join(f"{t}.{q(k)} = s.{q(k)}" for k in key)
    rows = f"FROM {q(staged.name)} s JOIN {q(diff)} d ON d._n = s._n"
    batch = "s._n >= :lo AND s._n < :hi"
    update = (
        f"UPDATE {t} SET {', '.join(assignments)} FROM (SELECT s.* {rows} WHERE NOT d.is_new AND {batch}) s "
        f"WHERE {match}"
    )
    insert = (
        f"INSERT INTO {t} ({', '.join(q(c) for c in columns)}) SELECT {', '.join(f's.{q(c)}' for c in columns)} "
        f"{rows} WHERE d.is_new AND {batch} ON CONFLICT ({', '.join(q(k) for k in key)}) DO NOTHING"
    )
    batch_rows = COPY_BATCH_ROWS if conn.dialect.name == "postgresql" else BATCH_ROWS
    for index, start in enumerate(range(0, n_rows, batch_rows)):
        bounds = {"lo": start, "hi": start + batch_rows}
        if not any_written:
            pass
        elif new_rows is None:
            if assignments:
                conn.execute(sa.text(update), bounds)
            conn.execute(sa.text(insert), bounds)
        else:
            assert staged.rows is not None and staged.offsets is not None
            if assignments:
                conn.execute(sa.text(update), bounds)
            in_batch = new_rows[(new_rows >= start) & (new_rows < start + batch_rows)]
            if len(in_batch):
                _copy_binary(conn, target.name, columns, _select_rows(staged.rows, staged.offsets, in_batch))
        _after_batch(target.name, index, min(batch_rows, n_rows - start))


def _soft_delete(
    conn: sa.Connection,
    target: sa.Table,
    scope: str,
    course_ids: Sequence[int],
    deleted_at: datetime,
    rejected: Sequence[Rejected],
    name: str,
    temp: str | None,
    key: list[str],
) -> list[int]:
    """Soft-delete the rows of `course_ids` whose key is not in this load (the load table `temp`; none: every
    row of those courses), except quarantined records. Returns the course of each row soft-deleted."""
    q = conn.dialect.identifier_preparer.quote
    t = q(target.name)
    id_column = CANVAS_ID_COLUMN[name]
    quarantined = sorted({int(r.canvas_id) for r in rejected if r.canvas_id is not None})
    postgres = conn.dialect.name == "postgresql"
    where = ["deleted_at IS NULL"]
    if temp is not None:
        if not postgres:  # SQLite probes the load table per row: give it the key's index
            conn.exec_driver_sql(
                f"CREATE UNIQUE INDEX IF NOT EXISTS {q(temp + '_key')} ON {q(temp)} "
                f"({', '.join(q(k) for k in key)})"
            )
        match = " AND ".join(f"s.{q(k)} = {t}.{q(k)}" for k in key)
        where.append(f"NOT EXISTS (SELECT 1 FROM {q(temp)} s WHERE {match})")
    params: dict[str, Any] = {"deleted_at": deleted_at}
    bind = [sa.bindparam("deleted_at", type_=UTCDateTime())]
    if postgres:
        where.append(f"{q(scope)} = ANY(CAST(:courses AS BIGINT[]))")
        if quarantined:
            where.append(f"NOT ({q(id_column)} = ANY(CAST(:quarantined AS BIGINT[])))")
            params["quarantined"] = quarantined
        course_chunks: list[Sequence[int]] = [list(course_ids)]
    else:
        where.append(f"{q(scope)} IN :courses")
        bind.append(sa.bindparam("courses", expanding=True))
        if quarantined:
            where.append(f"{q(id_column)} NOT IN :quarantined")
            bind.append(sa.bindparam("quarantined", expanding=True))
            params["quarantined"] = quarantined
        course_chunks = list(chunks(list(course_ids), IN_CHUNK))
    stmt = sa.text(
        f"UPDATE {t} SET deleted_at = :deleted_at WHERE {' AND '.join(where)} RETURNING {q(scope)}"
    ).bindparams(*bind)
    deleted: list[int] = []
    for chunk in course_chunks:
        deleted.extend(int(c) for c in conn.execute(stmt, {**params, "courses": list(chunk)}).scalars())
    return deleted


# --- per-course confirmations ----------------------------------------------------------------------------
def record_confirmations(
    conn: sa.Connection,
    entity: str,
    course_ids: Sequence[int],
    changed: set[int],
    *,
    run_id: str,
    at: datetime,
) -> None:
    """Upsert one `canvas_course_sync` row per course: confirmed at `at` (and changed, for `changed`)."""
    if not course_ids:
        return
    update = (
        "ON CONFLICT (entity, course_id) DO UPDATE SET confirmed_at = excluded.confirmed_at, "
        "fetched_at = excluded.fetched_at, run_id = excluded.run_id, "
        "changed_at = COALESCE(excluded.changed_at, canvas_course_sync.changed_at)"
    )
    columns = "(entity, course_id, confirmed_at, fetched_at, changed_at, run_id)"
    if conn.dialect.name == "postgresql":
        stmt = sa.text(
            f"INSERT INTO canvas_course_sync {columns} "
            "SELECT CAST(:entity AS VARCHAR), c.course_id, :at, st.fetched_at, "
            "CASE WHEN c.changed THEN CAST(:at AS TIMESTAMPTZ) END, CAST(:run_id AS VARCHAR) "
            "FROM unnest(CAST(:ids AS BIGINT[]), CAST(:changed AS BOOLEAN[])) AS c(course_id, changed) "
            "LEFT JOIN canvas_staging st ON st.entity = CAST(:entity AS VARCHAR) AND st.course_id = c.course_id "
            + update
        ).bindparams(sa.bindparam("at", type_=UTCDateTime()))
        conn.execute(
            stmt,
            {
                "entity": entity,
                "at": at,
                "run_id": run_id,
                "ids": list(course_ids),
                "changed": [c in changed for c in course_ids],
            },
        )
        return
    stmt = sa.text(
        f"INSERT INTO canvas_course_sync {columns} VALUES (:entity, :course_id, :at, "
        "(SELECT fetched_at FROM canvas_staging WHERE entity = :entity AND course_id = :course_id), "
        ":changed_at, :run_id) " + update
    ).bindparams(sa.bindparam("at", type_=UTCDateTime()), sa.bindparam("changed_at", type_=UTCDateTime()))
    conn.execute(
        stmt,
        [
            {
                "entity": entity,
                "course_id": c,
                "at": at,
                "changed_at": at if c in changed else None,
                "run_id": run_id,
            }
            for c in course_ids
        ],
    )
