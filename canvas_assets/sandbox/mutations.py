"""Mutations tests apply to the sandbox's dataset between syncs (reached as `SandboxData` methods).

Each takes the dataset's lock, changes the ground truth the way Canvas would show the change, and
returns the id of what changed.
"""

from __future__ import annotations

from datetime import datetime, timezone
from typing import TYPE_CHECKING, Any

from canvas_assets.sandbox.generate import make_course
from canvas_assets.sandbox.vocab import NOW_TS, Record, letter

if TYPE_CHECKING:
    from canvas_assets.sandbox.data import SandboxData


def _now(d: SandboxData) -> str:
    d._mutations += 1
    return datetime.fromtimestamp(NOW_TS + 3600 + d._mutations, timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def _pick_student(
    d: SandboxData, course_id: int, enrollment_id: int | None, need_score: bool = False
) -> Record:
    _require_course(d, course_id)
    if enrollment_id is not None:
        e = d.enrollments.get(enrollment_id)
        if e is None or e["course_id"] != course_id:
            raise KeyError(f"enrollment {enrollment_id} is not in course {course_id}")
        return e
    for e in d.enrollments_of(course_id, ("active",), ["StudentEnrollment"]):
        if not need_score or e["grades"]["current_score"] is not None:
            return e
    raise KeyError(f"course {course_id} has no suitable active student enrollment")


def _require_course(d: SandboxData, course_id: int) -> Record:
    c = d.courses.get(course_id)
    if c is None:
        raise KeyError(f"no course {course_id}")
    return c


def drop_enrollment(d: SandboxData, course_id: int, enrollment_id: int | None = None) -> int:
    """Delete a (by default the first active student) enrollment: workflow state `deleted`."""
    with d.lock:
        e = _pick_student(d, course_id, enrollment_id)
        e["enrollment_state"] = "deleted"
        e["updated_at"] = _now(d)
        return int(e["id"])


def change_score(
    d: SandboxData, course_id: int, enrollment_id: int | None = None, score: float | None = None
) -> int:
    """Change the current/final (posted and unposted) score of a student enrollment."""
    with d.lock:
        e = _pick_student(d, course_id, enrollment_id, need_score=enrollment_id is None)
        g = e["grades"]
        if score is None:
            old = g["current_score"] or 50.0
            score = round(old - 7.5 if old > 60 else old + 7.5, 2)
        for k in ("current", "final", "unposted_current", "unposted_final"):
            g[f"{k}_score"] = score
            g[f"{k}_grade"] = letter(score)
        e["updated_at"] = _now(d)
        return int(e["id"])


def delete_assignment(d: SandboxData, course_id: int, assignment_id: int | None = None) -> int:
    """Delete an assignment (by default the first one): it vanishes from the list."""
    with d.lock:
        _require_course(d, course_id)
        if assignment_id is None:
            rows = d.assignments_of(course_id)
            if not rows:
                raise KeyError(f"course {course_id} has no assignments")
            assignment_id = d._key_id(rows[0])
        a = d.assignments.get(assignment_id)
        if a is None or a["course_id"] != course_id:
            raise KeyError(f"assignment {assignment_id} is not in course {course_id}")
        a["workflow_state"] = "deleted"
        return assignment_id


def rename_user(d: SandboxData, user_id: int, name: str) -> int:
    with d.lock:
        u = d.users[user_id]
        first, _, last = name.rpartition(" ")
        u["name"] = name
        u["short_name"] = name
        u["sortable_name"] = f"{last}, {first}" if first else name
        for e in d.enrollments.values():
            if e["user_id"] == user_id:
                e["user"].update(name=u["name"], sortable_name=u["sortable_name"], short_name=u["short_name"])
        return user_id


def remove_course(d: SandboxData, course_id: int) -> int:
    """Delete a course: it 404s from then on and leaves the default course lists."""
    with d.lock:
        _require_course(d, course_id)["workflow_state"] = "deleted"
        return course_id


def forbid_course(d: SandboxData, course_id: int) -> int:
    """Every token gets the 401 'user not authorized' body on this course's endpoints."""
    with d.lock:
        _require_course(d, course_id)
        d.forbidden_courses.add(course_id)
        return course_id


def add_course(d: SandboxData, name: str | None = None, students: int = 5, state: str = "available") -> int:
    """Create a new course with `students` active students drawn from existing users."""
    with d.lock:
        idx = len(d.courses)
        cid = make_course(d, idx, state=state, n_students=students, name=name)
        return cid


CORRUPTIONS = {
    "courses": ("created_at", "not-a-date"),
    "students": ("created_at", "not-a-date"),
    "enrollments": ("created_at", "not-a-date"),
    "assignments": ("id", None),
    "modules": ("id", None),
    "student_summaries": ("id", None),
}


def corrupt_record(d: SandboxData, entity: str, course_id: int) -> dict[str, Any]:
    """Make one record of `entity` in `course_id` malformed in what the API serves.

    Returns {"entity", "course_id", "id" (the record's original id), "field", "value"}.
    courses/students/enrollments get `created_at: "not-a-date"` (a student is a user, so the
    corruption shows in every course of that user); assignments, modules (one with inlined
    items) and student_summaries get `id: null`.
    """
    entity = {"course": "courses", "student": "students", "enrollment": "enrollments"}.get(entity, entity)
    entity = {"assignment": "assignments", "module": "modules", "summaries": "student_summaries"}.get(
        entity, entity
    )
    if entity not in CORRUPTIONS:
        raise ValueError(f"unknown entity {entity!r}; expected one of {sorted(CORRUPTIONS)}")
    field, value = CORRUPTIONS[entity]
    with d.lock:
        rec: Record | None
        if entity == "courses":
            rec = _require_course(d, course_id)
        elif entity == "students":
            studs = d.students_of(course_id)
            rec = studs[0] if studs else None
        elif entity == "enrollments":
            rows = d.enrollments_of(course_id, types=["StudentEnrollment"])
            rec = rows[0] if rows else None
        elif entity == "assignments":
            rows = [a for a in d.assignments_of(course_id) if a["id"] is not None]
            rec = rows[0] if rows else None
        elif entity == "modules":
            rows = [m for m in d.modules_of(course_id) if m["id"] is not None and m["items_count"] <= 100]
            rec = rows[0] if rows else None
        else:
            rows = [s for s in d.summaries_of(course_id) or [] if s["id"] is not None]
            rec = rows[0] if rows else None
        if rec is None:
            raise KeyError(f"course {course_id} has no {entity} to corrupt")
        original_id = rec["id"]
        rec[field] = value
        return {
            "entity": entity,
            "course_id": course_id,
            "id": original_id,
            "field": field,
            "value": value,
        }
