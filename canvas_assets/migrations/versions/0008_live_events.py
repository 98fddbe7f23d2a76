"""Live events: the inbox `canvas_live_events` and the per-row live record `canvas_live_rows`.

Revision ID: 0008_live_events
Revises: 0005_sync_log_repeated_ids
Create Date: 2026-12-07

`canvas-assets live` stores every Canvas Live Event it receives in `canvas_live_events` before it
acknowledges it, then applies it to the Layer-1 tables; `canvas_live_rows` remembers, per row and column,
the event time of the value the live path wrote (older events never overwrite newer values; the nightly
reconciliation compares them with the REST sync). Two new tables; nothing existing changes. The downgrade
drops them.
"""

from collections.abc import Sequence
from typing import Union

import sqlalchemy as sa
from alembic import op

# revision identifiers, used by Alembic.
revision: str = "0008_live_events"
down_revision: Union[str, Sequence[str], None] = "0007_terms_grade_changes"
branch_labels: Union[str, Sequence[str], None] = None
depends_on: Union[str, Sequence[str], None] = None


def upgrade() -> None:
    op.create_table(
        "canvas_live_events",
        sa.Column("event_key", sa.String(64), nullable=False),
        sa.Column("event_name", sa.String(64), nullable=False),
        sa.Column("event_time", sa.DateTime(timezone=True), nullable=False),
        sa.Column("course_id", sa.BigInteger(), nullable=True),
        sa.Column("payload", sa.Text(), nullable=False),
        sa.Column("source", sa.String(16), nullable=False),
        sa.Column("received_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("applied_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("outcome", sa.String(16), nullable=True),
        sa.PrimaryKeyConstraint("event_key", name="pk_canvas_live_events"),
    )
    op.create_index("ix_canvas_live_events_applied_at", "canvas_live_events", ["applied_at"])
    op.create_index(
        "ix_canvas_live_events_course_id_event_time", "canvas_live_events", ["course_id", "event_time"]
    )
    op.create_table(
        "canvas_live_rows",
        sa.Column("table_name", sa.String(64), nullable=False),
        sa.Column("row_id", sa.BigInteger(), autoincrement=False, nullable=False),
        sa.Column("course_id", sa.BigInteger(), nullable=True),
        sa.Column("event_time", sa.DateTime(timezone=True), nullable=False),
        sa.Column("columns_json", sa.Text(), nullable=False),
        sa.Column("applied_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("reconciled_at", sa.DateTime(timezone=True), nullable=True),
        sa.PrimaryKeyConstraint("table_name", "row_id", name="pk_canvas_live_rows"),
    )
    op.create_index("ix_canvas_live_rows_course_id", "canvas_live_rows", ["course_id"])


def downgrade() -> None:
    op.drop_index("ix_canvas_live_rows_course_id", table_name="canvas_live_rows")
    op.drop_table("canvas_live_rows")
    op.drop_index("ix_canvas_live_events_course_id_event_time", table_name="canvas_live_events")
    op.drop_index("ix_canvas_live_events_applied_at", table_name="canvas_live_events")
    op.drop_table("canvas_live_events")
