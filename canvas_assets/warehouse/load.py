"""Layer-1 loads: change-only upsert, soft delete and score history, in the caller's single transaction.

Each incoming row gets a 64-bit fingerprint of its values (`bulk.row_hashes`, stored in `row_hash`), so only
rows that may have changed are shipped whole and compared. `load_table` follows the steps of
docs/architecture.md, "The load, step by step" (candidates, new rows, the diff, batched writes, soft delete);
`load_result` adds the confirmations (`canvas_course_sync`).
"""

from __future__ import annotations

from collections.abc import Collection, Sequence
from contextlib import closing
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import numpy as np
import pandas as pd
import sqlalchemy as sa

from canvas_assets.transform.base import TransformResult, incomplete_courses
from canvas_assets.transform.quarantine import Rejected
from canvas_assets.warehouse.bulk import (
    BATCH_ROWS,
    ROW_HASH,
    insert_frame,
    prepare_frame,
    row_hashes,
    stage_frame,
)
from canvas_assets.warehouse.columns import UTCDateTime
from canvas_assets.warehouse.confirmations import record_confirmations
from canvas_assets.warehouse.history import (
    HISTORY,
    append_history,
    marks_sql,
    new_row_history,
    tracked_columns,
)
from canvas_assets.warehouse.models import CANVAS_ID_COLUMN, COURSE_SCOPE_COLUMN, table
from canvas_assets.warehouse.sql import IN_CHUNK, chunks, distinct_sql, utc
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
    incomplete = incomplete_courses(result)
    # A rejection that names no table goes with the result's only table.
    only_table = next(iter(result.tables)) if len(result.tables) == 1 else None
    for name, frame in result.tables.items():
        stats.tables[name] = load_table(
            conn,
            name,
            frame,
            course_ids=course_ids,
            run_id=run_id,
            synced_at=synced_at,
            full_refresh=full_refresh,
            rejected=[r for r in result.rejected if (r.table or only_table) == name],
            changed_courses=changed,
            incomplete=incomplete.get(name, ()),
        )
    changed &= set(course_ids)
    unconfirmed = set().union(*incomplete.values())
    confirmed = [c for c in course_ids if c not in unconfirmed]
    record_confirmations(conn, result.entity, confirmed, changed, run_id=run_id, at=synced_at)
    stats.courses_confirmed = len(confirmed)
    stats.courses_changed = len(changed)
    return stats


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
    incomplete: Collection[int] = (),
) -> TableLoadStats:
    """Load one table's frame (see the module docstring). Runs inside the caller's transaction.

    `changed_courses`, when given, receives the courses (of a course-scoped table) in which a row was written.
    `incomplete`: courses whose list is incomplete; their rows are upserted but none is soft-deleted.
    """
    target = table(name)
    stats = TableLoadStats(name)
    key = [c.name for c in target.primary_key.columns]
    frame = prepare_frame(frame, target, key)
    has_deleted_at = "deleted_at" in target.c
    scope = COURSE_SCOPE_COLUMN.get(name)
    changed = changed_courses if changed_courses is not None else set()
    q = conn.dialect.identifier_preparer.quote
    keys: str | None = None

    fresh = False
    if len(frame):
        frame[ROW_HASH] = row_hashes(frame, target, key)
        stats.rows = len(frame)
        history = HISTORY.get(name)
        tracked = tracked_columns(history, list(frame.columns))
        updates: _Updates | None = None
        new_rows = np.arange(len(frame))
        fresh = _load_fresh_courses(conn, target, scope, frame, course_ids, key, has_deleted_at)
        if not fresh:
            keys = stage_frame(conn, target, frame[[*key, ROW_HASH]], name=f"_keys_{name}")
            new_rows, existing = _candidates(conn, target, keys, key, has_deleted_at)
            if history is not None and tracked and len(new_rows):
                stats.history_rows += new_row_history(
                    conn, history, frame.iloc[new_rows], tracked, run_id, synced_at
                )
            if len(existing):
                rows = frame.iloc[existing].reset_index(drop=True)
                updates = _compare(conn, target, rows, key, has_deleted_at)
                stats.updated, stats.restored = updates.written, updates.restored
                if history is not None and tracked and updates.written:
                    stats.history_rows += append_history(
                        conn, history, target, updates.temp, updates.diff, key, tracked, run_id, synced_at
                    )
            _write(conn, target, frame, key, has_deleted_at, new_rows, existing, updates)
        elif history is not None and tracked:
            stats.history_rows += new_row_history(conn, history, frame, tracked, run_id, synced_at)
        stats.inserted = len(new_rows)
        stats.unchanged = stats.rows - stats.inserted - stats.updated
        if scope is not None and scope in frame.columns:
            changed.update(int(c) for c in pd.unique(frame[scope].to_numpy()[new_rows]))
            if updates is not None and updates.written:
                changed.update(
                    int(c)
                    for c in conn.execute(
                        sa.text(
                            f"SELECT DISTINCT s.{q(scope)} FROM {q(updates.temp)} s "
                            f"JOIN {q(updates.diff)} d ON d._n = s._n"
                        )
                    ).scalars()
                )
        if updates is not None:
            conn.exec_driver_sql(f"DROP TABLE {q(updates.diff)}")
            conn.exec_driver_sql(f"DROP TABLE {q(updates.temp)}")

    # Courses that had no row before this load have none to soft-delete; an incomplete list deletes nothing.
    skipped = set(incomplete)
    complete = [c for c in course_ids if c not in skipped] if skipped else course_ids
    if full_refresh and scope is not None and has_deleted_at and complete and not fresh:
        deleted = _soft_delete(conn, target, scope, complete, synced_at, rejected, keys, key)
        stats.soft_deleted = len(deleted)
        changed.update(deleted)
    if keys is not None:
        conn.exec_driver_sql(f"DROP TABLE {q(keys)}")
    return stats


# --- set-based steps ----------------------------------------------------------------------------------------
def _load_fresh_courses(
    conn: sa.Connection,
    target: sa.Table,
    scope: str | None,
    frame: pd.DataFrame,
    course_ids: Sequence[int],
    key: list[str],
    has_deleted_at: bool,
) -> bool:
    """The first load of courses: when the table holds no row of the frame's courses nor of `course_ids`,
    every row is new, and the frame goes straight into the table, without staging keys, comparing, or
    looking for rows to soft-delete. Under a savepoint: a key that lives in another course after all makes
    the insert fail, and the caller takes the general path (returns False)."""
    if scope is None or scope not in frame.columns:
        return False
    courses = sorted({int(c) for c in course_ids} | {int(c) for c in pd.unique(frame[scope].dropna())})
    any_row = sa.select(sa.literal(1)).select_from(target)
    if any(conn.execute(any_row.where(target.c[scope].in_(c)).limit(1)).first() for c in chunks(courses)):
        return False
    everything, nothing = np.arange(len(frame)), np.zeros(0, dtype=np.int64)
    integrity_errors = (
        sa.exc.IntegrityError,
        getattr(conn.dialect.dbapi, "IntegrityError", sa.exc.IntegrityError),
    )
    try:
        with conn.begin_nested():
            _write(conn, target, frame, key, has_deleted_at, everything, nothing, None)
    except integrity_errors:
        return False
    return True


def _candidates(
    conn: sa.Connection, target: sa.Table, keys: str, key: list[str], has_deleted_at: bool
) -> tuple[np.ndarray, np.ndarray]:
    """(the frame positions of new rows, those of existing rows that may have changed: soft-deleted, or a
    stored fingerprint that differs or is NULL), both ascending. One join of `_keys_<table>` with the
    target; rows whose fingerprint matches are not returned at all."""
    q = conn.dialect.identifier_preparer.quote
    on = " AND ".join(f"t.{q(k)} = s.{q(k)}" for k in key)
    is_new = f"t.{q(key[0])} IS NULL"
    differs = distinct_sql(conn, [f"t.{q(ROW_HASH)}"], [f"s.{q(ROW_HASH)}"])
    conditions = [is_new, differs] + (["t.deleted_at IS NOT NULL"] if has_deleted_at else [])
    with closing(conn.connection.dbapi_connection.cursor()) as cursor:  # type: ignore[union-attr]
        cursor.execute(
            f"SELECT s._n, CASE WHEN {is_new} THEN 1 ELSE 0 END FROM {q(keys)} s "
            f"LEFT JOIN {q(target.name)} t ON {on} WHERE {' OR '.join(conditions)}"
        )
        found = np.array(cursor.fetchall(), dtype=np.int64).reshape(-1, 2)
    found = found[np.argsort(found[:, 0], kind="stable")]
    new = found[:, 1] == 1
    return found[new, 0], found[~new, 0]


@dataclass
class _Updates:
    """The existing rows a load rewrites: `temp` holds the candidates (numbered `_n` in the order of the
    frame), `diff` the `_n` of those to write; how many, and how many of them are restored."""

    temp: str
    diff: str
    written: int
    restored: int


def _compare(
    conn: sa.Connection, target: sa.Table, rows: pd.DataFrame, key: list[str], has_deleted_at: bool
) -> _Updates:
    """Copy the candidate rows into `_load_<table>` and collect in `_diff_<table>` those that must be
    written: `_n`, `restored` (was soft-deleted) and `scored` (needs a history row: `history.marks_sql`).
    One join with the target; candidates whose values all match (a fingerprint of another column set) do
    not appear."""
    q = conn.dialect.identifier_preparer.quote
    temp = stage_frame(conn, target, rows)
    columns = [c for c in rows.columns if c != ROW_HASH]
    values = [c for c in columns if c not in key]
    history = HISTORY.get(target.name)
    tracked = tracked_columns(history, columns)
    scored = marks_sql(conn, history, tracked, "1 = 0") if history and tracked else "1 = 0"
    restored = "t.deleted_at IS NOT NULL" if has_deleted_at else "1 = 0"
    conditions = [f"t.{q(ROW_HASH)} IS NULL", restored]
    if values:
        conditions.append(distinct_sql(conn, [f"t.{q(c)}" for c in values], [f"s.{q(c)}" for c in values]))
    diff = f"_diff_{target.name}"
    on = " AND ".join(f"t.{q(k)} = s.{q(k)}" for k in key)
    on_commit_drop = " ON COMMIT DROP" if conn.dialect.name == "postgresql" else ""
    conn.exec_driver_sql(f"DROP TABLE IF EXISTS {q(diff)}")
    conn.exec_driver_sql(
        f"CREATE TEMPORARY TABLE {q(diff)}{on_commit_drop} AS "
        f"SELECT s._n AS _n, {restored} AS restored, {scored} AS scored "
        f"FROM {q(temp)} s JOIN {q(target.name)} t ON {on} WHERE {' OR '.join(conditions)}"
    )
    written, restored_count = conn.execute(
        sa.text(f"SELECT COUNT(*), COALESCE(SUM(CASE WHEN restored THEN 1 ELSE 0 END), 0) FROM {q(diff)}")
    ).one()
    return _Updates(temp, diff, int(written), int(restored_count))


def _write(
    conn: sa.Connection,
    target: sa.Table,
    frame: pd.DataFrame,
    key: list[str],
    has_deleted_at: bool,
    new_rows: np.ndarray,
    existing: np.ndarray,
    updates: _Updates | None,
) -> None:
    """INSERT the new rows and UPDATE the rows of the diff, in batches of ranges of the frame's rows (a hook
    runs after each, with nothing to write too). Unchanged rows are neither written nor locked."""
    q = conn.dialect.identifier_preparer.quote
    t = q(target.name)
    update: str | None = None
    if updates is not None and updates.written:
        assignments = [f"{q(c)} = s.{q(c)}" for c in frame.columns if c not in key]
        if has_deleted_at:
            assignments.append("deleted_at = NULL")
        match = " AND ".join(f"{t}.{q(k)} = s.{q(k)}" for k in key)
        update = (
            f"UPDATE {t} SET {', '.join(assignments)} FROM (SELECT s.* FROM {q(updates.temp)} s "
            f"JOIN {q(updates.diff)} d ON d._n = s._n WHERE s._n >= :lo AND s._n < :hi) s WHERE {match}"
        )
    batch_rows = COPY_BATCH_ROWS if conn.dialect.name == "postgresql" else BATCH_ROWS
    for index, start in enumerate(range(0, len(frame), batch_rows)):
        end = start + batch_rows
        batch = new_rows[(new_rows >= start) & (new_rows < end)]
        if len(batch):
            insert_frame(conn, target, frame.iloc[batch])
        if update is not None:  # the candidates are numbered in frame order: this batch's are a range
            lo, hi = np.searchsorted(existing, [start, end])
            if hi > lo:
                conn.execute(sa.text(update), {"lo": int(lo), "hi": int(hi)})
        _after_batch(target.name, index, min(batch_rows, len(frame) - start))


def _soft_delete(
    conn: sa.Connection,
    target: sa.Table,
    scope: str,
    course_ids: Sequence[int],
    deleted_at: datetime,
    rejected: Sequence[Rejected],
    temp: str | None,
    key: list[str],
) -> list[int]:
    """Soft-delete the rows of `course_ids` whose key is not in this load (the load table `temp`; none: every
    row of those courses), except quarantined records. Returns the course of each row soft-deleted."""
    q = conn.dialect.identifier_preparer.quote
    t = q(target.name)
    id_column = CANVAS_ID_COLUMN[target.name]
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


# A table whose rows this load wrote by more than this share of what PostgreSQL last counted (or which it has
# never counted) is analyzed at once: the share and the floor are autovacuum's defaults for ANALYZE.
ANALYZE_SHARE = 0.1
ANALYZE_FLOOR = 50


def refresh_statistics(engine: sa.Engine, stats: LoadStats) -> list[str]:
    """ANALYZE the tables a committed load changed by a tenth or more (PostgreSQL), and return their names:
    until autovacuum comes round, the planner would plan for the empty table a first load filled."""
    if engine.dialect.name != "postgresql":
        return []
    written = {name: s.written for name, s in stats.tables.items()}
    for name, s in stats.tables.items():
        history = HISTORY.get(name)
        if history is not None and s.history_rows:
            written[history.table] = written.get(history.table, 0) + s.history_rows
    written = {name: n for name, n in written.items() if n > 0}
    if not written:
        return []
    stale: list[str] = []
    with engine.connect() as conn:
        query = sa.text(
            "SELECT relname, reltuples FROM pg_class "
            "WHERE relkind = 'r' AND relname IN :names AND pg_table_is_visible(oid)"
        ).bindparams(sa.bindparam("names", expanding=True))
        counted: dict[str, float] = {n: float(r) for n, r in conn.execute(query, {"names": sorted(written)})}
        for name in sorted(written):
            before = counted.get(name)
            if before is None:
                continue
            if before < 0 or written[name] > ANALYZE_FLOOR + ANALYZE_SHARE * before:
                conn.exec_driver_sql(f'ANALYZE "{name}"')
                stale.append(name)
        conn.commit()
    return stale
