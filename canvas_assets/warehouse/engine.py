"""Engines: one per database URL per process, configured for concurrent writers (SQLite: WAL, a busy
timeout, and `BEGIN IMMEDIATE` so writers queue for the lock up front instead of failing half-way through;
docs/architecture.md, "The local default store"). PostgreSQL sessions are pinned to UTC (the bulk loader
hands naive UTC datetimes to the driver).
"""

from __future__ import annotations

import os
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import make_url

from canvas_assets.errors import ConfigurationError

SQLITE_BUSY_TIMEOUT_S = 60.0
_WRITE_OPTION = "canvas_assets_write"
# pg_advisory_xact_lock key held by every Layer-1 load and live-event batch ("CNVS" in ASCII).
LOAD_LOCK_KEY = 0x434E5653

_ENGINES: dict[tuple[int, str], sa.Engine] = {}
_ENGINES_LOCK = threading.Lock()


def normalize_url(url: str) -> str:
    """Accept the URL spellings people use; pick the driver that is installed.

    SQLAlchemy 2.1 maps plain `postgresql://` to psycopg 3; the project ships psycopg2, so a bare
    `postgresql://` (or Heroku-style `postgres://`) uses psycopg2 unless psycopg 3 is installed.
    """
    if not url or not url.strip():
        raise ConfigurationError("The warehouse database URL is empty.")
    url = url.strip()
    if url.startswith("postgres://"):
        url = "postgresql://" + url[len("postgres://") :]
    try:
        parsed = make_url(url)
    except Exception as exc:
        raise ConfigurationError(f"Not a valid SQLAlchemy database URL: {exc}") from None
    if parsed.drivername == "postgresql":
        try:
            import psycopg  # noqa: F401
        except ImportError:
            parsed = parsed.set(drivername="postgresql+psycopg2")
        return parsed.render_as_string(hide_password=False)
    return url


def display_url(url: str) -> str:
    """The URL with its password masked, for logs, metadata and the CLI."""
    try:
        return make_url(url).render_as_string(hide_password=True)
    except Exception:
        return "<invalid database URL>"


def _create_engine(url: str) -> sa.Engine:
    parsed = make_url(url)
    backend = parsed.get_backend_name()
    if backend == "sqlite":
        database = parsed.database or ""
        in_memory = database in ("", ":memory:") or database.startswith("file:")
        if not in_memory:
            Path(database).expanduser().parent.mkdir(parents=True, exist_ok=True)
        engine = sa.create_engine(url, connect_args={"timeout": SQLITE_BUSY_TIMEOUT_S})

        @sa.event.listens_for(engine, "connect")
        def _on_connect(dbapi_conn: Any, _record: Any) -> None:
            # Take transaction control away from pysqlite so that BEGIN (IMMEDIATE) is ours to emit.
            dbapi_conn.isolation_level = None
            cursor = dbapi_conn.cursor()
            cursor.execute(f"PRAGMA busy_timeout = {int(SQLITE_BUSY_TIMEOUT_S * 1000)}")
            if not in_memory:
                cursor.execute("PRAGMA journal_mode = WAL")
                cursor.execute("PRAGMA synchronous = NORMAL")
            cursor.execute("PRAGMA temp_store = MEMORY")  # the loader stages frames in temp tables
            cursor.close()

        @sa.event.listens_for(engine, "begin")
        def _on_begin(conn: sa.Connection) -> None:
            immediate = conn.get_execution_options().get(_WRITE_OPTION, False)
            conn.exec_driver_sql("BEGIN IMMEDIATE" if immediate else "BEGIN")

        return engine
    if backend == "postgresql":
        connect_args: dict[str, Any] = {}
        if parsed.get_driver_name() == "psycopg2":
            connect_args["options"] = "-c timezone=UTC"
        engine = sa.create_engine(url, pool_pre_ping=True, connect_args=connect_args)
        utc_already = bool(connect_args)

        @sa.event.listens_for(engine, "connect")
        def _session(dbapi_conn: Any, _record: Any) -> None:
            cursor = dbapi_conn.cursor()
            if not utc_already:
                cursor.execute("SET TIME ZONE 'UTC'")
            # Staged records are hundreds of MB of JSON text per sync, compressed by the server as they are
            # written: lz4 takes a quarter of the CPU of the default pglz (3.7 s less for the large sandbox's
            # 629 MB), where the server has it (PostgreSQL 14 and later, built with lz4).
            cursor.execute(
                "SELECT 'lz4' = ANY(enumvals) FROM pg_settings WHERE name = 'default_toast_compression'"
            )
            row = cursor.fetchone()
            if row is not None and row[0]:
                cursor.execute("SET default_toast_compression = 'lz4'")
            cursor.close()
            dbapi_conn.commit()

        return engine
    raise ConfigurationError(
        f"Unsupported warehouse database {backend!r} ({display_url(url)}): use SQLite or PostgreSQL."
    )


def get_engine(url: str) -> sa.Engine:
    """The process's engine for `url` (created on first use)."""
    url = normalize_url(url)
    key = (os.getpid(), url)
    with _ENGINES_LOCK:
        engine = _ENGINES.get(key)
        if engine is None:
            engine = _ENGINES[key] = _create_engine(url)
        return engine


def dispose_engines() -> None:
    """Close every cached engine of this process (tests, and before dropping a database)."""
    with _ENGINES_LOCK:
        for (pid, _url), engine in list(_ENGINES.items()):
            if pid == os.getpid():
                engine.dispose()
        _ENGINES.clear()


@contextmanager
def write_transaction(engine: sa.Engine) -> Iterator[sa.Connection]:
    """One write transaction (on SQLite `BEGIN IMMEDIATE`: it waits for the write lock up front)."""
    with engine.connect() as conn:
        conn.execution_options(**{_WRITE_OPTION: True})
        with conn.begin():
            yield conn


@contextmanager
def locked_transaction(engine: sa.Engine, key: int = LOAD_LOCK_KEY) -> Iterator[sa.Connection]:
    """A `write_transaction` that on PostgreSQL first takes the advisory lock `key` (by default the loads'
    lock: loads compare with what is committed, so two at once would both see the same change). On SQLite,
    BEGIN IMMEDIATE already serialises writers."""
    with write_transaction(engine) as conn:
        if conn.dialect.name == "postgresql":
            conn.execute(sa.text("SELECT pg_advisory_xact_lock(:key)"), {"key": key})
        yield conn


DATABASE_URL_ENV = "CANVAS_ASSETS_DATABASE_URL"


def default_database_url() -> str:
    """The warehouse URL when none is configured: $CANVAS_ASSETS_DATABASE_URL, else the database
    `canvas_assets` of the local embedded PostgreSQL (started on demand; see
    `canvas_assets.instance.local_store`)."""
    url = os.environ.get(DATABASE_URL_ENV, "").strip()
    if url:
        return url
    from canvas_assets.instance.local_store import local_warehouse_url

    return local_warehouse_url()
