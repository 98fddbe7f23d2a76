"""Canvas's rule for `assignment_ids[]` on the course submissions list, and the sync that obeys it.

SubmissionsApiController#for_students scopes `assignment_ids[]` to `@context.assignments.published`
(docs/canvas-api.md, "Endpoint rules"): any other id refuses the whole request with
`403 {"error": "invalid assignment ids requested"}`, and without `assignment_ids[]` only published
assignments' submissions are listed. The sandbox enforces it; the sliced fetch of a big course and the
incremental fetch of new assignments name published assignments only.
"""

from collections.abc import Iterator

import pytest
import urllib3

from canvas_assets import entities
from canvas_assets.canvas import CanvasClient
from canvas_assets.errors import CanvasAPIError
from canvas_assets_tests.harness import Harness, failure_text, pipeline_harness
from canvas_assets_tests.test_submissions import ANALYTICS, BIG, FULL, assert_equals_ground_truth

REFUSAL = {"error": "invalid assignment ids requested"}


def _get(sandbox, query: str) -> urllib3.BaseHTTPResponse:
    return urllib3.request(
        "GET",
        f"{sandbox.api_url}/courses/{BIG}/students/submissions?student_ids[]=all&{query}",
        headers={"Authorization": f"Bearer {sandbox.token}"},
    )


def _assignments(sandbox, published: bool) -> list[int]:
    return sorted(
        a["id"]
        for a in sandbox.data.assignments_of(BIG)
        if a["published"] is published and isinstance(a["id"], int)
    )


@pytest.fixture
def harness(make_sandbox, db_url, monkeypatch) -> Iterator[Harness]:
    """The small sandbox's big course with an unpublished assignment (a draft), on SQLite and PostgreSQL."""
    sandbox = make_sandbox(scale="small", throttle="hosted")
    sandbox.data.add_assignment(BIG, published=False)
    with pipeline_harness(sandbox, db_url, monkeypatch) as h:
        assert h.discover().success
        yield h


def sync(h: Harness, profile: str, course: int = BIG) -> None:
    result = h.sync(profile, [str(course)])
    assert result.success, failure_text(result)
    (status,) = h.rows(
        "SELECT status FROM canvas_sync_log WHERE course_id = :c AND entity = 'submissions' "
        "ORDER BY finished_at DESC LIMIT 1",
        c=course,
    )[0]
    assert status == "success"


# --- the sandbox models the rule ---------------------------------------------------------------------------
def test_the_sandbox_refuses_an_unpublished_assignment_id_with_canvas_body(make_sandbox):
    sandbox = make_sandbox(scale="small")
    draft = sandbox.data.add_assignment(BIG, published=False)
    published = _assignments(sandbox, True)[0]
    response = _get(sandbox, f"assignment_ids[]={published}&assignment_ids[]={draft}")
    assert response.status == 403
    assert response.json() == REFUSAL


def test_the_sandbox_refuses_an_assignment_id_of_another_course_or_none_at_all(make_sandbox):
    sandbox = make_sandbox(scale="small")
    foreign = next(
        a["id"]
        for c in sandbox.data.course_ids()
        if c != BIG
        for a in sandbox.data.assignments_of(c)
        if a["published"] and isinstance(a["id"], int)
    )
    for value in (str(foreign), "all", "abc", "999999999"):  # Ruby's to_i: "all" and "abc" are 0
        response = _get(sandbox, f"assignment_ids[]={value}")
        assert (response.status, response.json()) == (403, REFUSAL), value


def test_the_sandbox_serves_published_assignment_ids_and_lists_only_published_work(make_sandbox):
    sandbox = make_sandbox(scale="small")
    published = _assignments(sandbox, True)
    response = _get(sandbox, "&".join(f"assignment_ids[]={a}" for a in published[:2]) + "&per_page=100")
    assert response.status == 200
    assert {s["assignment_id"] for s in response.json()} <= set(published[:2])
    drafts = set(_assignments(sandbox, False))
    assert drafts, "the big course has unpublished assignments"
    assert not {s["assignment_id"] for s in sandbox.data.submissions_of(BIG)} & drafts


def test_the_client_reports_the_refusal_with_canvas_own_text(make_sandbox):
    sandbox = make_sandbox(scale="small")
    draft = sandbox.data.add_assignment(BIG, published=False)
    client = CanvasClient(sandbox.base_url, sandbox.token, max_retries=0)
    with client, pytest.raises(CanvasAPIError) as caught:
        client.list_submissions(BIG, assignment_ids=[draft])
    assert caught.value.status == 403
    assert "invalid assignment ids requested" in str(caught.value)
    assert sandbox.token not in str(caught.value)


# --- the sync obeys it -------------------------------------------------------------------------------------
def test_a_sliced_course_with_unpublished_assignments_syncs_and_equals_ground_truth(harness, monkeypatch):
    monkeypatch.setattr(entities, "SLICE_PAGES", 2)  # BIG is fetched in slices of about 200 submissions
    h = harness
    assert _assignments(h.sandbox, False)
    h.sandbox.reset_stats()
    sync(h, FULL)
    assert h.sandbox.stats()["statuses"].get("403", 0) == 0
    assert h.requests_to("/students/submissions") > 2  # sliced: several lists
    assert_equals_ground_truth(h)
    sync(h, ANALYTICS)  # and the incremental re-sync
    assert_equals_ground_truth(h)


def test_an_assignment_published_between_syncs_has_its_submissions_on_the_next_incremental_sync(harness):
    h = harness
    sync(h, ANALYTICS)
    draft = _assignments(h.sandbox, False)[-1]
    assert not h.rows("SELECT 1 FROM canvas_submissions WHERE assignment_id = :a", a=draft)
    h.sandbox.data.publish_assignment(BIG, draft)
    sync(h, ANALYTICS)
    (mode,) = h.rows(
        "SELECT fetch_mode FROM canvas_staging WHERE entity = 'submissions' AND course_id = :c", c=BIG
    )[0]
    assert mode == "incremental"
    rows = assert_equals_ground_truth(h)
    assert any(r["assignment_id"] == draft for r in rows.values())


def test_a_new_unpublished_assignment_fails_nothing_and_fetches_nothing_for_it(harness):
    h = harness
    sync(h, ANALYTICS)
    draft = h.sandbox.data.add_assignment(BIG, published=False)
    h.sandbox.reset_stats()
    sync(h, ANALYTICS)
    assert h.sandbox.stats()["statuses"].get("403", 0) == 0
    # Only the two change lists (submitted since, graded since): no request names the draft.
    assert h.requests_to("/students/submissions") == 2
    assert not h.rows("SELECT 1 FROM canvas_submissions WHERE assignment_id = :a", a=draft)
    (published,) = h.rows("SELECT published FROM canvas_assignments WHERE id = :a", a=draft)[0]
    assert not published
    assert_equals_ground_truth(h)
