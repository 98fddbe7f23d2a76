"""The sandbox's enrollment terms and grade change audit log, served with Canvas's semantics.

Terms (TermsApiController#index): `/accounts/:id/terms` (or `/accounts/self/terms`, the root account) for a
root account only (`400 {"message": "Terms only belong to root_accounts."}` otherwise), for a caller who may
read the account's terms (the limited teacher's token gets 401 unauthorized); `workflow_state[]` keeps the
values among active / deleted / all, none of them means `active`, `all` every state; ordered
`start_at DESC, end_at DESC, id ASC` (PostgreSQL's DESC puts NULLs first); numbered pages with a `last`
link, each page an object `{"enrollment_terms": [...]}`.

Grade change log (GradeChangeAuditApiController#for_course): `/audit/grade_change/courses/:id`. A course
that does not exist is 404; a caller without `manage_grades` or `view_all_grades` in the course gets
`401 unauthorized` (render_unauthorized_action): the sandbox's `grade_audit=False` makes its tokens lack
them, and the limited teacher has them in the courses it teaches only. `start_time` / `end_time` are read
leniently (CanvasTime.try_parse: an unreadable value is ignored) and bound the window inclusively
(`created_at >= start_time`, `<= end_time`); events come newest first, bookmarked (no `last` link), each
page a compound document `{"events": [...], "links": {...}, "linked": {...}}`.

Every grade change the sandbox makes is an event: the generated history (one event per submission that
was graded or excused when the data was generated, at its graded_at) and each grading mutation
(`grade_submission`, `excuse_submission`: grade and excused before and after). The generated history of a
course is derived once, on first use, from its generated submissions; mutations append to it.
"""

from __future__ import annotations

import bisect
import uuid
from collections.abc import Iterable, Iterator
from datetime import datetime
from typing import TYPE_CHECKING, Any

from canvas_assets.sandbox.protocol import NOT_FOUND, UNAUTHORIZED, ApiError, Request, Response
from canvas_assets.sandbox.submissions import epoch_of, fmt, generate, grade_of

if TYPE_CHECKING:
    from canvas_assets.sandbox.data import SandboxData
    from canvas_assets.sandbox.pagination import Pages

Record = dict[str, Any]
NOT_ROOT = {"message": "Terms only belong to root_accounts."}
TERM_STATES = ("active", "deleted", "all")
_NAMESPACE = uuid.UUID("6f1c1a3e-6b3f-4a52-9a55-0c0a2b1d7e11")


# --- terms ------------------------------------------------------------------------------------------------
def _desc_nulls_first(value: str | None) -> tuple[int, float]:
    """A sort key giving PostgreSQL's `DESC` order (NULLs first, then latest first) under an ascending sort."""
    at = epoch_of(value)
    return (0, 0.0) if at is None else (1, -at)


def term_json(t: Record) -> Record:
    keys = ("id", "name", "start_at", "end_at", "created_at", "workflow_state", "grading_period_group_id")
    return {**{k: t.get(k) for k in keys}, "sis_term_id": t.get("sis_term_id")}


def listed_terms(d: SandboxData, states: Iterable[str]) -> list[Record]:
    """The root account's terms as the index lists them for `workflow_state[]` = `states` (ground truth)."""
    wanted = [s for s in states if s in TERM_STATES] or ["active"]
    rows = [t for t in d.terms.values() if "all" in wanted or t["workflow_state"] in wanted]
    rows.sort(key=lambda t: t["id"] if isinstance(t["id"], int) else -1)
    rows.sort(key=lambda t: _desc_nulls_first(t.get("end_at")))
    rows.sort(key=lambda t: _desc_nulls_first(t.get("start_at")))
    return rows


def serve_terms(d: SandboxData, pages: Pages, req: Request, account_id: int | None) -> Response:
    account = d.accounts.get(d.account_id if account_id is None else account_id)
    if account is None:
        raise ApiError(404, NOT_FOUND)
    if account["parent_account_id"] is not None:
        raise ApiError(400, NOT_ROOT)
    if req.principal.limited:  # :read_terms on the account: a teacher's token has not
        raise ApiError(401, UNAUTHORIZED)
    rows = listed_terms(d, req.values("workflow_state"))
    return pages.numbered(req, rows, term_json, wrap=lambda chunk: {"enrollment_terms": chunk})


# --- the grade change log ---------------------------------------------------------------------------------
def _event_id(*parts: object) -> str:
    return str(uuid.uuid5(_NAMESPACE, "/".join(str(p) for p in parts)))


def _teacher_of(d: SandboxData, course_id: int) -> int | None:
    teachers = d.enrollments_of(course_id, ("active", "completed"), ["TeacherEnrollment"])
    return min((e["user_id"] for e in teachers), default=None)


def _event(
    d: SandboxData, a: Record, uid: int, at: int, *, before: Record | None, after: Record, grader: int | None,
    event_id: str, version: int, request_id: str | None,
) -> Record:  # fmt: skip
    """One stored event; `before` / `after` are the submission as served before and after the change."""
    return {
        "_ts": at,
        "id": event_id,
        "created_at": fmt(at),
        "event_type": "grade_change",
        "grade_before": before["grade"] if before else None,
        "grade_after": after["grade"],
        "excused_before": bool(before["excused"]) if before else False,
        "excused_after": bool(after["excused"]),
        "graded_anonymously": False,
        "points_possible_before": a["points_possible"],
        "points_possible_after": a["points_possible"],
        "version_number": str(version),
        "links": {
            "course": a["course_id"],
            "student": str(uid),
            "grader": None if grader is None else str(grader),
            "page_view": request_id,
            "assignment": a["id"],
        },
    }


def _generated_history(d: SandboxData, course_id: int) -> list[Record]:
    """One event per submission graded (or excused) in the generated data, at its graded_at."""
    store = d._submissions
    students, _ = store._listed_students(course_id)
    grader = _teacher_of(d, course_id)
    out = []
    for a in store.assignments(course_id):
        params = store.params[a["id"]]
        for uid in students:
            rec = generate(d.config.seed, a, params, uid)
            if rec["_grd"] is None or (rec["score"] is None and not rec["excused"]):
                continue
            served = {"grade": grade_of(rec["score"], a), "excused": rec["excused"]}
            out.append(
                _event(
                    d,
                    a,
                    uid,
                    int(rec["_grd"]),
                    before=None,
                    after=served,
                    grader=grader,
                    event_id=_event_id("generated", rec["id"]),
                    version=1,
                    request_id=None,
                )
            )
    return out


def events_of(d: SandboxData, course_id: int) -> list[Record]:
    """Every event of the course, oldest first (ground truth); derived on first use, then appended to."""
    with d.lock:
        log = d.grade_change_log
        if course_id not in log:
            log[course_id] = _generated_history(d, course_id)
        return log[course_id]


def derive_logs(d: SandboxData, course_ids: Iterable[int]) -> int:
    """Derive the courses' grade change logs and their newest-first indexes now instead of on first use;
    returns how many events they hold. A real Canvas has its audit log stored: deriving the large sandbox's
    708k events took 21.7 s of the sandbox's one core, under its data lock (2.2 s for the biggest course,
    while every other request waited), so the benchmarks do it before their clocks start."""
    return sum(len(_newest_first(d, course_id)[0]) for course_id in course_ids)


def record_grade_change(d: SandboxData, a: Record, uid: int, before: Record, after: Record, at: int) -> None:
    """A grading mutation's event: the submission as served before and after, graded by the course's teacher
    now, through a request whose page view Canvas keeps."""
    events = events_of(d, a["course_id"])
    n = len(events)
    version = 1 + sum(
        1 for e in events if e["links"]["assignment"] == a["id"] and e["links"]["student"] == str(uid)
    )
    events.append(
        _event(
            d,
            a,
            uid,
            at,
            before=before,
            after=after,
            grader=_teacher_of(d, a["course_id"]),
            event_id=_event_id("mutation", a["course_id"], n),
            version=version,
            request_id=_event_id("request", a["course_id"], n),
        )
    )


def served_event(e: Record) -> Record:
    return {k: v for k, v in e.items() if not k.startswith("_")}


def _instant(raw: str | None) -> float | None:
    """CanvasTime.try_parse: a readable instant, else None (the bound is then ignored, not refused)."""
    if not raw:
        return None
    try:
        at = datetime.fromisoformat(raw.replace("Z", "+00:00"))
    except ValueError:
        return None
    return at.timestamp() if at.tzinfo is not None else None


def _key(e: Record) -> tuple[float, str]:
    return (-e["_ts"], e["id"])


def _newest_first(d: SandboxData, course_id: int) -> tuple[list[Record], list[tuple[float, str]]]:
    """The course's events newest first and their keys, sorted once per change of the log (it only grows):
    a page is then found by bisection, not by filtering and sorting the whole log for each page."""
    events = events_of(d, course_id)
    with d.lock:
        cached = d.grade_change_index.get(course_id)
        if cached is None or cached[0] != len(events):
            rows = sorted(events, key=_key)
            cached = (len(events), rows, [_key(e) for e in rows])
            d.grade_change_index[course_id] = cached
        return cached[1], cached[2]


def _window(keys: list[tuple[float, str]], start: float | None, end: float | None) -> tuple[int, int]:
    """The positions [lo, hi) of the events with start <= time <= end in the newest-first keys."""
    lo = 0 if end is None else bisect.bisect_left(keys, (-end,))
    hi = len(keys) if start is None else bisect.bisect_left(keys, (-start, "\U0010ffff"))
    return lo, max(lo, hi)


def events_in_window(d: SandboxData, course_id: int, start: float | None, end: float | None) -> list[Record]:
    """The course's events in [start, end], newest first (ground truth of one query)."""
    rows, keys = _newest_first(d, course_id)
    lo, hi = _window(keys, start, end)
    return rows[lo:hi]


def _linked(d: SandboxData, chunk: list[Record]) -> Record:
    """The compound document's `linked` collections, reduced to ids and names."""
    courses = sorted({e["links"]["course"] for e in chunk})
    assignments = sorted({e["links"]["assignment"] for e in chunk if e["links"]["assignment"] is not None})
    users = sorted({int(u) for e in chunk for u in (e["links"]["student"], e["links"]["grader"]) if u})
    return {
        "page_views": [],
        "assignments": [
            {"id": i, "name": d.assignments[i]["name"]} for i in assignments if i in d.assignments
        ],
        "courses": [{"id": i, "name": d.courses[i]["name"]} for i in courses if i in d.courses],
        "users": [{"id": i, "name": d.users[i]["name"]} for i in users if i in d.users],
    }


LINKS = {
    "events.assignment": "/api/v1/courses/{events.course}/assignments/{events.assignment}",
    "events.course": "/api/v1/courses/{events.course}",
    "events.student": {"href": None, "type": "user"},
    "events.grader": {"href": None, "type": "user"},
    "events.page_view": None,
}


def serve_grade_changes(d: SandboxData, pages: Pages, req: Request, course_id: int | None) -> Response:
    course = d.courses.get(course_id) if course_id is not None else None
    if course is None:
        raise ApiError(404, NOT_FOUND)
    permitted = d.config.grade_audit and course_id not in d.forbidden_courses
    if req.principal.limited:
        permitted = permitted and course_id in d.limited_course_ids
    if not permitted:
        raise ApiError(401, UNAUTHORIZED)
    assert course_id is not None
    rows, keys = _newest_first(d, course_id)
    lo, hi = _window(keys, _instant(req.one("start_time")), _instant(req.one("end_time")))

    def seek(mark: tuple[Any, ...] | None) -> Iterator[Record]:
        """The window's events after the bookmark `mark`; all of them for no mark or an unusable one."""
        at = lo
        if mark is not None:
            try:
                at = max(lo, bisect.bisect_right(keys, tuple(mark), lo, hi))
            except TypeError:  # a bookmark of another list's shape: the first page
                at = lo
        return (rows[i] for i in range(at, hi))

    def compound(chunk: list[Record]) -> Record:
        return {"links": LINKS, "events": chunk, "linked": _linked(d, chunk)}

    return pages.keyset(req, seek, _key, served_event, wrap=compound)
