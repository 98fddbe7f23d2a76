"""Every Canvas entity the project mirrors, stated once.

An entity is one staging asset (`staging/<name>`: raw records per course) and one Layer-1 asset
(`layer1/<name>`: typed rows). This registry says, per entity, how it is fetched (which endpoints,
shaped by the profile's field groups), how the catalog describes it, and which tables it fills beyond
its transformer's own (score history). Everything else derives from it: the profile's `entities.*`
switches (`profiles.STAGING_ENTITIES`), the staging specs, the Layer-1 graph assets, the extraction
engine's fetch plan and the CLI summary's tables. The transformer of each entity is in
`canvas_assets.transform.registry` under the same name (a test checks the two registries agree).

Adding an entity: add it here (fetch plan and descriptions), its model and a migration, its transformer
in the transformer registry (one line for a one-table entity), and its profile switch; the assets, jobs,
catalog and summaries pick it up (docs/maintaining.md).
"""

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Protocol

from canvas_assets.extract.incremental import merge
from canvas_assets.transform.convert import to_id


class FieldGroups(Protocol):
    """What a fetch plan asks of the sync profile (a `profiles.Profile` is one; profiles imports this
    module, so the plans name only this)."""

    def field_on(self, entity: str, group: str) -> bool: ...


# Every enrollment state but deleted: a dropped enrollment then disappears and is soft-deleted.
ENROLLMENT_STATES_BUT_DELETED = ("active", "invited", "creation_pending", "completed", "inactive", "rejected")
# The same states for /courses/:id/users: CoursesController#users filters enrollment_state[] raw
# (`workflow_state IN (...)`), creation_pending included although its YARD enum leaves it out; a student of
# an unpublished course is creation_pending (Course#enroll_user), and was missing without it.
STUDENT_STATES = ENROLLMENT_STATES_BUT_DELETED

FetchPlan = Callable[[Any, FieldGroups, int, float], list[dict]]
ChangesPlan = Callable[[Any, int, datetime, float], list[dict]]
# (client, course id, the staged records' `parent_fields`, the course's records of `needs`, timeout) -> the
# records of parents the staged records do not know yet
NewParentsPlan = Callable[[Any, int, Sequence[Any], Mapping[str, Sequence[Any]], float], list[dict]]
KeepRule = Callable[[Mapping[str, Sequence[Any]]], Callable[[Mapping[str, Any]], bool]]
# (client, course id, the course's records of `needs` fetched in this run, timeout) -> the course's raw
# records fetched as several shorter lists, or None when one list is the better plan
SlicedPlan = Callable[[Any, int, Mapping[str, Sequence[Any]], float], Sequence[Any] | None]


@dataclass(frozen=True)
class Incremental:
    """How an entity is fetched incrementally (canvas_assets.extract.incremental has the rules)."""

    changes: ChangesPlan  # (client, course id, since, timeout) -> the records changed after `since`
    # Records a change filter cannot see because they have no change time: a new student's or a new
    # assignment's submissions (unsubmitted, or older than the watermark).
    new_parents: NewParentsPlan
    change_times: tuple[str, ...]  # record fields holding Canvas's change times (the watermark is their max)
    # From the course's records of the entity's `needs` (this run's, or staged), the rule that says which
    # merged records still exist (a deleted assignment's submissions do not).
    keep: KeepRule
    refresh_days_field: str  # the processing field: days between full refreshes
    # The record fields `new_parents` and `keep` read: of the staged records, only these are read (in SQL).
    parent_fields: tuple[str, ...] = ()


@dataclass(frozen=True)
class Entity:
    name: str
    fetch: FetchPlan  # (client, profile, course id, timeout) -> the course's raw records
    staging_description: str
    layer1_description: str
    extra_tables: tuple[str, ...] = ()  # tables the load fills beyond the transformer's own
    # A 404 on this entity's list means "no data" rather than a failure (analytics off, say).
    absent_when_not_found: bool = False
    needs: tuple[str, ...] = ()  # entities a profile must switch on with this one
    incremental: Incremental | None = None
    # A full fetch that, once the course's `needs` are in, may cut a long list into shorter ones fetched
    # at once: pages of one list come one after another, so a course's long list is otherwise the
    # critical path of a whole sync.
    sliced: SlicedPlan | None = None


def _courses(client: Any, profile: FieldGroups, course_id: int, timeout: float) -> list[dict]:
    include = ["term", "total_students"]
    if profile.field_on("courses", "public_info"):
        include.append("public_description")
    if profile.field_on("courses", "extended_info"):
        include.append("syllabus_body")
    course = client.get_course(course_id, include=tuple(include), timeout=timeout)
    if profile.field_on("courses", "settings"):
        course = {**course, "settings": client.get_course_settings(course_id, timeout=timeout)}
    return [course]


def _students(client: Any, profile: FieldGroups, course_id: int, timeout: float) -> list[dict]:
    include: tuple[str, ...] = ("email",) if profile.field_on("students", "basic_info") else ()
    return list(
        client.list_students(course_id, include=include, enrollment_states=STUDENT_STATES, timeout=timeout)
    )


def _enrollments(client: Any, profile: FieldGroups, course_id: int, timeout: float) -> list[dict]:
    return list(client.list_enrollments(course_id, states=ENROLLMENT_STATES_BUT_DELETED, timeout=timeout))


def _assignments(client: Any, profile: FieldGroups, course_id: int, timeout: float) -> list[dict]:
    return list(client.list_assignments(course_id, timeout=timeout))


def _modules(client: Any, profile: FieldGroups, course_id: int, timeout: float) -> list[dict]:
    return list(client.list_modules(course_id, timeout=timeout))


def _student_summaries(client: Any, profile: FieldGroups, course_id: int, timeout: float) -> list[dict]:
    return list(client.list_student_summaries(course_id, timeout=timeout))


def _submissions(client: Any, profile: FieldGroups, course_id: int, timeout: float) -> list[dict]:
    return list(client.list_submissions(course_id, timeout=timeout))


# A course whose submissions would take more pages than this is fetched in slices of assignments, each at
# most about this long. Pages of one list come one after another (30-50 ms each); the large sandbox's
# biggest course is 1,347 pages, a minute on its own, longer than the rest of its sync's fetch.
SLICE_PAGES = 20
SUBMISSIONS_PER_PAGE = 100  # the client's per_page


def _submissions_in_slices(
    client: Any, course_id: int, records_of: Mapping[str, Sequence[Any]], timeout: float
) -> Sequence[Any] | None:
    """A big course's submissions as one list per slice of its assignments (every student's, as
    `student_ids[]=all` gives them), fetched concurrently; None for a course one list serves as well.

    The slices name the course's published assignments only: the one list (no `assignment_ids[]`) serves
    the submissions of those and no others, and Canvas refuses the whole request, `403 invalid assignment ids
    requested`, for any other id (SubmissionsApiController#for_students scopes `assignment_ids[]` to
    `@context.assignments.published`; docs/canvas-api.md). An assignment created or published after the
    course's assignments were listed is left for the next sync, which lists it (the incremental fetch asks
    for the submissions of published assignments the staged ones do not mention)."""
    if "assignments" not in records_of or "enrollments" not in records_of:
        return None
    # Canvas lists a submission per published assignment and active student: that many records, give or
    # take what changes meanwhile, decide.
    published, students = _live_parents(records_of)
    if len(published) * len(students) <= SLICE_PAGES * SUBMISSIONS_PER_PAGE:
        return None
    ids = sorted(i for i in published if isinstance(i, int))
    size = max(1, min(PARENTS_PER_REQUEST, SLICE_PAGES * SUBMISSIONS_PER_PAGE // max(1, len(students))))
    slices = [ids[i : i + size] for i in range(0, len(ids), size)]
    return client.list_submissions_by_assignments(course_id, slices, timeout=timeout)


def _submission_changes(client: Any, course_id: int, since: datetime, timeout: float) -> list[dict]:
    """Submissions submitted or graded after `since`: two lists, since Canvas applies both filters at once
    when given both (submitted after AND graded after would miss a regrade of older work)."""
    submitted = client.list_submissions(course_id, submitted_since=since, timeout=timeout)
    graded = client.list_submissions(course_id, graded_since=since, timeout=timeout)
    return merge((), [*submitted, *graded])


def _ids(
    records_of: Mapping[str, Sequence[Any]], entity: str, key: str, where: Callable[[Mapping[str, Any]], bool]
) -> set[Any] | None:
    """The `key` ids of the course's `entity` records that pass `where`; None when the run does not know
    that list (absent from `records_of`)."""
    if entity not in records_of:
        return None
    return {to_id(r.get(key)) for r in records_of[entity] if isinstance(r, Mapping) and where(r)}


def _is_student(e: Mapping[str, Any]) -> bool:
    return e.get("type") == "StudentEnrollment"


def _live_parents(records_of: Mapping[str, Sequence[Any]]) -> tuple[set[Any], set[Any]]:
    """(published assignment ids, active students' user ids): the parents whose submissions Canvas lists,
    and the only assignment ids a submissions request may name. An assignment is published when Canvas says
    so (`published: true`, which the assignment JSON always carries); one without the flag is not named in
    a request (its submissions still come with the next full fetch). A list the run does not know gives no
    parent."""
    assignments = _ids(records_of, "assignments", "id", lambda a: a.get("published") is True)
    students = _ids(
        records_of,
        "enrollments",
        "user_id",
        lambda e: _is_student(e) and e.get("enrollment_state") == "active",
    )
    return assignments or set(), students or set()


PARENTS_PER_REQUEST = 50  # ids per `assignment_ids[]` / `student_ids[]` list: URLs stay short


def _submissions_of_new_parents(
    client: Any,
    course_id: int,
    staged: Sequence[Any],
    records_of: Mapping[str, Sequence[Any]],
    timeout: float,
) -> list[dict]:
    """The submissions of assignments and students the staged submissions (their `assignment_id` and
    `user_id`) do not mention: usually none, so usually no request."""
    assignments, students = _live_parents(records_of)
    mentioned_assignments: set[Any] = set()
    mentioned_students: set[Any] = set()
    for s in staged:
        if isinstance(s, Mapping):
            mentioned_assignments.add(to_id(s.get("assignment_id")))
            mentioned_students.add(to_id(s.get("user_id")))
    new_assignments = sorted(assignments - mentioned_assignments)
    # Only users the run listed as students: for_students refuses the whole request (401 unauthorized) if any
    # `student_ids[]` id is not a student of the course, and more than 100 ids (400 too many students).
    # Chunks of PARENTS_PER_REQUEST (50) also keep each Link URL well under Canvas's 6 KB Link-header cap.
    new_students = sorted(students - mentioned_students)
    out: list[dict] = []
    for i in range(0, len(new_assignments), PARENTS_PER_REQUEST):
        chunk = new_assignments[i : i + PARENTS_PER_REQUEST]
        out += client.list_submissions(course_id, assignment_ids=chunk, timeout=timeout)
    for i in range(0, len(new_students), PARENTS_PER_REQUEST):
        chunk = new_students[i : i + PARENTS_PER_REQUEST]
        out += client.list_submissions(course_id, student_ids=chunk, timeout=timeout)
    return out


def _submission_parents(records_of: Mapping[str, Sequence[Any]]) -> Callable[[Mapping[str, Any]], bool]:
    """A submission is listed while its assignment exists and is not unpublished (Canvas lists the
    submissions of published assignments only), and its student is still enrolled as a student. A list the
    run does not know (absent from `records_of`: never fetched for the course) drops nothing."""
    assignments = _ids(records_of, "assignments", "id", lambda a: a.get("published") is not False)
    students = _ids(records_of, "enrollments", "user_id", _is_student)

    def keep(s: Mapping[str, Any]) -> bool:
        if assignments is not None and to_id(s.get("assignment_id")) not in assignments:
            return False
        return students is None or to_id(s.get("user_id")) in students

    return keep


ENTITIES: dict[str, Entity] = {
    e.name: e
    for e in (
        Entity(
            "courses",
            _courses,
            "Raw course objects (GET /courses/:id with term, student count and the profile's extra course "
            "fields).",
            "`canvas_courses`: one row per course, with term, visibility and (by profile) syllabus and "
            "settings.",
        ),
        Entity(
            "students",
            _students,
            "Raw users with a student enrollment in the course (GET /courses/:id/users).",
            "`canvas_students`: the people enrolled as students, with SIS and login ids and email.",
        ),
        Entity(
            "enrollments",
            _enrollments,
            "Raw enrollments of every type and state but deleted, with their grades "
            "(GET /courses/:id/enrollments).",
            "`canvas_enrollments` with current/final scores and grades; changes go to "
            "`canvas_score_history` (grades over time).",
            extra_tables=("canvas_score_history",),
        ),
        Entity(
            "assignments",
            _assignments,
            "Raw assignments of the course (GET /courses/:id/assignments).",
            "`canvas_assignments`: due dates, points, grading type, submission types.",
        ),
        Entity(
            "submissions",
            _submissions,
            "Raw submissions of every student to every assignment, with grades and late/missing flags "
            "(GET /courses/:id/students/submissions?student_ids[]=all; after the first sync only what was "
            "submitted or graded since the last fetch is asked for, and merged).",
            "`canvas_submissions`: one row per assignment and student with score, grade, late, missing and "
            "excused; changes go to `canvas_submission_score_history`.",
            extra_tables=("canvas_submission_score_history",),
            needs=("assignments", "enrollments"),
            sliced=_submissions_in_slices,
            incremental=Incremental(
                changes=_submission_changes,
                new_parents=_submissions_of_new_parents,
                change_times=("submitted_at", "graded_at"),
                keep=_submission_parents,
                refresh_days_field="submissions_full_refresh_days",
                parent_fields=("assignment_id", "user_id"),
            ),
        ),
        Entity(
            "modules",
            _modules,
            "Raw modules of the course with all of their items (GET /courses/:id/modules?include[]=items).",
            "`canvas_modules` and `canvas_module_items`: course structure and content.",
        ),
        Entity(
            "student_summaries",
            _student_summaries,
            "Raw analytics student summaries: page views, participations, tardiness "
            "(GET /courses/:id/analytics/student_summaries).",
            "`canvas_student_summaries`: page views, participations and tardiness per student.",
            absent_when_not_found=True,
        ),
    )
}


# Entities whose records each carry a Canvas `id` unique in a course's list: the extract notes the ids a list
# repeated (`repeated_ids`), and the `no_duplicate_<entity>_ids` checks report them.
ID_CHECKED_ENTITIES = ("students", "enrollments", "assignments", "modules")


def repeated_ids(records: Sequence[Any]) -> list[Any]:
    """The `id`s that occur more than once among `records`, each once, in order of their second occurrence."""
    seen: set[Any] = set()
    again: dict[Any, None] = {}
    for record in records:
        rid = record.get("id") if isinstance(record, Mapping) else None
        if rid is None:
            continue
        try:
            if rid in seen:
                again[rid] = None
            seen.add(rid)
        except TypeError:  # an unhashable id (a malformed record): the transformer rejects it
            continue
    return list(again)


def entity(name: str) -> Entity:
    try:
        return ENTITIES[name]
    except KeyError:
        raise KeyError(f"unknown entity {name!r}; known: {', '.join(ENTITIES)}") from None
