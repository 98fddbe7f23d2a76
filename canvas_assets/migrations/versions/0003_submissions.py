"""Submissions: `canvas_submissions`, its score history, and the incremental fetch state in staging.

Revision ID: 0003_submissions
Revises: 0002_change_only_loads
Create Date: 2026-11-30

Adds the Layer-1 table `canvas_submissions` (one row per assignment and student), the history table
`canvas_submission_score_history` (a row each time a submission is first graded or its score, grade or
state changes) and three columns on `canvas_staging` that describe how a course's records were fetched:
`fetch_mode` (full or incremental), `full_fetched_at` (the latest full fetch) and `watermark` (for an
incremental entity, the latest Canvas change time among the records). They live in the staging row so that
they are committed with the records they describe. Existing staging rows were full fetches: they get
`fetch_mode = 'full'` and `full_fetched_at = fetched_at`.
"""

from typing import Sequence, Union

import sqlalchemy as sa
from alembic import op

# revision identifiers, used by Alembic.
revision: str = "0003_submissions"
down_revision: Union[str, Sequence[str], None] = "0002_change_only_loads"
branch_labels: Union[str, Sequence[str], None] = None
depends_on: Union[str, Sequence[str], None] = None

SURROGATE_KEY = sa.BigInteger().with_variant(sa.Integer(), "sqlite")


def upgrade() -> None:
    op.create_table(
        "canvas_submissions",
        sa.Column("id", sa.BigInteger(), autoincrement=False, nullable=False),
        sa.Column("course_id", sa.BigInteger(), nullable=False),
        sa.Column("assignment_id", sa.BigInteger(), nullable=False),
        sa.Column("user_id", sa.BigInteger(), nullable=False),
        sa.Column("score", sa.Float(), nullable=True),
        sa.Column("grade", sa.Text(), nullable=True),
        sa.Column("entered_score", sa.Float(), nullable=True),
        sa.Column("entered_grade", sa.Text(), nullable=True),
        sa.Column("workflow_state", sa.Text(), nullable=True),
        sa.Column("submitted_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("graded_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("posted_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("late", sa.Boolean(), nullable=True),
        sa.Column("missing", sa.Boolean(), nullable=True),
        sa.Column("excused", sa.Boolean(), nullable=True),
        sa.Column("late_policy_status", sa.Text(), nullable=True),
        sa.Column("seconds_late", sa.BigInteger(), nullable=True),
        sa.Column("points_deducted", sa.Float(), nullable=True),
        sa.Column("attempt", sa.Integer(), nullable=True),
        sa.Column("submission_type", sa.Text(), nullable=True),
        sa.Column("deleted_at", sa.DateTime(timezone=True), nullable=True),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_canvas_submissions")),
    )
    op.create_index(op.f("ix_canvas_submissions_course_id"), "canvas_submissions", ["course_id"], unique=False)
    op.create_index(
        op.f("ix_canvas_submissions_assignment_id_user_id"),
        "canvas_submissions",
        ["assignment_id", "user_id"],
        unique=False,
    )
    op.create_index(op.f("ix_canvas_submissions_user_id"), "canvas_submissions", ["user_id"], unique=False)
    op.create_table(
        "canvas_submission_score_history",
        sa.Column("id", SURROGATE_KEY, autoincrement=True, nullable=False),
        sa.Column("submission_id", sa.BigInteger(), nullable=False),
        sa.Column("course_id", sa.BigInteger(), nullable=False),
        sa.Column("assignment_id", sa.BigInteger(), nullable=True),
        sa.Column("user_id", sa.BigInteger(), nullable=True),
        sa.Column("recorded_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("score", sa.Float(), nullable=True),
        sa.Column("grade", sa.Text(), nullable=True),
        sa.Column("workflow_state", sa.Text(), nullable=True),
        sa.Column("run_id", sa.String(length=64), nullable=True),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_canvas_submission_score_history")),
    )
    op.create_index(
        op.f("ix_canvas_submission_score_history_course_id"),
        "canvas_submission_score_history",
        ["course_id"],
        unique=False,
    )
    op.create_index(
        op.f("ix_canvas_submission_score_history_submission_id_recorded_at"),
        "canvas_submission_score_history",
        ["submission_id", "recorded_at"],
        unique=False,
    )
    with op.batch_alter_table("canvas_staging") as batch:
        batch.add_column(sa.Column("fetch_mode", sa.String(length=16), nullable=True))
        batch.add_column(sa.Column("full_fetched_at", sa.DateTime(timezone=True), nullable=True))
        batch.add_column(sa.Column("watermark", sa.DateTime(timezone=True), nullable=True))
    op.execute(sa.text("UPDATE canvas_staging SET fetch_mode = 'full', full_fetched_at = fetched_at"))


def downgrade() -> None:
    with op.batch_alter_table("canvas_staging") as batch:
        batch.drop_column("watermark")
        batch.drop_column("full_fetched_at")
        batch.drop_column("fetch_mode")
    op.execute(sa.text("DELETE FROM canvas_staging WHERE entity = 'submissions'"))
    op.execute(sa.text("DELETE FROM canvas_course_sync WHERE entity = 'submissions'"))
    op.drop_index(
        op.f("ix_canvas_submission_score_history_submission_id_recorded_at"),
        table_name="canvas_submission_score_history",
    )
    op.drop_index(
        op.f("ix_canvas_submission_score_history_course_id"), table_name="canvas_submission_score_history"
    )
    op.drop_table("canvas_submission_score_history")
    op.drop_index(op.f("ix_canvas_submissions_user_id"), table_name="canvas_submissions")
    op.drop_index(op.f("ix_canvas_submissions_assignment_id_user_id"), table_name="canvas_submissions")
    op.drop_index(op.f("ix_canvas_submissions_course_id"), table_name="canvas_submissions")
    op.drop_table("canvas_submissions")
