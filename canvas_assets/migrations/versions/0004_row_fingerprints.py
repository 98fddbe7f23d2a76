"""Row fingerprints: `row_hash` on every Layer-1 table.

Revision ID: 0004_row_fingerprints
Revises: 0003_submissions
Create Date: 2026-11-30

A load now finds the rows that may have changed by comparing one 64-bit fingerprint per row (computed by the
loader from the row's values) instead of every column, so a re-sync ships only keys and fingerprints for
unchanged rows. Existing rows get NULL: the first load after the upgrade compares each of them column by
column as before, and stores its fingerprint (one write per row, once); from then on, unchanged rows are not
written. The upgrade keeps every row and all history. The downgrade drops the column.
"""

from typing import Sequence, Union

import sqlalchemy as sa
from alembic import op

# revision identifiers, used by Alembic.
revision: str = "0004_row_fingerprints"
down_revision: Union[str, Sequence[str], None] = "0003_submissions"
branch_labels: Union[str, Sequence[str], None] = None
depends_on: Union[str, Sequence[str], None] = None

LAYER1_TABLES = (
    "canvas_courses",
    "canvas_students",
    "canvas_enrollments",
    "canvas_assignments",
    "canvas_submissions",
    "canvas_modules",
    "canvas_module_items",
    "canvas_student_summaries",
)


def upgrade() -> None:
    for table in LAYER1_TABLES:
        op.add_column(table, sa.Column("row_hash", sa.BigInteger(), nullable=True))


def downgrade() -> None:
    for table in LAYER1_TABLES:
        with op.batch_alter_table(table) as batch:
            batch.drop_column("row_hash")
