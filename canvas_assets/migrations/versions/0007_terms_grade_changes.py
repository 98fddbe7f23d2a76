"""The account's enrollment terms and Canvas's grade change audit log: `canvas_terms`, `canvas_grade_changes`.

Revision ID: 0007_terms_grade_changes
Revises: 0005_sync_log_repeated_ids
Create Date: 2026-12-07

`canvas_terms` mirrors the root account's enrollment terms (an account-level table, not scoped to a course;
`canvas_courses.enrollment_term_id` joins it). `canvas_grade_changes` holds one row per event of Canvas's
grade change audit log, keyed by the event's uuid; events are append-only, so it has no `deleted_at`. The
downgrade drops both tables.
"""

from typing import Sequence, Union

import sqlalchemy as sa
from alembic import op

# revision identifiers, used by Alembic.
revision: str = "0007_terms_grade_changes"
down_revision: Union[str, Sequence[str], None] = "0006_sections_groups_periods"
branch_labels: Union[str, Sequence[str], None] = None
depends_on: Union[str, Sequence[str], None] = None


def upgrade() -> None:
    op.create_table(
        "canvas_terms",
        sa.Column("id", sa.BigInteger(), autoincrement=False, nullable=False),
        sa.Column("name", sa.Text(), nullable=True),
        sa.Column("sis_term_id", sa.Text(), nullable=True),
        sa.Column("start_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("end_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("workflow_state", sa.Text(), nullable=True),
        sa.Column("grading_period_group_id", sa.BigInteger(), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("deleted_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("row_hash", sa.BigInteger(), nullable=True),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_canvas_terms")),
    )
    op.create_table(
        "canvas_grade_changes",
        sa.Column("id", sa.Text(), nullable=False),
        sa.Column("course_id", sa.BigInteger(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("event_type", sa.Text(), nullable=True),
        sa.Column("assignment_id", sa.BigInteger(), nullable=True),
        sa.Column("student_id", sa.BigInteger(), nullable=True),
        sa.Column("grader_id", sa.BigInteger(), nullable=True),
        sa.Column("grade_before", sa.Text(), nullable=True),
        sa.Column("grade_after", sa.Text(), nullable=True),
        sa.Column("excused_before", sa.Boolean(), nullable=True),
        sa.Column("excused_after", sa.Boolean(), nullable=True),
        sa.Column("graded_anonymously", sa.Boolean(), nullable=True),
        sa.Column("points_possible_before", sa.Float(), nullable=True),
        sa.Column("points_possible_after", sa.Float(), nullable=True),
        sa.Column("version_number", sa.Text(), nullable=True),
        sa.Column("request_id", sa.Text(), nullable=True),
        sa.Column("course_override_grade", sa.Boolean(), nullable=True),
        sa.Column("row_hash", sa.BigInteger(), nullable=True),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_canvas_grade_changes")),
    )
    op.create_index(
        op.f("ix_canvas_grade_changes_course_id_created_at"),
        "canvas_grade_changes",
        ["course_id", "created_at"],
        unique=False,
    )


def downgrade() -> None:
    op.drop_index(op.f("ix_canvas_grade_changes_course_id_created_at"), table_name="canvas_grade_changes")
    op.drop_table("canvas_grade_changes")
    op.drop_table("canvas_terms")
