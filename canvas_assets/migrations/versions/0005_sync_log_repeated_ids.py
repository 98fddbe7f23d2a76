"""Repeated ids in the sync log: `canvas_sync_log.repeated_ids`.

Revision ID: 0005_sync_log_repeated_ids
Revises: 0004_row_fingerprints
Create Date: 2026-11-30

The extract notes, per course, the ids Canvas returned more than once in a list whose records carry one
(students, enrollments, assignments, modules), while it has the records in hand; the `no_duplicate_*_ids`
checks read the note instead of reading and decoding the run's staging again. Existing rows get NULL. The
downgrade drops the column.
"""

from typing import Sequence, Union

import sqlalchemy as sa
from alembic import op

# revision identifiers, used by Alembic.
revision: str = "0005_sync_log_repeated_ids"
down_revision: Union[str, Sequence[str], None] = "0004_row_fingerprints"
branch_labels: Union[str, Sequence[str], None] = None
depends_on: Union[str, Sequence[str], None] = None


def upgrade() -> None:
    op.add_column("canvas_sync_log", sa.Column("repeated_ids", sa.Text(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("canvas_sync_log") as batch:
        batch.drop_column("repeated_ids")
