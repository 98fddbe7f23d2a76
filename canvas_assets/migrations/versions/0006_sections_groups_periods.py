"""Sections, assignment groups, grading periods and per-period enrollment scores.

Revision ID: 0006_sections_groups_periods
Revises: 0005_sync_log_repeated_ids
Create Date: 2026-12-07

Adds the Layer-1 tables `canvas_sections`, `canvas_assignment_groups`, `canvas_grading_periods` (keyed by
course and period: a term's periods apply to many courses) and `canvas_enrollment_period_scores` (a student
enrollment's scores in one grading period), the history table `canvas_enrollment_period_score_history`, and
`canvas_courses.apply_assignment_group_weights` (existing rows get NULL until the next load of their course).
The downgrade drops them.
"""

from typing import Sequence, Union

import sqlalchemy as sa
from alembic import op

# revision identifiers, used by Alembic.
revision: str = "0006_sections_groups_periods"
down_revision: Union[str, Sequence[str], None] = "0005_sync_log_repeated_ids"
branch_labels: Union[str, Sequence[str], None] = None
depends_on: Union[str, Sequence[str], None] = None

SURROGATE_KEY = sa.BigInteger().with_variant(sa.Integer(), "sqlite")
TS = sa.DateTime(timezone=True)


def _load_columns() -> list[sa.Column]:
    return [sa.Column("deleted_at", TS, nullable=True), sa.Column("row_hash", sa.BigInteger(), nullable=True)]


def upgrade() -> None:
    op.add_column("canvas_courses", sa.Column("apply_assignment_group_weights", sa.Boolean(), nullable=True))

    op.create_table(
        "canvas_sections",
        sa.Column("id", sa.BigInteger(), autoincrement=False, nullable=False),
        sa.Column("course_id", sa.BigInteger(), nullable=False),
        sa.Column("name", sa.Text(), nullable=True),
        sa.Column("sis_section_id", sa.Text(), nullable=True),
        sa.Column("sis_course_id", sa.Text(), nullable=True),
        sa.Column("integration_id", sa.Text(), nullable=True),
        sa.Column("start_at", TS, nullable=True),
        sa.Column("end_at", TS, nullable=True),
        sa.Column("restrict_enrollments_to_section_dates", sa.Boolean(), nullable=True),
        sa.Column("nonxlist_course_id", sa.BigInteger(), nullable=True),
        sa.Column("total_students", sa.Integer(), nullable=True),
        *_load_columns(),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_canvas_sections")),
    )
    op.create_index(op.f("ix_canvas_sections_course_id"), "canvas_sections", ["course_id"], unique=False)

    op.create_table(
        "canvas_assignment_groups",
        sa.Column("id", sa.BigInteger(), autoincrement=False, nullable=False),
        sa.Column("course_id", sa.BigInteger(), nullable=False),
        sa.Column("name", sa.Text(), nullable=True),
        sa.Column("position", sa.Integer(), nullable=True),
        sa.Column("group_weight", sa.Float(), nullable=True),
        sa.Column("drop_lowest", sa.Integer(), nullable=True),
        sa.Column("drop_highest", sa.Integer(), nullable=True),
        sa.Column("never_drop", sa.Text(), nullable=True),
        sa.Column("sis_source_id", sa.Text(), nullable=True),
        sa.Column("integration_data", sa.Text(), nullable=True),
        *_load_columns(),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_canvas_assignment_groups")),
    )
    op.create_index(
        op.f("ix_canvas_assignment_groups_course_id"), "canvas_assignment_groups", ["course_id"], unique=False
    )

    op.create_table(
        "canvas_grading_periods",
        sa.Column("course_id", sa.BigInteger(), autoincrement=False, nullable=False),
        sa.Column("id", sa.BigInteger(), autoincrement=False, nullable=False),
        sa.Column("title", sa.Text(), nullable=True),
        sa.Column("start_date", TS, nullable=True),
        sa.Column("end_date", TS, nullable=True),
        sa.Column("close_date", TS, nullable=True),
        sa.Column("weight", sa.Float(), nullable=True),
        sa.Column("is_closed", sa.Boolean(), nullable=True),
        sa.Column("grading_period_group_id", sa.BigInteger(), nullable=True),
        *_load_columns(),
        sa.PrimaryKeyConstraint("course_id", "id", name=op.f("pk_canvas_grading_periods")),
    )

    op.create_table(
        "canvas_enrollment_period_scores",
        sa.Column("enrollment_id", sa.BigInteger(), autoincrement=False, nullable=False),
        sa.Column("grading_period_id", sa.BigInteger(), autoincrement=False, nullable=False),
        sa.Column("course_id", sa.BigInteger(), nullable=False),
        sa.Column("user_id", sa.BigInteger(), nullable=False),
        sa.Column("current_score", sa.Float(), nullable=True),
        sa.Column("final_score", sa.Float(), nullable=True),
        sa.Column("current_grade", sa.Text(), nullable=True),
        sa.Column("final_grade", sa.Text(), nullable=True),
        sa.Column("unposted_current_score", sa.Float(), nullable=True),
        sa.Column("unposted_final_score", sa.Float(), nullable=True),
        sa.Column("unposted_current_grade", sa.Text(), nullable=True),
        sa.Column("unposted_final_grade", sa.Text(), nullable=True),
        sa.Column("override_score", sa.Float(), nullable=True),
        sa.Column("override_grade", sa.Text(), nullable=True),
        *_load_columns(),
        sa.PrimaryKeyConstraint(
            "enrollment_id", "grading_period_id", name=op.f("pk_canvas_enrollment_period_scores")
        ),
    )
    op.create_index(
        op.f("ix_canvas_enrollment_period_scores_course_id"),
        "canvas_enrollment_period_scores",
        ["course_id"],
        unique=False,
    )
    op.create_index(
        op.f("ix_canvas_enrollment_period_scores_user_id"),
        "canvas_enrollment_period_scores",
        ["user_id"],
        unique=False,
    )

    op.create_table(
        "canvas_enrollment_period_score_history",
        sa.Column("id", SURROGATE_KEY, autoincrement=True, nullable=False),
        sa.Column("enrollment_id", sa.BigInteger(), nullable=False),
        sa.Column("grading_period_id", sa.BigInteger(), nullable=False),
        sa.Column("course_id", sa.BigInteger(), nullable=False),
        sa.Column("user_id", sa.BigInteger(), nullable=True),
        sa.Column("recorded_at", TS, nullable=False),
        sa.Column("current_score", sa.Float(), nullable=True),
        sa.Column("final_score", sa.Float(), nullable=True),
        sa.Column("current_grade", sa.Text(), nullable=True),
        sa.Column("final_grade", sa.Text(), nullable=True),
        sa.Column("run_id", sa.String(length=64), nullable=True),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_canvas_enrollment_period_score_history")),
    )
    op.create_index(
        op.f("ix_canvas_period_score_history_enrollment"),
        "canvas_enrollment_period_score_history",
        ["enrollment_id", "grading_period_id", "recorded_at"],
        unique=False,
    )
    op.create_index(
        op.f("ix_canvas_enrollment_period_score_history_course_id"),
        "canvas_enrollment_period_score_history",
        ["course_id"],
        unique=False,
    )


def downgrade() -> None:
    op.drop_table("canvas_enrollment_period_score_history")
    op.drop_table("canvas_enrollment_period_scores")
    op.drop_table("canvas_grading_periods")
    op.drop_table("canvas_assignment_groups")
    op.drop_table("canvas_sections")
    with op.batch_alter_table("canvas_courses") as batch:
        batch.drop_column("apply_assignment_group_weights")
