"""What each Live Event says about the Layer-1 tables: one `RowChange` per row it touches.

The field names are Canvas's own (lib/canvas/live_events.rb: `grade_changed`, `get_submission_data`,
`course_grade_change`, `grade_override`, `get_enrollment_data`, `get_assignment_data`, `get_course_data`;
docs/canvas-api.md §7). Every field read here is one Canvas always puts in the payload, so a field that is
absent was dropped by `compact!` because it was nil: absent and null both mean NULL.

Deleted objects: the REST sync never lists deleted enrollments, assignments or courses, it soft-deletes
their rows (`deleted_at`). An event saying `workflow_state: deleted` therefore sets `deleted_at` to the
event time and leaves the state column as the REST sync last saw it; any other state clears `deleted_at`.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from canvas_assets.live.events import LiveEvent, parse_time

SUBMISSIONS = "canvas_submissions"
ENROLLMENTS = "canvas_enrollments"
ASSIGNMENTS = "canvas_assignments"
COURSES = "canvas_courses"

# The REST entity whose sync confirms each table (`canvas_course_sync.entity`).
ENTITY_OF_TABLE = {
    SUBMISSIONS: "submissions",
    ENROLLMENTS: "enrollments",
    ASSIGNMENTS: "assignments",
    COURSES: "courses",
}
# Columns a row must have before the live path may create it (the REST sync fills in the rest later).
CREATE_REQUIRES = {
    SUBMISSIONS: ("course_id", "assignment_id", "user_id"),
    ENROLLMENTS: ("course_id", "user_id", "type"),
    ASSIGNMENTS: ("course_id",),
}


@dataclass
class RowChange:
    """Values one event gives one Layer-1 row. `row_id` names the row; for `course_grade_change` (which
    names the course and user, not the enrollment) `student_of` = (course_id, user_id) names every student
    enrollment of that user in that course instead."""

    table: str
    row_id: int | None
    course_id: int | None
    values: dict[str, Any]
    create: dict[str, Any] = field(default_factory=dict)
    student_of: tuple[int, int] | None = None


def _score(value: Any) -> float | None:
    if value is None or isinstance(value, bool):
        return None
    try:
        number = float(value)
    except (TypeError, ValueError):
        return None
    return number if math.isfinite(number) else None


def _text(value: Any) -> str | None:
    return None if value is None else str(value)


def _int(value: Any) -> int | None:
    if isinstance(value, bool) or value is None:
        return None
    try:
        return int(value)
    except (TypeError, ValueError):
        return None


def _flag(value: Any) -> bool | None:
    if isinstance(value, bool):
        return value
    if isinstance(value, str) and value in ("true", "false"):
        return value == "true"
    return None


def _state(event: LiveEvent, state: Any, **columns: Any) -> dict[str, Any]:
    """`deleted_at` as the `workflow_state` says (see the module docstring) and, unless deleted, `columns`."""
    return {"deleted_at": event.event_time} if state == "deleted" else {"deleted_at": None, **columns}


def _submission_change(event: LiveEvent, values: dict[str, Any], user: int | None) -> list[RowChange]:
    b = event.body
    sid = event.rest_id(b.get("submission_id"))
    if sid is None:
        return []
    create = {
        "course_id": event.course_id,
        "assignment_id": event.rest_id(b.get("assignment_id")),
        "user_id": user,
    }
    return [RowChange(SUBMISSIONS, sid, event.course_id, values, create)]


def _grade_change(event: LiveEvent) -> list[RowChange]:
    b = event.body
    user = event.rest_id(b.get("student_id")) or event.rest_id(b.get("user_id"))
    return _submission_change(event, {"score": _score(b.get("score")), "grade": _text(b.get("grade"))}, user)


def _submission(event: LiveEvent) -> list[RowChange]:
    b = event.body
    values: dict[str, Any] = {
        "submitted_at": parse_time(b.get("submitted_at")),
        "graded_at": parse_time(b.get("graded_at")),
        "posted_at": parse_time(b.get("posted_at")),
        "score": _score(b.get("score")),
        "grade": _text(b.get("grade")),
        "submission_type": _text(b.get("submission_type")),
        "attempt": _int(b.get("attempt")),
        "late": _flag(b.get("late")),
        "missing": _flag(b.get("missing")),
        "workflow_state": _text(b.get("workflow_state")),
    }
    return _submission_change(event, values, event.rest_id(b.get("user_id")))


def _course_grade_change(event: LiveEvent) -> list[RowChange]:
    b = event.body
    course, user = event.rest_id(b.get("course_id")) or event.course_id, event.rest_id(b.get("user_id"))
    if course is None or user is None:
        return []
    columns = ("current_score", "final_score", "unposted_current_score", "unposted_final_score")
    values = {c: _score(b.get(c)) for c in columns}
    return [RowChange(ENROLLMENTS, None, course, values, student_of=(course, user))]


def _grade_override(event: LiveEvent) -> list[RowChange]:
    b = event.body
    enrollment = event.rest_id(b.get("enrollment_id"))
    if enrollment is None or b.get("grading_period_id") is not None:
        return []  # a grading period's override is not the course override the column holds
    course = event.rest_id(b.get("course_id")) or event.course_id
    return [RowChange(ENROLLMENTS, enrollment, course, {"override_score": _score(b.get("override_score"))})]


def _enrollment(event: LiveEvent) -> list[RowChange]:
    b = event.body
    enrollment = event.rest_id(b.get("enrollment_id"))
    if enrollment is None:
        return []
    state = b.get("workflow_state")
    values: dict[str, Any] = {
        "type": _text(b.get("type")),
        "course_section_id": event.rest_id(b.get("course_section_id")),
        "created_at": parse_time(b.get("created_at")),
        "updated_at": parse_time(b.get("updated_at")),
        **_state(event, state, enrollment_state=_text(state)),
    }
    course = event.rest_id(b.get("course_id")) or event.course_id
    create = {"course_id": course, "user_id": event.rest_id(b.get("user_id")), "type": values["type"]}
    return [RowChange(ENROLLMENTS, enrollment, course, values, create)]


def _submission_types(value: Any) -> str | None:
    """Canvas keeps submission types as one comma-separated string; the REST API (and the warehouse's
    JSON text column) has a list."""
    if value is None:
        return None
    items = value if isinstance(value, list) else [s for s in str(value).split(",") if s]
    return json.dumps(items, separators=(",", ":"), ensure_ascii=False)


def _assignment(event: LiveEvent) -> list[RowChange]:
    b = event.body
    assignment = event.rest_id(b.get("assignment_id"))
    if assignment is None:
        return []
    state = b.get("workflow_state")
    values: dict[str, Any] = {
        "name": _text(b.get("title")),
        "due_at": parse_time(b.get("due_at")),
        "unlock_at": parse_time(b.get("unlock_at")),
        "lock_at": parse_time(b.get("lock_at")),
        "points_possible": _score(b.get("points_possible")),
        "assignment_group_id": event.rest_id(b.get("assignment_group_id")),
        "submission_types": _submission_types(b.get("submission_types")),
        "updated_at": parse_time(b.get("updated_at")),
        **_state(event, state, workflow_state=_text(state), published=state == "published"),
    }
    course = event.course_id
    return [RowChange(ASSIGNMENTS, assignment, course, values, {"course_id": course})]


# Canvas's stored course states and what the REST API shows for them (Api::V1::Course: claimed and
# created courses are `unpublished`).
_COURSE_STATE = {"claimed": "unpublished", "created": "unpublished"}


def _course(event: LiveEvent) -> list[RowChange]:
    b = event.body
    course = event.rest_id(b.get("course_id"))
    if course is None:
        return []
    state = b.get("workflow_state")
    values: dict[str, Any] = {
        "name": _text(b.get("name")),
        "uuid": _text(b.get("uuid")),
        "account_id": event.rest_id(b.get("account_id")),
        **_state(event, state, workflow_state=_COURSE_STATE.get(str(state), _text(state))),
    }
    return [RowChange(COURSES, course, course, values)]


MAPPERS: dict[str, Callable[[LiveEvent], list[RowChange]]] = {
    "grade_change": _grade_change,
    "submission_created": _submission,
    "submission_updated": _submission,
    "course_grade_change": _course_grade_change,
    "grade_override": _grade_override,
    "enrollment_created": _enrollment,
    "enrollment_updated": _enrollment,
    "assignment_created": _assignment,
    "assignment_updated": _assignment,
    "course_updated": _course,
}


def changes_of(event: LiveEvent) -> list[RowChange] | None:
    """The rows an event changes; None for an event the warehouse does not use."""
    mapper = MAPPERS.get(event.name)
    return None if mapper is None else mapper(event)


def same_value(a: Any, b: Any) -> bool:
    """Equality as the warehouse stores values: floats within rounding, timestamps as instants."""
    if a is None or b is None:
        return a is None and b is None
    if isinstance(a, float) or isinstance(b, float):
        try:
            return math.isclose(float(a), float(b), rel_tol=1e-9, abs_tol=1e-9)
        except (TypeError, ValueError):
            return False
    return bool(a == b)  # datetimes: equal when the same instant
