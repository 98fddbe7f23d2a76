"""Operations around the pipeline: failure reporting, the catalog's filters, the sandbox command."""

import json
import signal
import subprocess
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import dagster as dg
import pytest
import requests

from canvas_assets.definitions import defs
from canvas_assets.defs.automation import WEBHOOK_ENV_VAR, sync_failure_reporter
from canvas_assets_tests.harness import BIN, clean_env, failure_text, pipeline_harness

SECRET = "reporter-secret-token-77c1"


@pytest.fixture
def harness(make_sandbox, sqlite_url, monkeypatch):
    with pipeline_harness(make_sandbox(scale="small"), sqlite_url, monkeypatch) as h:
        yield h


class Collector(BaseHTTPRequestHandler):
    received: list[dict] = []

    def do_POST(self) -> None:  # the http.server API
        body = self.rfile.read(int(self.headers["Content-Length"]))
        Collector.received.append(json.loads(body))
        self.send_response(204)
        self.end_headers()

    def log_message(self, *args) -> None:
        pass


def test_a_failed_run_is_recorded_in_the_sync_log_and_posted_to_the_webhook(harness, monkeypatch):
    h = harness
    assert h.discover().success
    server = ThreadingHTTPServer(("127.0.0.1", 0), Collector)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    Collector.received = []
    try:
        monkeypatch.setenv(WEBHOOK_ENV_VAR, f"http://127.0.0.1:{server.server_port}/hook")
        monkeypatch.setenv("CANVAS_API_TOKEN", SECRET)
        result = h.sync("LIGHTWEIGHT")
        assert not result.success
        run = h.instance.get_run_by_id(result.run_id)
        failure = next(e for e in result.all_events if e.event_type == dg.DagsterEventType.RUN_FAILURE)
        with dg.build_run_status_sensor_context(
            sensor_name="sync_failure_reporter",
            dagster_event=failure,
            dagster_instance=h.instance,
            dagster_run=run,
            resources={"warehouse": defs.resources["warehouse"]},
        ) as context:
            sync_failure_reporter(context.for_run_failure())
    finally:
        server.shutdown()
    rows = h.rows(
        "SELECT course_id, stage, status, error_type, error_category FROM canvas_sync_log WHERE run_id = :r "
        "AND entity = '*'",
        r=result.run_id,
    )
    assert {r.course_id for r in rows} == {int(k) for k in h.course_keys()}
    assert {(r.stage, r.status, r.error_type, r.error_category) for r in rows} == {
        ("extract", "failed", "CanvasAuthError", "canvas_api")
    }
    (payload,) = Collector.received
    assert payload["run_id"] == result.run_id
    assert payload["profile"] == "LIGHTWEIGHT"
    assert payload["failures"][0]["error_type"] == "CanvasAuthError"
    assert payload["failures"][0]["recoverable"] is False
    assert SECRET not in json.dumps(payload)


def test_the_catalog_honours_its_filters(harness):
    h = harness
    data = h.sandbox.data
    result = h.discover(states=["available"], max_courses=3)
    assert result.success
    assert h.course_keys() == [str(c) for c in data.course_ids(states=("available",))[:3]]
    term = data.courses[data.course_ids(states=("completed",))[0]]["enrollment_term_id"]
    assert h.discover(states=["completed"], enrollment_term_id=term).success
    expected = [
        c for c in data.course_ids(states=("completed",)) if data.courses[c]["enrollment_term_id"] == term
    ]
    assert expected
    new_keys = {int(k) for k in h.course_keys()} - set(data.course_ids(states=("available",))[:3])
    assert new_keys == set(expected)  # only that term's completed courses were added
    # A filtered listing does not make the courses it leaves out gone.
    assert h.rows("SELECT course_id FROM canvas_course_catalog WHERE gone_at IS NOT NULL") == []


def test_the_catalog_lists_an_accounts_courses_when_an_account_is_set(harness, monkeypatch):
    h = harness
    monkeypatch.setenv("CANVAS_ACCOUNT_ID", str(h.sandbox.data.account_id))
    h.sandbox.reset_stats()
    assert h.discover().success
    assert h.requests_to("/accounts/:id/courses") >= 1
    assert h.course_keys() == [str(c) for c in h.sandbox.data.course_ids(states=("available", "completed"))]


def test_a_bad_catalog_setting_is_refused_with_what_to_do(harness, monkeypatch):
    monkeypatch.setenv("CANVAS_ACCOUNT_ID", "main-campus")
    result = harness.discover()
    assert not result.success
    assert "CANVAS_ACCOUNT_ID must be a numeric Canvas account id" in failure_text(result)
    monkeypatch.delenv("CANVAS_ACCOUNT_ID")
    assert "is not one Canvas knows" in failure_text(harness.discover(states=["open"]))


def test_the_sandbox_command_serves_canvas_and_prints_how_to_reach_it(tmp_path):
    env = clean_env()
    proc = subprocess.Popen(
        [str(BIN / "canvas-assets"), "sandbox", "--port", "0", "--courses", "5", "--seed", "3"],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        lines = {}
        for _ in range(10):
            line = proc.stdout.readline()
            if line.startswith("export "):
                key, value = line[len("export ") :].strip().split("=", 1)
                lines[key] = value
            if len(lines) == 2:
                break
        base, token = lines["CANVAS_BASE_URL"], lines["CANVAS_API_TOKEN"]
        assert base.startswith("http://127.0.0.1:")
        response = requests.get(
            f"{base}/api/v1/courses",
            headers={"Authorization": f"Bearer {token}"},
            params={"per_page": 100},
            timeout=10,
        )
        assert response.status_code == 200
        assert len(response.json()) >= 1
        assert "X-Rate-Limit-Remaining" in response.headers
    finally:
        proc.send_signal(signal.SIGINT)
        proc.wait(timeout=20)
