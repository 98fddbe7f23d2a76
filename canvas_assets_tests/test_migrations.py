"""Alembic migrations: the migrated schema equals the models; ensure_schema creates or refuses."""

from datetime import datetime, timezone

import pytest
import sqlalchemy as sa

from canvas_assets.errors import SchemaOutOfDateError
from canvas_assets.warehouse import Warehouse, migrate
from canvas_assets.warehouse.engine import dispose_engines, get_engine
from canvas_assets.warehouse.models import ALL_TABLES, metadata


@pytest.fixture(autouse=True)
def _dispose():
    yield
    dispose_engines()


def test_the_migrated_schema_matches_the_models(db_url):
    migrate.upgrade(db_url)
    with get_engine(db_url).connect() as conn:
        assert migrate.schema_differences(conn) == []


def test_the_comparison_notices_a_schema_that_differs(db_url):
    migrate.upgrade(db_url)
    with get_engine(db_url).begin() as conn:
        conn.execute(sa.text("DROP INDEX ix_canvas_enrollments_course_id"))
    with get_engine(db_url).connect() as conn:
        differences = migrate.schema_differences(conn)
    assert [d[0] for d in differences] == ["add_index"]


def test_ensure_schema_creates_everything_in_an_empty_database(db_url):
    Warehouse(db_url).ensure_schema()
    assert migrate.current_revision(db_url) == migrate.head_revision() == "0001_initial"
    assert migrate.existing_tables(db_url) == sorted(ALL_TABLES)


def test_ensure_schema_leaves_an_up_to_date_database_alone(db_url):
    wh = Warehouse(db_url)
    wh.ensure_schema()
    wh.replace_staging("students", 1, [{"id": 1}], run_id="r", fetched_at=datetime.now(timezone.utc))
    wh.ensure_schema()
    assert wh.read_staging("students", [1]) == {1: [{"id": 1}]}


def test_ensure_schema_refuses_a_database_behind_head(db_url, monkeypatch):
    migrate.upgrade(db_url)
    monkeypatch.setattr(migrate, "head_revision", lambda: "0002_future")
    with pytest.raises(SchemaOutOfDateError, match="run `canvas-assets db upgrade`") as info:
        Warehouse(db_url).ensure_schema()
    assert "0001_initial" in info.value.message


def test_ensure_schema_refuses_a_database_from_a_newer_release(db_url):
    migrate.upgrade(db_url)
    with get_engine(db_url).begin() as conn:
        conn.execute(sa.text("UPDATE alembic_version SET version_num = '0099_from_the_future'"))
    with pytest.raises(SchemaOutOfDateError, match="newer release"):
        Warehouse(db_url).ensure_schema()


def test_ensure_schema_refuses_tables_without_a_revision(db_url):
    metadata.create_all(get_engine(db_url))
    with pytest.raises(SchemaOutOfDateError, match="no schema revision: run `canvas-assets db upgrade`"):
        Warehouse(db_url).ensure_schema()


def test_upgrade_adopts_unversioned_tables_that_match_the_models(db_url):
    metadata.create_all(get_engine(db_url))
    migrate.upgrade(db_url)
    assert migrate.current_revision(db_url) == "0001_initial"
    Warehouse(db_url).ensure_schema()


def test_migrations_need_no_alembic_ini_or_working_directory(sqlite_url, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    migrate.upgrade(sqlite_url)
    assert migrate.current_revision(sqlite_url) == migrate.head_revision()
    assert not list(tmp_path.glob("*.ini"))


def test_downgrade_to_base_removes_every_table(sqlite_url):
    from alembic import command

    migrate.upgrade(sqlite_url)
    command.downgrade(migrate.alembic_config(sqlite_url), "base")
    assert migrate.existing_tables(sqlite_url) == []
