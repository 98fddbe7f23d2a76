"""Staging one row per record: `canvas_staging_records`, and `canvas_staging.records_digest`.

Revision ID: 0009_staging_records
Revises: 0008_live_events
Create Date: 2026-12-07

`canvas_staging` held each (entity, course)'s records as one JSON text (a big course's submissions, tens of
MB). They move to `canvas_staging_records`, one row per record keyed by its Canvas id, so that a sync writes
only the records that changed; `canvas_staging` keeps how they were fetched and gains `records_digest`
(which recognises an unchanged full fetch without reading the rows). The upgrade splits every staged text
into its records, keyed and hashed as the staging code does (`canvas_assets.warehouse.staging`): no refetch.
The downgrade joins each course's rows back into one text, in key order.
"""

import hashlib
import json
from collections.abc import Sequence
from typing import Union

import sqlalchemy as sa
from alembic import op

from canvas_assets.jsontext import encode_json_bytes
from canvas_assets.warehouse.staging import record_keys, records_digest

# revision identifiers, used by Alembic.
revision: str = "0009_staging_records"
down_revision: Union[str, Sequence[str], None] = "0008_live_events"
branch_labels: Union[str, Sequence[str], None] = None
depends_on: Union[str, Sequence[str], None] = None

ROWS = sa.table(
    "canvas_staging_records",
    sa.column("entity", sa.String),
    sa.column("course_id", sa.BigInteger),
    sa.column("record_key", sa.String),
    sa.column("record", sa.Text),
)


def upgrade() -> None:
    op.create_table(
        "canvas_staging_records",
        sa.Column("entity", sa.String(length=64), nullable=False),
        sa.Column("course_id", sa.BigInteger(), autoincrement=False, nullable=False),
        sa.Column("record_key", sa.String(length=80), nullable=False),
        sa.Column("record", sa.Text(), nullable=False),
        sa.PrimaryKeyConstraint("entity", "course_id", "record_key", name=op.f("pk_canvas_staging_records")),
    )
    with op.batch_alter_table("canvas_staging") as batch:
        batch.add_column(sa.Column("records_digest", sa.String(length=64), nullable=True))
    conn = op.get_bind()
    courses = conn.execute(sa.text("SELECT entity, course_id FROM canvas_staging ORDER BY 1, 2")).all()
    for entity, course_id in courses:  # one course's text at a time
        where = {"e": entity, "c": course_id}
        text = conn.execute(
            sa.text("SELECT records FROM canvas_staging WHERE entity = :e AND course_id = :c"), where
        ).scalar_one()
        value = json.loads(text) if text else []  # as staged, NaN included
        del text
        hashes: list[tuple[str, bytes]] = []
        rows: list[dict[str, object]] = []
        for key, record in record_keys(value if isinstance(value, list) else [value]):
            row = encode_json_bytes(record)
            hashes.append((key, hashlib.sha256(row).digest()))
            rows.append({"entity": entity, "course_id": course_id, "record_key": key, "record": row.decode()})
            if len(rows) == 1000:
                conn.execute(ROWS.insert(), rows)
                rows = []
        if rows:
            conn.execute(ROWS.insert(), rows)
        digest = records_digest(hashes)
        conn.execute(
            sa.text(
                "UPDATE canvas_staging SET records_digest = :d, record_count = :n WHERE entity = :e AND course_id = :c"
            ),
            {**where, "d": digest, "n": len(hashes)},
        )
    with op.batch_alter_table("canvas_staging") as batch:
        batch.drop_column("records")


def downgrade() -> None:
    with op.batch_alter_table("canvas_staging") as batch:
        batch.add_column(sa.Column("records", sa.Text(), nullable=False, server_default="[]"))
    conn = op.get_bind()
    collate = ' COLLATE "C"' if conn.dialect.name == "postgresql" else ""  # key order, byte by byte
    courses = conn.execute(sa.text("SELECT entity, course_id FROM canvas_staging ORDER BY 1, 2")).all()
    for entity, course_id in courses:
        where = {"e": entity, "c": course_id}
        texts = conn.execute(
            sa.text(
                "SELECT record FROM canvas_staging_records WHERE entity = :e AND course_id = :c "
                f"ORDER BY length(record_key), record_key{collate}"
            ),
            where,
        ).scalars()
        conn.execute(
            sa.text("UPDATE canvas_staging SET records = :r WHERE entity = :e AND course_id = :c"),
            {**where, "r": "[" + ",".join(texts) + "]"},
        )
    with op.batch_alter_table("canvas_staging") as batch:
        batch.alter_column("records", server_default=None)
        batch.drop_column("records_digest")
    op.drop_table("canvas_staging_records")
