"""The Live Events consumer against real parts: the sandbox emitting Canvas's live-event shapes, moto's SQS
server in its own process, the consumer (in this process, or `canvas-assets live` as a child process that
is SIGKILLed), the HTTPS receiver with RS256 JWTs, SQLite and PostgreSQL warehouses, and the real nightly
sync with its reconciliation check."""

import http.client
import json
import os
import signal
import subprocess
import threading
import time
from collections.abc import Iterator
from datetime import datetime, timezone
from typing import Any

import dagster as dg
import pytest
import requests
import sqlalchemy as sa

from canvas_assets.defs.live import LIVE_KEY, DagsterReporter
from canvas_assets.live import inbox
from canvas_assets.live.apply import ApplyStats
from canvas_assets.live.consumer import ConsumerSettings, LiveConsumer
from canvas_assets.live.events import BadEvent, event_key, local_id, parse_event
from canvas_assets.live.https import LiveReceiver
from canvas_assets.live.mapping import changes_of
from canvas_assets.live.sqs_server import SqsServer
from canvas_assets.sandbox.live_delivery import LiveFaults, attach_https, attach_sqs
from canvas_assets.sandbox.live_keys import JwksServer, KeyRing
from canvas_assets.sandbox.live_load import GradingLoad
from canvas_assets.warehouse.engine import get_engine
from canvas_assets_tests.harness import BIN, clean_env, pipeline_harness
from canvas_assets_tests.processes import wait_until

SANDBOX = {"scale": "small", "courses": 4, "throttle": "off", "latency_ms": 0.0, "fault_rate": 0.0}


# --- fixtures -----------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def sqs() -> Iterator[SqsServer]:
    with SqsServer() as server:
        yield server


@pytest.fixture
def synced(make_sandbox, pg_url, monkeypatch):
    """A sandbox synced (ANALYTICS_FOCUSED: submissions too) into a fresh PostgreSQL warehouse."""
    sb = make_sandbox(**SANDBOX)
    with pipeline_harness(sb, pg_url, monkeypatch) as h:
        h.discover()
        assert h.sync("ANALYTICS_FOCUSED").success
        yield h


def start_consumer(
    engine: sa.Engine, sqs: SqsServer, queue: str, **kw: Any
) -> tuple[LiveConsumer, threading.Thread]:
    settings = ConsumerSettings(queue_url=queue, endpoint_url=sqs.endpoint_url, wait_seconds=1, **kw)
    consumer = LiveConsumer(settings, engine, sqs.client())
    thread = threading.Thread(target=consumer.run, daemon=True)
    thread.start()
    return consumer, thread


def stop_consumer(consumer: LiveConsumer, thread: threading.Thread) -> None:
    consumer.stop.set()
    thread.join(timeout=60)
    assert not thread.is_alive()


def newest_values(ledger: list[Any], delivered_only: bool) -> dict[tuple[str, int, str], Any]:
    """Per (table, row, column): the value of the newest event (by event time) that set it."""
    newest: dict[tuple[str, int, str], tuple[datetime, Any]] = {}
    for entry in ledger:
        if delivered_only and entry.copies == 0:
            continue
        event = parse_event(json.dumps(entry.event))
        for change in changes_of(event) or []:
            if change.row_id is None:
                continue
            for column, value in change.values.items():
                key = (change.table, change.row_id, column)
                if key not in newest or newest[key][0] <= event.event_time:
                    newest[key] = (event.event_time, value)
    return {k: v for k, (_, v) in newest.items()}


def stored_submissions(engine: sa.Engine, ids: set[int]) -> dict[int, dict[str, Any]]:
    t = sa.table("canvas_submissions", sa.column("id"), sa.column("score"), sa.column("grade"))
    with engine.connect() as conn:
        rows = conn.execute(sa.select(t.c.id, t.c.score, t.c.grade).where(t.c.id.in_(sorted(ids))))
        return {int(r[0]): {"score": r[1], "grade": r[2]} for r in rows}


def mismatches(engine: sa.Engine, expected: dict[tuple[str, int, str], Any]) -> list[Any]:
    """Submission scores and grades in the warehouse that differ from `expected`."""
    wanted = {
        k: v for k, v in expected.items() if k[0] == "canvas_submissions" and k[2] in ("score", "grade")
    }
    stored = stored_submissions(engine, {k[1] for k in wanted})
    return [
        (k, v, stored.get(k[1], {}).get(k[2]))
        for k, v in wanted.items()
        if stored.get(k[1], {}).get(k[2]) != v
    ]


def wait_applied(engine: sa.Engine, distinct: int, timeout: float = 90) -> None:
    def done() -> bool:
        c = inbox.counts(engine)
        return sum(c.values()) >= distinct and c.get("pending", 0) == 0

    wait_until(f"{distinct} events stored and applied", done, timeout)


def live_history_duplicates(engine: sa.Engine) -> int:
    with engine.connect() as conn:
        return int(
            conn.execute(
                sa.text(
                    "SELECT COUNT(*) FROM (SELECT submission_id, recorded_at FROM canvas_submission_score_history "
                    "WHERE run_id = 'live' GROUP BY submission_id, recorded_at HAVING COUNT(*) > 1) d"
                )
            ).scalar_one()
        )


# --- the format ---------------------------------------------------------------------------------------------
def test_ids_keys_and_bad_events():
    # Global ids of the account's shard become the REST ids; another shard's global ids stay global.
    assert local_id("10000000000042", shard=1) == 42
    assert local_id("170000000000042", shard=1) == 170000000000042
    assert local_id("42") == 42 and local_id(None) is None and local_id("x") is None
    md = {
        "event_name": "grade_change",
        "event_time": "2026-12-07T09:00:00.123Z",
        "root_account_id": "10000000000001",
    }
    full = {"submission_id": "10000000000005", "score": 3.0, "grade": None}
    compact = {"submission_id": "10000000000005", "score": 3.0}
    assert event_key(md, full) == event_key(md, compact)  # a compacted copy is the same event
    assert event_key(md, full) != event_key({**md, "event_time": "2026-12-07T09:00:00.124Z"}, full)
    event = parse_event(
        json.dumps(
            {"metadata": {**md, "context_type": "Course", "context_id": "10000000000007"}, "body": full}
        )
    )
    assert (event.course_id, event.shard, event.rest_id(full["submission_id"])) == (7, 1, 5)
    with pytest.raises(BadEvent, match="live-event"):
        parse_event(json.dumps({"data": [{"type": "GradeEvent"}]}))  # a caliper-format event
    with pytest.raises(BadEvent, match="event_time"):
        parse_event(json.dumps({"metadata": {"event_name": "grade_change"}, "body": {}}))
    with pytest.raises(BadEvent, match="outside the years 1-9999"):
        parse_event(json.dumps({"metadata": {**md, "event_time": "9999-12-31T23:00:00-05:00"}, "body": full}))
    with pytest.raises(BadEvent, match="1 MB"):
        parse_event(b"{" + b" " * (1 << 20) + b"}")


# --- applying -------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("db", ["sqlite", "postgresql"])
def test_changes_reach_their_rows_within_seconds(db, make_sandbox, sqs, request, monkeypatch):
    url = request.getfixturevalue("sqlite_url" if db == "sqlite" else "pg_url")
    sb = make_sandbox(**SANDBOX)
    with pipeline_harness(sb, url, monkeypatch) as h:
        h.discover()
        assert h.sync("ANALYTICS_FOCUSED").success
        queue = sqs.create_queue()
        emitter = attach_sqs(sb.data, queue, endpoint_url=sqs.endpoint_url, compact_fraction=0.5)
        consumer, thread = start_consumer(h.engine, sqs, queue)
        try:
            course = min(sb.data.courses)
            sid = sb.data.grade_submission(course, score=1.25)
            wait_until(
                "the graded score in canvas_submissions",
                lambda: h.table("canvas_submissions")[sid]["score"] == 1.25,
                20,
            )
            history = h.rows(
                "SELECT score, run_id FROM canvas_submission_score_history WHERE submission_id = :s", s=sid
            )
            assert (1.25, "live") in [tuple(r) for r in history]
            eid = sb.data.change_score(course, score=42.5)  # course_grade_change (names user and course only)
            wait_until(
                "the course score", lambda: h.table("canvas_enrollments")[eid]["current_score"] == 42.5, 20
            )
            new_enrollment = sb.data.enroll_student(course)
            wait_until("the new enrollment", lambda: new_enrollment in h.table("canvas_enrollments"), 20)
            new_assignment = sb.data.add_assignment(course)
            wait_until("the new assignment", lambda: new_assignment in h.table("canvas_assignments"), 20)
            dropped = sb.data.drop_enrollment(course, new_enrollment)
            wait_until(
                "the drop", lambda: h.table("canvas_enrollments")[dropped]["deleted_at"] is not None, 20
            )
            # A row the live path wrote has no fingerprint: the next load compares it column by column.
            assert h.table("canvas_submissions")[sid]["row_hash"] is None
        finally:
            stop_consumer(consumer, thread)
            emitter.close()
        counts = inbox.counts(h.engine)
        assert counts.get("pending", 0) == 0 and counts.get("unmatched", 0) == 0 and counts.get("bad", 0) == 0


def test_sigkill_mid_stream_then_restart_loses_nothing(synced, sqs, pg_url):
    h = synced
    queue = sqs.create_queue(visibility_timeout_s=5)
    emitter = attach_sqs(h.sandbox.data, queue, endpoint_url=sqs.endpoint_url)
    env = clean_env(CANVAS_ASSETS_DATABASE_URL=pg_url)
    command = [str(BIN / "canvas-assets"), "live", "--queue-url", queue, "--endpoint-url", sqs.endpoint_url,
               "--wait-seconds", "1", "--visibility-timeout", "5", "--no-dagster"]  # fmt: skip

    def start() -> subprocess.Popen:
        return subprocess.Popen(command, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)

    load = GradingLoad(h.sandbox.data, rate=60).start(8)
    first = start()
    try:
        wait_until(
            "the first consumer to apply events", lambda: inbox.counts(h.engine).get("applied", 0) > 40, 60
        )
        os.kill(first.pid, signal.SIGKILL)  # mid-stream: received, stored, deleted and applied at any point
        first.wait(timeout=10)
        time.sleep(1.0)
        second = start()
        try:
            report = load.join()
            assert emitter.flush(60)
            delivered = {json.dumps(e.event, sort_keys=True) for e in emitter.ledger if e.copies}
            assert len(delivered) == len(emitter.ledger) == 2 * report.mutations
            wait_applied(h.engine, len(delivered))
        finally:
            second.send_signal(signal.SIGTERM)
            assert second.wait(timeout=60) == 0, second.stderr.read().decode() if second.stderr else ""
    finally:
        if first.poll() is None:
            first.kill()
        emitter.close()
    assert sum(inbox.counts(h.engine).values()) == len(delivered)  # every event stored once: lost 0
    assert mismatches(h.engine, newest_values(emitter.ledger, delivered_only=True)) == []
    assert live_history_duplicates(h.engine) == 0


def test_duplicates_and_reordering_never_double_apply_or_regress(synced, sqs):
    h = synced
    queue = sqs.create_queue()
    faults = LiveFaults(duplicate_rate=0.1, reorder_window_s=30.0, seed=5)
    emitter = attach_sqs(h.sandbox.data, queue, endpoint_url=sqs.endpoint_url, faults=faults)
    consumer, thread = start_consumer(h.engine, sqs, queue)
    try:
        GradingLoad(h.sandbox.data, rate=40).run(3)
        assert emitter.flush(90)
        wait_applied(h.engine, len(emitter.ledger))
    finally:
        stop_consumer(consumer, thread)
        emitter.close()
    assert sum(e.copies for e in emitter.ledger) > len(emitter.ledger)  # duplicates were delivered
    assert consumer.stats.received > consumer.stats.stored == len(emitter.ledger)
    counts = inbox.counts(h.engine)
    assert counts.get("stale", 0) > 0  # reordering delivered older events after newer ones
    assert live_history_duplicates(h.engine) == 0  # duplicates_applied 0
    assert mismatches(h.engine, newest_values(emitter.ledger, delivered_only=True)) == []  # regressions 0


def test_dropped_events_are_repaired_by_the_nightly_sync_and_counted(synced, sqs):
    h = synced
    queue = sqs.create_queue()
    only: dict[str, Any] = {"subscribed": ["grade_change"]}  # one event per grading: a drop is a lost change
    emitter = attach_sqs(
        h.sandbox.data,
        queue,
        endpoint_url=sqs.endpoint_url,
        faults=LiveFaults(drop_rate=0.01, seed=11),
        **only,
    )
    consumer, thread = start_consumer(h.engine, sqs, queue)
    try:
        GradingLoad(h.sandbox.data, rate=100, seed=3).run(4)
        assert emitter.flush(60)
        emitter.close()
        # And one drop for certain, of a regrade of a row the feed had written: the live value is then stale.
        last = next(e for e in reversed(emitter.ledger) if e.copies)
        course, sid = last.course_id, int(last.event["body"]["submission_id"]) % 10**13
        lossy = attach_sqs(
            h.sandbox.data, queue, endpoint_url=sqs.endpoint_url, faults=LiveFaults(drop_rate=1.0), **only
        )
        h.sandbox.data.grade_submission(course, sid, score=0.5)
        lossy.close()
        ledger = emitter.ledger + lossy.ledger
        delivered = [e for e in ledger if e.copies]
        wait_applied(h.engine, len(delivered))
    finally:
        stop_consumer(consumer, thread)
        emitter.close()
    assert len(emitter.ledger) - len([e for e in emitter.ledger if e.copies]) >= 1  # the 1% dropped some
    truth = newest_values(ledger, delivered_only=False)
    live = newest_values(ledger, delivered_only=True)
    expected = sum(1 for k, v in live.items() if k in truth and truth[k] != v)
    assert expected >= 1 and mismatches(h.engine, truth)  # before the sync the dropped changes are missing

    result = h.sync("ANALYTICS_FOCUSED")
    assert result.success
    (check,) = [e for e in result.get_asset_check_evaluations() if e.check_name == "live_matches_rest"]
    assert check.metadata["disagreements"].value == expected  # what the live feed missed, REST repaired
    assert not check.passed
    assert mismatches(h.engine, truth) == []  # reconcile_diffs 0 after the sync
    again = h.sync("ANALYTICS_FOCUSED")
    (check,) = [e for e in again.get_asset_check_evaluations() if e.check_name == "live_matches_rest"]
    assert check.passed and check.metadata["disagreements"].value == 0


def test_two_consumers_share_one_queue_without_double_applying(synced, sqs):
    h = synced
    queue = sqs.create_queue()
    emitter = attach_sqs(
        h.sandbox.data, queue, endpoint_url=sqs.endpoint_url, faults=LiveFaults(duplicate_rate=0.2, seed=2)
    )
    consumers = [start_consumer(get_engine(h.db_url), sqs, queue, receivers=1) for _ in range(2)]
    try:
        GradingLoad(h.sandbox.data, rate=80).run(3)
        assert emitter.flush(60)
        wait_applied(h.engine, len(emitter.ledger))
    finally:
        for consumer, thread in consumers:
            stop_consumer(consumer, thread)
        emitter.close()
    assert all(c.stats.received > 0 for c, _ in consumers)
    assert sum(c.stats.applied.events for c, _ in consumers) == len(emitter.ledger)  # each event applied once
    assert live_history_duplicates(h.engine) == 0
    assert mismatches(h.engine, newest_values(emitter.ledger, delivered_only=True)) == []


def oversized_post(url: str) -> int:
    """POST announcing a body over 1 MB: refused from the headers, before any of it is read."""
    host, port = url.split("//")[1].rstrip("/").split(":")
    conn = http.client.HTTPConnection(host, int(port), timeout=10)
    conn.putrequest("POST", "/")
    conn.putheader("Content-Length", str(2 << 20))
    conn.endheaders()
    status = conn.getresponse().status
    conn.close()
    return status


# --- HTTPS ------------------------------------------------------------------------------------------------------
def test_https_receiver_verifies_signatures_and_follows_key_rotation(make_sandbox, sqlite_url, monkeypatch):
    sb = make_sandbox(**SANDBOX)
    ring = KeyRing()
    with JwksServer(ring) as jwks, pipeline_harness(sb, sqlite_url, monkeypatch) as h:
        h.discover()
        assert h.sync("ANALYTICS_FOCUSED").success
        settings = ConsumerSettings(queue_url=None, report_every_s=60)
        consumer = LiveConsumer(settings, h.engine, None)
        receiver = LiveReceiver(
            h.engine, "127.0.0.1", 0, jwks_url=jwks.url, on_stored=consumer.wake, jwks_min_refetch_s=0.5
        ).start()
        thread = threading.Thread(target=consumer.run, daemon=True)
        thread.start()
        emitter = attach_https(sb.data, receiver.url, signer=ring, retry_delays_s=(0.2, 0.5, 1.0))
        try:
            course = min(sb.data.courses)
            sid = sb.data.grade_submission(course, score=2.5)
            wait_until("the signed grade", lambda: h.table("canvas_submissions")[sid]["score"] == 2.5, 20)
            event = emitter.ledger[-1].event
            assert requests.post(receiver.url, data=ring.forge(event), timeout=10).status_code == 401
            assert (
                requests.post(receiver.url, data=json.dumps(event), timeout=10).status_code == 401
            )  # unsigned
            assert oversized_post(receiver.url) == 413
            time.sleep(0.6)
            ring.rotate()
            ring.rotate()  # the signing key is now one the receiver has never fetched
            sid = sb.data.grade_submission(course, sid, score=3.5)
            wait_until(
                "the grade signed with a new key",
                lambda: h.table("canvas_submissions")[sid]["score"] == 3.5,
                20,
            )
            assert receiver.keys is not None and receiver.keys.fetches == 2
            assert receiver.counts["unauthorized"] == 2
        finally:
            emitter.close()
            receiver.stop()
            stop_consumer(consumer, thread)


# --- Dagster --------------------------------------------------------------------------------------------------
def test_the_feed_and_per_course_lag_reach_dagster():
    with dg.instance_for_test() as instance:
        instance.add_dynamic_partitions("canvas_course", ["7"])
        reporter = DagsterReporter(instance)
        now = datetime.now(timezone.utc)
        stats = ApplyStats(
            rows_written=3, last_event={7: now, 8: now}, last_lag_s={7: 0.25, 8: 0.5}
        )  # 8: no partition
        stats.outcomes["applied"] = 3
        reporter(stats)
        latest = instance.get_latest_materialization_event(LIVE_KEY)
        assert latest is not None and latest.asset_materialization is not None
        meta = latest.asset_materialization.metadata
        assert meta["live/applied"].value == 3 and meta["live/lag_s"].value == 0.5
        observations = instance.fetch_observations(dg.AssetKey(["layer1", "submissions"]), limit=10).records
        assert [r.partition_key for r in observations] == ["7"]
        observation = observations[0].event_log_entry.asset_observation
        assert observation is not None and observation.metadata["live/lag_s"].value == 0.25
        reporter(ApplyStats())  # nothing happened, the last report is recent: no event (no per-tick cost)
        assert len(instance.fetch_materializations(LIVE_KEY, limit=10).records) == 1


# --- the command line -------------------------------------------------------------------------------------------
def test_live_refuses_bad_input_with_what_to_do(tmp_path):
    env = clean_env(CANVAS_ASSETS_DATABASE_URL=f"sqlite:///{tmp_path / 'w.db'}")

    def live(*args: str) -> subprocess.CompletedProcess:
        command = [str(BIN / "canvas-assets"), "live", "--no-dagster", *args]
        return subprocess.run(command, env=env, capture_output=True, text=True, timeout=120)

    nothing = live()
    assert nothing.returncode == 2 and "--queue-url" in nothing.stderr
    not_a_url = live("--queue-url", "canvas-live-events-prod")
    assert not_a_url.returncode == 2 and "is not a URL" in not_a_url.stderr
    exposed = live("--https", "0.0.0.0:8780", "--allow-unsigned")
    assert exposed.returncode == 2 and "--certfile" in exposed.stderr
    unsigned = live("--https", "127.0.0.1:8780")
    assert unsigned.returncode == 2 and "--jwks-url" in unsigned.stderr


@pytest.mark.slow
def test_demo_live_shows_the_row_change_within_seconds(tmp_path):
    result = subprocess.run(
        [str(BIN / "canvas-assets"), "demo", "--live", "--profile", "ANALYTICS_FOCUSED"],
        env=clean_env(),
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    lines = [line for line in result.stdout.splitlines() if line.startswith("live:")]
    before = next(line for line in lines if "in the warehouse:" in line).split("in the warehouse: ")[1]
    after_line = next(line for line in lines if " s later: " in line)
    seconds, after = after_line.split("live:")[1].strip().split(" s later: ")
    assert after != before and float(seconds) < 15
