"""PostgreSQL's binary COPY format, as the warehouse writes it (`bulk` for frames, `staging` for raw JSON):
its framing, its epoch, and which connections write by COPY at all."""

from __future__ import annotations

import sqlalchemy as sa

BINARY_HEADER = (
    b"PGCOPY\n\xff\r\n\x00" + b"\x00\x00\x00\x00" + b"\x00\x00\x00\x00"
)  # signature, flags, no extension
BINARY_TRAILER = b"\xff\xff"  # a tuple of -1 fields
PG_EPOCH_US = 946_684_800_000_000  # binary timestamps count microseconds from 2000-01-01 (Unix microseconds)


def uses_copy(conn: sa.Connection) -> bool:
    """Whether the connection writes by binary COPY (PostgreSQL through psycopg2); others use statements."""
    return conn.dialect.name == "postgresql" and conn.dialect.driver == "psycopg2"
