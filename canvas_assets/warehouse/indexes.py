"""A first load into an empty table builds its secondary indexes once, after the rows are in (PostgreSQL):
row-by-row index maintenance was most of a first sync's load. The primary key stays (the first-load path
relies on it to refuse a key that lives in another course). Figures and the locking: docs/architecture.md,
"The load, step by step".

A load opts in by `deferring(conn)`; `insert_frame` calls `before_insert` for every table it writes.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar

import sqlalchemy as sa


class DeferredIndexes:
    """The indexes dropped in one load transaction (table -> CREATE INDEX statements), to build again."""

    def __init__(self, conn: sa.Connection) -> None:
        self.conn = conn  # the load's connection: inserts through another are not this load's
        self.tables: dict[str, list[str]] = {}
        self.seen: set[str] = set()

    def before_insert(self, table_name: str) -> None:
        """Before the load's first insert into `table_name`: when the table has no row, drop its secondary
        indexes (once per table and load). Temporary tables (not in the current schema) and tables with
        rows are left alone."""
        if table_name in self.seen:
            return
        self.seen.add(table_name)
        conn = self.conn
        q = conn.dialect.identifier_preparer.quote
        rows = conn.execute(
            sa.text(
                "SELECT i.relname, pg_get_indexdef(x.indexrelid) FROM pg_index x "
                "JOIN pg_class i ON i.oid = x.indexrelid JOIN pg_class t ON t.oid = x.indrelid "
                "JOIN pg_namespace n ON n.oid = t.relnamespace "
                "WHERE t.relname = :t AND t.relkind = 'r' AND n.nspname = current_schema() "
                "AND NOT EXISTS (SELECT 1 FROM pg_constraint c WHERE c.conindid = x.indexrelid) "
                "ORDER BY i.relname"
            ),
            {"t": table_name},
        ).all()
        if not rows or conn.exec_driver_sql(f"SELECT 1 FROM {q(table_name)} LIMIT 1").first() is not None:
            return
        for name, _ in rows:
            conn.exec_driver_sql(f"DROP INDEX {q(name)}")
        self.tables[table_name] = [definition for _, definition in rows]

    def rebuild(self) -> None:
        """Create every dropped index again (before the load commits)."""
        for definitions in self.tables.values():
            for definition in definitions:
                # IF NOT EXISTS: a drop made under a savepoint that was rolled back (the first-load path's
                # insert refused a key) left the index in place.
                self.conn.exec_driver_sql(
                    re.sub(r"^CREATE (UNIQUE )?INDEX ", r"CREATE \1INDEX IF NOT EXISTS ", definition)
                )
        self.tables.clear()


@contextmanager
def deferring(conn: sa.Connection) -> Iterator[DeferredIndexes]:
    """Within this block, the first insert into an empty table drops its secondary indexes; they are built
    again when the block ends without an error (PostgreSQL only; elsewhere nothing changes)."""
    deferred = DeferredIndexes(conn)
    if conn.dialect.name != "postgresql":
        yield deferred
        return
    # A context variable, not `conn.info`: after a failure (a connection lost mid-load) nothing may touch the
    # connection before it is rolled back, and leaving the block must not turn the error into another.
    token = _CURRENT.set(deferred)
    try:
        yield deferred
        deferred.rebuild()
    finally:
        _CURRENT.reset(token)


_CURRENT: ContextVar[DeferredIndexes | None] = ContextVar("canvas_deferred_indexes", default=None)


def before_insert(conn: sa.Connection, table_name: str) -> None:
    """`insert_frame`'s hook: see `DeferredIndexes.before_insert` (nothing outside a `deferring` block)."""
    deferred = _CURRENT.get()
    if deferred is not None and deferred.conn is conn:
        deferred.before_insert(table_name)
