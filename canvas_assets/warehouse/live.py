"""The live-event tables: the inbox every received Canvas Live Event is committed to before it is acknowledged
(keyed by a digest of the event's content, so a redelivery is a no-op insert), and per Layer-1 row what the
live path last wrote and when Canvas said it (docs/operations.md, "Live events").
"""

from __future__ import annotations

from datetime import datetime

import sqlalchemy as sa
from sqlalchemy.orm import Mapped

from canvas_assets.warehouse.columns import Base, column


class CanvasLiveEvent(Base):
    """Append-only inbox: one row per distinct Live Event received (SQS or HTTPS), applied or not yet."""

    __tablename__ = "canvas_live_events"

    event_key: Mapped[str] = column(
        "SHA-256 (hex) of the event's canonical JSON (null fields dropped, keys sorted): the format has no event id",
        type_=sa.String(64),
        primary_key=True,
    )
    event_name: Mapped[str] = column("`metadata.event_name`, e.g. `grade_change`", type_=sa.String(64))
    event_time: Mapped[datetime] = column("`metadata.event_time`: when Canvas made the change")
    course_id: Mapped[int | None] = column(
        "Local Canvas course id the event concerns (from the metadata's Course context or the body)"
    )
    payload: Mapped[str] = column("The event as received (JSON text of `{metadata, body}`)")
    source: Mapped[str] = column("`sqs` or `https`", type_=sa.String(16))
    received_at: Mapped[datetime] = column("When the consumer committed the event to the inbox")
    applied_at: Mapped[datetime | None] = column(
        "When the event was applied to Layer 1 (committed with the rows); NULL while pending"
    )
    outcome: Mapped[str | None] = column(
        "`applied`, `unchanged`, `stale` (older than the stored values or the REST fetch), `unmatched` "
        "(no row), `ignored` or `bad`; NULL while pending",
        type_=sa.String(16),
    )

    __table_args__ = (
        sa.Index(None, "applied_at"),
        sa.Index(None, "course_id", "event_time"),
    )


class CanvasLiveRow(Base):
    """What the live path last wrote into one Layer-1 row: per column, the value and its event time."""

    __tablename__ = "canvas_live_rows"

    table_name: Mapped[str] = column(
        "Layer-1 table of the row (`canvas_submissions`, ...)", type_=sa.String(64), primary_key=True
    )
    row_id: Mapped[int] = column(
        "Canvas id of the row", type_=sa.BigInteger(), primary_key=True, autoincrement=False
    )
    course_id: Mapped[int | None] = column("Course of the row")
    event_time: Mapped[datetime] = column("Newest event time among the row's live columns")
    columns_json: Mapped[str] = column(
        "JSON object: column -> [event_time ISO, value] of each column the live path wrote, e.g. "
        '`{"score": ["2026-12-07T09:00:00.123000+00:00", 8.5]}`'
    )
    applied_at: Mapped[datetime] = column("When the live path last wrote the row")
    reconciled_at: Mapped[datetime | None] = column(
        "When the reconciliation after a REST sync last compared the row's live values; NULL before"
    )

    __table_args__ = (sa.Index(None, "course_id"),)
