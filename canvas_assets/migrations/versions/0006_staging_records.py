"""Staging one row per Canvas object: `canvas_staging_records`; `canvas_staging` keeps the fetch state.

Revision ID: 0006_staging_records
Revises: 0005_sync_log_repeated_ids
Create Date: 2026-12-07

`canvas_staging` held one JSON list per (entity, course): the largest course's submissions were a 58 MB
text, rewritten whole by every fetch. Each record now has a row of its own, keyed by its Canvas id (see
`canvas_assets.warehouse.staging.record_keys`), and `canvas_staging` keeps what is per (entity, course):
when and how it was fetched, its watermark and record count.

The upgrade explodes every staged list into rows, one (entity, course) at a time, then drops
`canvas_staging.records`: no refetch, and the transforms see the same records (in id order). The downgrade
joins each course's rows back into a list and drops the table.
"""

import json
from typing import Any, Sequence, Union

import orjson
import sqlalchemy as sa
from alembic import op

# revision identifiers, used by Alembic.
revision: str = "0006_staging_records"
down_revision: Union[str, Sequence[str], None] = "0005_sync_log_repeated_ids"
branch_labels: Union[str, Sequence[str], None] = None
depends_on: Union[str, Sequence[str], None] = None

INSERT_BATCH = 5000
INT64_MAX = 2**63 - 1


def _canvas_id(record: Any) -> int | None:
    """`transform.convert.to_id` as of this revision: an int or a digit string within BIGINT."""
    value = record.get("id") if isinstance(record, dict) else None
    if type(value) is int:
        return value if 0 <= value <= INT64_MAX else None
    if isinstance(value, str) and value.isascii() and value.isdigit():
        return int(value) if int(value) <= INT64_MAX else None
    return None


def _keys(records: list[Any]) -> list[str]:
    """`staging.record_keys` as of this revision."""
    seen: set[int] = set()
    keys = []
    for position, record in enumerate(records):
        canvas_id = _canvas_id(record)
        if canvas_id is None:
            keys.append(f"#{position:09d}")
        elif canvas_id in seen:
            keys.append(f"{canvas_id}#{position:09d}")
        else:
            seen.add(canvas_id)
            keys.append(str(canvas_id))
    return keys


def _text(record: Any) -> str:
    """`jsontext.encode_json` as of this revision: orjson's compact JSON, else the standard library's
    (ASCII escapes only where UTF-8 cannot hold the text)."""
    try:
        return orjson.dumps(record, default=str).decode()
    except (orjson.JSONEncodeError, TypeError):
        pass
    text = json.dumps(record, separators=(",", ":"), ensure_ascii=False)
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return json.dumps(record, separators=(",", ":"), ensure_ascii=True)
    return text


def upgrade() -> None:
    op.create_table(
        "canvas_staging_records",
        sa.Column("entity", sa.String(64), primary_key=True),
        sa.Column("course_id", sa.BigInteger(), primary_key=True, autoincrement=False),
        sa.Column("record_key", sa.String(64), primary_key=True),
        sa.Column("record", sa.Text(), nullable=False),
    )
    conn = op.get_bind()
    staged = conn.execute(sa.text("SELECT entity, course_id FROM canvas_staging")).all()
    insert = sa.text(
        "INSERT INTO canvas_staging_records (entity, course_id, record_key, record) VALUES (:e, :c, :k, :r)"
    )
    for entity, course_id in staged:  # one list in memory at a time
        text = conn.execute(
            sa.text("SELECT records FROM canvas_staging WHERE entity = :e AND course_id = :c"),
            {"e": entity, "c": course_id},
        ).scalar_one()
        value = json.loads(text) if text else []
        records = value if isinstance(value, list) else [value]
        rows = [
            {"e": entity, "c": course_id, "k": key, "r": _text(record)}
            for key, record in zip(_keys(records), records)
        ]
        for start in range(0, len(rows), INSERT_BATCH):
            conn.execute(insert, rows[start : start + INSERT_BATCH])
        conn.execute(
            sa.text("UPDATE canvas_staging SET record_count = :n WHERE entity = :e AND course_id = :c"),
            {"n": len(rows), "e": entity, "c": course_id},
        )
    with op.batch_alter_table("canvas_staging") as batch:
        batch.drop_column("records")


def _order(key: str) -> tuple[int, int, str]:
    head, _, tail = key.partition("#")
    return (0, int(head), tail) if head else (1, 0, tail)


def downgrade() -> None:
    with op.batch_alter_table("canvas_staging") as batch:
        batch.add_column(sa.Column("records", sa.Text(), nullable=True))
    conn = op.get_bind()
    staged = conn.execute(sa.text("SELECT entity, course_id FROM canvas_staging")).all()
    for entity, course_id in staged:
        found = conn.execute(
            sa.text(
                "SELECT record_key, record FROM canvas_staging_records WHERE entity = :e AND course_id = :c"
            ),
            {"e": entity, "c": course_id},
        ).all()
        rows = sorted(found, key=lambda row: _order(row[0]))
        conn.execute(
            sa.text("UPDATE canvas_staging SET records = :r WHERE entity = :e AND course_id = :c"),
            {"r": "[" + ",".join(row[1] for row in rows) + "]", "e": entity, "c": course_id},
        )
    with op.batch_alter_table("canvas_staging") as batch:
        batch.alter_column("records", existing_type=sa.Text(), nullable=False)
    op.drop_table("canvas_staging_records")
