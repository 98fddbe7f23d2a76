"""Alembic migrations: the migrated schema equals the models; ensure_schema creates or refuses."""

import json
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
    assert migrate.current_revision(db_url) == migrate.head_revision()
    assert migrate.existing_tables(db_url) == sorted(ALL_TABLES)


def test_ensure_schema_leaves_an_up_to_date_database_alone(db_url):
    wh = Warehouse(db_url)
    wh.ensure_schema()
    wh.replace_staging("students", 1, [{"id": 1}], run_id="r", fetched_at=datetime.now(timezone.utc))
    wh.ensure_schema()
    assert wh.read_staging("students", [1]) == {1: [{"id": 1}]}


def test_ensure_schema_refuses_a_database_behind_head(db_url):
    migrate.upgrade(db_url, "0001_initial")
    with pytest.raises(SchemaOutOfDateError, match="run `canvas-assets db upgrade`") as info:
        Warehouse(db_url).ensure_schema()
    assert "0001_initial" in info.value.message
    assert migrate.head_revision() in info.value.message


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
    assert migrate.current_revision(db_url) == migrate.head_revision()
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


# --- 0001 -> 0002: the per-row synced_at goes, confirmations per course and entity come ---------------------
T0 = datetime(2025, 3, 1, 12, 0, tzinfo=timezone.utc)
T1 = datetime(2025, 3, 2, 12, 0, tzinfo=timezone.utc)


def _populate_0001(conn: sa.Connection) -> None:
    """A warehouse as 0001 loads left it: rows with synced_at, a soft-deleted row, score history."""
    conn.execute(
        sa.text(
            "INSERT INTO canvas_courses (id, name, synced_at) VALUES (101, 'Bio', :t1), (102, 'Chem', :t0)"
        ),
        {"t0": T0, "t1": T1},
    )
    conn.execute(
        sa.text("INSERT INTO canvas_students (id, name, synced_at) VALUES (1, 'Zoë', :t1)"), {"t1": T1}
    )
    conn.execute(
        sa.text(
            "INSERT INTO canvas_enrollments (id, course_id, user_id, current_score, current_grade, synced_at, "
            "deleted_at) VALUES (11, 101, 1, 80.5, 'B', :t1, NULL), (12, 101, 2, 60.0, 'D', :t0, :t1), "
            "(13, 102, 1, NULL, NULL, :t0, NULL)"
        ),
        {"t0": T0, "t1": T1},
    )
    conn.execute(
        sa.text(
            "INSERT INTO canvas_score_history (enrollment_id, course_id, user_id, recorded_at, current_score, "
            "current_grade, run_id) VALUES (11, 101, 1, :t0, 70.0, 'C', 'r0'), (11, 101, 1, :t1, 80.5, 'B', 'r1')"
        ),
        {"t0": T0, "t1": T1},
    )


def _dump(conn: sa.Connection, table: str, columns: str) -> list[tuple]:
    return [tuple(r) for r in conn.execute(sa.text(f"SELECT {columns} FROM {table} ORDER BY 1"))]


def test_upgrading_a_populated_0001_warehouse_keeps_every_row_and_its_history(db_url):
    migrate.upgrade(db_url, "0001_initial")
    engine = get_engine(db_url)
    with engine.begin() as conn:
        _populate_0001(conn)
    enrollment_columns = "id, course_id, user_id, current_score, current_grade, deleted_at"
    history_columns = (
        "id, enrollment_id, course_id, user_id, recorded_at, current_score, current_grade, run_id"
    )
    with engine.connect() as conn:
        before = {
            "courses": _dump(conn, "canvas_courses", "id, name, deleted_at"),
            "students": _dump(conn, "canvas_students", "id, name"),
            "enrollments": _dump(conn, "canvas_enrollments", enrollment_columns),
            "history": _dump(conn, "canvas_score_history", history_columns),
        }

    migrate.upgrade(db_url)
    dispose_engines()
    assert migrate.current_revision(db_url) == migrate.head_revision()
    wh = Warehouse(db_url)
    wh.ensure_schema()  # at head: no refusal
    with wh.engine.connect() as conn:
        assert migrate.schema_differences(conn) == []
        after = {
            "courses": _dump(conn, "canvas_courses", "id, name, deleted_at"),
            "students": _dump(conn, "canvas_students", "id, name"),
            "enrollments": _dump(conn, "canvas_enrollments", enrollment_columns),
            "history": _dump(conn, "canvas_score_history", history_columns),
        }
        columns = {c["name"] for c in sa.inspect(conn).get_columns("canvas_enrollments")}
    assert after == before
    assert "synced_at" not in columns
    # The last confirmation of each course and entity is the newest synced_at its rows had.
    confirmed = {(c["entity"], c["course_id"]): c["confirmed_at"] for c in wh.confirmations()}
    assert confirmed == {
        ("courses", 101): T1,
        ("courses", 102): T0,
        ("enrollments", 101): T1,
        ("enrollments", 102): T0,
    }

    # The upgraded warehouse loads on: an identical enrollment writes nothing, a changed one its history.
    from canvas_assets.transform import TRANSFORMERS, TransformOptions

    record = {
        "id": 11,
        "user_id": 1,
        "course_id": 101,
        "grades": {"current_score": 80.5, "current_grade": "B"},
    }
    result = TRANSFORMERS["enrollments"]({101: [record]}, TransformOptions())
    stats = wh.load(result, course_ids=[101], run_id="r2", synced_at=T1, full_refresh=False)
    assert stats.tables["canvas_enrollments"].history_rows == 0


def test_downgrading_0002_restores_synced_at_from_the_confirmations(db_url):
    from alembic import command

    migrate.upgrade(db_url, "0001_initial")
    engine = get_engine(db_url)
    with engine.begin() as conn:
        _populate_0001(conn)
    migrate.upgrade(db_url)
    command.downgrade(migrate.alembic_config(db_url), "0001_initial")
    dispose_engines()
    with get_engine(db_url).connect() as conn:
        rows = _dump(conn, "canvas_enrollments", "id, synced_at")
        assert "canvas_course_sync" not in sa.inspect(conn).get_table_names()
    assert [(i, _utc(t)) for i, t in rows][:2] == [(11, T1), (12, T1)]
    assert _utc(rows[2][1]) == T0


def _utc(value):
    if isinstance(value, str):
        value = datetime.fromisoformat(value)
    return value.replace(tzinfo=timezone.utc) if value.tzinfo is None else value.astimezone(timezone.utc)


# --- 0002 -> 0003: submissions, and how each staging row was fetched -----------------------------------------
def test_upgrading_0002_marks_existing_staging_as_full_fetches_and_adds_submissions(db_url):
    from alembic import command

    migrate.upgrade(db_url, "0002_change_only_loads")
    with get_engine(db_url).begin() as conn:
        conn.execute(
            sa.text(
                "INSERT INTO canvas_staging (entity, course_id, records, record_count, fetched_at, run_id) "
                "VALUES ('enrollments', 101, '[]', 0, :t0, 'r0')"
            ),
            {"t0": T0},
        )
    migrate.upgrade(db_url)
    dispose_engines()
    wh = Warehouse(db_url)
    wh.ensure_schema()
    (state,) = wh.fetch_states("enrollments", [101]).values()
    assert (state.mode, _utc(state.full_fetched_at), state.watermark) == ("full", T0, None)
    with wh.engine.connect() as conn:
        assert migrate.schema_differences(conn) == []
    # A staged incremental entity is dropped on the way down (its records would pass for a full fetch).
    wh.replace_staging("submissions", 101, [{"id": 1}], run_id="r1", fetched_at=T1)
    dispose_engines()
    command.downgrade(migrate.alembic_config(db_url), "0002_change_only_loads")
    dispose_engines()
    with get_engine(db_url).connect() as conn:
        tables = set(sa.inspect(conn).get_table_names())
        staged = _dump(conn, "canvas_staging", "entity, course_id")
    assert "canvas_submissions" not in tables and "canvas_submission_score_history" not in tables
    assert staged == [("enrollments", 101)]


# --- 0008 -> 0009: staging one row per record --------------------------------------------------------------
def test_upgrading_0008_splits_each_staged_text_into_rows_without_a_refetch(db_url):
    from alembic import command

    from canvas_assets.warehouse.staging import record_keys

    migrate.upgrade(db_url, "0008_live_events")
    texts = {
        (
            "students",
            101,
        ): '[{"id":12,"name":"Zoë 数学"},{"id":3},{"id":"7"},{"id":12,"name":"again"},{"x":1}]',
        ("grade_changes", 101): '[{"id":"0b1c-uuid","v":1.5}]',
        ("students", 102): "[]",
    }
    with get_engine(db_url).begin() as conn:
        for (entity, course_id), text in texts.items():
            conn.execute(
                sa.text(
                    "INSERT INTO canvas_staging (entity, course_id, records, record_count, fetched_at, run_id, "
                    "fetch_mode, full_fetched_at) VALUES (:e, :c, :r, 0, :t0, 'r0', 'full', :t0)"
                ),
                {"e": entity, "c": course_id, "r": text, "t0": T0},
            )
    migrate.upgrade(db_url)
    dispose_engines()
    wh = Warehouse(db_url)
    wh.ensure_schema()
    with wh.engine.connect() as conn:
        assert migrate.schema_differences(conn) == []
        keys = _dump(conn, "canvas_staging_records", "record_key, entity, course_id")
    assert sorted(k for k, *_ in keys) == sorted(["#4", "3", "7", "12", "12#000000003", "0b1c-uuid"])
    staged = wh.read_staging("students", [101, 102])
    # Key order (by length, then byte by byte: numeric for ids), the repeated id and the record without one
    # (`#4`) kept, not lost.
    assert list(staged[101]) == [
        {"id": 3},
        {"id": "7"},
        {"x": 1},
        {"id": 12, "name": "Zoë 数学"},
        {"id": 12, "name": "again"},
    ]
    assert staged[102] == []
    (state,) = wh.fetch_states("students", [101]).values()
    assert state.record_count == 5
    # The digest is the one a fetch of the same records makes: staging them again writes nothing.
    records = [{"id": 12, "name": "Zoë 数学"}, {"id": 3}, {"id": "7"}, {"id": 12, "name": "again"}, {"x": 1}]
    assert [k for k, _ in record_keys(records)] == ["12", "3", "7", "12#000000003", "#4"]
    assert wh.write_staging([("students", 101, records)], run_id="r1", fetched_at=T1) == 0
    assert (
        wh.write_staging(
            [("grade_changes", 101, [{"id": "0b1c-uuid", "v": 1.5}])], run_id="r1", fetched_at=T1
        )
        == 0
    )

    dispose_engines()
    command.downgrade(migrate.alembic_config(db_url), "0008_live_events")
    dispose_engines()
    with get_engine(db_url).connect() as conn:
        assert "canvas_staging_records" not in sa.inspect(conn).get_table_names()
        back = dict(
            ((e, c), json.loads(r)) for e, c, r in _dump(conn, "canvas_staging", "entity, course_id, records")
        )
    assert back == {
        ("grade_changes", 101): [{"id": "0b1c-uuid", "v": 1.5}],
        ("students", 101): [
            {"id": 3},
            {"id": "7"},
            {"x": 1},
            {"id": 12, "name": "Zoë 数学"},
            {"id": 12, "name": "again"},
        ],
        ("students", 102): [],
    }
