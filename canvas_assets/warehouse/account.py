"""Loads of account-level tables (the account's terms): not scoped to a course, loaded whole, and soft-deleted
only from a complete list (docs/architecture.md, "The load, step by step")."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

import sqlalchemy as sa

from canvas_assets.transform.base import TransformResult, incomplete_courses
from canvas_assets.warehouse.columns import UTCDateTime
from canvas_assets.warehouse.load import load_table
from canvas_assets.warehouse.models import CANVAS_ID_COLUMN, table
from canvas_assets.warehouse.sql import utc


@dataclass
class AccountLoad:
    """What an account-level load did."""

    rows: int
    inserted: int
    updated: int
    soft_deleted: int
    complete: bool  # the list was complete and well formed, so vanished rows were soft-deleted


def load_account_table(
    conn: sa.Connection, result: TransformResult, *, run_id: str, synced_at: datetime
) -> AccountLoad:
    """Upsert the one table of an account-level transform and soft-delete what a complete list no longer
    holds, in the caller's transaction."""
    ((name, frame),) = result.tables.items()
    synced_at = utc(synced_at)
    stats = load_table(
        conn, name, frame, course_ids=[], run_id=run_id, synced_at=synced_at, full_refresh=False
    )
    complete = not incomplete_courses(result)
    gone: list[int] = []
    if complete:
        target = table(name)
        ids = target.c[CANVAS_ID_COLUMN[name]]
        kept = {int(v) for v in frame[ids.name].tolist()} if len(frame) else set()
        kept |= {int(r.canvas_id) for r in result.rejected if r.canvas_id is not None}
        # Few rows: the live ids are compared here, not in SQL.
        live = conn.execute(sa.select(ids).where(target.c.deleted_at.is_(None))).scalars().all()
        gone = sorted(int(i) for i in live if int(i) not in kept)
        if gone:
            deleted_at = sa.bindparam("at", type_=UTCDateTime())
            conn.execute(
                sa.update(target).where(ids.in_(gone)).values(deleted_at=deleted_at), {"at": synced_at}
            )
    return AccountLoad(stats.rows, stats.inserted, stats.updated, len(gone), complete)
