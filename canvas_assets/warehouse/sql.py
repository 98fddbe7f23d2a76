"""SQL helpers every warehouse module shares: dialect-neutral upserts and comparisons, id lists in pieces."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from datetime import datetime, timezone
from typing import Any

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql, sqlite

IN_CHUNK = 1000  # ids per IN (...) list: far below SQLite's 32766 host-parameter limit


def upsert_statement(conn: sa.Connection, target: sa.Table) -> Any:
    """The dialect's `INSERT` (both SQLite and PostgreSQL support `ON CONFLICT DO UPDATE`)."""
    if conn.dialect.name == "postgresql":
        return postgresql.insert(target)
    if conn.dialect.name == "sqlite":
        return sqlite.insert(target)
    raise NotImplementedError(f"upsert is not implemented for {conn.dialect.name}")


def distinct_sql(conn: sa.Connection, left: Sequence[str], right: Sequence[str]) -> str:
    """NULL-safe "some value differs" between two equally long lists of column expressions."""
    if conn.dialect.name == "postgresql":
        if len(left) == 1:
            return f"{left[0]} IS DISTINCT FROM {right[0]}"
        return f"({', '.join(left)}) IS DISTINCT FROM ({', '.join(right)})"
    return "(" + " OR ".join(f"{a} IS NOT {b}" for a, b in zip(left, right, strict=True)) + ")"


def chunks(values: Sequence[Any], size: int = IN_CHUNK) -> Iterable[Sequence[Any]]:
    for start in range(0, len(values), size):
        yield values[start : start + size]


def utc(at: datetime) -> datetime:
    return at.replace(tzinfo=timezone.utc) if at.tzinfo is None else at.astimezone(timezone.utc)
