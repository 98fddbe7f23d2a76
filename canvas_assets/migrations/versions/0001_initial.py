"""Initial schema: Layer-1 tables, score history, course catalog, staging, sync log, quarantine.

Revision ID: 0001_initial
Revises:
Create Date: 2025-11-26

Written out explicitly (not imported from the models) so that this revision never changes; the test suite
compares the migrated schema with `canvas_assets.warehouse.models` on SQLite and PostgreSQL.
"""

from typing import Sequence, Union

import sqlalchemy as sa
from alembic import op

# revision identifiers, used by Alembic.
revision: str = "0001_initial"
down_revision: Union[str, Sequence[str], None] = None
branch_labels: Union[str, Sequence[str], None] = None
depends_on: Union[str, Sequence[str], None] = None

# Surrogate keys: BIGINT, except on SQLite, which only auto-increments an INTEGER PRIMARY KEY.
SURROGATE_KEY = sa.BigInteger().with_variant(sa.Integer(), "sqlite")

TABLES = (
    "canvas_courses",
    "canvas_students",
    "canvas_enrollments",
    "canvas_assignments",
    "canvas_modules",
    "canvas_module_items",
    "canvas_student_summaries",
    "canvas_score_history",
    "canvas_course_catalog",
    "canvas_staging",
    "canvas_sync_log",
    "canvas_rejected_records",
)


def upgrade() -> None:
    op.create_table(
        "canvas_courses",
        sa.Column("id", sa.BigInteger(), autoincrement=False, nullable=False),
        sa.Column("name", sa.Text(), nullable=True),
        sa.Column("course_code", sa.Text(), nullable=True),
        sa.Column("workflow_state", sa.Text(), nullable=True),
        sa.Column("account_id", sa.BigInteger(), nullable=True),
        sa.Column("root_account_id", sa.BigInteger(), nullable=True),
        sa.Column("enrollment_term_id", sa.BigInteger(), nullable=True),
        sa.Column("uuid", sa.Text(), nullable=True),
        sa.Column("term_name", sa.Text(), nullable=True),
        sa.Column("term_start_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("term_end_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("start_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("end_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("time_zone", sa.Text(), nullable=True),
        sa.Column("total_students", sa.Integer(), nullable=True),
        sa.Column("is_public", sa.Boolean(), nullable=True),
        sa.Column("public_description", sa.Text(), nullable=True),
        sa.Column("syllabus_body", sa.Text(), nullable=True),
        sa.Column("default_view", sa.Text(), nullable=True),
        sa.Column("sis_course_id", sa.Text(), nullable=True),
        sa.Column("course_format", sa.Text(), nullable=True),
        sa.Column("license", sa.Text(), nullable=True),
        sa.Column("settings", sa.Text(), nullable=True),
        sa.Column("synced_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("deleted_at", sa.DateTime(timezone=True), nullable=True),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_canvas_courses")),
    )
    op.create_index(op.f("ix_canvas_courses_account_id"), "canvas_courses", ["account_id"], unique=False)

    op.create_table(
        "canvas_students",
        sa.Column("id", sa.BigInteger(), autoincrement=False, nullable=False),
        sa.Column("name", sa.Text(), nullable=True),
        sa.Column("sortable_name", sa.Text(), nullable=True),
        sa.Column("short_name", sa.Text(), nullable=True),
        sa.Column("sis_user_id", sa.Text(), nullable=True),
        sa.Column("login_id", sa.Text(), nullable=True),
        sa.Column("email", sa.Text(), nullable=True),
        sa.Column("pronouns", sa.Text(), nullable=True),
        sa.Column("avatar_url", sa.Text(), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("synced_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_canvas_students")),
    )

    op.create_table(
        "canvas_enrollments",
        sa.Column("id", sa.BigInteger(), autoincrement=False, nullable=False),
        sa.Column("course_id", sa.BigInteger(), nullable=False),
        sa.Column("user_id", sa.BigInteger(), nullable=False),
        sa.Column("course_section_id", sa.BigInteger(), nullable=True),
        sa.Column("type", sa.Text(), nullable=True),
        sa.Column("role", sa.Text(), nullable=True),
        sa.Column("role_id", sa.BigInteger(), nullable=True),
        sa.Column("enrollment_state", sa.Text(), nullable=True),
        sa.Column("associated_user_id", sa.BigInteger(), nullable=True),
        sa.Column("start_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("end_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("last_activity_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("last_attended_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("total_activity_time", sa.BigInteger(), nullable=True),
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
        sa.Column("synced_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("deleted_at", sa.DateTime(timezone=True), nullable=True),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_canvas_enrollments")),
    )
    op.create_index(
        op.f("ix_canvas_enrollments_course_id"), "canvas_enrollments", ["course_id"], unique=False
    )
    op.create_index(op.f("ix_canvas_enrollments_user_id"), "canvas_enrollments", ["user_id"], unique=False)

    op.create_table(
        "canvas_assignments",
        sa.Column("id", sa.BigInteger(), autoincrement=False, nullable=False),
        sa.Column("course_id", sa.BigInteger(), nullable=False),
        sa.Column("name", sa.Text(), nullable=True),
        sa.Column("description", sa.Text(), nullable=True),
        sa.Column("due_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("unlock_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("lock_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("points_possible", sa.Float(), nullable=True),
        sa.Column("grading_type", sa.Text(), nullable=True),
        sa.Column("submission_types", sa.Text(), nullable=True),
        sa.Column("published", sa.Boolean(), nullable=True),
        sa.Column("workflow_state", sa.Text(), nullable=True),
        sa.Column("position", sa.Integer(), nullable=True),
        sa.Column("assignment_group_id", sa.BigInteger(), nullable=True),
        sa.Column("omit_from_final_grade", sa.Boolean(), nullable=True),
        sa.Column("html_url", sa.Text(), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("synced_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("deleted_at", sa.DateTime(timezone=True), nullable=True),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_canvas_assignments")),
    )
    op.create_index(
        op.f("ix_canvas_assignments_course_id"), "canvas_assignments", ["course_id"], unique=False
    )

    op.create_table(
        "canvas_modules",
        sa.Column("id", sa.BigInteger(), autoincrement=False, nullable=False),
        sa.Column("course_id", sa.BigInteger(), nullable=False),
        sa.Column("name", sa.Text(), nullable=True),
        sa.Column("position", sa.Integer(), nullable=True),
        sa.Column("unlock_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("published", sa.Boolean(), nullable=True),
        sa.Column("items_count", sa.Integer(), nullable=True),
        sa.Column("require_sequential_progress", sa.Boolean(), nullable=True),
        sa.Column("prerequisite_module_ids", sa.Text(), nullable=True),
        sa.Column("synced_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("deleted_at", sa.DateTime(timezone=True), nullable=True),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_canvas_modules")),
    )
    op.create_index(op.f("ix_canvas_modules_course_id"), "canvas_modules", ["course_id"], unique=False)

    op.create_table(
        "canvas_module_items",
        sa.Column("id", sa.BigInteger(), autoincrement=False, nullable=False),
        sa.Column("course_id", sa.BigInteger(), nullable=False),
        sa.Column("module_id", sa.BigInteger(), nullable=False),
        sa.Column("title", sa.Text(), nullable=True),
        sa.Column("type", sa.Text(), nullable=True),
        sa.Column("content_id", sa.BigInteger(), nullable=True),
        sa.Column("position", sa.Integer(), nullable=True),
        sa.Column("indent", sa.Integer(), nullable=True),
        sa.Column("published", sa.Boolean(), nullable=True),
        sa.Column("url", sa.Text(), nullable=True),
        sa.Column("html_url", sa.Text(), nullable=True),
        sa.Column("page_url", sa.Text(), nullable=True),
        sa.Column("external_url", sa.Text(), nullable=True),
        sa.Column("completion_requirement", sa.Text(), nullable=True),
        sa.Column("synced_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("deleted_at", sa.DateTime(timezone=True), nullable=True),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_canvas_module_items")),
    )
    op.create_index(
        op.f("ix_canvas_module_items_course_id"), "canvas_module_items", ["course_id"], unique=False
    )
    op.create_index(
        op.f("ix_canvas_module_items_module_id"), "canvas_module_items", ["module_id"], unique=False
    )

    op.create_table(
        "canvas_student_summaries",
        sa.Column("course_id", sa.BigInteger(), autoincrement=False, nullable=False),
        sa.Column("user_id", sa.BigInteger(), autoincrement=False, nullable=False),
        sa.Column("page_views", sa.Integer(), nullable=True),
        sa.Column("page_views_level", sa.Integer(), nullable=True),
        sa.Column("participations", sa.Integer(), nullable=True),
        sa.Column("participations_level", sa.Integer(), nullable=True),
        sa.Column("tardiness_on_time", sa.Integer(), nullable=True),
        sa.Column("tardiness_late", sa.Integer(), nullable=True),
        sa.Column("tardiness_missing", sa.Integer(), nullable=True),
        sa.Column("tardiness_floating", sa.Integer(), nullable=True),
        sa.Column("tardiness_total", sa.Integer(), nullable=True),
        sa.Column("synced_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("deleted_at", sa.DateTime(timezone=True), nullable=True),
        sa.PrimaryKeyConstraint("course_id", "user_id", name=op.f("pk_canvas_student_summaries")),
    )

    op.create_table(
        "canvas_score_history",
        sa.Column("id", SURROGATE_KEY, autoincrement=True, nullable=False),
        sa.Column("enrollment_id", sa.BigInteger(), nullable=False),
        sa.Column("course_id", sa.BigInteger(), nullable=False),
        sa.Column("user_id", sa.BigInteger(), nullable=True),
        sa.Column("recorded_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("current_score", sa.Float(), nullable=True),
        sa.Column("final_score", sa.Float(), nullable=True),
        sa.Column("current_grade", sa.Text(), nullable=True),
        sa.Column("final_grade", sa.Text(), nullable=True),
        sa.Column("run_id", sa.String(length=64), nullable=True),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_canvas_score_history")),
    )
    op.create_index(
        op.f("ix_canvas_score_history_course_id"), "canvas_score_history", ["course_id"], unique=False
    )
    op.create_index(
        op.f("ix_canvas_score_history_enrollment_id_recorded_at"),
        "canvas_score_history",
        ["enrollment_id", "recorded_at"],
        unique=False,
    )

    op.create_table(
        "canvas_course_catalog",
        sa.Column("course_id", sa.BigInteger(), autoincrement=False, nullable=False),
        sa.Column("name", sa.Text(), nullable=True),
        sa.Column("course_code", sa.Text(), nullable=True),
        sa.Column("workflow_state", sa.Text(), nullable=True),
        sa.Column("account_id", sa.BigInteger(), nullable=True),
        sa.Column("enrollment_term_id", sa.BigInteger(), nullable=True),
        sa.Column("first_seen_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("last_seen_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("gone_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("gone_reason", sa.Text(), nullable=True),
        sa.PrimaryKeyConstraint("course_id", name=op.f("pk_canvas_course_catalog")),
    )

    op.create_table(
        "canvas_staging",
        sa.Column("entity", sa.String(length=64), nullable=False),
        sa.Column("course_id", sa.BigInteger(), autoincrement=False, nullable=False),
        sa.Column("records", sa.Text(), nullable=False),
        sa.Column("record_count", sa.Integer(), nullable=False),
        sa.Column("fetched_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("run_id", sa.String(length=64), nullable=True),
        sa.PrimaryKeyConstraint("entity", "course_id", name=op.f("pk_canvas_staging")),
    )

    op.create_table(
        "canvas_sync_log",
        sa.Column("id", SURROGATE_KEY, autoincrement=True, nullable=False),
        sa.Column("run_id", sa.String(length=64), nullable=True),
        sa.Column("course_id", sa.BigInteger(), nullable=True),
        sa.Column("entity", sa.String(length=64), nullable=True),
        sa.Column("stage", sa.String(length=16), nullable=True),
        sa.Column("records", sa.BigInteger(), nullable=True),
        sa.Column("api_calls", sa.BigInteger(), nullable=True),
        sa.Column("started_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("finished_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("duration_s", sa.Float(), nullable=True),
        sa.Column("status", sa.String(length=16), nullable=True),
        sa.Column("error_type", sa.String(length=128), nullable=True),
        sa.Column("error_category", sa.String(length=64), nullable=True),
        sa.Column("message", sa.Text(), nullable=True),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_canvas_sync_log")),
    )
    op.create_index(
        op.f("ix_canvas_sync_log_course_id_entity"), "canvas_sync_log", ["course_id", "entity"], unique=False
    )
    op.create_index(op.f("ix_canvas_sync_log_run_id"), "canvas_sync_log", ["run_id"], unique=False)

    op.create_table(
        "canvas_rejected_records",
        sa.Column("id", SURROGATE_KEY, autoincrement=True, nullable=False),
        sa.Column("run_id", sa.String(length=64), nullable=True),
        sa.Column("entity", sa.String(length=64), nullable=False),
        sa.Column("course_id", sa.BigInteger(), nullable=True),
        sa.Column("canvas_id", sa.BigInteger(), nullable=True),
        sa.Column("reason", sa.Text(), nullable=False),
        sa.Column("payload", sa.Text(), nullable=True),
        sa.Column("rejected_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_canvas_rejected_records")),
    )
    op.create_index(
        op.f("ix_canvas_rejected_records_entity_course_id"),
        "canvas_rejected_records",
        ["entity", "course_id"],
        unique=False,
    )
    op.create_index(
        op.f("ix_canvas_rejected_records_run_id"), "canvas_rejected_records", ["run_id"], unique=False
    )


def downgrade() -> None:
    for name in reversed(TABLES):
        op.drop_table(name)
