"""Change-only Layer-1 loads: drop the per-row `synced_at`, record confirmations in `canvas_course_sync`.

Revision ID: 0002_change_only_loads
Revises: 0001_initial
Create Date: 2026-01-12

Layer-1 rows are now written only when Canvas changed them. A `synced_at` on every row would force a write
of every row on every sync, so it goes; when Canvas last confirmed a course's rows of an entity is one row of
the new `canvas_course_sync` table per (entity, course). The upgrade keeps every Layer-1 row and all score
history, and fills `canvas_course_sync` from the dropped column: `confirmed_at` is the newest `synced_at`
among the course's rows of that entity (the last load that covered it). `canvas_students` is global (its
rows name no course), so student confirmations start with the next load.

The downgrade restores `synced_at` from the confirmations (the upgrade time for rows without one).
"""

from typing import Sequence, Union

import sqlalchemy as sa
from alembic import op

# revision identifiers, used by Alembic.
revision: str = "0002_change_only_loads"
down_revision: Union[str, Sequence[str], None] = "0001_initial"
branch_labels: Union[str, Sequence[str], None] = None
depends_on: Union[str, Sequence[str], None] = None

LAYER1_TABLES = (
    "canvas_courses",
    "canvas_students",
    "canvas_enrollments",
    "canvas_assignments",
    "canvas_modules",
    "canvas_module_items",
    "canvas_student_summaries",
)
# entity -> (table, the column naming the course) for the confirmations derived from `synced_at`.
CONFIRMED_BY = {
    "courses": ("canvas_courses", "id"),
    "enrollments": ("canvas_enrollments", "course_id"),
    "assignments": ("canvas_assignments", "course_id"),
    "modules": ("canvas_modules", "course_id"),
    "student_summaries": ("canvas_student_summaries", "course_id"),
}


def upgrade() -> None:
    op.create_table(
        "canvas_course_sync",
        sa.Column("entity", sa.String(length=64), nullable=False),
        sa.Column("course_id", sa.BigInteger(), autoincrement=False, nullable=False),
        sa.Column("confirmed_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("fetched_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("changed_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("run_id", sa.String(length=64), nullable=True),
        sa.PrimaryKeyConstraint("entity", "course_id", name=op.f("pk_canvas_course_sync")),
    )
    op.create_index(
        op.f("ix_canvas_course_sync_course_id"), "canvas_course_sync", ["course_id"], unique=False
    )
    for entity, (table, course_column) in CONFIRMED_BY.items():
        op.execute(
            sa.text(
                "INSERT INTO canvas_course_sync (entity, course_id, confirmed_at) "
                f"SELECT :entity, {course_column}, MAX(synced_at) FROM {table} GROUP BY {course_column}"
            ).bindparams(entity=entity)
        )
    for table in LAYER1_TABLES:
        with op.batch_alter_table(table) as batch:
            batch.drop_column("synced_at")


def downgrade() -> None:
    for table in LAYER1_TABLES:
        with op.batch_alter_table(table) as batch:
            batch.add_column(sa.Column("synced_at", sa.DateTime(timezone=True), nullable=True))
    for entity, (table, course_column) in CONFIRMED_BY.items():
        op.execute(
            sa.text(
                f"UPDATE {table} SET synced_at = (SELECT s.confirmed_at FROM canvas_course_sync s "
                f"WHERE s.entity = :entity AND s.course_id = {table}.{course_column})"
            ).bindparams(entity=entity)
        )
    for table in LAYER1_TABLES:
        op.execute(sa.text(f"UPDATE {table} SET synced_at = CURRENT_TIMESTAMP WHERE synced_at IS NULL"))
        with op.batch_alter_table(table) as batch:
            batch.alter_column("synced_at", existing_type=sa.DateTime(timezone=True), nullable=False)
    op.drop_index(op.f("ix_canvas_course_sync_course_id"), table_name="canvas_course_sync")
    op.drop_table("canvas_course_sync")
