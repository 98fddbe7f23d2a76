"""A broken or hostile Canvas cannot stall a sync: every wait, page, list and body has a bound.

Each test drives the real client against the sandbox's hostile mode (`CanvasSandbox.misbehave`) over
loopback. The time asserted is a hang detector, several times the bound under test, never a speed claim.
"""

import resource
import time
from collections.abc import Iterator

import pytest

from canvas_assets.canvas import CanvasClient, budget
from canvas_assets.canvas import client as client_module
from canvas_assets.canvas.pacer import MAX_LEAK_WAIT_S, Pacer, PacerTimeout
from canvas_assets.canvas.transport import MAX_BODY_BYTES
from canvas_assets.errors import CanvasAPIError, CanvasTimeout
from canvas_assets.profiles import parse_profile
from canvas_assets_tests.harness import Harness, failure_text, pipeline_harness

BIG = 1000  # the small sandbox's big course: 3 pages of enrollments


@pytest.fixture
def client(sandbox) -> Iterator[CanvasClient]:
    with CanvasClient(sandbox.base_url, sandbox.token, read_timeout=15.0, max_retries=3) as c:
        yield c


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


# --- 1. rate headers ---------------------------------------------------------------------------------------
@pytest.mark.parametrize("reading", [-1_000_000.0, -1e300, 1e300])
def test_a_hostile_rate_header_makes_the_pacer_wait_at_most_its_documented_maximum(reading):
    clock = FakeClock()
    pacer = Pacer(max_in_flight=8, clock=clock)
    slot = pacer.acquire()
    pacer.mark_received(slot)
    pacer.release(slot, remaining=reading)  # no OverflowError, whatever the number
    assert pacer._not_before - clock.now <= MAX_LEAK_WAIT_S


def test_a_request_waiting_on_the_pacer_gives_up_at_its_timeout_and_leaves_the_queue():
    pacer = Pacer(max_in_flight=1)
    held = pacer.acquire()
    started = time.monotonic()
    with pytest.raises(PacerTimeout):
        pacer.acquire(timeout=0.2)
    assert time.monotonic() - started < 5
    pacer.release(held)
    pacer.acquire(timeout=1.0)  # the abandoned waiter did not take the freed slot


def test_a_hostile_rate_header_costs_the_course_its_budget_not_the_sync(sandbox, client):
    sandbox.misbehave("/enrollments", headers={"X-Rate-Limit-Remaining": "-1e300"})
    started = time.monotonic()
    with budget.within(2.0, f"course {BIG} (enrollments)"), pytest.raises(CanvasTimeout) as caught:
        client.list_enrollments(BIG)
    assert time.monotonic() - started < 12
    message = str(caught.value)
    assert f"course {BIG} (enrollments) ran out of its 2 s budget" in message
    assert "rate limit" in message
    # Later requests are paced by honest readings again (the clamped wait is over within its maximum).
    assert client.pacer._not_before - time.monotonic() <= MAX_LEAK_WAIT_S


# --- 2. deadlines that hold ---------------------------------------------------------------------------------
def test_a_list_whose_every_page_links_a_new_page_ends_at_the_budget(sandbox, client):
    sandbox.misbehave("/enrollments", count=0, endless_next=True)
    started = time.monotonic()
    with budget.within(2.0, f"course {BIG} (enrollments)"), pytest.raises(CanvasTimeout) as caught:
        client.list_enrollments(BIG)
    assert time.monotonic() - started < 12
    assert "ran out of its 2 s budget" in str(caught.value)


def test_a_list_longer_than_the_page_cap_fails_with_the_reason(sandbox, client, monkeypatch):
    monkeypatch.setattr(client_module, "MAX_PAGES", 5)
    sandbox.misbehave("/enrollments", count=0, endless_next=True)
    with pytest.raises(CanvasAPIError) as caught:
        client.list_enrollments(BIG)
    assert "still links a next page after 5 pages" in str(caught.value)
    assert not caught.value.recoverable
    assert sandbox.token not in str(caught.value)


def test_discovery_has_its_own_budget(sandbox, client):
    sandbox.misbehave("/courses", count=0, endless_next=True)
    started = time.monotonic()
    with pytest.raises(CanvasTimeout) as caught:
        client.list_courses(account_id=sandbox.data.account_id, budget_seconds=2.0)
    assert time.monotonic() - started < 12
    assert "discovering courses ran out of its 2 s budget" in str(caught.value)


def test_a_body_trickled_a_byte_at_a_time_ends_at_the_budget(sandbox, client):
    sandbox.misbehave("/enrollments", trickle_s=0.2)
    started = time.monotonic()
    with budget.within(2.0, f"course {BIG} (enrollments)"), pytest.raises(CanvasTimeout) as caught:
        client.list_enrollments(BIG)
    assert time.monotonic() - started < 12
    assert "reading the answer" in str(caught.value)


def test_a_server_that_never_answers_fails_within_the_budget_retries_included(sandbox, client):
    sandbox.misbehave("/enrollments", count=0, hang=True)
    started = time.monotonic()
    with budget.within(2.0, f"course {BIG} (enrollments)"), pytest.raises(CanvasTimeout) as caught:
        client.list_enrollments(BIG)  # read timeout 15 s, 3 retries: without the deadline, about a minute
    assert time.monotonic() - started < 12
    assert "ran out of its 2 s budget" in str(caught.value)


def test_follow_up_fetches_in_other_threads_keep_the_callers_deadline(sandbox, client):
    """Module items over 100 are fetched by fan-out threads: they stop at the caller's deadline too."""
    course = next(
        c
        for c in sandbox.data.course_ids()
        if any(len(m["items"]) > 100 for m in sandbox.data.modules_of(c) if isinstance(m.get("items"), list))
    )
    sandbox.misbehave("/items", count=0, hang=True)
    started = time.monotonic()
    with budget.within(2.0, f"course {course} (modules)"), pytest.raises(CanvasTimeout):
        client.list_modules(course)
    assert time.monotonic() - started < 12


# --- 7. bodies ----------------------------------------------------------------------------------------------
def test_a_gzip_bomb_fails_the_request_without_growing_the_process_by_its_size(sandbox, client):
    peak_before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # KiB
    sandbox.misbehave("/enrollments", gzip_to=256 * 1024 * 1024)  # a valid, padded empty list
    with pytest.raises(CanvasAPIError) as caught:
        client.list_enrollments(BIG)
    grown_mb = (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - peak_before) / 1024
    assert f"over {MAX_BODY_BYTES // (1024 * 1024)} MB once decompressed" in str(caught.value)
    assert not caught.value.recoverable
    assert grown_mb <= MAX_BODY_BYTES / (1024 * 1024) + 32


def test_a_page_of_millions_of_tiny_objects_is_refused_before_it_is_decoded(sandbox, client):
    sandbox.misbehave("/enrollments", body=b"[" + b"{}," * 300_000 + b"{}]")
    with pytest.raises(CanvasAPIError) as caught:
        client.list_enrollments(BIG)
    assert "more than 250,000 JSON objects" in str(caught.value)


def test_a_page_with_nan_fails_the_request_at_once_saying_why(sandbox, client):
    """`json.loads` reads NaN, but no staged text would keep it: not a cut-off body, so not retried."""
    sandbox.misbehave("/enrollments", body=b'[{"id": 1, "grades": {"current_score": NaN}}]')
    with pytest.raises(CanvasAPIError) as caught:
        client.list_enrollments(BIG)
    assert "NaN is not a JSON number: records holding it are refused" in str(caught.value)
    assert not caught.value.recoverable


# --- through a sync -----------------------------------------------------------------------------------------
@pytest.fixture
def harness(make_sandbox, db_url, monkeypatch) -> Iterator[Harness]:
    with pipeline_harness(make_sandbox(scale="small", throttle="hosted"), db_url, monkeypatch) as h:
        assert h.discover().success
        yield h


def test_a_hung_course_fails_alone_within_its_budget_and_layer1_keeps_its_rows(harness):
    h = harness
    profile = parse_profile({"name": "LIGHTWEIGHT", "processing": {"request_timeout_seconds": 3}})
    keys = h.course_keys()[:3]
    assert str(BIG) in keys
    first = h.sync(profile, keys)
    assert first.success, failure_text(first)
    before = h.rows("SELECT id, deleted_at FROM canvas_enrollments WHERE course_id = :c ORDER BY id", c=BIG)
    assert before and all(deleted is None for _, deleted in before)

    h.sandbox.misbehave(f"/courses/{BIG}/enrollments", count=0, hang=True)
    started = time.monotonic()
    h.sync(profile, keys)
    assert time.monotonic() - started < 60  # three courses with 3 s budgets, the Dagster run around them
    log = {
        (course, entity): (status, message)
        for course, entity, status, message in h.rows(
            "SELECT course_id, entity, status, message FROM canvas_sync_log WHERE run_id = "
            "(SELECT run_id FROM canvas_sync_log ORDER BY finished_at DESC LIMIT 1)"
        )
    }
    status, message = log[(BIG, "enrollments")]
    assert status == "failed"
    assert f"course {BIG} (enrollments) ran out of its 3 s budget" in message
    others = [s for (course, _), (s, _) in log.items() if course != BIG]
    assert others and all(s == "success" for s in others)
    after = h.rows("SELECT id, deleted_at FROM canvas_enrollments WHERE course_id = :c ORDER BY id", c=BIG)
    assert after == before


def test_a_discovery_that_never_ends_fails_at_the_catalogs_budget_and_marks_nothing_gone(harness):
    h = harness
    known = set(h.course_keys())
    h.sandbox.misbehave("/courses", count=0, endless_next=True)
    started = time.monotonic()
    result = h.discover(timeout_seconds=2.0)
    assert time.monotonic() - started < 60
    assert not result.success
    assert "discovering courses ran out of its 2 s budget (the catalog's timeout_seconds)" in failure_text(
        result
    )
    gone = h.rows("SELECT COUNT(*) FROM canvas_course_catalog WHERE gone_at IS NOT NULL")[0][0]
    assert gone == 0 and set(h.course_keys()) == known
