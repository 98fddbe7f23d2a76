"""The inbox (`canvas_live_events`): received events committed before they are acknowledged.

`store` inserts a batch in one transaction and skips events already there (same key: a redelivery, or the
same event received by another consumer), so the caller may acknowledge the whole batch once it returns.
Pending events (`applied_at IS NULL`) are what the applier works through.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime, timezone

import sqlalchemy as sa

from canvas_assets.live.events import LiveEvent
from canvas_assets.warehouse.engine import write_transaction
from canvas_assets.warehouse.models import table
from canvas_assets.warehouse.sql import upsert_statement

INBOX = "canvas_live_events"


def store(engine: sa.Engine, events: Sequence[LiveEvent], *, source: str) -> set[str]:
    """Commit `events` to the inbox (one transaction); the keys of those that were new."""
    if not events:
        return set()
    now = datetime.now(timezone.utc)
    unique = {e.key: e for e in events}
    rows = [
        {
            "event_key": e.key,
            "event_name": e.name,
            "event_time": e.event_time,
            "course_id": e.course_id,
            "payload": e.raw,
            "source": source,
            "received_at": now,
        }
        for e in unique.values()
    ]
    t = table(INBOX)
    with write_transaction(engine) as conn:
        stmt = upsert_statement(conn, t).on_conflict_do_nothing(index_elements=["event_key"])
        if conn.dialect.name == "postgresql":
            return {r[0] for r in conn.execute(stmt.returning(t.c.event_key), rows)}
        # SQLite: the write lock is held from BEGIN IMMEDIATE, so what is there now is what the insert skips.
        there = set(conn.execute(sa.select(t.c.event_key).where(t.c.event_key.in_(list(unique)))).scalars())
        conn.execute(stmt, rows)
        return set(unique) - there


def pending(conn: sa.Connection, limit: int) -> list[tuple[str, str]]:
    """Up to `limit` pending events as (event_key, payload), oldest event first."""
    rows = conn.execute(
        sa.text(
            "SELECT event_key, payload FROM canvas_live_events WHERE applied_at IS NULL "
            "ORDER BY event_time, event_key LIMIT :n"
        ),
        {"n": limit},
    )
    return [(r[0], r[1]) for r in rows]


def mark_applied(conn: sa.Connection, outcomes: dict[str, str], at: datetime) -> None:
    """Record each event's outcome and when it was applied (in the applying transaction)."""
    if not outcomes:
        return
    t = table(INBOX)
    stmt = (
        t.update()
        .where(t.c.event_key == sa.bindparam("_key"))
        .values(applied_at=sa.bindparam("_at", type_=t.c.applied_at.type), outcome=sa.bindparam("_outcome"))
    )
    conn.execute(stmt, [{"_key": k, "_at": at, "_outcome": o} for k, o in outcomes.items()])


def counts(engine: sa.Engine) -> dict[str, int]:
    """Events in the inbox per outcome (`pending` for those not applied yet)."""
    with engine.connect() as conn:
        rows = conn.execute(
            sa.text("SELECT COALESCE(outcome, 'pending'), COUNT(*) FROM canvas_live_events GROUP BY 1")
        )
        return {str(r[0]): int(r[1]) for r in rows}
