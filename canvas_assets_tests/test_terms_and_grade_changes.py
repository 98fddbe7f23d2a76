"""The account's enrollment terms and Canvas's grade change audit log, mirrored value by value.

TermsApiController#index lists a root account's terms in an object (`{"enrollment_terms": [...]}`), only
active ones unless `workflow_state[]=all`; GradeChangeAuditApiController#for_course lists a course's
events newest first in a compound document (`{"events": [...], ...}`), bookmarked, within an inclusive
`start_time`/`end_time` window, and answers 401 unauthorized to a token without `manage_grades` /
`view_all_grades` (docs/canvas-api.md §7). The sandbox serves both so; the sync mirrors both, terms as an
account-level asset, the audit log incrementally (a per-course watermark with an overlap, merged by id).
"""

import logging
from collections.abc import Iterator
from typing import Any

import pytest
import urllib3

from canvas_assets.canvas import CanvasClient
from canvas_assets.errors import CanvasAPIError
from canvas_assets.extract import grade_changes
from canvas_assets.sandbox import audit
from canvas_assets_tests.harness import Harness, failure_text, pipeline_harness, utc

TERM_COLUMNS = (
    "name",
    "sis_term_id",
    "start_at",
    "end_at",
    "workflow_state",
    "grading_period_group_id",
    "created_at",
)
EVENT_COLUMNS = {
    "created_at": ("created_at",),
    "event_type": ("event_type",),
    "grade_before": ("grade_before",),
    "grade_after": ("grade_after",),
    "excused_before": ("excused_before",),
    "excused_after": ("excused_after",),
    "graded_anonymously": ("graded_anonymously",),
    "points_possible_before": ("points_possible_before",),
    "points_possible_after": ("points_possible_after",),
    "version_number": ("version_number",),
    "course_id": ("links", "course"),
    "assignment_id": ("links", "assignment"),
    "student_id": ("links", "student"),
    "grader_id": ("links", "grader"),
    "request_id": ("links", "page_view"),
}


def _get(sandbox, path: str, token: str | None = None) -> urllib3.BaseHTTPResponse:
    return urllib3.request(
        "GET", f"{sandbox.api_url}{path}", headers={"Authorization": f"Bearer {token or sandbox.token}"}
    )


def _value(event: dict, path: tuple[str, ...]) -> Any:
    value: Any = event
    for part in path:
        value = value.get(part)
    return value


def _same(expected: Any, stored: Any) -> bool:
    if isinstance(expected, str) and expected[:4].isdigit() and "T" in expected:
        return utc(expected) == utc(stored)
    if isinstance(expected, str) and expected.isdigit() and isinstance(stored, int):
        return int(expected) == stored
    return expected == stored


def assert_terms_equal_the_sandbox(h: Harness, *, deleted: set[int] = frozenset()) -> None:  # type: ignore[assignment]
    """Live canvas_terms rows are every term Canvas lists for `workflow_state[]=all`, value by value; the
    `deleted` ids are rows soft-deleted."""
    truth = {t["id"]: t for t in audit.listed_terms(h.sandbox.data, ["all"])}
    rows = h.table("canvas_terms")
    assert {i for i, r in rows.items() if r["deleted_at"] is None} == set(truth)
    assert {i for i, r in rows.items() if r["deleted_at"] is not None} == deleted
    for term_id, term in truth.items():
        for column in TERM_COLUMNS:
            assert _same(term.get(column), rows[term_id][column]), (term_id, column)


def assert_events_equal_the_sandbox(h: Harness, courses: list[int]) -> int:
    """canvas_grade_changes holds exactly the synced courses' audit events, value by value."""
    truth = {e["id"]: e for c in courses for e in audit.events_of(h.sandbox.data, c)}
    rows = h.table("canvas_grade_changes")
    assert truth, "the courses have grade change events to compare"
    assert set(rows) == set(truth)
    for event_id, event in truth.items():
        for column, path in EVENT_COLUMNS.items():
            assert _same(_value(event, path), rows[event_id][column]), (event_id, column)
    return len(rows)


@pytest.fixture
def harness(make_sandbox, db_url, monkeypatch) -> Iterator[Harness]:
    sandbox = make_sandbox(scale="small", throttle="hosted")
    with pipeline_harness(sandbox, db_url, monkeypatch) as h:
        assert h.discover().success
        yield h


def sync_full(h: Harness, keys: list[str]) -> Any:
    result = h.sync("FULL_PROCESSING", keys)
    assert result.success, failure_text(result)
    return result


# --- the sandbox answers as Canvas does -------------------------------------------------------------------
def test_the_sandbox_lists_active_terms_in_an_object_and_every_state_only_when_asked(sandbox):
    default = _get(sandbox, "/accounts/1/terms?per_page=100").json()
    every = _get(sandbox, "/accounts/self/terms?per_page=100&workflow_state[]=all").json()
    assert set(default) == {"enrollment_terms"}
    assert [t["id"] for t in default["enrollment_terms"]] == [1, 4, 3, 2]  # start_at DESC, NULLs first
    assert [t["id"] for t in every["enrollment_terms"]] == [1, 4, 3, 2, 5]
    assert every["enrollment_terms"][-1]["workflow_state"] == "deleted"
    sub_account = _get(sandbox, "/accounts/2/terms")
    assert (sub_account.status, sub_account.json()) == (
        400,
        {"message": "Terms only belong to root_accounts."},
    )
    assert _get(sandbox, "/accounts/1/terms", sandbox.limited_token).status == 401


def test_the_sandbox_serves_a_courses_grade_changes_newest_first_within_an_inclusive_window(sandbox):
    data = sandbox.data
    course = data.course_ids(["available"])[0]
    events = audit.events_of(data, course)
    newest_first = sorted(events, key=lambda e: (-e["_ts"], e["id"]))
    pivot = newest_first[len(newest_first) // 2]
    start = pivot["created_at"]
    served, url = [], f"/audit/grade_change/courses/{course}?per_page=50&start_time={start}"
    while url:
        response = _get(sandbox, url)
        body = response.json()
        assert set(body) == {"events", "links", "linked"}
        served += body["events"]
        link = response.headers.get("Link", "")
        nxt = [p.split(";")[0].strip("<> ") for p in link.split(",") if 'rel="next"' in p]
        url = nxt[0].split("/api/v1", 1)[1] if nxt else ""
    assert "last" not in link  # bookmarked: no last page
    expected = [audit.served_event(e) for e in newest_first if e["_ts"] >= pivot["_ts"]]
    assert served == expected and pivot["id"] in {e["id"] for e in served}  # the bound itself is inside
    unreadable = _get(sandbox, f"/audit/grade_change/courses/{course}?per_page=100&start_time=yesterday")
    assert len(unreadable.json()["events"]) == min(100, len(events))  # CanvasTime.try_parse: ignored


def test_without_the_grade_audit_permission_the_sandbox_answers_401_unauthorized(make_sandbox):
    sandbox = make_sandbox(scale="small", grade_audit=False)
    course = sandbox.data.course_ids(["available"])[0]
    response = _get(sandbox, f"/audit/grade_change/courses/{course}")
    assert response.status == 401
    assert response.json()["status"] == "unauthorized"
    assert _get(sandbox, "/audit/grade_change/courses/987654").status == 404


def test_the_client_refuses_a_page_that_is_not_the_wrapped_list_it_expects(sandbox):
    course = sandbox.data.course_ids(["available"])[0]
    with CanvasClient(sandbox.base_url, sandbox.token) as client:
        assert len(client.list_terms("self")) == 5
        with pytest.raises(
            CanvasAPIError, match="expected an object holding the list under 'enrollment_terms'"
        ):
            client._paginate(f"/courses/{course}/assignments", wrapped_in="enrollment_terms")
        with pytest.raises(CanvasAPIError, match="whose 'events' is not a list"):
            client._paginate("/accounts/1/terms", wrapped_in="events")


def test_time_windows_cut_at_events_own_times_give_each_event_once(sandbox):
    data = sandbox.data
    course = max(data.course_ids(["available"]), key=lambda c: len(audit.events_of(data, c)))
    events = audit.events_of(data, course)
    assert len(events) > 20
    ordered = sorted(events, key=lambda e: e["_ts"])
    # Cuts on events' own seconds: Canvas's windows are inclusive at both ends, so those events come twice.
    cuts = [
        utc(ordered[i]["created_at"]) for i in (0, len(ordered) // 3, len(ordered) // 2, len(ordered) - 1)
    ]
    with CanvasClient(sandbox.base_url, sandbox.token) as client:
        whole = client.list_grade_changes(course)
        windowed = list(client.list_grade_changes_in_windows(course, cuts))
    assert sorted(e["id"] for e in windowed) == sorted(e["id"] for e in whole)  # each event once, none lost
    assert {e["id"]: e for e in windowed} == {e["id"]: e for e in whole}  # value by value
    assert windowed[0]["created_at"] == whole[0]["created_at"]  # newest window first, as one list is
    assert windowed[-1]["created_at"] == whole[-1]["created_at"]


# --- the sync mirrors them --------------------------------------------------------------------------------
def test_terms_and_grade_changes_equal_the_sandbox_after_a_first_sync_and_after_mutations(harness):
    h = harness
    data = h.sandbox.data
    keys = h.course_keys()[:4]
    courses = [int(k) for k in keys]
    sync_full(h, keys)
    assert_terms_equal_the_sandbox(h)
    first = assert_events_equal_the_sandbox(h, courses)
    (joined,) = h.rows(
        "SELECT count(*) FROM canvas_courses c JOIN canvas_terms t ON t.id = c.enrollment_term_id "
        "WHERE c.id IN (" + ",".join(keys) + ")"
    )[0]
    assert joined == len(keys)  # every course joins its term

    graded = next(c for c in courses if data.assignments_of(c) and audit.events_of(data, c))
    submission = data.grade_submission(graded)
    data.grade_submission(graded, submission)  # the same grade changed twice between two syncs
    data.terms[6] = {
        "id": 6, "name": "Winter 2026", "start_at": "2026-01-05T08:00:00Z", "end_at": None,
        "workflow_state": "active", "created_at": "2025-10-01T00:00:00Z", "sis_term_id": "WI26",
        "grading_period_group_id": None,
    }  # fmt: skip
    del data.terms[5]  # gone from the list altogether (a term no course uses)
    before = h.requests_to("/audit/grade_change")
    sync_full(h, keys)
    assert_terms_equal_the_sandbox(h, deleted={5})
    assert assert_events_equal_the_sandbox(h, courses) == first + 2
    new = h.rows(
        "SELECT grade_before, grade_after, version_number FROM canvas_grade_changes WHERE request_id IS NOT NULL "
        "ORDER BY created_at"
    )
    assert len(new) == 2 and new[0][1] == new[1][0]  # the second change starts where the first ended
    assert h.requests_to("/audit/grade_change") - before == len(keys)  # one short window per course
    notes = h.rows(
        "SELECT message FROM canvas_sync_log WHERE entity = 'grade_changes' AND message IS NOT NULL"
    )
    assert any("incremental" in n[0] for n in notes)


def test_a_vanished_term_is_not_soft_deleted_when_the_list_held_a_record_without_an_id(harness):
    h = harness
    keys = h.course_keys()[:1]
    sync_full(h, keys)
    assert h.table("canvas_terms")[5]["deleted_at"] is None
    del h.sandbox.data.terms[5]
    h.sandbox.data.terms[7] = {
        "id": None, "name": "broken", "start_at": None, "end_at": None, "workflow_state": "active",
        "created_at": None, "sis_term_id": None, "grading_period_group_id": None,
    }  # fmt: skip
    sync_full(h, keys)
    rows = h.table("canvas_terms")
    assert rows[5]["deleted_at"] is None  # the list was not complete: nothing is taken as gone
    (rejected,) = h.rows("SELECT count(*) FROM canvas_rejected_records WHERE entity = 'terms'")
    assert rejected[0] == 1
    del h.sandbox.data.terms[7]
    sync_full(h, keys)
    assert h.table("canvas_terms")[5]["deleted_at"] is not None  # complete again: now it is


def test_a_malformed_terms_page_fails_the_terms_asset_and_deletes_nothing(harness):
    h = harness
    keys = h.course_keys()[:1]
    sync_full(h, keys)
    before = h.table("canvas_terms")
    # A page with the wrapper but no list in it: taken as an empty list, it would soft-delete every term.
    h.sandbox.misbehave("/terms", count=0, body=b'{"enrollment_terms": null}')
    result = h.sync("FULL_PROCESSING", keys)
    assert not result.success
    assert "whose 'enrollment_terms' is not a list" in failure_text(result)
    assert h.table("canvas_terms") == before


def test_without_the_audit_permission_the_run_succeeds_with_one_warning(make_sandbox, db_url, monkeypatch):
    sandbox = make_sandbox(scale="small", throttle="hosted", grade_audit=False)
    with pipeline_harness(sandbox, db_url, monkeypatch) as h:
        assert h.discover().success
        keys = h.course_keys()[:4]
        result = sync_full(h, keys)
        warnings = [
            e.user_message
            for e in h.instance.all_logs(result.run_id)
            if e.level == logging.WARNING and "grade_changes skipped" in e.user_message
        ]
        assert len(warnings) == 1 and f"for {len(keys)} course(s)" in warnings[0]
        statuses = h.rows("SELECT entity, status FROM canvas_sync_log WHERE stage = 'extract'")
        assert {s for e, s in statuses if e == "grade_changes"} == {"skipped"}
        assert "failed" not in {s for _, s in statuses}  # no course failed for it
        assert h.table("canvas_grade_changes") == {}
        assert len(h.table("canvas_terms")) == 5  # the rest of the sync went on


def test_the_watermark_window_overlaps_and_repeated_events_are_merged_not_duplicated(harness):
    h = harness
    data = h.sandbox.data
    keys = h.course_keys()[:1]
    course = int(keys[0])
    sync_full(h, keys)
    data.grade_submission(course)  # an event now: the next window starts 15 minutes before it
    sync_full(h, keys)
    (watermark,) = h.rows(
        "SELECT watermark FROM canvas_staging WHERE entity = 'grade_changes' AND course_id = :c", c=course
    )[0]
    assert utc(watermark) == max(utc(e["created_at"]) for e in audit.events_of(data, course))
    sync_full(h, keys)  # asks from watermark - 15 min: the newest event comes again
    (note,) = h.rows(
        "SELECT message FROM canvas_sync_log WHERE entity = 'grade_changes' AND course_id = :c "
        "ORDER BY finished_at DESC LIMIT 1",
        c=course,
    )[0]
    assert note.startswith("incremental: 1 changed since")
    assert_events_equal_the_sandbox(h, [course])  # merged by id: still one row per event


def test_a_big_courses_log_is_fetched_in_windows_and_equals_the_sandbox_after_mutations(harness, monkeypatch):
    h = harness
    data = h.sandbox.data
    monkeypatch.setattr(grade_changes, "WINDOW_PAGES", 1)  # about 100 events a window
    keys = h.course_keys()[:4]
    courses = [int(k) for k in keys]
    sync_full(h, keys)
    first = assert_events_equal_the_sandbox(h, courses)
    windows = h.requests_to("/audit/grade_change")
    assert windows > len(keys)  # some course's log came in several windows
    graded = next(c for c in courses if data.assignments_of(c) and audit.events_of(data, c))
    submission = data.grade_submission(graded)
    data.grade_submission(graded, submission)
    sync_full(h, keys)
    assert assert_events_equal_the_sandbox(h, courses) == first + 2
    assert h.requests_to("/audit/grade_change") - windows == len(keys)  # then one short window per course


def test_the_sandbox_derives_every_log_up_front_as_first_use_would():
    """What `derive_all` (run by the sync benchmark before its clock starts) derives is exactly what each
    course's first request would have derived: the same events, in the same order, for every course."""
    from canvas_assets.sandbox import CanvasSandbox, SandboxConfig

    up_front = CanvasSandbox(SandboxConfig(scale="small", seed=11))
    on_first_use = CanvasSandbox(SandboxConfig(scale="small", seed=11))
    courses = up_front.data.course_ids(None)
    assert not up_front.data.grade_change_log
    events = up_front.derive_all()
    assert set(up_front.data.grade_change_log) == set(courses)
    assert set(up_front.data.grade_change_index) == set(courses)
    assert events == sum(len(audit.events_of(on_first_use.data, c)) for c in courses) > 100
    for course_id in courses:
        assert up_front.data.grade_change_log[course_id] == audit.events_of(on_first_use.data, course_id)
