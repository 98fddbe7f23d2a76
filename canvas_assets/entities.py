"""Every Canvas entity the project mirrors, stated once: one staging asset (`staging/<name>`) and one
Layer-1 asset (`layer1/<name>`) each. A declaration says how the entity is fetched, the tables it fills, how
the catalog describes it and its profile switch; everything that enumerates entities derives from it
(docs/maintaining.md, "Add an entity", which is also how to add one).
"""

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Protocol

from canvas_assets.canvas.api import ALL_ENROLLMENT_STATES_BUT_DELETED
from canvas_assets.canvas.urls import path_segment
from canvas_assets.extract import grade_changes, period_scores
from canvas_assets.extract.incremental import merge
from canvas_assets.transform.convert import to_id
from canvas_assets.transform.modules import transform_modules


class FieldGroups(Protocol):
    """What a fetch plan asks of the sync profile (a `profiles.Profile` is one; profiles imports this
    module, so the plans name only this)."""

    def field_on(self, entity: str, group: str) -> bool: ...


# Every enrollment state but deleted: a dropped enrollment then disappears and is soft-deleted.
ENROLLMENT_STATES_BUT_DELETED = ALL_ENROLLMENT_STATES_BUT_DELETED
# The same states for /courses/:id/users: CoursesController#users filters enrollment_state[] raw
# (`workflow_state IN (...)`), creation_pending included although its YARD enum leaves it out; a student of
# an unpublished course is creation_pending (Course#enroll_user), and was missing without it.
STUDENT_STATES = ENROLLMENT_STATES_BUT_DELETED

FetchPlan = Callable[[Any, FieldGroups, int, float], list[dict]]
ChangesPlan = Callable[[Any, int, datetime, float], list[dict]]
# (client, course id, staged records, the course's records of `needs`, timeout) -> the records of parents
# the staged records do not know yet
NewParentsPlan = Callable[[Any, int, Sequence[Any], Mapping[str, Sequence[Any]], float], list[dict]]
KeepRule = Callable[[Mapping[str, Sequence[Any]]], Callable[[Mapping[str, Any]], bool]]
# (client, course id, the course's records of `needs` and `slice_by` fetched in this run, timeout) -> its raw
# records fetched as several shorter lists, or None when one list is the better plan
SlicedPlan = Callable[[Any, int, Mapping[str, Sequence[Any]], float], Sequence[Any] | None]
# (raw records per course, transform options) -> a `transform.base.TransformResult`
TransformBuild = Callable[[Mapping[int, list[dict[str, Any]]], Any], Any]


@dataclass(frozen=True)
class listed:
    """The fetch plan of an entity that is one Canvas list and nothing more: `path` under /api/v1 with
    `{course_id}` where the course goes, and the query `params` always sent (`CanvasAPI.list_records`:
    the same pagination, bounds and errors as every list)."""

    path: str
    params: tuple[tuple[str, str], ...] = ()
    # The key under which each page holds the records, for a list Canvas wraps in an object (grading periods)
    wrapped_in: str | None = None

    def __call__(self, client: Any, profile: FieldGroups, course_id: int, timeout: float) -> list[dict]:
        path = self.path.format(course_id=path_segment(course_id))
        return list(client.list_records(path, list(self.params), timeout=timeout, wrapped_in=self.wrapped_in))

    @property
    def request(self) -> str:
        query = "&".join(f"{k}={v}" for k, v in self.params)
        return "GET " + self.path.replace("{course_id}", ":id") + (f"?{query}" if query else "")


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
    # The processing field giving the days between full refreshes; "" for an append-only log, fetched in
    # full only while it has no watermark (its old records never change).
    refresh_days_field: str


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
    # Entities whose records the sliced plan reads when the run fetches them, without a profile having to
    # switch them on (the plan then fetches the list whole).
    slice_by: tuple[str, ...] = ()
    # The Canvas request, as the profile switch describes it ("GET /courses/:id/users"); a `listed` fetch
    # says it itself.
    request: str = ""
    # The Layer-1 tables its transformer fills; `canvas_<name>` when not given.
    tables: tuple[str, ...] = ()
    # A transformer of its own, for records that are not one row each of one table (modules' items); without
    # one the transformer maps each record onto a row of the one table, column by column as the model says
    # (`transform.registry.one_table`).
    transform: TransformBuild | None = None
    # The shipped presets (`profiles.PRESET_FILES`) that switch it on; it is off in the others, and in every
    # profile that is not a preset it must be given.
    presets: tuple[str, ...] = ()
    # A field group (`fields.<entity>.<group>`) that fetches it, instead of an `entities.<name>` switch of
    # its own (student summaries are what `fields.students.analytics` fetches).
    fetched_with: tuple[str, str] | None = None
    # Fetched once per sync for the account, not per course (terms): one unpartitioned asset, `account/<name>`,
    # with no staging; its fetch plan gets the account id where a course's plan gets the course id.
    account_level: bool = False
    # A token may lack the permission to read it (the grade audit log): Canvas's 401 "unauthorized" then
    # skips the entity for that course (its rows stay as they were) instead of failing the course, and the
    # run warns once.
    optional_permission: bool = False

    def __post_init__(self) -> None:
        if not self.tables:
            object.__setattr__(self, "tables", (f"canvas_{self.name}",))
        if not self.request:
            if not isinstance(self.fetch, listed):
                raise ValueError(f"entity {self.name!r}: say its Canvas request (request=...)")
            object.__setattr__(self, "request", self.fetch.request)
        if self.transform is None and len(self.tables) != 1:
            raise ValueError(f"entity {self.name!r}: {len(self.tables)} tables need a transformer of its own")

    @property
    def switch_description(self) -> str:
        """What its profile switch (or field group) says in the launchpad and `profile show`."""
        needs = f" (needs {' and '.join(self.needs)})" if self.needs else ""
        return f"{self.request} → {', '.join(self.tables)}{needs}"


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


def _modules(client: Any, profile: FieldGroups, course_id: int, timeout: float) -> list[dict]:
    return list(client.list_modules(course_id, timeout=timeout))


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
    # Canvas lists a submission per published assignment and listed student: that many records, give or
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


# Whose submissions Canvas lists for `student_ids[]=all` (SubmissionsApiController#for_students): users of
# `all_student_enrollments`, StudentEnrollment and the test student's StudentViewEnrollment in any state but
# deleted, whose submissions are not soft-deleted; SubmissionLifecycleManager keeps a submission for every
# student with an enrollment that is neither rejected nor deleted (docs/canvas-api.md §7). One such
# enrollment suffices, whatever the user's others (sections) are.
SUBMISSION_ENROLLMENT_TYPES = frozenset({"StudentEnrollment", "StudentViewEnrollment"})
SUBMISSION_ENROLLMENT_STATES = frozenset(ENROLLMENT_STATES_BUT_DELETED) - {"rejected"}


def _lists_submissions(e: Mapping[str, Any]) -> bool:
    """Whether Canvas lists the submissions of this enrollment's user (see SUBMISSION_ENROLLMENT_STATES)."""
    return (
        e.get("type") in SUBMISSION_ENROLLMENT_TYPES
        and e.get("enrollment_state") in SUBMISSION_ENROLLMENT_STATES
    )


def _live_parents(records_of: Mapping[str, Sequence[Any]]) -> tuple[set[Any], set[Any]]:
    """(published assignment ids, listed students' user ids): the parents whose submissions Canvas lists
    (students: `_lists_submissions`, the test student and invited, pending, concluded and inactive students
    included), and the only assignment ids a submissions request may name. An assignment is published when Canvas says
    so (`published: true`, which the assignment JSON always carries); one without the flag is not named in
    a request (its submissions still come with the next full fetch). A list the run does not know gives no
    parent."""
    assignments = _ids(records_of, "assignments", "id", lambda a: a.get("published") is True)
    students = _ids(records_of, "enrollments", "user_id", _lists_submissions)
    return assignments or set(), students or set()


PARENTS_PER_REQUEST = 50  # ids per `assignment_ids[]` / `student_ids[]` list: URLs stay short


def _submissions_of_new_parents(
    client: Any,
    course_id: int,
    staged: Sequence[Any],
    records_of: Mapping[str, Sequence[Any]],
    timeout: float,
) -> list[dict]:
    """The submissions of assignments and students the staged submissions do not mention: usually none,
    so usually no request."""
    assignments, students = _live_parents(records_of)
    # One pass that keeps only the ids: a big course's staged records come a row at a time (`StagedCourse`),
    # and a list of them would hold every one decoded (160 MB for 134k submissions).
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
    for ids, key in ((new_assignments, "assignment_ids"), (new_students, "student_ids")):
        for i in range(0, len(ids), PARENTS_PER_REQUEST):
            out += client.list_submissions(
                course_id, timeout=timeout, **{key: ids[i : i + PARENTS_PER_REQUEST]}
            )
    return out


def _submission_parents(records_of: Mapping[str, Sequence[Any]]) -> Callable[[Mapping[str, Any]], bool]:
    """A submission is listed while its assignment exists and is not unpublished (Canvas lists the
    submissions of published assignments only), and its user is still one whose submissions Canvas lists
    (`_lists_submissions`, the rule `_live_parents` uses: a test student's or a concluded student's rows
    must not be dropped by a merge and come back with the next full fetch). A list the run does not know
    (absent from `records_of`: never fetched for the course) drops nothing."""
    assignments = _ids(records_of, "assignments", "id", lambda a: a.get("published") is not False)
    students = _ids(records_of, "enrollments", "user_id", _lists_submissions)

    def keep(s: Mapping[str, Any]) -> bool:
        if assignments is not None and to_id(s.get("assignment_id")) not in assignments:
            return False
        return students is None or to_id(s.get("user_id")) in students

    return keep


# GET /courses/:id/grading_periods (GradingPeriodsController#index) answers {"grading_periods": [...], "meta"}.
GRADING_PERIODS = listed("/courses/{course_id}/grading_periods", wrapped_in="grading_periods")


def _terms(client: Any, profile: FieldGroups, account_id: int | str, timeout: float) -> list[dict]:
    """The root account's terms in every state (`CanvasAPI.list_terms`): an account-level plan, given the
    account id (or `self`) where a course's plan is given the course id."""
    return list(client.list_terms(account_id, timeout=timeout))


ALL_PRESETS = ("LIGHTWEIGHT", "ANALYTICS_FOCUSED", "FULL_PROCESSING")
# Analysts need the structure behind a grade (sections, weights, periods); LIGHTWEIGHT stays at the three
# requests a course costs at least (docs/tables.md says why each preset carries what it does).
ANALYSIS_PRESETS = ("ANALYTICS_FOCUSED", "FULL_PROCESSING")

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
            request="GET /courses/:id",
            presets=ALL_PRESETS,
        ),
        Entity(
            "students",
            _students,
            "Raw users with a student enrollment in the course (GET /courses/:id/users).",
            "`canvas_students`: the people enrolled as students, with SIS and login ids and email.",
            request="GET /courses/:id/users",
            presets=ALL_PRESETS,
        ),
        Entity(
            "enrollments",
            _enrollments,
            "Raw enrollments of every type and state but deleted, with their grades "
            "(GET /courses/:id/enrollments).",
            "`canvas_enrollments` with current/final scores and grades; changes go to "
            "`canvas_score_history` (grades over time).",
            extra_tables=("canvas_score_history",),
            request="GET /courses/:id/enrollments",
            presets=ALL_PRESETS,
        ),
        Entity(
            "assignments",
            listed("/courses/{course_id}/assignments"),
            "Raw assignments of the course (GET /courses/:id/assignments).",
            "`canvas_assignments`: due dates, points, grading type, submission types.",
            presets=("ANALYTICS_FOCUSED", "FULL_PROCESSING"),
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
            ),
            request="GET /courses/:id/students/submissions",
            presets=("ANALYTICS_FOCUSED", "FULL_PROCESSING"),
        ),
        Entity(
            "modules",
            _modules,
            "Raw modules of the course with all of their items (GET /courses/:id/modules?include[]=items).",
            "`canvas_modules` and `canvas_module_items`: course structure and content.",
            request="GET /courses/:id/modules with items",
            tables=("canvas_modules", "canvas_module_items"),
            transform=transform_modules,
            presets=("FULL_PROCESSING",),
        ),
        Entity(
            "sections",
            listed("/courses/{course_id}/sections", (("include[]", "total_students"),)),
            "Raw sections of the course, cross-listed ones included (GET /courses/:id/sections).",
            "`canvas_sections`: sections with SIS ids, dates, cross-listing and student counts.",
            presets=ANALYSIS_PRESETS,
        ),
        Entity(
            "assignment_groups",
            listed("/courses/{course_id}/assignment_groups"),
            "Raw assignment groups of the course (GET /courses/:id/assignment_groups).",
            "`canvas_assignment_groups`: grading categories with weights and drop rules.",
            presets=ANALYSIS_PRESETS,
        ),
        Entity(
            "grading_periods",
            GRADING_PERIODS,
            "Raw grading periods that apply to the course (GET /courses/:id/grading_periods).",
            "`canvas_grading_periods`: the course's grading periods with dates, weights and close dates.",
            presets=ANALYSIS_PRESETS,
        ),
        Entity(
            "period_scores",
            period_scores.fetch,
            "Raw student enrollments (without the embedded user) once per grading period, with that period's "
            "grades and the period's id "
            "(GET /courses/:id/enrollments?type[]=StudentEnrollment&grading_period_id=N).",
            "`canvas_enrollment_period_scores`: each student enrollment's scores per grading period; changes "
            "go to `canvas_enrollment_period_score_history`.",
            tables=("canvas_enrollment_period_scores",),
            extra_tables=("canvas_enrollment_period_score_history",),
            needs=("grading_periods",),
            sliced=period_scores.fetch_for_fetched_periods,
            request="GET /courses/:id/enrollments?grading_period_id=N per grading period",
            presets=ANALYSIS_PRESETS,
        ),
        Entity(
            "grade_changes",
            grade_changes.fetch,
            "Raw grade change audit events of the course (GET /audit/grade_change/courses/:id; after the first "
            "sync only the events since the course's watermark, merged by event id).",
            "`canvas_grade_changes`: one row per Canvas grade change event: who changed which grade, from "
            "what to what, and when.",
            incremental=Incremental(
                changes=grade_changes.fetch_since,
                new_parents=grade_changes.no_new_parents,
                change_times=("created_at",),
                keep=grade_changes.every_event,
                refresh_days_field="",
            ),
            sliced=grade_changes.fetch_in_windows,
            slice_by=("assignments", "enrollments"),
            request="GET /audit/grade_change/courses/:id",
            presets=("FULL_PROCESSING",),
            optional_permission=True,
        ),
        Entity(
            "terms",
            _terms,
            "",
            "`canvas_terms`: the root account's enrollment terms, every state (one request per sync).",
            request="GET /accounts/:account_id/terms?workflow_state[]=all",
            presets=ALL_PRESETS,
            account_level=True,
        ),
        Entity(
            "student_summaries",
            listed("/courses/{course_id}/analytics/student_summaries"),
            "Raw analytics student summaries: page views, participations, tardiness "
            "(GET /courses/:id/analytics/student_summaries).",
            "`canvas_student_summaries`: page views, participations and tardiness per student.",
            absent_when_not_found=True,
            fetched_with=("students", "analytics"),
        ),
    )
}


# Entities whose records each carry a Canvas `id` unique in a course's list: the extract notes the ids a list
# repeated (`extract.outcomes.repeated_ids`), and the `no_duplicate_<entity>_ids` checks report them.
ID_CHECKED_ENTITIES = ("students", "enrollments", "assignments", "modules")


def entity(name: str) -> Entity:
    try:
        return ENTITIES[name]
    except KeyError:
        raise KeyError(f"unknown entity {name!r}; known: {', '.join(ENTITIES)}") from None
