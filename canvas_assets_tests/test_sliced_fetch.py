"""A big course's submissions fetched in slices of assignments (`entities._submissions_in_slices`): one long
list of pages is a sync's critical path, slices of it run at once. The records are those of the one list."""

import pytest

from canvas_assets import entities
from canvas_assets.canvas import CanvasClient
from canvas_assets.extract.engine import Extractor, fetch_entity
from canvas_assets.extract.outcomes import utcnow
from canvas_assets.jsontext import RecordTexts
from canvas_assets.profiles import preset
from canvas_assets.warehouse import Warehouse

BIG = 1000  # the small sandbox's biggest course: 1,442 submissions, 15 pages as one list
SMALL = 1002
ENTITIES = ["courses", "students", "enrollments", "assignments", "submissions"]


def _key(record):
    return record["assignment_id"], record["user_id"]


def _submission_requests(sandbox):
    return sum(
        n for endpoint, n in sandbox.stats()["by_endpoint"].items() if "/students/submissions" in endpoint
    )


def _needs(client, course_id):
    return {
        "assignments": client.list_assignments(course_id),
        "enrollments": fetch_entity(client, preset("FULL_PROCESSING"), "enrollments", course_id, 30.0),
    }


def test_a_big_course_is_fetched_in_slices_that_give_the_one_lists_records(sandbox, monkeypatch):
    monkeypatch.setattr(entities, "SLICE_PAGES", 2)  # slices of about 200 submissions
    with CanvasClient(sandbox.base_url, sandbox.token) as client:
        whole = client.list_submissions(BIG)
        needs = _needs(client, BIG)
        sandbox.reset_stats()
        sliced = entities._submissions_in_slices(client, BIG, needs, 30.0)
    assert sliced is not None
    assert sorted(sliced, key=_key) == sorted(whole, key=_key)
    assert len({_key(r) for r in sliced}) == len(sliced)
    # More, shorter lists: every slice is at most a few pages long.
    published, students = entities._live_parents(needs)
    assert len(published) * len(students) == len(whole)  # the estimate that decides is the count
    per_slice = max(1, 200 // len(students))
    slices = -(-len(needs["assignments"]) // per_slice)
    assert slices > 1
    assert _submission_requests(sandbox) < slices * 4


def test_sliced_records_are_those_of_the_one_list_even_where_only_the_stdlib_reads_a_page(
    sandbox, sqlite_url, monkeypatch
):
    """A sliced fetch keeps its pages compressed (a big course's decoded list is 160 MB at the large scale).
    A page orjson cannot read exactly (here an integer beyond 64 bits) is read by the standard library: the
    sliced records, and what staging keeps of them, are those of the one list."""
    monkeypatch.setattr(entities, "SLICE_PAGES", 2)
    data = sandbox.data
    with data.lock:
        assignment = next(a for a in data.assignments_of(BIG) if a["published"])
        user = data._submissions.students(BIG)[0]
        data._submissions.for_update(assignment, user)["attempt"] = 2**70
    with CanvasClient(sandbox.base_url, sandbox.token) as client:
        whole = client.list_submissions(BIG)
        sliced = entities._submissions_in_slices(client, BIG, _needs(client, BIG), 30.0)
    assert isinstance(sliced, RecordTexts)  # compressed a page at a time until staged
    odd = [r for r in sliced if r["attempt"] == 2**70]
    assert [(r["assignment_id"], r["user_id"]) for r in odd] == [(assignment["id"], user)]
    assert sorted(sliced, key=_key) == sorted(whole, key=_key)
    wh = Warehouse(sqlite_url)
    wh.ensure_schema()
    wh.write_staging([("submissions", BIG, sliced)], run_id="r", fetched_at=utcnow())
    assert sorted(wh.read_staging("submissions", [BIG])[BIG], key=_key) == sorted(whole, key=_key)


def test_a_course_one_list_serves_is_not_sliced(sandbox):
    with CanvasClient(sandbox.base_url, sandbox.token) as client:
        needs = _needs(client, SMALL)
        assert entities._submissions_in_slices(client, SMALL, needs, 30.0) is None
        # BIG's 1,442 submissions are 15 pages as one list: not sliced either.
        assert entities._submissions_in_slices(client, BIG, _needs(client, BIG), 30.0) is None
        assert entities._submissions_in_slices(client, BIG, {"assignments": []}, 30.0) is None


def _extract(sandbox, wh, run_id, fetch=fetch_entity):
    with CanvasClient(sandbox.base_url, sandbox.token) as client:
        report = Extractor(
            client, wh, preset("FULL_PROCESSING"), entities=ENTITIES, run_id=run_id, fetch=fetch
        ).run([BIG, SMALL])
    return report


@pytest.mark.parametrize("slice_pages", [2, 10_000])
def test_an_extract_stages_the_same_submissions_sliced_or_not(sandbox, sqlite_url, monkeypatch, slice_pages):
    wh = Warehouse(sqlite_url)
    wh.ensure_schema()
    with CanvasClient(sandbox.base_url, sandbox.token) as client:
        expected = {c: sorted(client.list_submissions(c), key=_key) for c in (BIG, SMALL)}
    monkeypatch.setattr(entities, "SLICE_PAGES", slice_pages)
    sandbox.reset_stats()
    report = _extract(sandbox, wh, "r1")
    assert report.course_ids("success") == [BIG, SMALL]
    staged = wh.read_staging("submissions", [BIG, SMALL])
    assert {c: sorted(staged[c], key=_key) for c in (BIG, SMALL)} == expected
    requests = _submission_requests(sandbox)
    whole_list_pages = sum(-(-len(v) // 100) for v in expected.values())
    assert (requests > whole_list_pages) == (slice_pages == 2)
    # The sync log counts the slices' requests towards the course's submissions.
    assert (
        report.courses[BIG].entities["submissions"].api_calls
        + report.courses[SMALL].entities["submissions"].api_calls
        == requests
    )


def test_without_its_assignments_a_course_is_fetched_as_one_list(sandbox, sqlite_url, monkeypatch):
    from canvas_assets.errors import CanvasAPIError

    monkeypatch.setattr(entities, "SLICE_PAGES", 2)
    wh = Warehouse(sqlite_url)
    wh.ensure_schema()

    def fetch(client, profile, entity, course_id, timeout, needs=None):
        if entity == "assignments" and course_id == BIG:
            raise CanvasAPIError("injected", status=500)
        return fetch_entity(client, profile, entity, course_id, timeout, needs)

    sandbox.reset_stats()
    report = _extract(sandbox, wh, "r1", fetch)
    assert report.courses[BIG].entities["assignments"].status == "failed"
    big = report.courses[BIG].entities["submissions"]
    assert big.status == "success"
    assert big.api_calls == -(-big.record_count // 100)  # the one list's pages, nothing more
