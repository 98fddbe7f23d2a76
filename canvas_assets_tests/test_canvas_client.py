"""The Canvas client against the sandbox over real HTTP on loopback.

Backoff sleeps are injected (instant, or a short real pause where the sandbox's bucket must drain),
so no test waits for a real backoff schedule.
"""

import json
import logging
import math
import random
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest
import requests

from canvas_assets.canvas import CanvasClient
from canvas_assets.errors import (
    CanvasAPIError,
    CanvasAuthError,
    CanvasNotFound,
    CanvasPermissionError,
    CanvasTimeout,
)
from canvas_assets.sandbox import CanvasSandbox

STUDENT_STATES = ("active", "invited", "completed", "inactive")


def no_sleep(_seconds: float) -> None:
    pass


def make_client(sb: CanvasSandbox, **kwargs: Any) -> CanvasClient:
    kwargs.setdefault("sleep", no_sleep)
    kwargs.setdefault("rng", random.Random(1))
    return CanvasClient(sb.base_url, kwargs.pop("token", sb.token), **kwargs)


def biggest_course(sb: CanvasSandbox) -> int:
    return max(sb.data.course_ids(), key=lambda cid: len(sb.data.enrollments_of(cid)))


def pages_of(sb: CanvasSandbox, path_fragment: str) -> int:
    return sum(v["pages"] for k, v in sb.stats()["lists"].items() if path_fragment in k)


def fetch_everything(client: CanvasClient, course_ids: list[int], *, threads: int = 1) -> dict[str, Any]:
    """Every entity of every course, as the extractor fetches them (summaries may 404)."""

    def one(task: tuple[int, str]) -> tuple[tuple[int, str], Any]:
        cid, entity = task
        if entity == "course":
            return task, client.get_course(cid)
        if entity == "students":
            return task, client.list_students(cid, enrollment_states=STUDENT_STATES)
        if entity == "enrollments":
            return task, client.list_enrollments(cid)
        if entity == "assignments":
            return task, client.list_assignments(cid)
        if entity == "modules":
            return task, client.list_modules(cid)
        try:
            return task, client.list_student_summaries(cid)
        except CanvasNotFound:
            return task, None

    entities = ("course", "students", "enrollments", "assignments", "modules", "summaries")
    tasks = [(cid, e) for cid in course_ids for e in entities]
    with ThreadPoolExecutor(threads) as pool:
        return {f"{cid}/{e}": value for (cid, e), value in pool.map(one, tasks)}


def ground_truth(sb: CanvasSandbox, course_ids: list[int]) -> dict[str, Any]:
    d = sb.data
    truth: dict[str, Any] = {}
    for cid in course_ids:
        truth[f"{cid}/course"] = cid
        truth[f"{cid}/students"] = sorted(u["id"] for u in d.students_of(cid, STUDENT_STATES))
        truth[f"{cid}/enrollments"] = sorted(e["id"] for e in d.enrollments_of(cid))
        truth[f"{cid}/assignments"] = sorted(a["id"] for a in d.assignments_of(cid))
        truth[f"{cid}/modules"] = [(m["id"], [i["id"] for i in m["items"]]) for m in d.modules_of(cid)]
        summaries = d.summaries_of(cid)
        truth[f"{cid}/summaries"] = None if summaries is None else sorted(s["id"] for s in summaries)
    return truth


def as_ids(fetched: dict[str, Any]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in fetched.items():
        entity = key.split("/")[1]
        if value is None:
            out[key] = None
        elif entity == "course":
            out[key] = value["id"]
        elif entity == "modules":
            out[key] = [(m["id"], [i["id"] for i in m["items"]]) for m in value]
        else:
            out[key] = sorted(r["id"] for r in value)
    return out


# --- pagination ---------------------------------------------------------------------------------------
def test_bookmark_paginated_enrollments_come_back_complete_in_pages_of_100(sandbox):
    cid = biggest_course(sandbox)
    expected = sorted(e["id"] for e in sandbox.data.enrollments_of(cid))
    assert len(expected) > 200
    with make_client(sandbox) as client:
        sandbox.reset_stats()
        records = client.list_enrollments(cid)
        # Each page kept its slot for the next one; the last one kept none.
        assert (client.pacer.kept, client.pacer.in_flight) == (0, 0)
    assert sorted(r["id"] for r in records) == expected
    # Canvas's default page size (10) would have taken 10x the pages: per_page=100 was sent.
    assert pages_of(sandbox, f"/courses/{cid}/enrollments") == math.ceil(len(expected) / 100)


def test_numbered_pagination_returns_every_record_in_pages_of_100(sandbox):
    cid = biggest_course(sandbox)
    truth = sandbox.data.summaries_of(cid)
    assert truth is not None and len(truth) > 100
    with make_client(sandbox) as client:
        sandbox.reset_stats()
        records = client.list_student_summaries(cid)
    assert [r["id"] for r in records] == [s["id"] for s in truth]
    assert pages_of(sandbox, f"/courses/{cid}/analytics/student_summaries") == math.ceil(len(truth) / 100)


def test_modules_with_more_than_100_items_are_completed_from_the_items_endpoint(sandbox):
    big = [
        (cid, m)
        for cid in sandbox.data.course_ids()
        for m in sandbox.data.modules_of(cid)
        if len(m["items"]) > 100
    ]
    assert big, "the sandbox should have a module over the inlining limit"
    cid, module = big[0]
    with make_client(sandbox) as client:
        sandbox.reset_stats()
        modules = client.list_modules(cid)
        assert client.thread_requests() == sandbox.stats()["requests"]
    fetched = {m["id"]: [i["id"] for i in m["items"]] for m in modules}
    assert fetched == {m["id"]: [i["id"] for i in m["items"]] for m in sandbox.data.modules_of(cid)}
    assert len(fetched[module["id"]]) == len(module["items"])
    assert sandbox.stats()["by_endpoint"].get("/courses/:id/modules/:id/items", 0) >= 1


# --- pacing ---------------------------------------------------------------------------------------------
@pytest.mark.parametrize("throttle", ["hosted", "legacy"])
def test_sixteen_threads_through_the_pacer_see_no_throttled_response(make_sandbox, throttle):
    sb = make_sandbox(scale="small", throttle=throttle, latency_ms=20.0)
    courses = sb.data.course_ids()
    with make_client(sb, max_in_flight=32) as client:
        fetched = fetch_everything(client, courses * 3, threads=16)
        snapshot = client.metrics.snapshot()
    stats = sb.stats()
    assert stats["throttled"] == 0
    assert snapshot["throttled"] == 0 and snapshot["retries"] == 0
    # It used the bucket, not one request at a time.
    assert stats["peak_in_flight"] >= 6
    assert as_ids(fetched) == ground_truth(sb, courses)


def test_a_burst_that_ignores_the_pacer_is_throttled_and_the_client_recovers_by_retrying(make_sandbox):
    sb = make_sandbox(scale="small", throttle="hosted", latency_ms=1500.0, latency_jitter=0.0)
    cid = biggest_course(sb)
    statuses: list[int] = []

    def raw() -> None:
        r = requests.get(f"{sb.api_url}/courses/{cid}", headers={"Authorization": f"Bearer {sb.token}"})
        statuses.append(r.status_code)

    burst = [threading.Thread(target=raw) for _ in range(20)]
    for t in burst:
        t.start()
    deadline = time.monotonic() + 10
    # Full: Canvas refuses a request whose up-front cost would take the level to the mark (request_throttle.rb).
    while sb.bucket_remaining() > sb.config.upfront_cost and time.monotonic() < deadline:
        time.sleep(0.01)

    def backoff(_seconds: float) -> None:
        # Stands in for the backoff: instead of guessing, wait until the burst has drained the bucket.
        for t in burst:
            t.join()

    # The burst's requests hold the bucket full: the client's first try is refused, it backs off, retries.
    with make_client(sb, max_retries=5, sleep=backoff) as client:
        records = client.list_enrollments(cid)
        snapshot = client.metrics.snapshot()
    assert 429 in statuses
    assert snapshot["throttled"] >= 1 and snapshot["retries"] >= 1
    assert sorted(r["id"] for r in records) == sorted(e["id"] for e in sb.data.enrollments_of(cid))


def test_with_five_percent_faults_the_fetched_data_equals_the_ground_truth(make_sandbox):
    sb = make_sandbox(scale="small", throttle="hosted", fault_rate=0.05, slow_seconds=1.0, seed=11)
    courses = sb.data.course_ids()
    with make_client(sb, read_timeout=0.5, max_retries=8) as client:
        fetched = fetch_everything(client, courses, threads=8)
        snapshot = client.metrics.snapshot()
    assert sum(sb.stats()["faults"].values()) > 0
    assert snapshot["retries"] > 0
    assert as_ids(fetched) == ground_truth(sb, courses)


# --- errors ---------------------------------------------------------------------------------------------
def test_a_bad_token_fails_after_one_request_with_a_message_naming_the_cause(sandbox):
    bad = "7~ThisTokenIsNotKnownToCanvas0123456789"
    with make_client(sandbox, token=bad) as client:
        sandbox.reset_stats()
        with pytest.raises(CanvasAuthError) as caught:
            client.list_courses(account_id=sandbox.data.account_id)
    assert sandbox.stats()["requests"] == 1
    message = str(caught.value)
    assert "Invalid access token" in message and "CANVAS_API_TOKEN" in message
    assert bad not in message and bad not in json.dumps(caught.value.to_metadata())
    assert caught.value.status == 401 and not caught.value.recoverable


def test_a_permission_401_is_typed_and_not_retried(sandbox):
    with make_client(sandbox, token=sandbox.limited_token) as client:
        sandbox.reset_stats()
        with pytest.raises(CanvasPermissionError) as caught:
            client.list_courses(account_id=sandbox.data.account_id)
    assert sandbox.stats()["requests"] == 1
    assert caught.value.status == 401 and "not authorized" in caught.value.message


def test_a_404_is_typed_and_not_retried(sandbox):
    with make_client(sandbox) as client:
        sandbox.reset_stats()
        with pytest.raises(CanvasNotFound) as caught:
            client.get_course(987654321)
    assert sandbox.stats()["requests"] == 1
    assert caught.value.status == 404 and "/api/v1/courses/987654321" in (caught.value.url or "")


def test_a_403_that_is_not_a_throttle_is_not_retried(sandbox):
    cid = sandbox.data.course_ids()[0]
    sandbox.inject("forbidden", count=1)
    with make_client(sandbox) as client:
        sandbox.reset_stats()
        with pytest.raises(CanvasPermissionError) as caught:
            client.get_course(cid)
        assert client.metrics.snapshot()["retries"] == 0
    assert sandbox.stats()["requests"] == 1
    assert caught.value.status == 403


def test_an_injected_throttle_is_retried_and_counted(sandbox):
    cid = sandbox.data.course_ids()[0]
    sandbox.inject("throttle", count=2)
    with make_client(sandbox) as client:
        course = client.get_course(cid)
        snapshot = client.metrics.snapshot()
    assert course["id"] == cid
    assert snapshot["throttled"] == 2 and snapshot["retries"] == 2 and snapshot["requests"] == 3


def test_a_slow_response_hits_the_read_timeout_and_is_retried(make_sandbox):
    sb = make_sandbox(scale="small", throttle="hosted", slow_seconds=2.0)
    cid = sb.data.course_ids()[0]
    sb.inject("slow", count=1)
    with make_client(sb, read_timeout=0.3, max_retries=2) as client:
        course = client.get_course(cid)
        snapshot = client.metrics.snapshot()
    assert course["id"] == cid
    assert snapshot["retries"] == 1 and snapshot["errors"] == 1


def test_a_timeout_that_outlasts_the_retries_raises_canvas_timeout(make_sandbox):
    sb = make_sandbox(scale="small", throttle="hosted", slow_seconds=2.0)
    sb.inject("slow", count=5)
    with make_client(sb, read_timeout=0.2, max_retries=1) as client, pytest.raises(CanvasTimeout) as caught:
        client.get_course(sb.data.course_ids()[0])
    assert caught.value.recoverable


def test_a_dropped_connection_is_retried(sandbox):
    cid = sandbox.data.course_ids()[0]
    sandbox.inject("drop", count=1)
    with make_client(sandbox) as client:
        assert client.get_course(cid)["id"] == cid
        assert client.metrics.snapshot()["retries"] == 1


# --- the next link must stay on the base URL's origin -----------------------------------------------
class _Recorder(BaseHTTPRequestHandler):
    hits: list[str]
    link: str | None = None

    def do_GET(self) -> None:
        type(self).hits.append(self.path)
        body = b'[{"id": 1}]'
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        if type(self).link:
            self.send_header("LINK", f'<{type(self).link}>; REL="NEXT"')
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: Any) -> None:
        pass


@pytest.fixture
def loopback_server() -> Iterator[Callable[[str | None], tuple[str, list[str]]]]:
    servers: list[ThreadingHTTPServer] = []

    def start(link: str | None) -> tuple[str, list[str]]:
        handler = type("Handler", (_Recorder,), {"hits": [], "link": link})
        server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
        threading.Thread(target=server.serve_forever, daemon=True).start()
        servers.append(server)
        return f"http://127.0.0.1:{server.server_address[1]}", handler.hits

    yield start
    for s in servers:
        s.shutdown()
        s.server_close()


def test_a_next_link_to_another_origin_is_refused_and_never_sent_the_token(loopback_server):
    other_url, other_hits = loopback_server(None)
    base_url, hits = loopback_server(f"{other_url}/api/v1/courses?page=2")
    with (
        CanvasClient(base_url, "7~AnyToken123456", sleep=no_sleep) as client,
        pytest.raises(CanvasAPIError) as caught,
    ):
        client.list_assignments(1)
    assert "another origin" in caught.value.message
    assert len(hits) == 1 and other_hits == []
    assert client.pacer.kept == 0  # the slot kept for the refused page is given back


class _CutOff(BaseHTTPRequestHandler):
    """Answers 200 with a Content-Length longer than the body it sends (once), then closes."""

    protocol_version = "HTTP/1.1"
    served = 0

    def do_GET(self) -> None:
        type(self).served += 1
        body = b'[{"id": 1}, {"id": 2}]'
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body) + (50 if type(self).served == 1 else 0)))
        self.end_headers()
        self.wfile.write(body)
        if type(self).served == 1:
            self.close_connection = True

    def log_message(self, format: str, *args: Any) -> None:
        pass


def test_a_body_cut_off_after_the_headers_is_retried():
    server = ThreadingHTTPServer(("127.0.0.1", 0), type("Handler", (_CutOff,), {"served": 0}))
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        base = f"http://127.0.0.1:{server.server_address[1]}"
        with CanvasClient(base, "7~AnyToken123456", sleep=no_sleep) as client:
            assert [r["id"] for r in client.list_assignments(1)] == [1, 2]
            snapshot = client.metrics.snapshot()
        assert snapshot["retries"] == 1 and snapshot["errors"] == 1 and snapshot["requests"] == 2
        assert client.pacer.in_flight == 0
    finally:
        server.shutdown()
        server.server_close()


# --- the token stays secret ---------------------------------------------------------------------------
def test_the_token_never_appears_in_logs_errors_or_metrics(make_sandbox, caplog):
    sb = make_sandbox(scale="small", throttle="legacy", fault_rate=0.05, slow_seconds=0.6, seed=3)
    caplog.set_level(logging.DEBUG)
    courses = sb.data.course_ids()[:4]
    messages: list[str] = []
    with make_client(sb, read_timeout=0.3, max_retries=8) as client:
        fetch_everything(client, courses, threads=4)
        sb.inject("throttle", count=1)
        client.get_course(courses[0])
        for call in (lambda: client.get_course(123456789), lambda: client.list_courses(account_id=999)):
            try:
                call()
            except CanvasAPIError as exc:
                messages.append(str(exc) + json.dumps(exc.to_metadata()))
        snapshot = json.dumps(client.metrics.snapshot())
        text = repr(client)
    with make_client(sb, token="7~WrongTokenValue987654321") as bad, pytest.raises(CanvasAuthError) as caught:
        bad.get_course(courses[0])
    assert any("GET" in r.getMessage() for r in caplog.records)
    for secret in (sb.token, "7~WrongTokenValue987654321"):
        assert secret not in caplog.text
        assert all(secret not in m for m in messages)
        assert secret not in str(caught.value)
        assert secret not in snapshot and secret not in text
