"""Canvas Live Events from the sandbox: the `live-event` shapes its mutations produce, and where they go.

A mutation (`sandbox.mutations`) calls `emit(d, name, body, ...)` while it holds the dataset's lock; when
no `LiveEmitter` is attached to that dataset (`attach`), that costs one dictionary look-up. An attached
emitter stamps the event, records it in its ledger and hands it to its delivery (`live_delivery`), which
sends it from its own thread, as Canvas's LiveEvents::AsyncWorker does (gems/live_events/lib/live_events/
async_worker.rb): the web request never waits for the queue.

What the shapes copy from Canvas (instructure/canvas-lms; docs/canvas-api.md §7, "Live events"):

- lib/canvas/live_events.rb builds each body (`get_submission_data`, `grade_changed`, `get_enrollment_data`,
  `get_assignment_data`, `get_course_data`, `course_grade_change`, `grade_override`); the field names here
  are those, in that order.
- Ids go through StringifyIds.recursively_stringify_ids (lib/stringify_ids.rb): every key `id`, `*_id`
  holding an Integer becomes a string; nil stays nil. Most bodies use `global_id`s (shard × 10^13 + local
  id); `course_grade_change` and `grade_override` use the enrollment's own `user_id`/`course_id` columns,
  which are shard-relative (the ids the REST API serves), and so do they here.
- `post_event_stringified` drops nil fields only when the request context says `compact_live_events`, so a
  consumer sees both absent and null fields: `compact_fraction` of the events here are compacted.
- LiveEvents::Client#post_event puts the context in `attributes` with `event_name` and `event_time`
  (`time.utc.iso8601(3)`); the Data Services `live-event` format delivers those as `metadata`.
- app/observers/live_events_observer.rb: a submission update that just submitted emits
  `submission_created`, any other update of a submission that is not unsubmitted `submission_updated`.
"""

from __future__ import annotations

import hashlib
import itertools
import random
import threading
import time
import uuid
import weakref
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import TYPE_CHECKING, Any, Protocol

from canvas_assets.sandbox.submissions import grade_of, serve
from canvas_assets.sandbox.vocab import Record

if TYPE_CHECKING:
    from canvas_assets.sandbox.data import SandboxData

SHARD_MULTIPLIER = 10**13  # Canvas's Shard::IDS_PER_SHARD: global id = shard id × this + local id
DEFAULT_SHARD = 1

EVENT_NAMES = (
    "grade_change",
    "submission_created",
    "submission_updated",
    "course_grade_change",
    "grade_override",
    "enrollment_created",
    "enrollment_updated",
    "assignment_created",
    "assignment_updated",
    "course_updated",
)

Event = dict[str, Any]


# ---------------------------------------------------------------------- ids
def global_id(rest_id: int | None, shard: int = DEFAULT_SHARD) -> int | None:
    """The global id of an id as the REST API serves it: a shard-relative id gets the shard's prefix, an
    id that already carries another shard's prefix (the sandbox's cross-shard users and courses) stays."""
    if rest_id is None:
        return None
    return rest_id if rest_id >= SHARD_MULTIPLIER else shard * SHARD_MULTIPLIER + rest_id


def rest_id(global_or_local: int | str | None, shard: int = DEFAULT_SHARD) -> int | None:
    """The id the REST API serves (and a REST sync stores) for an id in an event: one of our own shard's
    global ids loses its prefix; a shard-relative id (course_grade_change) or another shard's global id
    is already what REST serves. Accepts the string form events carry."""
    if global_or_local is None:
        return None
    n = int(global_or_local)
    return n % SHARD_MULTIPLIER if n // SHARD_MULTIPLIER == shard else n


def stringify_ids(payload: Event) -> Event:
    """StringifyIds.recursively_stringify_ids: `id`/`*_id` integers (and `*_ids` lists) become strings."""
    for key, value in payload.items():
        if (key == "id" or key.endswith("_id")) and isinstance(value, int) and not isinstance(value, bool):
            payload[key] = str(value)
        elif (key == "ids" or key.endswith("_ids")) and isinstance(value, list):
            payload[key] = [str(v) if isinstance(v, int) else v for v in value]
        elif isinstance(value, dict):
            stringify_ids(value)
    return payload


def event_time_text(wall: float) -> str:
    """`time.utc.iso8601(3)`: UTC with milliseconds and `Z`."""
    dt = datetime.fromtimestamp(wall, timezone.utc)
    return dt.strftime("%Y-%m-%dT%H:%M:%S.") + f"{dt.microsecond // 1000:03d}Z"


# ---------------------------------------------------------------------- bodies (lib/canvas/live_events.rb)
def submission_body(d: SandboxData, shard: int, rec: Record, a: Record) -> Event:
    """`get_submission_data`: the submission as served now (late/missing against the sandbox clock)."""
    s = serve(rec, a, d.now_ts)
    return {
        "submission_id": global_id(s["id"], shard),
        "assignment_id": global_id(s["assignment_id"], shard),
        "user_id": global_id(s["user_id"], shard),
        "submitted_at": s["submitted_at"],
        "lti_user_id": _lti_id("user", s["user_id"]),
        "graded_at": s["graded_at"],
        "updated_at": d.now(),
        "score": s["score"],
        "grade": s["grade"],
        "submission_type": s["submission_type"],
        "body": None,
        "url": None,
        "attempt": s["attempt"],
        "late": s["late"],
        "missing": s["missing"],
        "lti_assignment_id": _lti_id("assignment", a["id"]),
        "group_id": None,
        "posted_at": s["posted_at"],
        "workflow_state": s["workflow_state"],
    }


def grade_change_body(
    d: SandboxData,
    shard: int,
    rec: Record,
    a: Record,
    old: tuple[float | None, str | None],
    grader: int | None,
) -> Event:
    """`grade_changed`: new and old grade/score; `muted` is "not posted", `grading_complete` "graded"."""
    uid = rec["user_id"]
    user = d.users.get(uid, {})
    return {
        "submission_id": global_id(rec["id"], shard),
        "assignment_id": global_id(a["id"], shard),
        "assignment_name": a["name"],
        "grade": grade_of(rec["score"], a),
        "old_grade": old[1],
        "score": rec["score"],
        "old_score": old[0],
        "points_possible": a["points_possible"],
        "old_points_possible": a["points_possible"],
        "grader_id": global_id(grader, shard),
        "student_id": global_id(uid, shard),
        "student_sis_id": user.get("sis_user_id"),
        "user_id": global_id(uid, shard),
        "grading_complete": rec["workflow_state"] == "graded",
        "muted": rec["_post"] is None,
    }


def course_grade_change_body(d: SandboxData, e: Record, old: Record) -> Event:
    """`course_grade_change`: the enrollment's course score row, named by user and course (relative ids)."""
    g = e["grades"]
    return {
        "user_id": e["user_id"],
        "course_id": e["course_id"],
        "workflow_state": "active",
        "created_at": e["created_at"],
        "updated_at": e["updated_at"],
        "current_score": g["current_score"],
        "old_current_score": old.get("current_score"),
        "final_score": g["final_score"],
        "old_final_score": old.get("final_score"),
        "unposted_current_score": g["unposted_current_score"],
        "old_unposted_current_score": old.get("unposted_current_score"),
        "unposted_final_score": g["unposted_final_score"],
        "old_unposted_final_score": old.get("unposted_final_score"),
    }


def grade_override_body(d: SandboxData, e: Record, old_override: float | None) -> Event:
    """`grade_override`: the course score's override (relative ids; the sandbox has no grading periods)."""
    return {
        "score_id": e["id"],
        "enrollment_id": e["id"],
        "user_id": e["user_id"],
        "course_id": e["course_id"],
        "grading_period_id": None,
        "override_score": e["grades"].get("override_score"),
        "old_override_score": old_override,
        "updated_at": e["updated_at"],
    }


def enrollment_body(d: SandboxData, shard: int, e: Record) -> Event:
    """`get_enrollment_data` (observers also carry `associated_user_id`)."""
    c = d.courses.get(e["course_id"], {})
    body: Event = {
        "enrollment_id": global_id(e["id"], shard),
        "course_id": global_id(e["course_id"], shard),
        "course_uuid": c.get("uuid"),
        "user_id": global_id(e["user_id"], shard),
        "user_uuid": _lti_id("user", e["user_id"]),
        "user_name": e["user"]["name"],
        "type": e["type"],
        "created_at": e["created_at"],
        "updated_at": e["updated_at"],
        "limit_privileges_to_course_section": e["limit_privileges_to_course_section"],
        "course_section_id": global_id(e["course_section_id"], shard),
        "workflow_state": e["enrollment_state"],
    }
    if e["type"] == "ObserverEnrollment":
        body["associated_user_id"] = global_id(e.get("associated_user_id"), shard)
    return body


def assignment_body(d: SandboxData, shard: int, a: Record) -> Event:
    """`get_assignment_data` (the fields the sandbox has; LTI and blueprint fields are null/false)."""
    c = d.courses.get(a["course_id"], {})
    return {
        "anonymous_grading": a["anonymous_grading"],
        "assignment_group_id": global_id(a["assignment_group_id"], shard),
        "assignment_id": global_id(a["id"], shard),
        "assignment_id_duplicated_from": None,
        "context_id": global_id(a["course_id"], shard),
        "context_type": "Course",
        "context_uuid": c.get("uuid"),
        "created_on_blueprint_sync": False,
        "description": a["description"],
        "due_at": a["due_at"],
        "lti_assignment_description": a["description"],
        "lti_assignment_id": _lti_id("assignment", a["id"]),
        "lti_resource_link_id": None,
        "lti_resource_link_id_duplicated_from": None,
        "lock_at": a["lock_at"],
        "points_possible": a["points_possible"],
        "resource_map": None,
        "submission_types": ",".join(a["submission_types"]),
        "title": a["name"],
        "unlock_at": a["unlock_at"],
        "updated_at": a["updated_at"],
        "workflow_state": a["workflow_state"],
    }


def course_body(d: SandboxData, shard: int, c: Record) -> Event:
    """`get_course_data`."""
    return {
        "course_id": global_id(c["id"], shard),
        "uuid": c["uuid"],
        "account_id": global_id(c["account_id"], shard),
        "account_uuid": _lti_id("account", c["account_id"]),
        "name": c["name"],
        "created_at": c["created_at"],
        "updated_at": c.get("updated_at") or d.now(),
        "workflow_state": c["workflow_state"],
    }


def _lti_id(kind: str, rest: int) -> str:
    """A stable opaque id (Canvas's lti_context_id / uuid columns are random at creation)."""
    return hashlib.sha1(f"{kind}:{rest}".encode()).hexdigest()


# ---------------------------------------------------------------------- the emitter
class Delivery(Protocol):
    """Where stamped events go (`live_delivery.Pipeline`); `submit` must not block on the network."""

    def submit(self, event: Event, entry: LedgerEntry) -> None: ...


@dataclass
class LedgerEntry:
    """One event as the sandbox produced it, with the mutation's clocks (the benchmark's lag starts
    here) and what delivery did with it: `copies` sent (0 when dropped, 2 when duplicated)."""

    seq: int
    event: Event
    mutation_monotonic: float
    mutation_wall: float  # also the event_time, to the millisecond
    course_id: int | None
    dropped: bool = False
    copies: int = 0
    sent_monotonic: list[float] = field(default_factory=list)


class LiveEmitter:
    """Builds the events of one sandbox dataset's mutations and hands them to a delivery.

    `subscribed`: the event names delivered (a Data Services subscription picks its event types; None:
    every one in EVENT_NAMES). `compact_fraction`: the share of events whose nil fields are dropped.
    `shard`: the shard the sandbox plays (global id prefix). `keep_ledger`: keep every entry (tests and
    benchmarks read `ledger`); otherwise only counts are kept.
    """

    def __init__(
        self, d: SandboxData, delivery: Delivery | None = None, *, subscribed: Iterable[str] | None = None,
        compact_fraction: float = 0.3, shard: int = DEFAULT_SHARD, seed: int = 23,
        hostname: str = "sandbox.instructure.test", keep_ledger: bool = True,
    ) -> None:  # fmt: skip
        wanted = set(EVENT_NAMES if subscribed is None else subscribed)
        unknown = wanted - set(EVENT_NAMES)
        if unknown:
            raise ValueError(f"unknown live event names {sorted(unknown)}; expected some of {EVENT_NAMES}")
        if not 0.0 <= compact_fraction <= 1.0:
            raise ValueError("compact_fraction must be between 0 and 1")
        if shard < 1:
            raise ValueError("shard must be >= 1 (Canvas numbers shards from 1)")
        self.d = d
        self.delivery = delivery
        self.subscribed = frozenset(wanted)
        self.compact_fraction = compact_fraction
        self.shard = shard
        self.hostname = hostname
        self.keep_ledger = keep_ledger
        self.ledger: list[LedgerEntry] = []
        self.counts: dict[str, int] = {}
        self._rng = random.Random(seed)
        self._seq = itertools.count(1)
        self._last_ms = 0
        self._lock = threading.Lock()

    # ---------------------------------------------------------------- stamping
    def _event_wall(self) -> float:
        """Wall time of the event, in whole milliseconds, strictly later than the previous event's: two
        mutations in one millisecond still have an order to compare by (`event_time` is all Canvas gives)."""
        ms = max(int(time.time() * 1000), self._last_ms + 1)
        self._last_ms = ms
        return ms / 1000

    def metadata(self, name: str, wall: float, course_id: int | None, actor: int | None) -> Event:
        """The request context LiveEvents.set_context records plus `amended_context(course)`."""
        d = self.d
        meta: Event = {
            "root_account_id": global_id(d.account_id, self.shard),
            "root_account_uuid": _lti_id("account", d.account_id),
            "user_id": global_id(actor, self.shard),
            "user_login": d.users.get(actor, {}).get("login_id") if actor is not None else None,
            "request_id": str(uuid.UUID(int=self._rng.getrandbits(128), version=4)),
            "hostname": self.hostname,
            "producer": "canvas",
            "event_name": name,
            "event_time": event_time_text(wall),
        }
        if course_id is not None:
            c = d.courses.get(course_id, {})
            meta.update(
                context_type="Course",
                context_id=global_id(course_id, self.shard),
                context_account_id=global_id(c.get("account_id"), self.shard),
                context_sis_source_id=c.get("sis_course_id"),
            )
        return meta

    def emit(self, name: str, body: Event, course_id: int | None, actor: int | None) -> LedgerEntry | None:
        """Stamp one event (metadata, stringified ids, maybe compacted) and hand it to the delivery."""
        if name not in self.subscribed:
            return None
        with self._lock:
            mono, wall = time.monotonic(), self._event_wall()
            seq = next(self._seq)
            compact = self._rng.random() < self.compact_fraction
            meta = self.metadata(name, wall, course_id, actor)
        if compact:
            body = {k: v for k, v in body.items() if v is not None}
        event = {"metadata": stringify_ids(meta), "body": stringify_ids(body)}
        entry = LedgerEntry(seq, event, mono, wall, course_id)
        with self._lock:
            self.counts[name] = self.counts.get(name, 0) + 1
            if self.keep_ledger:
                self.ledger.append(entry)
        if self.delivery is not None:
            self.delivery.submit(event, entry)
        return entry

    def flush(self, timeout_s: float = 60.0) -> bool:
        """Wait (bounded) until the delivery has sent, lost or dropped every event so far."""
        flush = getattr(self.delivery, "flush", None)
        return True if flush is None else bool(flush(timeout_s))

    def close(self, timeout_s: float = 30.0) -> None:
        """Stop emitting for the dataset and stop the delivery (after sending what is due in `timeout_s`)."""
        if _EMITTERS.get(self.d) is self:
            detach(self.d)
        close = getattr(self.delivery, "close", None)
        if close is not None:
            close(timeout_s)

    def delivery_stats(self) -> dict[str, int]:
        stats = getattr(self.delivery, "stats", None)
        return {} if stats is None else dict(stats())


_EMITTERS: weakref.WeakKeyDictionary[Any, LiveEmitter] = weakref.WeakKeyDictionary()


def attach(d: SandboxData, emitter: LiveEmitter) -> LiveEmitter:
    """Make `d`'s mutations emit through `emitter` (one emitter per dataset; a second replaces the first)."""
    _EMITTERS[d] = emitter
    return emitter


def detach(d: SandboxData) -> None:
    _EMITTERS.pop(d, None)


def emitter_of(d: SandboxData) -> LiveEmitter | None:
    return _EMITTERS.get(d)


# ---------------------------------------------------------------------- hooks the mutations call
def _teacher(em: LiveEmitter, course_id: int) -> int:
    """Who acts when a grade changes: the course's first active teacher, else the admin."""
    d = em.d
    for e in d.enrollments_of(course_id, ("active",), ["TeacherEnrollment"]):
        return int(e["user_id"])
    return int(d.admin_user_id)


def on_graded(
    d: SandboxData, course_id: int, a: Record, rec: Record, old: tuple[float | None, str | None]
) -> None:
    """A teacher graded or excused: Submission's grade_change audit and the observer's submission_updated."""
    em = _EMITTERS.get(d)
    if em is None:
        return
    teacher = _teacher(em, course_id)
    if "grade_change" in em.subscribed:
        em.emit("grade_change", grade_change_body(d, em.shard, rec, a, old, teacher), course_id, teacher)
    if "submission_updated" in em.subscribed:
        em.emit("submission_updated", submission_body(d, em.shard, rec, a), course_id, teacher)


def on_submitted(d: SandboxData, course_id: int, a: Record, rec: Record) -> None:
    """A student handed in: `just_submitted?`, so the observer emits submission_created."""
    em = _EMITTERS.get(d)
    if em is not None and "submission_created" in em.subscribed:
        em.emit("submission_created", submission_body(d, em.shard, rec, a), course_id, rec["user_id"])


def on_course_score(d: SandboxData, e: Record, old_grades: Record) -> None:
    """The enrollment's course scores changed (Score's after-save emits course_grade_change)."""
    em = _EMITTERS.get(d)
    if em is not None and "course_grade_change" in em.subscribed:
        cid = e["course_id"]
        em.emit("course_grade_change", course_grade_change_body(d, e, old_grades), cid, _teacher(em, cid))


def on_override(d: SandboxData, e: Record, old_override: float | None) -> None:
    em = _EMITTERS.get(d)
    if em is not None and "grade_override" in em.subscribed:
        cid = e["course_id"]
        em.emit("grade_override", grade_override_body(d, e, old_override), cid, _teacher(em, cid))


def on_enrollment(d: SandboxData, e: Record, *, created: bool) -> None:
    em = _EMITTERS.get(d)
    name = "enrollment_created" if created else "enrollment_updated"
    if em is not None and name in em.subscribed:
        em.emit(name, enrollment_body(d, em.shard, e), e["course_id"], d.admin_user_id)


def on_assignment(d: SandboxData, a: Record, *, created: bool) -> None:
    em = _EMITTERS.get(d)
    name = "assignment_created" if created else "assignment_updated"
    if em is not None and name in em.subscribed:
        cid = a["course_id"]
        em.emit(name, assignment_body(d, em.shard, a), cid, _teacher(em, cid))


def on_course(d: SandboxData, c: Record) -> None:
    em = _EMITTERS.get(d)
    if em is not None and "course_updated" in em.subscribed:
        em.emit("course_updated", course_body(d, em.shard, c), c["id"], d.admin_user_id)
