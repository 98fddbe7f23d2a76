"""Mutations tests apply to the sandbox's dataset between syncs (reached as `SandboxData` methods).

Each takes the dataset's lock, changes the ground truth the way Canvas would show the change, and
returns the id of what changed. Each first advances the sandbox's clock (`SandboxData.now_ts`) by a
minute and stamps what it changes with the new now, so every mutation's timestamps are later than
every generated one and than every earlier mutation's. A mutation Canvas reports as a Live Event ends
with a `live.on_*` hook, which costs nothing unless an emitter is attached (`sandbox.live_events`).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from canvas_assets.sandbox import audit
from canvas_assets.sandbox import live_events as live
from canvas_assets.sandbox.generate import _enroll, _make_assignment, make_course
from canvas_assets.sandbox.structure import grading_periods_of, section_record
from canvas_assets.sandbox.submissions import digital_types, fmt, gradable, grade_of
from canvas_assets.sandbox.submissions import epoch_of as epoch
from canvas_assets.sandbox.vocab import ALL_BUT_DELETED, ENROLLMENT_STATES, Record, letter

if TYPE_CHECKING:
    from canvas_assets.sandbox.data import SandboxData


def _now(d: SandboxData) -> str:
    """Advance the sandbox's clock for one mutation; the new now, formatted."""
    return fmt(d._tick()) or ""


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
        live.on_enrollment(d, e, created=False)
        return int(e["id"])


def change_score(
    d: SandboxData, course_id: int, enrollment_id: int | None = None, score: float | None = None
) -> int:
    """Change the current/final (posted and unposted) score of a student enrollment."""
    with d.lock:
        e = _pick_student(d, course_id, enrollment_id, need_score=enrollment_id is None)
        g = e["grades"]
        before = dict(g)
        if score is None:
            old = g["current_score"] or 50.0
            score = round(old - 7.5 if old > 60 else old + 7.5, 2)
        for k in ("current", "final", "unposted_current", "unposted_final"):
            g[f"{k}_score"] = score
            g[f"{k}_grade"] = letter(score)
        e["updated_at"] = _now(d)
        live.on_course_score(d, e, before)
        return int(e["id"])


def override_grade(
    d: SandboxData, course_id: int, enrollment_id: int | None = None, score: float | None = None
) -> int:
    """A teacher overrides a student's final course grade (by default the first active student with a
    score): `override_score` / `override_grade` on the enrollment's grades, present only once set, as
    generated. Canvas emits `grade_override` only when the override changes. Returns the enrollment id."""
    with d.lock:
        e = _pick_student(d, course_id, enrollment_id, need_score=enrollment_id is None)
        g = e["grades"]
        old = g.get("override_score")
        if score is None:
            base = old if old is not None else g["current_score"] or 70.0
            score = round(base - 2.5 if base > 90 else base + 2.5, 1)
        g["override_score"], g["override_grade"] = score, letter(score)
        e["updated_at"] = _now(d)
        if score != old:
            live.on_override(d, e, old)
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
        a["updated_at"] = _now(d)
        live.on_assignment(d, a, created=False)
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
        c = _require_course(d, course_id)
        c["workflow_state"] = "deleted"
        live.on_course(d, c)
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


def enroll_student(d: SandboxData, course_id: int, user_id: int | None = None, state: str = "active") -> int:
    """A new student enrollment in `state` (default active; invited is a student who has not accepted
    yet), by default of the first user with none in the course. Unless the state is rejected, the
    student's submissions appear with it (Canvas creates them for every student not rejected or deleted):
    unsubmitted, or older work, none of it later than the last fetch, so no `submitted_since` filter shows
    them. Returns the enrollment id."""
    if state not in ENROLLMENT_STATES or state == "deleted":
        raise ValueError(f"enrollment state {state!r}: expected one of {', '.join(ALL_BUT_DELETED)}")
    with d.lock:
        _require_course(d, course_id)
        now = _now(d)
        enrolled = {e["user_id"] for e in d.enrollments_of(course_id, types=["StudentEnrollment"])}
        if user_id is None:
            user_id = next(u for u in sorted(d.users) if u not in enrolled and d.users[u].get("login_id"))
        elif user_id in enrolled:
            raise ValueError(f"user {user_id} already has a student enrollment in course {course_id}")
        eid = _enroll(d, course_id, user_id, "StudentEnrollment", state)
        d.enrollments[eid].update(created_at=now, updated_at=now)
        live.on_enrollment(d, d.enrollments[eid], created=True)
        return eid


def add_assignment(d: SandboxData, course_id: int, *, published: bool = True) -> int:
    """A new assignment, due in a week: once published, every listed student has an unsubmitted submission
    for it (no change time). Unpublished (a draft), Canvas serves none of its submissions on the course's
    submissions list and refuses its id in `assignment_ids[]`. Returns the assignment id."""
    with d.lock:
        _require_course(d, course_id)
        now = _now(d)
        position = 1 + max((a["position"] for a in d.assignments_of(course_id)), default=0)
        aid = _make_assignment(d, course_id, position)
        due = d.now_ts + 7 * 86400
        d.assignments[aid].update(
            created_at=now,
            updated_at=now,
            due_at=fmt(due),
            lock_at=None,
            unlock_at=None,
            published=published,
            workflow_state="published" if published else "unpublished",
            submission_types=["online_upload"],
        )
        groups = d.assignment_groups_of(course_id)  # Canvas puts it in the course's first group
        if groups:
            d.assignments[aid]["assignment_group_id"] = groups[0]["id"]
        d._submissions.register(aid, d.now_ts, due, fresh=True)
        live.on_assignment(d, d.assignments[aid], created=True)
        return aid


def publish_assignment(d: SandboxData, course_id: int, assignment_id: int | None = None) -> int:
    """Publish an unpublished assignment (by default the course's first by id): from now on its submissions
    are listed and its id is accepted in `assignment_ids[]`. Returns the assignment id."""
    with d.lock:
        _require_course(d, course_id)
        drafts = sorted(
            (a for a in d.assignments_of(course_id) if not a["published"] and isinstance(a["id"], int)),
            key=lambda a: a["id"],
        )
        if assignment_id is not None:
            drafts = [a for a in drafts if a["id"] == assignment_id]
        if not drafts:
            raise KeyError(f"course {course_id} has no unpublished assignment {assignment_id or ''}".rstrip())
        a = drafts[0]
        a.update(published=True, workflow_state="published", updated_at=_now(d))
        live.on_assignment(d, a, created=False)
        return int(a["id"])


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


# ---------------------------------------------------------------------- submissions
def _course_row(d: SandboxData, course_id: int, submission_id: int | None, want: Any) -> tuple[Record, int]:
    """(assignment, user id) of `submission_id`, or of the first submission `want(stored, a)` accepts."""
    _require_course(d, course_id)
    store = d._submissions
    if submission_id is not None:
        return store.locate(course_id, submission_id)
    for rec, a in store.rows(course_id):
        if want(rec, a):
            return a, rec["user_id"]
    raise KeyError(f"course {course_id} has no suitable submission")


def submit_work(
    d: SandboxData, course_id: int, assignment_id: int | None = None, user_id: int | None = None
) -> int:
    """A student hands in work now: an unsubmitted submission (by default the first, by id, of a
    digital assignment, not excused) is submitted, or a submitted one resubmitted (attempt + 1).

    submitted_at = now, late by the current due date, missing false (a teacher's late policy status
    is cleared); a graded submission goes back to `submitted` keeping its score. Returns its id.
    """
    with d.lock:
        store = d._submissions

        def fits(rec: Record, a: Record, unsubmitted: bool) -> bool:
            return (
                (assignment_id is None or a["id"] == assignment_id)
                and (user_id is None or rec["user_id"] == user_id)
                and bool(digital_types(a))
                and (rec["_sub"] is None) == unsubmitted
                and (not rec["excused"] or assignment_id is not None)
            )

        try:
            a, uid = _course_row(d, course_id, None, lambda r, a: fits(r, a, True))
        except KeyError:
            a, uid = _course_row(d, course_id, None, lambda r, a: fits(r, a, False))
        now = d._tick()
        rec = store.for_update(a, uid)
        rec["_sub"] = now
        rec["attempt"] = (rec["attempt"] or 0) + 1
        rec["submission_type"] = rec["submission_type"] or digital_types(a)[0]
        rec["late_policy_status"], rec["_late_override"] = None, None
        if rec["workflow_state"] == "graded" and rec["excused"]:
            pass  # excused stays excused (and graded)
        elif rec["workflow_state"] == "graded" or rec["score"] is not None:
            rec["workflow_state"], rec["grade_matches_current_submission"] = "submitted", False
        else:
            rec["workflow_state"] = "submitted"
        live.on_submitted(d, course_id, a, rec)
        return int(rec["id"])


def grade_submission(
    d: SandboxData, course_id: int, submission_id: int | None = None, score: float | None = None
) -> int:
    """A teacher grades (or regrades) a submission now; by default the first graded one gets a
    different score (or, when none is graded, the first submitted one is graded).

    `score` is the entered score; a late-policy deduction already on a still-late submission is kept
    (score = entered - points_deducted). graded_at = posted_at = now, workflow_state graded, excused
    false. Returns the submission id.
    """
    with d.lock:
        store = d._submissions

        def graded(rec: Record, a: Record) -> bool:
            return gradable(a) and rec["workflow_state"] == "graded" and rec["entered_score"] is not None

        def submitted(rec: Record, a: Record) -> bool:
            return gradable(a) and rec["workflow_state"] in ("submitted", "pending_review")

        try:
            a, uid = _course_row(d, course_id, submission_id, graded)
        except KeyError:
            if submission_id is not None:
                raise
            a, uid = _course_row(d, course_id, None, submitted)
        if not gradable(a):
            raise ValueError(f"assignment {a['id']} is not graded")
        pts = float(a["points_possible"])
        now = d._tick()
        rec = store.for_update(a, uid)
        before = (rec["score"], grade_of(rec["score"], a))
        old = rec["entered_score"]
        if score is None:
            if old is None:
                score = pts if a["grading_type"] == "pass_fail" else round(pts * 0.8, 2)
            elif a["grading_type"] == "pass_fail":
                score = 0.0 if old > 0 else pts
            else:
                score = round(old - 1 if old >= 1 else old + 1, 2)
        served = store.served(rec, a)
        deducted = rec["points_deducted"] if served["late"] else None
        final = round(max(0.0, score - (deducted or 0.0)), 2)
        rec.update(
            entered_score=score, score=final, points_deducted=deducted, excused=False,
            workflow_state="graded", grade_matches_current_submission=True, _grd=now, _post=now,
        )  # fmt: skip
        audit.record_grade_change(d, a, uid, served, store.served(rec, a), now)
        live.on_graded(d, course_id, a, rec, before)
        return int(rec["id"])


def excuse_submission(d: SandboxData, course_id: int, submission_id: int | None = None) -> int:
    """Excuse a submission now (by default the first missing one, else the first not excused):
    excused true, score/grade (entered too) null, workflow_state graded, graded_at = posted_at = now
    (Canvas treats excusing as grading). submitted_at is unchanged. Returns the submission id."""
    with d.lock:
        store = d._submissions
        try:
            a, uid = _course_row(
                d, course_id, submission_id, lambda r, a: not r["excused"] and store.served(r, a)["missing"]
            )
        except KeyError:
            if submission_id is not None:
                raise
            a, uid = _course_row(d, course_id, None, lambda r, a: not r["excused"])
        now = d._tick()
        rec = store.for_update(a, uid)
        served_before = store.served(rec, a)
        before = (rec["score"], grade_of(rec["score"], a))
        rec.update(
            excused=True, score=None, entered_score=None, points_deducted=None, late_policy_status=None,
            _late_override=None, workflow_state="graded", _grd=now, _post=now,
        )  # fmt: skip
        audit.record_grade_change(d, a, uid, served_before, store.served(rec, a), now)
        live.on_graded(d, course_id, a, rec, before)
        return int(rec["id"])


def pass_due_date(d: SandboxData, course_id: int, assignment_id: int | None = None) -> int:
    """An assignment's due date passes: due_at = just before now (updated_at = now).

    Only an assignment not yet due (due_at null or after now) qualifies, so no submission's `late`
    changes; by default the first (by id) published one with an unsubmitted submission that is not
    missing yet. Its unsubmitted, unexcused submissions turn `missing` while their submitted_at and
    graded_at stay as they were. Returns the assignment id.
    """
    with d.lock:
        _require_course(d, course_id)
        store = d._submissions
        now = d.now_ts
        rows = store.assignments(course_id, None if assignment_id is None else [assignment_id])

        def open_(a: Record) -> bool:
            due = a["due_at"]
            return due is None or (epoch(due) or 0) > now

        def flips(a: Record) -> bool:
            if not (open_(a) and digital_types(a)):
                return False
            return any(
                r["workflow_state"] == "unsubmitted" and not r["missing"] and not r["excused"]
                and r["late_policy_status"] is None
                for r in d.iter_submissions(course_id, assignment_ids=[a["id"]])
            )  # fmt: skip

        if assignment_id is not None:
            if not rows:
                raise KeyError(f"course {course_id} has no published assignment {assignment_id}")
            if not open_(rows[0]):
                raise ValueError(f"assignment {assignment_id} is already past due")
            a = rows[0]
        else:
            found = next((a for a in rows if flips(a)), None)
            if found is None:
                raise KeyError(f"course {course_id} has no assignment whose due date can pass")
            a = found
        stamp = d._tick()
        a["due_at"] = fmt(stamp - 1)
        a["updated_at"] = fmt(stamp)
        if a["lock_at"] is not None and (epoch(a["lock_at"]) or 0) < stamp:
            a["lock_at"] = None
        live.on_assignment(d, a, created=False)
        return int(a["id"])


def add_section(d: SandboxData, course_id: int, name: str | None = None, students: int = 2) -> int:
    """A new section of the course holding `students` of its active students (moved from their section)."""
    with d.lock:
        c = _require_course(d, course_id)
        _now(d)
        s = section_record(d, course_id, name or f"{c['course_code']} — New section")
        for e in d.enrollments_of(course_id, ("active",), ["StudentEnrollment"])[:students]:
            e["course_section_id"] = s["id"]
        return int(s["id"])


def crosslist_section(d: SandboxData, section_id: int, to_course_id: int) -> int:
    """Cross-list a section into another course, as CourseSection#crosslist_to_course does: the section and
    its enrollments move to that course, and `nonxlist_course_id` keeps the course it came from (the first
    one, if it was cross-listed before). Returns the section id."""
    with d.lock:
        s = d.course_sections.get(section_id)
        if s is None or s["workflow_state"] != "active":
            raise KeyError(f"no active section {section_id}")
        _require_course(d, to_course_id)
        now = _now(d)
        origin = s["course_id"]
        if origin == to_course_id:
            raise ValueError(f"section {section_id} is already in course {to_course_id}")
        s["nonxlist_course_id"] = s["nonxlist_course_id"] or origin
        s["course_id"] = to_course_id
        s["sis_course_id"] = d.courses[to_course_id].get("sis_course_id")
        moved = [
            eid
            for eid in d._enrollments_by_course.get(origin, [])
            if d.enrollments[eid]["course_section_id"] == section_id
        ]
        for eid in moved:
            d._enrollments_by_course[origin].remove(eid)
            d._enrollments_by_course.setdefault(to_course_id, []).append(eid)
            sis = d.courses[to_course_id].get("sis_course_id")
            d.enrollments[eid].update(course_id=to_course_id, sis_course_id=sis, updated_at=now)
            d.enrollments[eid]["html_url"] = (
                f"{d.base_url}/courses/{to_course_id}/users/{d.enrollments[eid]['user_id']}"
            )
        return section_id


def set_group_weight(d: SandboxData, group_id: int, weight: float) -> int:
    """Change an assignment group's `group_weight`."""
    with d.lock:
        g = d.assignment_groups.get(group_id)
        if g is None or g["workflow_state"] != "active":
            raise KeyError(f"no active assignment group {group_id}")
        _now(d)
        g["group_weight"] = float(weight)
        return group_id


def change_period_score(d: SandboxData, enrollment_id: int, period_id: int, score: float) -> int:
    """Set a student enrollment's current, final and unposted scores within one grading period."""
    with d.lock:
        e = d.enrollments.get(enrollment_id)
        if e is None or e["type"] != "StudentEnrollment":
            raise KeyError(f"no student enrollment {enrollment_id}")
        if period_id not in {p["id"] for p in grading_periods_of(d, e["course_id"])}:
            raise KeyError(f"grading period {period_id} does not apply to course {e['course_id']}")
        _now(d)
        grades: Record = {}
        for kind in ("current", "final", "unposted_current", "unposted_final"):
            grades[f"{kind}_score"] = score
            grades[f"{kind}_grade"] = letter(score)
        d.period_grade_edits[(enrollment_id, period_id)] = grades
        return enrollment_id
