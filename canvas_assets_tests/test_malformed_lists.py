"""Malformed lists from Canvas (issue 21, case 3): soft deletes happen only after a complete, well-formed list.

Each test syncs a sandbox normally, then has it answer one list malformed (the hostile mode, over HTTP on
loopback) and syncs again through the real pipeline: the course and entity fail, or the bad records are
quarantined and nothing of the course is soft-deleted; the catalog never marks courses gone from a malformed
listing. Layer-1 is compared row for row with what the first sync left. The load's own rules (only the
course with a keyless record is spared, it is not confirmed, a quarantined module spares its course's items)
are tested on a real warehouse, SQLite and PostgreSQL.
"""

import json
import time
from collections.abc import Iterator

import dagster as dg
import pytest

from canvas_assets_tests.harness import Harness, failure_text, pipeline_harness, utc
from canvas_assets_tests.test_cli import canvas_assets, cli_env  # noqa: F401  (cli_env is a fixture)
from canvas_assets_tests.test_warehouse import COURSE, OTHER, T0, T1, enrollment, rows, run

HANG_S = 240  # a hang detector, not a timing: a small sync takes seconds, a hung one never ends


@pytest.fixture
def harness(make_sandbox, db_url, monkeypatch) -> Iterator[Harness]:
    """The pipeline on SQLite and on PostgreSQL, against a small sandbox."""
    with pipeline_harness(make_sandbox(scale="small", throttle="hosted"), db_url, monkeypatch) as h:
        yield h


def synced(h: Harness) -> int:
    """Discover and sync every course once (LIGHTWEIGHT: courses, students, enrollments); a course to hit."""
    assert h.discover().success
    first = h.sync("LIGHTWEIGHT")
    assert first.success, failure_text(first)
    data = h.sandbox.data
    return [c for c in data.course_ids(states=("available", "completed")) if data.enrollments_of(c)][1]


def enrollments(h: Harness) -> dict[int, tuple]:
    """Every Layer-1 enrollment: id -> (course, user, state, deleted_at)."""
    return {
        r.id: (r.course_id, r.user_id, r.enrollment_state, r.deleted_at)
        for r in h.rows("SELECT id, course_id, user_id, enrollment_state, deleted_at FROM canvas_enrollments")
    }


def log_of(h: Harness, run_id: str, entity: str) -> dict[int, tuple]:
    """This run's extract of `entity`: course -> (status, error_type, message)."""
    return {
        r.course_id: (r.status, r.error_type, r.message)
        for r in h.rows(
            "SELECT course_id, status, error_type, message FROM canvas_sync_log "
            "WHERE run_id = :r AND entity = :e AND stage = 'extract'",
            r=run_id,
            e=entity,
        )
    }


def rejected(h: Harness, run_id: str) -> list[tuple]:
    return [
        (r.entity, r.course_id, r.canvas_id, r.reason)
        for r in h.rows(
            "SELECT entity, course_id, canvas_id, reason FROM canvas_rejected_records WHERE run_id = :r",
            r=run_id,
        )
    ]


def catalog(h: Harness) -> dict[int, tuple]:
    return {
        r.course_id: (r.gone_at, r.gone_reason)
        for r in h.rows("SELECT course_id, gone_at, gone_reason FROM canvas_course_catalog")
    }


# --- a page of the enrollments list ------------------------------------------------------------------------
def test_an_enrollments_page_of_non_objects_fails_that_course_and_soft_deletes_nothing(harness):
    h = harness
    victim = synced(h)
    before = enrollments(h)
    assert sum(1 for course, *_ in before.values() if course == victim) > 0
    h.sandbox.misbehave(f"/courses/{victim}/enrollments", count=0, body=b'[null, 1, "x", [2]]')
    t0 = time.monotonic()
    result = h.sync("LIGHTWEIGHT")
    assert time.monotonic() - t0 < HANG_S
    h.sandbox.clear_faults()
    assert result.success, failure_text(result)  # one course failing does not fail the run
    log = log_of(h, result.run_id, "enrollments")
    status, error_type, message = log[victim]
    assert (status, error_type) == ("failed", "CanvasAPIError")
    assert "a list holding a NoneType where records belong: the page is malformed" in message
    assert {s for c, (s, _, _) in log.items() if c != victim} == {"success"}
    assert enrollments(h) == before  # nothing soft-deleted, nothing rewritten
    assert rejected(h, result.run_id) == []  # refused as a page, not filtered into the quarantine


def test_enrollments_without_their_id_are_quarantined_and_their_course_soft_deletes_nothing(harness):
    h = harness
    victim = synced(h)
    before = enrollments(h)
    live = sum(1 for course, *_, deleted in before.values() if course == victim and deleted is None)
    assert live > 0
    h.sandbox.misbehave(f"/courses/{victim}/enrollments", count=0, body=b'[{"foo": 1}]')
    t0 = time.monotonic()
    result = h.sync("LIGHTWEIGHT")
    assert time.monotonic() - t0 < HANG_S
    h.sandbox.clear_faults()
    assert result.success, failure_text(result)
    assert log_of(h, result.run_id, "enrollments")[victim][0] == "success"
    ((entity, course, canvas_id, reason),) = rejected(h, result.run_id)
    assert (entity, course, canvas_id) == ("enrollments", victim, None)
    assert "id" in reason
    assert enrollments(h) == before  # all of the victim's enrollments still live: none soft-deleted
    (latest,) = h.instance.fetch_materializations(
        dg.AssetRecordsFilter(
            asset_key=dg.AssetKey(["layer1", "enrollments"]), asset_partitions=[str(victim)]
        ),
        1,
    ).records
    meta = latest.asset_materialization.metadata
    assert latest.run_id == result.run_id
    assert "quarantined without its key" in meta["canvas/soft_delete_skipped"].value


def test_a_page_where_some_records_lack_their_id_loads_the_others_and_soft_deletes_nothing(harness):
    h = harness
    victim = synced(h)
    before = enrollments(h)
    theirs = sorted(i for i, (course, *_) in before.items() if course == victim)
    assert len(theirs) >= 3
    # The course's list, less its first enrollment, with one record whose id is gone and one whose state
    # changed: the first enrollment cannot be told deleted from keyless, so it stays live; the others load.
    records = [dict(e) for e in h.sandbox.data.enrollments_of(victim) if e["id"] in set(theirs[1:])]
    records[0] = {k: v for k, v in records[0].items() if k != "id"}
    changed = records[-1]
    changed["enrollment_state"] = "inactive" if changed["enrollment_state"] != "inactive" else "completed"
    h.sandbox.misbehave(f"/courses/{victim}/enrollments", count=0, body=json.dumps(records).encode())
    result = h.sync("LIGHTWEIGHT")
    h.sandbox.clear_faults()
    assert result.success, failure_text(result)
    quarantined = rejected(h, result.run_id)
    assert [(e, c, i) for e, c, i, _ in quarantined] == [("enrollments", victim, None)]
    after = enrollments(h)
    assert {i for i, row in after.items() if row[3] is not None} == {
        i for i, row in before.items() if row[3] is not None
    }
    assert after[theirs[0]][3] is None  # not in the list, but the list was incomplete: still live
    assert after[changed["id"]][2] == changed["enrollment_state"]  # the rest of the list was loaded


# --- the load, on a real warehouse -------------------------------------------------------------------------
def test_a_keyless_record_spares_only_its_own_course_from_soft_deletes(wh):
    run(
        wh,
        "enrollments",
        {COURSE: [enrollment(1), enrollment(2)], OTHER: [enrollment(3, course_id=OTHER)]},
        T0,
    )
    stats = run(wh, "enrollments", {COURSE: [enrollment(1), {"user_id": 1002}], OTHER: []}, T1)
    assert stats.tables["canvas_enrollments"].soft_deleted == 1
    assert {r["id"]: r["deleted_at"] for r in rows(wh, "canvas_enrollments")} == {1: None, 2: None, 3: T1}


def test_a_course_with_a_keyless_record_keeps_its_last_confirmation(wh):
    run(wh, "enrollments", {COURSE: [enrollment(1)], OTHER: [enrollment(3, course_id=OTHER)]}, T0)
    stats = run(wh, "enrollments", {COURSE: [{"foo": 1}], OTHER: [enrollment(3, course_id=OTHER)]}, T1)
    assert stats.courses_confirmed == 1
    confirmed = {r["course_id"]: r["confirmed_at"] for r in wh.confirmations("enrollments")}
    assert [utc(confirmed[COURSE]), utc(confirmed[OTHER])] == [T0, T1]


def test_a_quarantined_module_keeps_its_courses_module_items_live(wh):
    module = {"id": 50, "name": "Week 1", "items": [{"id": 500, "title": "A"}, {"id": 501, "title": "B"}]}
    other = {"id": 60, "name": "Week 2", "items": [{"id": 600, "title": "C"}]}
    run(wh, "modules", {COURSE: [module, other]}, T0)
    stats = run(wh, "modules", {COURSE: [{**module, "items": "broken"}, other]}, T1)
    assert stats.tables["canvas_module_items"].soft_deleted == 0
    assert stats.tables["canvas_modules"].soft_deleted == 0
    assert [(r["id"], r["deleted_at"]) for r in rows(wh, "canvas_module_items")] == [
        (500, None),
        (501, None),
        (600, None),
    ]


# --- the course listing --------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "body, message",
    [
        (b"[null]", "a list holding a NoneType where records belong: the page is malformed"),
        (b'[{"name": "x"}]', "course listing holds 1 course(s) of 1 without a usable id"),
    ],
    ids=["null", "no-id"],
)
def test_a_malformed_course_listing_fails_discovery_and_marks_no_course_gone(harness, body, message):
    h = harness
    synced(h)
    known, partitions, before = catalog(h), h.course_keys(), enrollments(h)
    assert all(gone is None for gone, _ in known.values())
    h.sandbox.misbehave("/courses?", count=0, body=body)  # the listing only, not /courses/:id/...
    t0 = time.monotonic()
    result = h.discover()
    assert time.monotonic() - t0 < HANG_S
    h.sandbox.clear_faults()
    assert not result.success
    assert message in failure_text(result)
    assert catalog(h) == known  # nothing marked gone, nothing added
    assert h.course_keys() == partitions
    assert enrollments(h) == before


def test_an_empty_course_listing_is_trusted_and_marks_the_known_courses_gone_keeping_their_rows(harness):
    h = harness
    synced(h)
    before = enrollments(h)
    h.sandbox.misbehave("/courses?", count=0, body=b"[]")
    result = h.discover()
    h.sandbox.clear_faults()
    assert result.success, failure_text(result)
    assert {reason for _, reason in catalog(h).values()} == {"not in the course listing"}
    assert enrollments(h) == before  # gone from the listing deletes no Layer-1 row
    again = h.discover()  # the next listing that has them brings them back
    assert again.success and all(gone is None for gone, _ in catalog(h).values())


# --- what the operator sees -------------------------------------------------------------------------------
@pytest.mark.slow
def test_sync_exits_1_and_names_the_course_whose_enrollments_page_is_malformed(cli_env, tmp_path, sandbox):  # noqa: F811
    first = canvas_assets("sync", "--profile", "LIGHTWEIGHT", env=cli_env, cwd=tmp_path)
    assert first.returncode == 0, first.stdout + first.stderr
    victim = [c for c in sandbox.data.course_ids(states=("available",)) if sandbox.data.enrollments_of(c)][1]
    sandbox.misbehave(f"/courses/{victim}/enrollments", count=0, body=b'[null, 1, "x", [2]]')
    result = canvas_assets("sync", "--profile", "LIGHTWEIGHT", env=cli_env, cwd=tmp_path)
    assert result.returncode == 1, result.stdout + result.stderr
    assert "courses failed   1" in result.stdout
    assert f"course {victim}: failed: CanvasAPIError" in result.stdout
    assert "the page is malformed" in result.stdout
