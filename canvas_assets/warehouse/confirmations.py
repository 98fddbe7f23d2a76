"""Per-course confirmations (`canvas_course_sync`): when Canvas last confirmed a course's rows of an entity.

Layer-1 rows are written only when they change, so they carry no per-row sync time; every load writes one
row per (entity, course) here instead (`models.CanvasCourseSync`).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from datetime import datetime
from typing import Any

import sqlalchemy as sa

from canvas_assets.warehouse.columns import UTCDateTime
from canvas_assets.warehouse.models import table
from canvas_assets.warehouse.sql import chunks


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
    params = {"entity": entity, "at": at, "run_id": run_id}
    if conn.dialect.name == "postgresql":
        stmt = sa.text(
            f"INSERT INTO canvas_course_sync {columns} "
            "SELECT CAST(:entity AS VARCHAR), c.course_id, :at, st.fetched_at, "
            "CASE WHEN c.changed THEN CAST(:at AS TIMESTAMPTZ) END, CAST(:run_id AS VARCHAR) "
            "FROM unnest(CAST(:ids AS BIGINT[]), CAST(:changed AS BOOLEAN[])) AS c(course_id, changed) "
            "LEFT JOIN canvas_staging st ON st.entity = CAST(:entity AS VARCHAR) AND st.course_id = c.course_id "
            + update
        ).bindparams(sa.bindparam("at", type_=UTCDateTime()))
        conn.execute(stmt, {**params, "ids": list(course_ids), "changed": [c in changed for c in course_ids]})
        return
    stmt = sa.text(
        f"INSERT INTO canvas_course_sync {columns} VALUES (:entity, :course_id, :at, "
        "(SELECT fetched_at FROM canvas_staging WHERE entity = :entity AND course_id = :course_id), "
        ":changed_at, :run_id) " + update
    ).bindparams(sa.bindparam("at", type_=UTCDateTime()), sa.bindparam("changed_at", type_=UTCDateTime()))
    rows = [{**params, "course_id": c, "changed_at": at if c in changed else None} for c in course_ids]
    conn.execute(stmt, rows)


def read_confirmations(
    conn: sa.Connection, entity: str | None = None, course_ids: Iterable[int] | None = None
) -> list[dict[str, Any]]:
    """`canvas_course_sync` rows (entity, course_id, confirmed_at, fetched_at, changed_at, run_id)."""
    t = table("canvas_course_sync")
    query = sa.select(t).order_by(t.c.course_id, t.c.entity)
    if entity is not None:
        query = query.where(t.c.entity == entity)
    if course_ids is None:
        return [dict(r._mapping) for r in conn.execute(query)]
    out: list[dict[str, Any]] = []
    for chunk in chunks(sorted({int(c) for c in course_ids})):
        out.extend(dict(r._mapping) for r in conn.execute(query.where(t.c.course_id.in_(chunk))))
    return sorted(out, key=lambda r: (r["course_id"], r["entity"]))
