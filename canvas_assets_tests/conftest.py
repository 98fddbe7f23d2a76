"""Fixtures shared by the whole suite: a real sandbox on loopback and a real PostgreSQL database."""

import os
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import pytest
import sqlalchemy as sa

from canvas_assets.sandbox import CanvasSandbox, SandboxConfig

# The server every test database lives on. CI starts it (see .ci/run); trust auth, no password.
PG_ADMIN_URL = os.environ.get(
    "CANVAS_ASSETS_TEST_PG", "postgresql+psycopg2://postgres@127.0.0.1:5432/postgres"
)


def _admin_engine() -> sa.Engine:
    return sa.create_engine(PG_ADMIN_URL, isolation_level="AUTOCOMMIT", pool_pre_ping=True)


@contextmanager
def fresh_pg_database() -> Iterator[str]:
    """The URL of a new, empty PostgreSQL database, dropped afterwards (its sessions ended first)."""
    name = f"canvas_assets_test_{uuid.uuid4().hex[:12]}"
    admin = _admin_engine()
    with admin.connect() as conn:
        conn.execute(sa.text(f'CREATE DATABASE "{name}"'))
    url = PG_ADMIN_URL.rsplit("/", 1)[0] + f"/{name}"
    try:
        yield url
    finally:
        with admin.connect() as conn:
            conn.execute(
                sa.text("SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = :n"),
                {"n": name},
            )
            conn.execute(sa.text(f'DROP DATABASE IF EXISTS "{name}"'))
        admin.dispose()


@pytest.fixture
def pg_url() -> Iterator[str]:
    """A fresh, empty PostgreSQL database for one test, dropped afterwards."""
    with fresh_pg_database() as url:
        yield url


@pytest.fixture
def sqlite_url(tmp_path) -> str:
    return f"sqlite:///{tmp_path / 'warehouse.db'}"


@pytest.fixture
def wh(db_url):
    """A migrated warehouse on SQLite and on PostgreSQL (with `db_url`)."""
    from canvas_assets.warehouse import Warehouse
    from canvas_assets.warehouse.engine import dispose_engines

    warehouse = Warehouse(db_url)
    warehouse.ensure_schema()
    yield warehouse
    dispose_engines()


@pytest.fixture(params=["sqlite", "postgresql"])
def db_url(request) -> str:
    """Runs a test once on SQLite (the embedded default) and once on PostgreSQL (production)."""
    if request.param == "sqlite":
        return request.getfixturevalue("sqlite_url")
    return request.getfixturevalue("pg_url")


# ---------------------------------------------------------------- the Canvas sandbox (canvas_assets.sandbox)
@pytest.fixture
def make_sandbox() -> Iterator[Callable[..., CanvasSandbox]]:
    """Factory: `make_sandbox(**SandboxConfig fields)` starts a sandbox on a free loopback port;
    every sandbox it started is stopped after the test."""
    started: list[CanvasSandbox] = []

    def make(**config: Any) -> CanvasSandbox:
        sb = CanvasSandbox(SandboxConfig(**config)).start()
        started.append(sb)
        return sb

    yield make
    for sb in started:
        sb.stop()


@pytest.fixture
def sandbox(make_sandbox: Callable[..., CanvasSandbox]) -> CanvasSandbox:
    """A small sandbox with the hosted throttle, no latency and no random faults."""
    return make_sandbox(scale="small", throttle="hosted", latency_ms=0.0, fault_rate=0.0)
