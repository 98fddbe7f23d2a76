"""Staging, course catalog, sync log, quarantine, the engine set-up and the Dagster resource."""

import json
import os
import threading
from datetime import datetime, timedelta, timezone

import pytest
import sqlalchemy as sa

from canvas_assets.defs.resources import WarehouseResource, default_database_url
from canvas_assets.transform import Rejected
from canvas_assets.warehouse import Warehouse
from canvas_assets.warehouse.engine import dispose_engines, normalize_url, write_transaction
from canvas_assets.warehouse.models import table

T0 = datetime(2025, 3, 1, 12, 0, tzinfo=timezone.utc)
T1 = T0 + timedelta(hours=1)


def rows(wh, name, *order_by):
    t = table(name)
    with wh.engine.connect() as conn:
        query = sa.select(t).order_by(*(t.c[c] for c in order_by or [t.primary_key.columns[0].name]))
        return [dict(r._mapping) for r in conn.execute(query)]


# --- staging ----------------------------------------------------------------------------------------------
def test_staging_is_replaced_not_appended(wh):
    wh.replace_staging("students", 1, [{"id": 1}, {"id": 2}], run_id="a", fetched_at=T0)
    wh.replace_staging("students", 1, [{"id": 3}], run_id="b", fetched_at=T1)
    assert wh.read_staging("students", [1]) == {1: [{"id": 3}]}
    [row] = rows(wh, "canvas_staging", "course_id")
    assert (row["record_count"], row["run_id"], row["fetched_at"]) == (1, "b", T1)


def staged_rows(wh):
    with wh.engine.connect() as conn:
        query = "SELECT entity, course_id, record_key, record FROM canvas_staging_records ORDER BY 1, 2, 3"
        return [tuple(r) for r in conn.execute(sa.text(query))]


def test_staging_by_copy_stages_exactly_what_the_statements_stage(pg_url, sqlite_url, monkeypatch):
    """On PostgreSQL record rows go by binary COPY (in blocks); elsewhere by inserts. Both stage the same rows:
    odd text, NULLs, empty lists, a repeated id and a record without one, incremental changes."""
    from canvas_assets.warehouse import staging
    from canvas_assets.warehouse.staging import StagingItem

    records = [
        {"id": i, "name": "Zoë 数学 🦄", "odd": "'\\\"\n\t\u0000", "lone": "\ud800"} for i in range(300)
    ]
    plain = [{"id": i, "name": "Zoë 数学", "quote": "it's"} for i in range(300)]
    streams: list[int] = []
    stream = staging._CopyStream
    monkeypatch.setattr(staging, "_CopyStream", lambda rows: streams.append(1) or stream(rows))
    monkeypatch.setattr(staging, "COPY_BLOCK", 1000)  # many blocks
    monkeypatch.setattr(staging, "INSERT_ROWS", 7)  # many statements
    staged = {}
    for url in (sqlite_url, pg_url):
        wh = Warehouse(url)
        wh.ensure_schema()
        wh.write_staging(
            [("students", 1, [{"id": 0}]), ("students", 3, []), ("submissions", 2, plain[:5])],
            run_id="old",
            fetched_at=T0,
        )
        wh.write_staging(
            [
                ("students", 1, records),
                StagingItem(
                    "submissions",
                    2,
                    [{"id": 3, "x": 1}, {"id": 400}, {"no": "id"}],
                    "incremental",
                    T1,
                    T0,
                    {"1"},
                ),
                StagingItem("submissions", 3, plain, "full", None, None),
                ("students", 3, []),
                ("students", 4, [{"id": 4}, {"id": 4, "again": True}, {"no": "id"}]),
            ],
            run_id="run",
            fetched_at=T1,
        )
        staged[url] = (rows(wh, "canvas_staging", "entity", "course_id"), staged_rows(wh))
        assert wh.read_staging("students", [1, 3, 4]) == {
            1: records,
            3: [],
            4: [{"id": 4}, {"no": "id"}, {"id": 4, "again": True}],  # keys 4, #2, 4#000000001
        }
        expected = [plain[0], plain[2], {"id": 3, "x": 1}, plain[4], {"no": "id"}, {"id": 400}]
        assert wh.read_staging("submissions", [2, 3]) == {2: expected, 3: plain}
        dispose_engines()
    assert len(streams) == 3  # PostgreSQL: the first write's new courses, the second's, its changed ones
    assert staged[sqlite_url] == staged[pg_url]
    by_key = {(r["entity"], r["course_id"]): r for r in staged[pg_url][0]}
    assert by_key[("submissions", 2)]["fetch_mode"] == "incremental"
    assert by_key[("submissions", 2)]["records_digest"] is None  # an incremental fetch: compared by row next
    assert (by_key[("submissions", 2)]["watermark"], by_key[("submissions", 2)]["full_fetched_at"]) == (
        T1,
        T0,
    )
    assert (by_key[("submissions", 3)]["watermark"], by_key[("submissions", 3)]["full_fetched_at"]) == (
        None,
        T1,
    )
    assert [by_key[("students", c)]["record_count"] for c in (1, 3, 4)] == [300, 0, 3]
    assert by_key[("submissions", 2)]["record_count"] == 6
    assert {r["run_id"] for r in staged[pg_url][0]} == {"run"}


def test_a_full_fetch_writes_only_the_records_that_changed(wh):
    """An unchanged fetch writes no record row (its digest is the staged one); another writes the records it
    adds or changes and deletes those it no longer has, and the staged records are then exactly its own."""
    first = [{"id": i, "v": i} for i in range(1, 6)]
    assert wh.write_staging([("students", 1, first), ("students", 2, [])], run_id="a", fetched_at=T0) == 5
    assert (
        wh.write_staging([("students", 1, first[::-1]), ("students", 2, [])], run_id="b", fetched_at=T1) == 0
    )
    assert [r["run_id"] for r in rows(wh, "canvas_staging", "course_id")] == ["b", "b"]  # fetched again
    second = [{"id": 1, "v": 1}, {"id": 2, "v": "changed"}, {"id": 4, "v": 4}, {"id": 5, "v": 5}, {"id": 9}]
    assert (
        wh.write_staging([("students", 1, second), ("students", 2, [{"id": 1}])], run_id="c", fetched_at=T1)
        == 4
    )
    assert wh.read_staging("students", [1, 2]) == {1: second, 2: [{"id": 1}]}
    assert [r["record_count"] for r in rows(wh, "canvas_staging", "course_id")] == [5, 1]
    assert (
        wh.write_staging([("students", 1, []), ("students", 2, [{"id": 1}])], run_id="d", fetched_at=T1) == 5
    )
    assert wh.read_staging("students", [1]) == {1: []}


def test_an_incremental_fetch_upserts_its_changes_and_deletes_what_it_drops(wh):
    from canvas_assets.warehouse.staging import StagingItem

    wh.write_staging(
        [("submissions", 1, [{"id": 1}, {"id": 2}, {"id": 3}, {"bad": 1}])], run_id="a", fetched_at=T0
    )
    changes = [{"id": 2, "v": "old"}, {"id": 10}, {"id": 2, "v": "new"}, {"still": "bad"}]
    item = StagingItem("submissions", 1, changes, "incremental", T1, T0, {"3", "99"})
    assert wh.write_staging([item], run_id="b", fetched_at=T1) == 5  # 2 deleted, 1 updated, 2 inserted
    assert wh.read_staging("submissions", [1]) == {
        1: [{"id": 1}, {"id": 2, "v": "new"}, {"still": "bad"}, {"id": 10}]  # keys 1, 2, #3, 10
    }
    (state,) = wh.fetch_states("submissions", [1]).values()
    assert (state.mode, state.record_count, state.watermark, state.full_fetched_at) == (
        "incremental",
        4,
        T1,
        T0,
    )


def test_staged_batches_read_whole_courses_in_key_order(wh):
    from canvas_assets.warehouse import staging

    staged = {1: [{"id": 10}, {"id": 9}, {"id": "abc"}], 2: [], 3: [{"id": 1}], 4: [{"id": 2}, {"id": 1}]}
    wh.write_staging([("students", c, r) for c, r in staged.items()], run_id="r", fetched_at=T0)
    with wh.engine.connect() as conn:
        batches = list(staging.staged_batches(conn, "students", [4, 3, 2, 1, 5], records=2))
    assert batches == [
        {1: [{"id": 9}, {"id": 10}, {"id": "abc"}]},  # a course bigger than a batch is one batch
        {2: [], 3: [{"id": 1}]},
        {4: [{"id": 1}, {"id": 2}]},
    ]
    keyed = wh.read_staging("students", [1])[1].keyed()
    assert list(keyed) == [("9", {"id": 9}), ("10", {"id": 10}), ("abc", {"id": "abc"})]


def test_two_syncs_staging_the_same_new_course_at_once_write_one_after_the_other(pg_url):
    """Both find the course unstaged; without the per-course lock the second's insert would wait for the
    first's and then fail on its key (UniqueViolation). With it, the second waits and then compares."""
    from canvas_assets.warehouse import staging

    wh = Warehouse(pg_url)
    wh.ensure_schema()
    first_wrote, release = threading.Event(), threading.Event()
    errors: list[BaseException] = []

    def first() -> None:
        try:
            with write_transaction(wh.engine) as conn:
                staging.write_staging(
                    conn, [("students", 1, [{"id": 1}, {"id": 2}])], run_id="a", fetched_at=T0
                )
                first_wrote.set()
                release.wait(10)
        except BaseException as exc:
            errors.append(exc)
            first_wrote.set()

    def second() -> None:
        try:
            wh.write_staging([("students", 1, [{"id": 2}, {"id": 3}])], run_id="b", fetched_at=T1)
        except BaseException as exc:
            errors.append(exc)

    one = threading.Thread(target=first)
    one.start()
    assert first_wrote.wait(10)
    two = threading.Thread(target=second)
    two.start()
    two.join(1.0)
    assert two.is_alive()  # waiting for the first sync's transaction
    release.set()
    one.join(10)
    two.join(10)
    assert errors == []
    assert wh.read_staging("students", [1]) == {1: [{"id": 2}, {"id": 3}]}
    assert [r["run_id"] for r in rows(wh, "canvas_staging")] == ["b"]
    dispose_engines()


def test_read_staging_omits_courses_with_nothing_staged_and_other_entities(wh):
    wh.write_staging(
        [("students", 1, [{"id": 1, "name": "Zoë"}]), ("students", 2, []), ("enrollments", 3, [{"id": 9}])],
        run_id="a",
        fetched_at=T0,
    )
    assert wh.read_staging("students", [1, 2, 3, 4]) == {1: [{"id": 1, "name": "Zoë"}], 2: []}
    assert set(wh.staged_courses("students")) == {1, 2}


def test_a_staging_batch_with_an_unserialisable_record_writes_nothing(wh):
    wh.replace_staging("students", 1, [{"id": 1}], run_id="a", fetched_at=T0)
    with pytest.raises(TypeError):
        # json.dumps(default=str) copes with odd values; a tuple key it cannot write.
        wh.write_staging(
            [("students", 1, [{"id": 2}]), ("students", 2, [{(1, 2): "x"}])],
            run_id="b",
            fetched_at=T1,
        )
    assert wh.read_staging("students", [1, 2]) == {1: [{"id": 1}]}


# --- catalog ----------------------------------------------------------------------------------------------
def listing(*ids):
    return [{"id": i, "name": f"Course {i}", "workflow_state": "available", "account_id": 1} for i in ids]


def test_the_catalog_diff_reports_new_vanished_and_returned_courses(wh):
    first = wh.upsert_catalog(listing(1, 2, 3), seen_at=T0)
    assert (first.new, first.vanished, first.returned, len(first.active)) == ([1, 2, 3], [], [], 3)

    second = wh.upsert_catalog(listing(1, 2), seen_at=T1)
    assert (second.new, second.vanished, second.returned, second.active) == ([], [3], [], [1, 2])
    gone = {r["course_id"]: r for r in rows(wh, "canvas_course_catalog")}[3]
    assert (gone["gone_at"], gone["gone_reason"], gone["first_seen_at"]) == (
        T1,
        "not in the course listing",
        T0,
    )

    third = wh.upsert_catalog(listing(1, 2, 3, 4), seen_at=T1 + timedelta(hours=1))
    assert (third.new, third.returned, len(third.active)) == ([4], [3], 4)
    assert {r["course_id"]: r["gone_at"] for r in rows(wh, "canvas_course_catalog")}[3] is None


def test_a_partial_listing_marks_nothing_vanished(wh):
    wh.upsert_catalog(listing(1, 2, 3), seen_at=T0)
    diff = wh.upsert_catalog(listing(1), seen_at=T1, full_listing=False)
    assert diff.vanished == []
    assert wh.catalog_course_ids() == [1, 2, 3]


def test_catalog_ids_may_be_strings(wh):
    diff = wh.upsert_catalog([{"id": str(2**40), "name": "Big"}, {"name": "no id"}], seen_at=T0)
    assert (diff.listed, diff.invalid) == ([2**40], 1)


def test_a_course_marked_gone_leaves_the_catalog_and_its_rows_are_soft_deleted(wh):
    from canvas_assets.transform import TRANSFORMERS

    wh.upsert_catalog(listing(1, 2), seen_at=T0)
    result = TRANSFORMERS["courses"]({1: [{"id": 1, "name": "One"}]})
    wh.load(result, course_ids=[1], run_id="r", synced_at=T0)
    wh.mark_course_gone(1, reason="404 Not Found", at=T1)
    assert wh.catalog_course_ids() == [2]
    assert wh.catalog_course_ids(include_gone=True) == [1, 2]
    assert rows(wh, "canvas_courses")[0]["deleted_at"] == T1


# --- sync log and quarantine ------------------------------------------------------------------------------
def test_sync_log_rows_are_written_and_duration_is_derived(wh):
    wh.write_sync_log(
        [
            {
                "run_id": "r1",
                "course_id": "101",
                "entity": "enrollments",
                "stage": "extract",
                "records": 40,
                "api_calls": 2,
                "started_at": T0,
                "finished_at": T0 + timedelta(seconds=2.5),
                "status": "success",
            },
            {
                "run_id": "r1",
                "course_id": 102,
                "entity": "enrollments",
                "stage": "extract",
                "status": "gone",
                "error_type": "CanvasNotFound",
                "error_category": "canvas_api",
                "message": "404",
            },
        ]
    )
    first, second = rows(wh, "canvas_sync_log", "id")
    assert (first["course_id"], first["duration_s"], first["status"]) == (101, 2.5, "success")
    assert (second["status"], second["error_type"], second["duration_s"]) == ("gone", "CanvasNotFound", None)


def test_a_sync_log_row_with_an_unknown_column_is_refused(wh):
    with pytest.raises(ValueError, match="colour"):
        wh.write_sync_log([{"run_id": "r", "colour": "blue"}])


def test_rejected_records_are_quarantined_with_reason_and_payload(wh):
    wh.write_rejected(
        [
            Rejected(
                "enrollments", 101, 7, "created_at: not an ISO 8601 timestamp: 'x'", {"id": 7, "n": "Zoë"}
            )
        ],
        run_id="r1",
    )
    [row] = rows(wh, "canvas_rejected_records", "id")
    assert (row["entity"], row["course_id"], row["canvas_id"], row["run_id"]) == ("enrollments", 101, 7, "r1")
    assert json.loads(row["payload"]) == {"id": 7, "n": "Zoë"}
    assert row["rejected_at"].tzinfo is not None


# --- engine and resource ----------------------------------------------------------------------------------
def test_two_writers_share_one_sqlite_file_without_lock_errors(sqlite_url):
    warehouses = [Warehouse(sqlite_url), Warehouse(sqlite_url)]
    warehouses[0].ensure_schema()
    errors = []

    def write(wh, offset):
        try:
            for i in range(20):
                wh.replace_staging("students", offset + i, [{"id": i}], run_id="r", fetched_at=T0)
        except Exception as exc:  # pragma: no cover - the assertion below reports it
            errors.append(exc)

    threads = [threading.Thread(target=write, args=(w, n * 100)) for n, w in enumerate(warehouses)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    assert len(warehouses[0].read_staging("students", range(200))) == 40
    with warehouses[0].engine.connect() as conn:
        assert conn.exec_driver_sql("PRAGMA journal_mode").scalar() == "wal"
    dispose_engines()


def test_the_display_url_masks_the_password():
    wh = Warehouse("postgresql+psycopg2://canvas:s3cret@db.example.edu:5432/warehouse")
    assert "s3cret" not in wh.url_for_display
    assert "***" in wh.url_for_display
    assert "s3cret" not in repr(wh)


def test_a_bare_postgresql_url_uses_the_installed_driver():
    assert normalize_url("postgres://u@h/db").startswith("postgresql+psycopg")


def test_default_url_prefers_the_environment_variable(monkeypatch):
    monkeypatch.setenv("CANVAS_ASSETS_DATABASE_URL", "postgresql+psycopg2://u@h/db")
    monkeypatch.setenv("DAGSTER_HOME", "/somewhere")
    assert default_database_url() == "postgresql+psycopg2://u@h/db"


def test_default_url_is_the_local_store_in_canvas_assets_home(monkeypatch, tmp_path):
    monkeypatch.delenv("CANVAS_ASSETS_DATABASE_URL", raising=False)
    monkeypatch.setenv("CANVAS_ASSETS_HOME", str(tmp_path / "store"))
    url = default_database_url()
    assert url.startswith("postgresql+psycopg2://postgres@/canvas_assets?host=")
    assert (tmp_path / "store" / "pgdata" / "PG_VERSION").exists()
    engine = sa.create_engine(url, poolclass=sa.pool.NullPool)
    with engine.connect() as conn:
        assert conn.execute(sa.text("SELECT current_database()")).scalar_one() == "canvas_assets"


def test_the_local_store_defaults_to_a_folder_in_the_working_directory(monkeypatch, tmp_path):
    from canvas_assets.instance.local_store import local_home

    monkeypatch.delenv("CANVAS_ASSETS_HOME", raising=False)
    monkeypatch.chdir(tmp_path)
    assert local_home() == (tmp_path / ".canvas_assets").resolve()
    assert os.environ["CANVAS_ASSETS_HOME"] == str((tmp_path / ".canvas_assets").resolve())  # exported


def test_the_resource_uses_its_url_field_first(monkeypatch, sqlite_url):
    monkeypatch.setenv("CANVAS_ASSETS_DATABASE_URL", "sqlite:///elsewhere.db")
    wh = WarehouseResource(url=sqlite_url).get_warehouse()
    assert wh.url == sqlite_url
    assert WarehouseResource(url=sqlite_url).get_warehouse().engine is wh.engine  # cached per URL
    dispose_engines()


def test_the_resource_without_a_url_resolves_the_default(monkeypatch, tmp_path):
    monkeypatch.setenv("CANVAS_ASSETS_DATABASE_URL", f"sqlite:///{tmp_path / 'w.db'}")
    assert WarehouseResource().get_warehouse().url == default_database_url()
    dispose_engines()
