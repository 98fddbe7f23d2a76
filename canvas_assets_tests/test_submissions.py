"""Submissions end to end: the sandbox over HTTP → incremental extract → staging → canvas_submissions.

A first sync fetches a course's submissions in full; later syncs ask only for what was submitted or graded
after the course's watermark and merge it. Every test compares the warehouse with the sandbox's ground
truth, value by value.
"""

from collections.abc import Iterator
from datetime import datetime, timedelta, timezone
from typing import Any

import pytest

from canvas_assets.extract import incremental
from canvas_assets.profiles import parse_profile
from canvas_assets.warehouse.models import table
from canvas_assets_tests.harness import Harness, failure_text, pipeline_harness, utc

BIG = 1000  # the small sandbox's large course: several pages of submissions
ANALYTICS = "ANALYTICS_FOCUSED"  # submissions on, incremental, full refresh after 7 days
FULL = "FULL_PROCESSING"  # every sync fetches submissions in full (the weekly schedule)
SUBMISSION_COLUMNS = [c.name for c in table("canvas_submissions").c if "path" in c.info]


@pytest.fixture
def harness(make_sandbox, db_url, monkeypatch) -> Iterator[Harness]:
    """The pipeline on SQLite and on PostgreSQL."""
    with pipeline_harness(make_sandbox(scale="small", throttle="hosted"), db_url, monkeypatch) as h:
        assert h.discover().success
        yield h


@pytest.fixture
def pg_harness(make_sandbox, pg_url, monkeypatch) -> Iterator[Harness]:
    with pipeline_harness(make_sandbox(scale="small", throttle="hosted"), pg_url, monkeypatch) as h:
        assert h.discover().success
        yield h


def sync(h: Harness, profile: Any = ANALYTICS, course: int = BIG) -> None:
    result = h.sync(profile, [str(course)])
    assert result.success, failure_text(result)


def sync_with_a_neighbour(h: Harness) -> Any:
    """A ranged run over BIG and the next course: when BIG fails, the run goes on (and is not retried)."""
    keys = h.course_keys()
    pair = keys[keys.index(str(BIG)) : keys.index(str(BIG)) + 2]
    assert len(pair) == 2
    # No retries: the injected faults fail the course at once.
    result = h.sync(parse_profile({"name": ANALYTICS, "processing": {"retry_attempts": 0}}), pair)
    assert result.success, failure_text(result)
    return result


def _same(column: str, stored: Any, served: Any) -> bool:
    if column.endswith("_at"):
        return utc(stored) == (None if served is None else utc(served))
    if isinstance(served, float) and stored is not None:
        return abs(float(stored) - served) < 1e-9
    return bool(stored == served)


def assert_equals_ground_truth(h: Harness, course: int = BIG) -> dict[int, Any]:
    """The course's live canvas_submissions rows are exactly what Canvas serves now, value by value."""
    truth = {s["id"]: s for s in h.sandbox.data.submissions_of(course)}
    rows = {
        r._mapping["id"]: r._mapping
        for r in h.rows(
            "SELECT * FROM canvas_submissions WHERE course_id = :c AND deleted_at IS NULL", c=course
        )
    }
    assert truth, "the course has submissions to compare"
    assert set(rows) == set(truth)
    for sid, served in truth.items():
        row = rows[sid]
        for column in SUBMISSION_COLUMNS:
            expected = course if column == "course_id" else served.get(column)
            assert _same(column, row[column], expected), (sid, column, row[column], expected)
    return rows


def staging_state(h: Harness, course: int = BIG) -> Any:
    (row,) = h.rows(
        "SELECT fetch_mode, watermark, full_fetched_at, record_count FROM canvas_staging "
        "WHERE entity = 'submissions' AND course_id = :c",
        c=course,
    )
    return row


def latest_change(records: list[dict]) -> datetime:
    return max(utc(s[k]) for s in records for k in ("submitted_at", "graded_at") if s[k] is not None)


def submission_requests(h: Harness) -> int:
    return h.requests_to("/students/submissions")


# --- the first sync ------------------------------------------------------------------------------------
def test_a_first_sync_fetches_every_submission_and_equals_ground_truth(harness):
    h = harness
    h.sandbox.reset_stats()
    sync(h)
    assert_equals_ground_truth(h)
    mode, watermark, full_at, count = staging_state(h)
    truth = h.sandbox.data.submissions_of(BIG)
    assert (mode, count) == ("full", len(truth))
    assert utc(watermark) == latest_change(truth)
    assert utc(full_at) is not None
    # every page asked for every student's submissions, 100 at a time
    assert submission_requests(h) == -(-len(truth) // 100)
    # graded submissions start their score history
    graded = [s for s in truth if s["score"] is not None or s["grade"] is not None]
    history = h.rows("SELECT COUNT(*) FROM canvas_submission_score_history WHERE course_id = :c", c=BIG)[0][0]
    assert history == len(graded)


def test_lightweight_never_asks_for_submissions(harness):
    h = harness
    h.sandbox.reset_stats()
    sync(h, "LIGHTWEIGHT")
    assert submission_requests(h) == 0
    assert h.rows("SELECT COUNT(*) FROM canvas_submissions")[0][0] == 0


# --- incremental syncs ------------------------------------------------------------------------------
def test_an_incremental_sync_after_changes_equals_ground_truth_with_fewer_requests(harness):
    h = harness
    data = h.sandbox.data
    h.sandbox.reset_stats()
    sync(h)
    full_requests = submission_requests(h)
    assert full_requests >= 3
    _, first_watermark, first_full_at, _ = staging_state(h)

    submitted = data.submit_work(BIG)
    regraded = data.grade_submission(BIG)
    excused = data.excuse_submission(BIG)
    # An assignment deleted and a student dropped, neither touching the three changed submissions.
    served = {s["id"]: s for s in data.submissions_of(BIG)}
    changed = [served[s] for s in (submitted, regraded, excused)]
    other_assignment = next(
        s["assignment_id"]
        for s in served.values()
        if s["assignment_id"] not in {c["assignment_id"] for c in changed}
    )
    deleted_assignment = data.delete_assignment(BIG, other_assignment)
    student = next(
        e
        for e in data.enrollments_of(BIG, ("active",), ["StudentEnrollment"])
        if e["user_id"] not in {c["user_id"] for c in changed}
    )
    dropped = data.drop_enrollment(BIG, student["id"])
    dropped_user = data.enrollments[dropped]["user_id"]
    # A new student and a new assignment: their submissions carry no change time after the last fetch.
    newcomer = data.enrollments[data.enroll_student(BIG)]["user_id"]
    new_assignment = data.add_assignment(BIG)
    h.sandbox.reset_stats()
    sync(h)

    # Two small lists (submitted since, graded since), and one each for the new assignment's and the new
    # student's submissions, instead of every page.
    truth = data.submissions_of(BIG)
    new_pages = -(-sum(s["assignment_id"] == new_assignment for s in truth) // 100)
    new_pages += -(-sum(s["user_id"] == newcomer for s in truth) // 100)
    assert submission_requests(h) == 2 + new_pages < full_requests
    rows = assert_equals_ground_truth(h)
    assert {r["user_id"] for r in rows.values()} >= {newcomer}
    assert {r["assignment_id"] for r in rows.values()} >= {new_assignment}
    mode, watermark, full_at, count = staging_state(h)
    assert mode == "incremental"
    assert utc(watermark) > utc(first_watermark)
    assert utc(full_at) == utc(first_full_at)  # an incremental fetch keeps the last full fetch's time
    assert count == len(data.submissions_of(BIG))
    assert rows[excused]["excused"] and rows[excused]["score"] is None
    assert rows[submitted]["submitted_at"] is not None
    # The deleted assignment's submissions and the dropped student's are soft-deleted, not lost.
    gone = h.rows(
        "SELECT assignment_id, user_id FROM canvas_submissions WHERE course_id = :c AND deleted_at IS NOT NULL",
        c=BIG,
    )
    assert gone and all(a == deleted_assignment or u == dropped_user for a, u in gone)
    assert any(a == deleted_assignment for a, _ in gone) and any(u == dropped_user for _, u in gone)
    # The regrade and the excuse are in the score history, after the first grade.
    history = h.rows(
        "SELECT score, grade, workflow_state FROM canvas_submission_score_history WHERE submission_id = :s "
        "ORDER BY recorded_at, id",
        s=regraded,
    )
    assert len(history) == 2 and history[-1][0] == rows[regraded]["score"]
    excuse_history = h.rows(
        "SELECT score, workflow_state FROM canvas_submission_score_history WHERE submission_id = :s "
        "ORDER BY recorded_at, id",
        s=excused,
    )
    assert excuse_history[-1] == (None, rows[excused]["workflow_state"])

    # An incremental sync with nothing new changes no row and adds no history.
    history_rows = h.rows("SELECT COUNT(*) FROM canvas_submission_score_history")[0][0]
    h.sandbox.reset_stats()
    sync(h)
    assert submission_requests(h) == 2
    assert h.rows("SELECT COUNT(*) FROM canvas_submission_score_history")[0][0] == history_rows
    assert_equals_ground_truth(h)


def test_a_failed_course_keeps_its_watermark_and_catches_up_next_time(pg_harness):
    h = pg_harness
    data = h.sandbox.data
    sync(h)
    before = staging_state(h)
    stored_before = h.rows("SELECT id, score, graded_at FROM canvas_submissions ORDER BY id")
    regraded = data.grade_submission(BIG)

    # Every submissions request of the course fails (retries included): the course's fetch fails.
    h.sandbox.inject("500", count=5, path_contains=f"/courses/{BIG}/students/submissions")
    result = sync_with_a_neighbour(h)
    h.sandbox.faults.clear()
    assert staging_state(h) == before  # records, mode, watermark and full-fetch time as they were
    assert h.rows("SELECT id, score, graded_at FROM canvas_submissions ORDER BY id") == stored_before
    (status,) = h.rows(
        "SELECT status FROM canvas_sync_log WHERE run_id = :r AND entity = 'submissions' AND course_id = :c",
        r=result.run_id,
        c=BIG,
    )
    assert status == ("failed",)

    # The next sync asks from the kept watermark, so the regrade made while it failed is not missed.
    h.sandbox.reset_stats()
    sync(h)
    assert submission_requests(h) == 2
    rows = assert_equals_ground_truth(h)
    assert rows[regraded]["graded_at"] > max(r[2] for r in stored_before if r[2] is not None)


def test_changes_are_not_staged_when_an_entity_the_merge_needs_failed(pg_harness):
    h = pg_harness
    data = h.sandbox.data
    sync(h)
    before = staging_state(h)
    data.grade_submission(BIG)
    h.sandbox.inject("500", count=5, path_contains=f"/courses/{BIG}/assignments")
    result = sync_with_a_neighbour(h)
    h.sandbox.faults.clear()
    assert staging_state(h) == before
    (message,) = h.rows(
        "SELECT message FROM canvas_sync_log WHERE run_id = :r AND entity = 'submissions' AND course_id = :c",
        r=result.run_id,
        c=BIG,
    )
    assert "assignments failed in this run" in message[0]
    sync(h)
    assert_equals_ground_truth(h)


# --- full refreshes ----------------------------------------------------------------------------------
def test_the_weekly_full_sync_catches_a_missing_flag_no_incremental_fetch_can_see(pg_harness):
    h = pg_harness
    data = h.sandbox.data
    sync(h)
    missing_before = {s["id"] for s in data.submissions_of(BIG) if s["missing"]}
    assignment = data.pass_due_date(BIG)
    flipped = {
        s["id"]
        for s in data.submissions_of(BIG)
        if s["assignment_id"] == assignment and s["missing"] and s["id"] not in missing_before
    }
    assert flipped
    stale = {
        r[0]
        for r in h.rows(
            "SELECT id FROM canvas_submissions WHERE assignment_id = :a AND missing", a=assignment
        )
    }
    assert not flipped & stale

    # ANALYTICS_FOCUSED (incremental): nothing was submitted or graded, so the flag stays stale ...
    sync(h)
    assert staging_state(h)[0] == "incremental"
    still = {
        r[0]
        for r in h.rows(
            "SELECT id FROM canvas_submissions WHERE assignment_id = :a AND missing", a=assignment
        )
    }
    assert not flipped & still
    # ... until the weekly FULL_PROCESSING sync fetches every submission again.
    h.sandbox.reset_stats()
    sync(h, FULL)
    assert staging_state(h)[0] == "full"
    assert submission_requests(h) > 2
    assert_equals_ground_truth(h)
    # A profile can refresh on every sync too (0 days), or after some days.
    sync(h, parse_profile({"name": ANALYTICS, "processing": {"submissions_full_refresh_days": 0}}))
    assert staging_state(h)[0] == "full"


# --- the rules, without Canvas ----------------------------------------------------------------------
T0 = datetime(2025, 11, 1, tzinfo=timezone.utc)


def test_since_is_the_watermark_less_the_overlap_until_a_full_refresh_is_due():
    week = 7
    assert incremental.since(None, T0, refresh_days=week, now=T0) is None  # never fetched: full
    assert incremental.since(T0, None, refresh_days=week, now=T0) is None
    assert incremental.since(T0, T0, refresh_days=0, now=T0) is None  # every sync full
    assert (
        incremental.since(T0, T0, refresh_days=week, now=T0 + timedelta(days=6)) == T0 - incremental.OVERLAP
    )
    assert incremental.since(T0, T0, refresh_days=week, now=T0 + timedelta(days=7)) is None


def test_the_watermark_is_the_latest_change_time_of_any_form():
    records = [
        {"submitted_at": "2025-10-01T10:00:00Z", "graded_at": None},
        {"submitted_at": "2025-10-02T12:00:00+02:00", "graded_at": "2025-10-02T11:00:00Z"},
        {"submitted_at": "garbage", "graded_at": 17},
        {"submitted_at": "0001-01-01T00:00:00+02:00", "graded_at": "9999-12-31T23:00:00-05:00"},  # no instant
        "not a record",
    ]
    fields = ("submitted_at", "graded_at")
    assert incremental.watermark_of(records, fields) == datetime(2025, 10, 2, 11, tzinfo=timezone.utc)
    later = datetime(2025, 12, 1, tzinfo=timezone.utc)
    assert incremental.watermark_of(records, fields, previous=later) == later
    assert incremental.watermark_of([], fields) is None


def test_merging_lays_changes_over_the_previous_records_by_id():
    previous = [{"id": 1, "v": "a"}, {"id": 2, "v": "b"}, {"id": 3, "v": "c"}, {"v": "no id"}]
    changes = [{"id": "2", "v": "B"}, {"id": 4, "v": "d"}, {"id": None, "v": "bad"}]
    merged = incremental.merge(previous, changes, keep=lambda r: r.get("v") != "c")
    assert merged == [
        {"id": 1, "v": "a"},
        {"id": "2", "v": "B"},
        {"id": 4, "v": "d"},
        {"id": None, "v": "bad"},
    ]


def test_a_parent_list_the_run_does_not_know_drops_nothing_but_an_empty_one_drops_all():
    from canvas_assets.entities import ENTITIES

    rules = ENTITIES["submissions"].incremental
    assert rules is not None
    student = {"type": "StudentEnrollment", "user_id": 7, "enrollment_state": "active"}
    keep = rules.keep({"enrollments": [student]})  # assignments never staged for the course
    assert keep({"assignment_id": 1, "user_id": 7}) and not keep({"assignment_id": 1, "user_id": 8})
    assert rules.keep({})({"assignment_id": 1, "user_id": 8})
    assert not rules.keep({"assignments": [], "enrollments": [student]})({"assignment_id": 1, "user_id": 7})


def test_incremental_fetches_of_many_courses_leave_every_course_equal_to_ground_truth(pg_harness):
    """An incremental fetch holds only its changes (staging upserts them into the course's rows): a ranged
    run of many courses stages each one's, and nothing is lost."""
    h = pg_harness
    keys = h.course_keys()
    assert h.sync(ANALYTICS, keys).success
    data = h.sandbox.data
    courses = [int(k) for k in keys if data.submissions_of(int(k))]
    for course in courses[:3]:
        data.grade_submission(course)
    result = h.sync(ANALYTICS, keys)
    assert result.success, failure_text(result)
    for course in courses:
        assert staging_state(h, course)[0] == "incremental"
        assert_equals_ground_truth(h, course)


def test_a_big_courses_incremental_fetch_writes_only_the_rows_that_changed(harness):
    """A course's staged submissions are a row each: an incremental fetch rewrites the changed ones only,
    the others keep their text, and the staged records are those a full fetch would give."""
    h = harness
    sync(h)
    query = "SELECT record_key, record FROM canvas_staging_records WHERE entity = 'submissions' AND course_id = :c"
    before = dict(h.rows(query, c=BIG))
    h.sandbox.data.grade_submission(BIG)
    h.sandbox.data.submit_work(BIG)
    sync(h)
    after = dict(h.rows(query, c=BIG))
    changed = {k for k in after if before.get(k) != after[k]}
    assert 1 <= len(changed) <= 2 and set(before) <= set(after)
    served = {str(s["id"]): s for s in h.sandbox.data.submissions_of(BIG)}
    assert set(after) == set(served)
    assert staging_state(h)[0] == "incremental" and staging_state(h)[3] == len(served)
    assert_equals_ground_truth(h)
