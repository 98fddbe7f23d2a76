"""The sandbox's Live Events: Canvas's shapes on a real SQS queue (moto's server, a subprocess on loopback),
the delivery faults doing what they say, and the load mode (HTTPS delivery: test_live_emitter_https.py).

The field lists below are copied from instructure/canvas-lms lib/canvas/live_events.rb (get_submission_data,
grade_changed, course_grade_change, grade_override, get_enrollment_data, get_assignment_data,
get_course_data); docs/canvas-api.md §7 "Live events" cites them.
"""

from __future__ import annotations

import json
import re
from collections import Counter
from collections.abc import Iterator
from typing import Any

import pytest

from canvas_assets.live.sqs_server import SqsServer, check_queue_name
from canvas_assets.sandbox import CanvasSandbox, SandboxConfig, mutations
from canvas_assets.sandbox.live_delivery import LiveFaults, Pipeline, SqsSink, attach_sqs
from canvas_assets.sandbox.live_events import (
    EVENT_NAMES,
    SHARD_MULTIPLIER,
    LiveEmitter,
    attach,
    emitter_of,
    global_id,
    rest_id,
)
from canvas_assets.sandbox.live_load import GradingLoad

SUBMISSION_FIELDS = [
    "submission_id", "assignment_id", "user_id", "submitted_at", "lti_user_id", "graded_at", "updated_at",
    "score", "grade", "submission_type", "body", "url", "attempt", "late", "missing", "lti_assignment_id",
    "group_id", "posted_at", "workflow_state",
]  # fmt: skip
BODY_FIELDS = {
    "grade_change": [
        "submission_id", "assignment_id", "assignment_name", "grade", "old_grade", "score", "old_score",
        "points_possible", "old_points_possible", "grader_id", "student_id", "student_sis_id", "user_id",
        "grading_complete", "muted",
    ],
    "submission_created": SUBMISSION_FIELDS,
    "submission_updated": SUBMISSION_FIELDS,
    "course_grade_change": [
        "user_id", "course_id", "workflow_state", "created_at", "updated_at", "current_score",
        "old_current_score", "final_score", "old_final_score", "unposted_current_score",
        "old_unposted_current_score", "unposted_final_score", "old_unposted_final_score",
    ],
    "enrollment_created": [
        "enrollment_id", "course_id", "course_uuid", "user_id", "user_uuid", "user_name", "type", "created_at",
        "updated_at", "limit_privileges_to_course_section", "course_section_id", "workflow_state",
    ],
    "assignment_created": [
        "anonymous_grading", "assignment_group_id", "assignment_id", "assignment_id_duplicated_from",
        "context_id", "context_type", "context_uuid", "created_on_blueprint_sync", "description", "due_at",
        "lti_assignment_description", "lti_assignment_id", "lti_resource_link_id",
        "lti_resource_link_id_duplicated_from", "lock_at", "points_possible", "resource_map",
        "submission_types", "title", "unlock_at", "updated_at", "workflow_state",
    ],
    "grade_override": [
        "score_id", "enrollment_id", "user_id", "course_id", "grading_period_id", "override_score",
        "old_override_score", "updated_at",
    ],
    "course_updated": [
        "course_id", "uuid", "account_id", "account_uuid", "name", "created_at", "updated_at", "workflow_state",
    ],
}  # fmt: skip
BODY_FIELDS["enrollment_updated"] = BODY_FIELDS["enrollment_created"]
BODY_FIELDS["assignment_updated"] = BODY_FIELDS["assignment_created"]
EVENT_TIME = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z$")


@pytest.fixture(scope="module")
def sqs() -> Iterator[SqsServer]:
    with SqsServer() as server:
        yield server


@pytest.fixture
def sb() -> Iterator[CanvasSandbox]:
    with CanvasSandbox(SandboxConfig(scale="small")) as sandbox:
        yield sandbox


def drain(sqs: SqsServer, url: str, expect: int | None = None) -> list[dict[str, Any]]:
    """Every message on the queue (received and deleted), as decoded events; bounded by empty polls."""
    client, out, empty = sqs.client(), [], 0
    while empty < 2 and (expect is None or len(out) < expect or empty < 1):
        got = client.receive_message(QueueUrl=url, MaxNumberOfMessages=10, WaitTimeSeconds=1).get(
            "Messages", []
        )
        if not got:
            empty += 1
            continue
        out.extend(json.loads(m["Body"]) for m in got)
        client.delete_message_batch(
            QueueUrl=url,
            Entries=[{"Id": str(i), "ReceiptHandle": m["ReceiptHandle"]} for i, m in enumerate(got)],
        )
    return out


def every_mutation(sb: CanvasSandbox) -> int:
    """One of each mutation that Canvas reports as a live event, in an ordinary course; its id."""
    d = sb.data
    cid = next(c for c in d.course_ids(("available",)) if c < SHARD_MULTIPLIER and d.submissions_of(c))
    sb.submit_work(cid)
    sb.grade_submission(cid)
    sb.excuse_submission(cid)
    sb.change_score(cid)
    mutations.override_grade(sb.data, cid)
    sb.data.enroll_student(cid)
    sb.drop_enrollment(cid)
    aid = sb.data.add_assignment(cid, published=False)
    sb.data.publish_assignment(cid, aid)
    sb.pass_due_date(cid)
    sb.delete_assignment(cid, aid)
    sb.remove_course(cid)
    return cid


# ---------------------------------------------------------------------- shapes on the real queue
def test_every_mutation_reaches_the_queue_in_canvas_shape(sqs: SqsServer, sb: CanvasSandbox) -> None:
    url = sqs.create_queue()
    em = attach_sqs(sb.data, url, endpoint_url=sqs.endpoint_url, compact_fraction=0.0)
    cid = every_mutation(sb)
    assert em.flush(30)
    em.close()
    events = drain(sqs, url, expect=len(em.ledger))
    assert sorted(e["metadata"]["request_id"] for e in events) == sorted(
        e.event["metadata"]["request_id"] for e in em.ledger
    )
    names = Counter(e["metadata"]["event_name"] for e in events)
    assert set(names) == set(EVENT_NAMES)
    assert names["grade_change"] == 2 and names["submission_updated"] == 2  # graded, then excused
    for e in events:
        meta, body = e["metadata"], e["body"]
        name = meta["event_name"]
        assert list(body) == BODY_FIELDS[name], name
        assert EVENT_TIME.match(meta["event_time"])
        assert meta["producer"] == "canvas" and meta["context_type"] == "Course"
        assert meta["context_id"] == str(global_id(cid)) == str(SHARD_MULTIPLIER + cid)
        assert meta["root_account_id"] == str(SHARD_MULTIPLIER + sb.data.account_id)
        for key, value in [*meta.items(), *body.items()]:
            if key == "id" or key.endswith("_id"):
                assert value is None or isinstance(value, str), (name, key, value)
    times = [e.event["metadata"]["event_time"] for e in em.ledger]
    assert times == sorted(times) and len(set(times)) == len(times)  # strictly increasing


def test_submission_events_carry_the_served_values(sqs: SqsServer, sb: CanvasSandbox) -> None:
    url = sqs.create_queue()
    em = attach_sqs(sb.data, url, endpoint_url=sqs.endpoint_url, compact_fraction=0.0)
    cid = next(c for c in sb.data.course_ids(("available",)) if sb.data.submissions_of(c))
    sid = sb.grade_submission(cid, score=None)
    em.close()
    events = {e["metadata"]["event_name"]: e for e in drain(sqs, url, expect=2)}
    served = next(s for s in sb.data.submissions_of(cid) if s["id"] == sid)
    change, updated = events["grade_change"]["body"], events["submission_updated"]["body"]
    assert rest_id(change["submission_id"]) == sid == rest_id(updated["submission_id"])
    assert rest_id(change["user_id"]) == served["user_id"] == rest_id(updated["user_id"])
    assert rest_id(change["assignment_id"]) == served["assignment_id"]
    assert change["score"] == served["score"] == updated["score"]
    assert change["grade"] == served["grade"] == updated["grade"]
    assert change["grading_complete"] is True and change["muted"] is False
    assert updated["workflow_state"] == "graded" and updated["graded_at"] == served["graded_at"]


def test_course_grade_change_names_user_and_course_by_their_rest_ids(
    sqs: SqsServer, sb: CanvasSandbox
) -> None:
    """course_grade_change uses enrollment.user_id / course_id: shard-relative, unlike the other events."""
    url = sqs.create_queue()
    em = attach_sqs(sb.data, url, endpoint_url=sqs.endpoint_url, subscribed=["course_grade_change"])
    cid = next(c for c in sb.data.course_ids(("available",)) if c < SHARD_MULTIPLIER)
    students = sb.data.enrollments_of(cid, ("active",), ["StudentEnrollment"])
    cross = [e for e in students if e["user_id"] >= SHARD_MULTIPLIER]  # a user of another shard
    eid = sb.change_score(cid, (cross or students)[0]["id"], score=71.5)
    em.close()
    (event,) = drain(sqs, url, expect=1)
    e = sb.data.enrollments[eid]
    assert event["body"]["course_id"] == str(cid) != event["metadata"]["context_id"] == str(global_id(cid))
    assert event["body"]["user_id"] == str(e["user_id"])
    assert rest_id(event["body"]["course_id"]) == cid and rest_id(event["body"]["user_id"]) == e["user_id"]
    assert event["body"]["current_score"] == 71.5 == e["grades"]["current_score"]


def test_a_grade_override_is_emitted_only_when_it_changes(sqs: SqsServer, sb: CanvasSandbox) -> None:
    url = sqs.create_queue()
    em = attach_sqs(
        sb.data, url, endpoint_url=sqs.endpoint_url, subscribed=["grade_override"], compact_fraction=0.0
    )
    cid = next(c for c in sb.data.course_ids(("available",)) if c < SHARD_MULTIPLIER)
    students = sb.data.enrollments_of(cid, ("active",), ["StudentEnrollment"])
    eid = next(e["id"] for e in students if "override_score" not in e["grades"])
    mutations.override_grade(sb.data, cid, eid, score=88.5)
    mutations.override_grade(sb.data, cid, eid, score=88.5)  # unchanged: Canvas emits nothing
    mutations.override_grade(sb.data, cid, eid, score=91.0)
    em.close()
    bodies = sorted((e["body"] for e in drain(sqs, url, expect=2)), key=lambda b: b["override_score"])
    assert [(b["old_override_score"], b["override_score"]) for b in bodies] == [(None, 88.5), (88.5, 91.0)]
    assert all(b["enrollment_id"] == str(eid) and b["course_id"] == str(cid) for b in bodies)
    assert sb.data.enrollments[eid]["grades"]["override_score"] == 91.0


def test_compacted_events_drop_nil_fields_and_others_keep_them(sqs: SqsServer, sb: CanvasSandbox) -> None:
    url = sqs.create_queue()
    em = attach_sqs(
        sb.data, url, endpoint_url=sqs.endpoint_url, compact_fraction=0.5, subscribed=["submission_created"]
    )
    cid = next(c for c in sb.data.course_ids(("available",)) if sb.data.submissions_of(c))
    for _ in range(30):
        sb.submit_work(cid)
    em.close()
    bodies = [e["body"] for e in drain(sqs, url, expect=30)]
    assert len(bodies) == 30
    compacted = [b for b in bodies if "body" not in b]  # `body` (the text) is nil in every sandbox submission
    kept = [b for b in bodies if "body" in b]
    assert compacted and kept
    assert all(None not in b.values() for b in compacted)
    assert all(list(b) == SUBMISSION_FIELDS for b in kept)


def test_without_an_emitter_or_subscription_nothing_is_built(sqs: SqsServer, sb: CanvasSandbox) -> None:
    assert emitter_of(sb.data) is None
    cid = sb.data.course_ids(("available",))[0]
    sb.change_score(cid)  # no emitter: nothing happens, nothing fails
    em = attach(sb.data, LiveEmitter(sb.data, None, subscribed=["enrollment_created"]))
    sb.change_score(cid)
    sb.data.enroll_student(cid)
    assert [e.event["metadata"]["event_name"] for e in em.ledger] == ["enrollment_created"]
    with pytest.raises(ValueError, match="unknown live event names"):
        LiveEmitter(sb.data, None, subscribed=["grade_changed"])
    em.close()
    assert emitter_of(sb.data) is None


# ---------------------------------------------------------------------- faults
def test_drops_and_duplicates_do_what_they_say(sqs: SqsServer, sb: CanvasSandbox) -> None:
    url = sqs.create_queue()
    faults = LiveFaults(drop_rate=0.1, duplicate_rate=0.2, seed=5)
    em = attach_sqs(sb.data, url, endpoint_url=sqs.endpoint_url, faults=faults, subscribed=["grade_change"])
    GradingLoad(sb.data, rate=400).run(0.5)
    assert em.flush(30)
    stats = em.delivery_stats()
    em.close()
    events = drain(sqs, url, expect=stats["sent"])
    assert len(events) == stats["sent"] == sum(e.copies for e in em.ledger)
    arrived = Counter(e["metadata"]["request_id"] for e in events)
    for entry in em.ledger:
        assert arrived[entry.event["metadata"]["request_id"]] == entry.copies
        assert entry.copies in ((0,) if entry.dropped else (1, 2))
    dropped = sum(e.dropped for e in em.ledger)
    doubled = sum(e.copies == 2 for e in em.ledger)
    assert dropped == stats["dropped"] > 0
    assert doubled == stats["duplicated"] > 0
    assert len(events) == len(em.ledger) - dropped + doubled
    assert stats["lost"] == 0 and len(em.ledger) == stats["submitted"] == 200


def test_a_reorder_window_reorders_and_a_delay_holds(sqs: SqsServer, sb: CanvasSandbox) -> None:
    url = sqs.create_queue()
    faults = LiveFaults(reorder_window_s=1.0, delay_s=0.3, seed=9)
    em = attach_sqs(sb.data, url, endpoint_url=sqs.endpoint_url, faults=faults, subscribed=["grade_change"])
    GradingLoad(sb.data, rate=200).run(0.5)
    assert em.flush(30)
    em.close()
    by_send = sorted(em.ledger, key=lambda e: e.sent_monotonic[0])
    assert [e.seq for e in by_send] != sorted(e.seq for e in by_send)  # overtaken
    assert all(e.sent_monotonic[0] - e.mutation_monotonic >= 0.3 for e in em.ledger)  # never before the delay
    times = [e["metadata"]["event_time"] for e in drain(sqs, url, expect=len(em.ledger))]
    assert len(times) == len(em.ledger) and times != sorted(times)  # the queue holds them out of order


def test_an_event_over_a_megabyte_is_dropped(sqs: SqsServer) -> None:
    url = sqs.create_queue()
    pipeline = Pipeline(SqsSink(url, endpoint_url=sqs.endpoint_url))
    pipeline.submit({"metadata": {"event_name": "x"}, "body": {"text": "é" * 600_000}})
    pipeline.submit({"metadata": {"event_name": "y"}, "body": {}})
    pipeline.close()
    assert pipeline.stats()["oversize"] == 1
    assert [e["metadata"]["event_name"] for e in drain(sqs, url, expect=1)] == ["y"]


def test_an_unreachable_queue_loses_events_without_holding_up_mutations(sb: CanvasSandbox) -> None:
    server = SqsServer().start()
    url = server.create_queue()
    endpoint = server.endpoint_url
    server.stop()  # the queue's server is gone: every send fails to connect
    pipeline = Pipeline(SqsSink(url, endpoint_url=endpoint, retry_delays_s=(0.05,)))
    em = attach(sb.data, LiveEmitter(sb.data, pipeline, subscribed=["course_grade_change"]))
    cid = sb.data.course_ids(("available",))[0]
    for _ in range(3):
        sb.change_score(cid)  # returns at once: delivery happens on the pipeline's thread
    assert len(em.ledger) == 3
    assert em.flush(60)
    stats = em.delivery_stats()
    em.close()
    assert stats["lost"] >= 1 and stats["sent"] == 0 and stats["retries"] >= 1
    assert all(e.copies == 0 for e in em.ledger)


def test_queue_names_follow_data_services_rules(sqs: SqsServer) -> None:
    for bad in ("grades", "canvas-live-events-x.fifo"):
        with pytest.raises(ValueError, match=r"canvas-live-events|FIFO"):
            check_queue_name(bad)
    with pytest.raises(ValueError, match="standard queues named"):
        SqsSink(sqs.endpoint_url + "/123456789012/other-queue", endpoint_url=sqs.endpoint_url)


def test_the_sqs_server_stops_its_own_process() -> None:
    server = SqsServer().start()
    proc = server.proc
    assert proc is not None and proc.poll() is None
    server.stop()
    assert proc.poll() is not None and server.proc is None


# ---------------------------------------------------------------------- load and ids
def test_the_load_mode_regrades_at_its_rate_on_schedule(sb: CanvasSandbox) -> None:
    em = attach(sb.data, LiveEmitter(sb.data, None, subscribed=["grade_change"]))
    report = GradingLoad(sb.data, rate=250).run(0.4)
    em.close()
    assert report.mutations == 100 and report.errors == 0
    assert len(em.ledger) == 100
    walls = [e.mutation_wall for e in em.ledger]
    assert walls == sorted(walls) and len(set(walls)) == 100
    for entry in em.ledger[-5:]:
        body = entry.event["body"]
        cid = int(entry.course_id or 0)
        served = {s["id"]: s for s in sb.data.submissions_of(cid)}
        assert rest_id(body["submission_id"]) in served


def test_global_and_rest_ids_round_trip() -> None:
    assert global_id(1006) == 10_000_000_001_006
    assert global_id(1006, shard=7) == 70_000_000_001_006
    cross = 170_000_000_005_191  # the sandbox's cross-shard user: shard 17
    assert global_id(cross) == cross and rest_id(str(cross)) == cross
    assert rest_id("10000000001006") == 1006 and rest_id("1006") == 1006
    assert rest_id(global_id(42, shard=3), shard=3) == 42
    assert global_id(None) is None and rest_id(None) is None
