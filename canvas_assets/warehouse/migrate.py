"""Schema migrations (Alembic), configured in code so they work from an installed package.

The migration scripts live in `canvas_assets/migrations/`; no alembic.ini is needed. `canvas-assets db
upgrade` calls `upgrade(url)`. `ensure_schema(url)` is what every run does first: an empty database is
migrated automatically, an up-to-date one is left alone, and an older one is refused with the command
that fixes it (migrating a shared production database is a deliberate act, not a side effect of a run).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import sqlalchemy as sa
from alembic import command
from alembic.autogenerate import compare_metadata
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from alembic.util.exc import CommandError

from canvas_assets.errors import SchemaOutOfDateError
from canvas_assets.warehouse.engine import display_url, get_engine, locked_transaction, normalize_url
from canvas_assets.warehouse.models import ALL_TABLES, metadata

MIGRATIONS_DIR = Path(__file__).resolve().parent.parent / "migrations"
UPGRADE_COMMAND = "canvas-assets db upgrade"
# Serialises concurrent migrations of one PostgreSQL database (SQLite: BEGIN IMMEDIATE does it).
_PG_MIGRATION_LOCK = 0x43_41_4E_56  # "CANV"


def alembic_config(url: str | None = None, connection: sa.Connection | None = None) -> Config:
    cfg = Config()
    cfg.set_main_option("script_location", str(MIGRATIONS_DIR))
    cfg.set_main_option("path_separator", "os")
    if url is not None:
        cfg.set_main_option("sqlalchemy.url", normalize_url(url).replace("%", "%%"))
    if connection is not None:
        cfg.attributes["connection"] = connection
    return cfg


def head_revision() -> str:
    head = ScriptDirectory.from_config(alembic_config()).get_current_head()
    assert head is not None, "no migration scripts found"
    return head


def current_revision(url: str) -> str | None:
    """The database's Alembic revision, or None when it has none (empty or unversioned)."""
    with get_engine(url).connect() as conn:
        return MigrationContext.configure(conn).get_current_revision()


def _known_revision(revision: str) -> bool:
    try:
        return ScriptDirectory.from_config(alembic_config()).get_revision(revision) is not None
    except CommandError:
        return False


def existing_tables(url: str) -> list[str]:
    with get_engine(url).connect() as conn:
        names = set(sa.inspect(conn).get_table_names())
    return sorted(names & set(ALL_TABLES))


def schema_differences(conn: sa.Connection) -> list[Any]:
    """What differs between the database and the models (Alembic autogenerate's comparison)."""
    context = MigrationContext.configure(conn, opts={"compare_type": True})
    return [d for d in compare_metadata(context, metadata) if not _is_foreign_table(d)]


def _is_foreign_table(diff: Any) -> bool:
    # Tables that are not ours (another app sharing the database, alembic_version) are not differences.
    return isinstance(diff, tuple) and diff[0] == "remove_table" and diff[1].name not in metadata.tables


def upgrade(url: str, revision: str = "head") -> None:
    """Migrate the database to `revision` (default: the newest). Safe to run concurrently.

    A database holding the canvas-assets tables without an Alembic revision (created before migrations
    existed) is stamped when its schema matches the models, and refused otherwise.
    """
    engine = get_engine(url)
    with locked_transaction(engine, _PG_MIGRATION_LOCK) as conn:
        current = MigrationContext.configure(conn).get_current_revision()
        ours = set(sa.inspect(conn).get_table_names()) & set(ALL_TABLES)
        cfg = alembic_config(url, conn)
        if current is None and ours:
            differences = schema_differences(conn)
            if differences:
                raise SchemaOutOfDateError(
                    f"The warehouse at {display_url(url)} has canvas-assets tables but no schema revision, "
                    f"and they differ from this version's schema ({len(differences)} differences, first: "
                    f"{differences[0]}). Migrate it by hand or start from an empty database.",
                    stage="load",
                )
            command.stamp(cfg, revision)
            return
        command.upgrade(cfg, revision)


def ensure_schema(url: str) -> None:
    """Empty database: create the schema. Up to date: nothing. Older (or unversioned): refuse."""
    head = head_revision()
    current = current_revision(url)
    if current == head:
        return
    where = display_url(url)
    if current is None:
        tables = existing_tables(url)
        if not tables:
            upgrade(url)
            return
        raise SchemaOutOfDateError(
            f"The warehouse at {where} has canvas-assets tables ({', '.join(tables[:3])}, ...) but no schema "
            f"revision: run `{UPGRADE_COMMAND}`.",
            stage="load",
        )
    if _known_revision(current):
        raise SchemaOutOfDateError(
            f"The warehouse schema at {where} is at revision {current}, this version of canvas-assets needs "
            f"{head}: run `{UPGRADE_COMMAND}`.",
            stage="load",
        )
    raise SchemaOutOfDateError(
        f"The warehouse schema at {where} is at revision {current}, which this version of canvas-assets does "
        f"not know (it needs {head}): the database was migrated by a newer release. Upgrade canvas-assets.",
        stage="load",
    )
