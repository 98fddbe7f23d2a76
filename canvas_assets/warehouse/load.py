"""Layer-1 loads: change-only upsert, soft delete and score history, in the caller's single transaction.

For each table of a `TransformResult`, the frame is first bulk-copied into a temporary table `_load_<table>`
(PostgreSQL: COPY; gone at rollback, dropped after use); everything else is set-based SQL between that table
and the target, inside the one transaction `Warehouse.load` opens:

1. diff: one join of the incoming rows with the target collects, in a temporary `_diff_<table>`, the rows
   that are new, that were soft-deleted (restored), or whose values differ (`IS DISTINCT FROM`, NULL-safe)
   in the columns PRESENT in the frame. Unchanged rows are never touched again: a re-sync of identical
   Canvas data writes no Layer-1 row at all (PostgreSQL's n_tup_upd / n_tup_ins stay put, no row lock,
   no index entry, no WAL), and a re-sync in which k records changed writes exactly those k rows;
2. for a table with a history (`models.HISTORY`: enrollment scores, submission grades), a history row for
   each row that is new (with a value) or whose tracked values differ from the stored ones; computed in the
   diff, before any write, so it compares with exactly the values this load replaces (`history`);
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

Speed: loading must not be the bottleneck. The frame goes to the database in bulk (`bulk`: binary COPY on
PostgreSQL) and the comparison runs in the database (a hash join), so a re-sync costs one COPY plus one
join (benchmarks/load_benchmark.py).
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Any

import numpy as np
import pandas as pd
import sqlalchemy as sa

from canvas_assets.transform.base import TransformResult
from canvas_assets.transform.quarantine import Rejected
from canvas_assets.warehouse.bulk import (
    BATCH_ROWS,
    Staged,
    copy_binary,
    prepare_frame,
    select_rows,
    stage_frame,
)
from canvas_assets.warehouse.confirmations import record_confirmations
from canvas_assets.warehouse.history import append_history, marks_sql, tracked_columns
from canvas_assets.warehouse.models import (
    CANVAS_ID_COLUMN,
    COURSE_SCOPE_COLUMN,
    HISTORY,
    UTCDateTime,
    table,
)
from canvas_assets.warehouse.staging import IN_CHUNK, chunks, distinct_sql, utc
from canvas_assets.warehouse.stats import LoadStats, TableLoadStats

COPY_BATCH_ROWS = 1_000_000  # rows per write batch (PostgreSQL): one statement for a whole ranged run
PG_WORK_MEM = "128MB"  # per load transaction: the diff's hash joins stay in memory


def _after_batch(table_name: str, batch_index: int, rows: int) -> None:
    """Called after each write batch. A seam for tests that need a failure half-way through a load."""


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
        staged = stage_frame(conn, target, frame)
        temp = staged.name
        history = HISTORY.get(name)
        tracked = tracked_columns(history, columns)
        scored = marks_sql(conn, history, tracked, f"t.{q(key[0])} IS NULL") if history and tracked else None
        diff = _diff(conn, target, temp, key, columns, scored, has_deleted_at)
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
        if history is not None and tracked and written:
            stats.history_rows = append_history(
                conn, history, target, temp, diff, key, tracked, run_id, synced_at, frame, new_rows
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


# --- set-based steps ----------------------------------------------------------------------------------------
def _on_commit_drop(conn: sa.Connection) -> str:
    return " ON COMMIT DROP" if conn.dialect.name == "postgresql" else ""


def _diff(
    conn: sa.Connection,
    target: sa.Table,
    temp: str,
    key: list[str],
    columns: list[str],
    scored: str | None,
    has_deleted_at: bool,
) -> str:
    """Collect the incoming rows that must be written in a temporary table `_diff_<table>`:
    `_n` (the row of the load table), `is_new`, `restored` (was soft-deleted) and `scored` (needs a history
    row: the SQL of `history.marks_sql`). One join of the load table with the target; unchanged rows do not
    appear."""
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
        conditions.append(distinct_sql(conn, [f"t.{q(c)}" for c in values], [f"s.{q(c)}" for c in values]))
    scored = scored or "1 = 0"
    conn.exec_driver_sql(f"DROP TABLE IF EXISTS {q(name)}")
    conn.exec_driver_sql(
        f"CREATE TEMPORARY TABLE {q(name)}{_on_commit_drop(conn)} AS "
        f"SELECT s._n AS _n, {is_new} AS is_new, {restored} AS restored, {scored} AS scored "
        f"FROM {q(temp)} s LEFT JOIN {q(target.name)} t ON {on} WHERE {' OR '.join(conditions)}"
    )
    return name


def _write_changes(
    conn: sa.Connection,
    target: sa.Table,
    staged: Staged,
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
                copy_binary(conn, target.name, columns, select_rows(staged.rows, staged.offsets, in_batch))
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
