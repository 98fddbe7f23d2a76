"""The warehouse schema, defined once: DDL, loaders, tests and migrations all read these models.

Layer-1 tables mirror Canvas objects (one row per Canvas id, `deleted_at` on course-scoped rows that vanished
on a full sync). A row is written only when its content changes, so it carries no per-row sync time: when
Canvas last confirmed a course's rows of an entity is one row of `canvas_course_sync` per (entity, course),
written by every load. Operational tables hold the course catalog, the raw staging records, the per-course
sync log, those confirmations and the quarantine of records that could not be transformed.

Conventions: Canvas ids are 64-bit (`BigInteger`; Canvas ids exceed 2^31 on hosted instances), every
timestamp is a timezone-aware UTC instant (`UTCDateTime`, which also makes SQLite, which has no time
zones, hand back aware datetimes), scores are floats, lists and objects are stored as stable JSON text.
"""

from __future__ import annotations

from datetime import datetime

import sqlalchemy as sa
from sqlalchemy.orm import Mapped

from canvas_assets.warehouse import live, operational  # noqa: F401  (registers the live and operational tables)
from canvas_assets.warehouse.columns import (
    COURSE_EXTENDED,
    COURSE_PUBLIC,
    COURSE_SETTINGS,
    DETAILS,
    LOAD,
    PARENT_MODULE,
    SCORES,
    STAGING_COURSE,
    STUDENT_BASIC,
    Base,
    SurrogateKey,
    canvas,
    canvas_id,
    canvas_int,
    column,
    row_hash_column,
    soft_delete_column,
)

_CREATED = "When the object was created in Canvas"
_UPDATED = "When Canvas last changed the object"
_POSITION = "Order within its parent, as Canvas shows it"
_PUBLISHED = "Whether the object is published (visible to students)"
_HTML_URL = "Link to the object in the Canvas web UI"


# --- Layer 1 ---------------------------------------------------------------------------------------------
class CanvasCourse(Base):
    __tablename__ = "canvas_courses"

    id: Mapped[int] = canvas_id("Canvas course id", "id")
    name: Mapped[str | None] = canvas("Course name", "name")
    course_code: Mapped[str | None] = canvas("Short code, e.g. `BIO-101`", "course_code")
    workflow_state: Mapped[str | None] = canvas(
        "`unpublished`, `available`, `completed` or `deleted`", "workflow_state"
    )
    account_id: Mapped[int | None] = canvas("Sub-account the course belongs to", "account_id")
    root_account_id: Mapped[int | None] = canvas("Root account (the institution)", "root_account_id")
    enrollment_term_id: Mapped[int | None] = canvas("Term id", "enrollment_term_id")
    uuid: Mapped[str | None] = canvas("Canvas's global uuid of the course", "uuid")
    term_name: Mapped[str | None] = canvas("Name of the course's term", "term.name")
    term_start_at: Mapped[datetime | None] = canvas(
        "Start of the term", "term.start_at", group=COURSE_EXTENDED
    )
    term_end_at: Mapped[datetime | None] = canvas("End of the term", "term.end_at", group=COURSE_EXTENDED)
    start_at: Mapped[datetime | None] = canvas("Course start (may be unset)", "start_at")
    end_at: Mapped[datetime | None] = canvas("Course end (may be unset)", "end_at")
    created_at: Mapped[datetime | None] = canvas(_CREATED, "created_at")
    time_zone: Mapped[str | None] = canvas("Course time zone (IANA name)", "time_zone")
    total_students: Mapped[int | None] = canvas_int(
        "Students enrolled according to Canvas (checked against the synced students)", "total_students"
    )
    is_public: Mapped[bool | None] = canvas("Whether the course is public", "is_public", group=COURSE_PUBLIC)
    public_description: Mapped[str | None] = canvas(
        "Public description", "public_description", group=COURSE_PUBLIC
    )
    syllabus_body: Mapped[str | None] = canvas("Syllabus (HTML)", "syllabus_body", group=COURSE_EXTENDED)
    default_view: Mapped[str | None] = canvas(
        "Home page kind (`modules`, `wiki`, `feed`, ...)", "default_view"
    )
    apply_assignment_group_weights: Mapped[bool | None] = canvas(
        "Whether the course grade weights the assignment groups (`canvas_assignment_groups.group_weight`)",
        "apply_assignment_group_weights",
    )
    sis_course_id: Mapped[str | None] = canvas("SIS id, when the token may see it", "sis_course_id")
    course_format: Mapped[str | None] = canvas(
        "`on_campus`, `online` or `blended`, when set", "course_format"
    )
    license: Mapped[str | None] = canvas("Content license", "license")
    settings: Mapped[str | None] = canvas(
        "JSON text of the course settings (`GET /courses/:id/settings`, staged under the key `settings`)",
        "settings",
        kind="json",
        group=COURSE_SETTINGS,
    )
    deleted_at: Mapped[datetime | None] = soft_delete_column()
    row_hash: Mapped[int | None] = row_hash_column()

    __table_args__ = (sa.Index(None, "account_id"), {"info": {"record": "course", "course": "id"}})


class CanvasStudent(Base):
    """Canvas users enrolled as students somewhere. Global (no course): never soft-deleted."""

    __tablename__ = "canvas_students"

    id: Mapped[int] = canvas_id(
        "Canvas user id; users are global: one row however many courses list them", "id"
    )
    name: Mapped[str | None] = canvas("Display name", "name")
    sortable_name: Mapped[str | None] = canvas('"Last, First"', "sortable_name")
    short_name: Mapped[str | None] = canvas("Short display name", "short_name")
    sis_user_id: Mapped[str | None] = canvas(
        "SIS id, when the token may see it", "sis_user_id", group=STUDENT_BASIC
    )
    login_id: Mapped[str | None] = canvas(
        "Login (unique id), when the token may see it", "login_id", group=STUDENT_BASIC
    )
    email: Mapped[str | None] = canvas(
        "Primary email, when the token may see it", "email", group=STUDENT_BASIC
    )
    pronouns: Mapped[str | None] = canvas("Pronouns, when set and enabled", "pronouns")
    avatar_url: Mapped[str | None] = canvas("Avatar image URL, when Canvas sends it", "avatar_url")
    created_at: Mapped[datetime | None] = canvas("When the user was created in Canvas", "created_at")
    row_hash: Mapped[int | None] = row_hash_column()

    __table_args__ = {"info": {"record": "user"}}


class CanvasEnrollment(Base):
    __tablename__ = "canvas_enrollments"

    id: Mapped[int] = canvas_id("Canvas enrollment id", "id")
    course_id: Mapped[int] = canvas("Course of the enrollment", "course_id", fallback=STAGING_COURSE)
    user_id: Mapped[int] = canvas(
        "The enrolled user (`canvas_students.id` for student enrollments)", "user_id", required=True
    )
    course_section_id: Mapped[int | None] = canvas("Section", "course_section_id")
    type: Mapped[str | None] = canvas(
        "`StudentEnrollment`, `TeacherEnrollment`, `TaEnrollment`, `DesignerEnrollment` or `ObserverEnrollment`",
        "type",
    )
    role: Mapped[str | None] = canvas("Role name (a custom role or the type's base role)", "role")
    role_id: Mapped[int | None] = canvas("Role id", "role_id")
    enrollment_state: Mapped[str | None] = canvas(
        "`active`, `invited`, `creation_pending`, `completed`, `inactive` or `rejected` (deleted ones are not "
        "fetched: they get `deleted_at`)",
        "enrollment_state",
    )
    associated_user_id: Mapped[int | None] = canvas(
        "For observers: the observed student", "associated_user_id"
    )
    start_at: Mapped[datetime | None] = canvas("Enrollment start, when set", "start_at")
    end_at: Mapped[datetime | None] = canvas("Enrollment end, when set", "end_at")
    created_at: Mapped[datetime | None] = canvas(_CREATED, "created_at")
    updated_at: Mapped[datetime | None] = canvas(_UPDATED, "updated_at")
    last_activity_at: Mapped[datetime | None] = canvas(
        "Last activity in the course", "last_activity_at", group=DETAILS
    )
    last_attended_at: Mapped[datetime | None] = canvas(
        "Last attendance mark", "last_attended_at", group=DETAILS
    )
    total_activity_time: Mapped[int | None] = canvas(
        "Seconds of activity in the course", "total_activity_time", kind="int", group=DETAILS
    )
    current_score: Mapped[float | None] = canvas(
        "Percent over graded work only (NULL when hidden or not graded yet)",
        "grades.current_score",
        group=SCORES,
    )
    final_score: Mapped[float | None] = canvas(
        "Percent counting ungraded work as zero", "grades.final_score", group=SCORES
    )
    current_grade: Mapped[str | None] = canvas(
        "Letter grade for `current_score`, when the course uses a grading scheme",
        "grades.current_grade",
        group=SCORES,
    )
    final_grade: Mapped[str | None] = canvas(
        "Letter grade for `final_score`", "grades.final_grade", group=SCORES
    )
    unposted_current_score: Mapped[float | None] = canvas(
        "`current_score` including grades not yet posted to the student",
        "grades.unposted_current_score",
        group=SCORES,
    )
    unposted_final_score: Mapped[float | None] = canvas(
        "`final_score` including unposted grades", "grades.unposted_final_score", group=SCORES
    )
    unposted_current_grade: Mapped[str | None] = canvas(
        "Grade for `unposted_current_score`", "grades.unposted_current_grade", group=SCORES
    )
    unposted_final_grade: Mapped[str | None] = canvas(
        "Grade for `unposted_final_score`", "grades.unposted_final_grade", group=SCORES
    )
    override_score: Mapped[float | None] = canvas(
        "Final score override set by the teacher (only when set)", "grades.override_score", group=SCORES
    )
    override_grade: Mapped[str | None] = canvas(
        "Final grade override (only when set)", "grades.override_grade", group=SCORES
    )
    deleted_at: Mapped[datetime | None] = soft_delete_column()
    row_hash: Mapped[int | None] = row_hash_column()

    __table_args__ = (
        sa.Index(None, "course_id"),
        sa.Index(None, "user_id"),
        {"info": {"record": "enrollment"}},
    )


class CanvasAssignment(Base):
    __tablename__ = "canvas_assignments"

    id: Mapped[int] = canvas_id("Canvas assignment id", "id")
    course_id: Mapped[int] = canvas("Course of the assignment", "course_id", fallback=STAGING_COURSE)
    name: Mapped[str | None] = canvas("Assignment name", "name")
    description: Mapped[str | None] = canvas("Description (HTML)", "description")
    due_at: Mapped[datetime | None] = canvas("Due date, when set", "due_at")
    unlock_at: Mapped[datetime | None] = canvas("Available from, when set", "unlock_at")
    lock_at: Mapped[datetime | None] = canvas("Available until, when set", "lock_at")
    points_possible: Mapped[float | None] = canvas("Maximum points (may be unset)", "points_possible")
    grading_type: Mapped[str | None] = canvas(
        "`points`, `percent`, `letter_grade`, `gpa_scale`, `pass_fail` or `not_graded`", "grading_type"
    )
    submission_types: Mapped[str | None] = canvas(
        'JSON list, e.g. `["online_upload"]`', "submission_types", kind="json"
    )
    published: Mapped[bool | None] = canvas(_PUBLISHED, "published")
    workflow_state: Mapped[str | None] = canvas("`published`, `unpublished`, ...", "workflow_state")
    position: Mapped[int | None] = canvas_int(_POSITION, "position")
    assignment_group_id: Mapped[int | None] = canvas(
        "Assignment group (weighting category)", "assignment_group_id"
    )
    omit_from_final_grade: Mapped[bool | None] = canvas(
        "Whether it is left out of the final grade", "omit_from_final_grade"
    )
    html_url: Mapped[str | None] = canvas(_HTML_URL, "html_url")
    created_at: Mapped[datetime | None] = canvas(_CREATED, "created_at")
    updated_at: Mapped[datetime | None] = canvas(_UPDATED, "updated_at")
    deleted_at: Mapped[datetime | None] = soft_delete_column()
    row_hash: Mapped[int | None] = row_hash_column()

    __table_args__ = (sa.Index(None, "course_id"), {"info": {"record": "assignment"}})


class CanvasSubmission(Base):
    """One row per (assignment, student): the student's submission with its grade, late and missing flags."""

    __tablename__ = "canvas_submissions"

    id: Mapped[int] = canvas_id("Canvas submission id", "id")
    course_id: Mapped[int] = canvas("Course of the assignment", "course_id", fallback=STAGING_COURSE)
    assignment_id: Mapped[int] = canvas(
        "The assignment (`canvas_assignments.id`)", "assignment_id", required=True
    )
    user_id: Mapped[int] = canvas("The student (`canvas_students.id`)", "user_id", required=True)
    score: Mapped[float | None] = canvas("Points awarded, after any late or missing deduction", "score")
    grade: Mapped[str | None] = canvas(
        "The grade as the assignment's grading type shows it (points, percent, letter, complete/incomplete)",
        "grade",
    )
    entered_score: Mapped[float | None] = canvas(
        "Points the grader entered, before deductions (when Canvas sends it)", "entered_score"
    )
    entered_grade: Mapped[str | None] = canvas(
        "Grade the grader entered, before deductions (when Canvas sends it)", "entered_grade"
    )
    workflow_state: Mapped[str | None] = canvas(
        "`unsubmitted`, `submitted`, `pending_review` or `graded`", "workflow_state"
    )
    submitted_at: Mapped[datetime | None] = canvas("When the latest attempt was submitted", "submitted_at")
    graded_at: Mapped[datetime | None] = canvas("When it was last graded (or excused)", "graded_at")
    posted_at: Mapped[datetime | None] = canvas("When the grade was posted to the student", "posted_at")
    late: Mapped[bool | None] = canvas("Submitted after the due date (or marked late)", "late")
    missing: Mapped[bool | None] = canvas(
        "Not submitted and past due (or marked missing); Canvas changes it as time passes", "missing"
    )
    excused: Mapped[bool | None] = canvas("Excused: does not count towards the grade", "excused")
    late_policy_status: Mapped[str | None] = canvas(
        "A status set by hand: `late`, `missing`, `extended` or `none`; NULL when not set",
        "late_policy_status",
    )
    seconds_late: Mapped[int | None] = canvas(
        "Seconds between the due date and the submission", "seconds_late", kind="int"
    )
    points_deducted: Mapped[float | None] = canvas("Points taken off by the late policy", "points_deducted")
    attempt: Mapped[int | None] = canvas_int("Attempt number of the latest submission", "attempt")
    submission_type: Mapped[str | None] = canvas(
        "`online_text_entry`, `online_upload`, `online_url`, `online_quiz`, ...; NULL when unsubmitted",
        "submission_type",
    )
    deleted_at: Mapped[datetime | None] = soft_delete_column(
        "When the submission disappeared from Canvas (its assignment deleted, its student dropped); NULL "
        "while present"
    )
    row_hash: Mapped[int | None] = row_hash_column()

    __table_args__ = (
        sa.Index(None, "course_id"),
        sa.Index(None, "assignment_id", "user_id"),
        sa.Index(None, "user_id"),
        {"info": {"record": "submission"}},
    )


class CanvasModule(Base):
    __tablename__ = "canvas_modules"

    id: Mapped[int] = canvas_id("Canvas module id", "id")
    course_id: Mapped[int] = column("Course of the module", source=STAGING_COURSE)
    name: Mapped[str | None] = canvas("Module name", "name")
    position: Mapped[int | None] = canvas_int(_POSITION, "position")
    unlock_at: Mapped[datetime | None] = canvas("Unlock date, when set", "unlock_at")
    published: Mapped[bool | None] = canvas("Published (sent to editors only; NULL otherwise)", "published")
    items_count: Mapped[int | None] = canvas_int("Number of items Canvas reports", "items_count")
    require_sequential_progress: Mapped[bool | None] = canvas(
        "Items must be completed in order", "require_sequential_progress"
    )
    prerequisite_module_ids: Mapped[str | None] = canvas(
        "JSON list of the module ids that must be completed first", "prerequisite_module_ids", kind="json"
    )
    deleted_at: Mapped[datetime | None] = soft_delete_column()
    row_hash: Mapped[int | None] = row_hash_column()

    __table_args__ = (sa.Index(None, "course_id"), {"info": {"record": "module"}})


class CanvasModuleItem(Base):
    __tablename__ = "canvas_module_items"

    id: Mapped[int] = canvas_id("Canvas module item id", "id")
    course_id: Mapped[int] = column("Course of the item's module", source=STAGING_COURSE)
    module_id: Mapped[int] = column("Module the item belongs to", source=PARENT_MODULE)
    title: Mapped[str | None] = canvas("Item title", "title")
    type: Mapped[str | None] = canvas(
        "`File`, `Page`, `Discussion`, `Assignment`, `Quiz`, `SubHeader`, `ExternalUrl` or `ExternalTool`",
        "type",
    )
    content_id: Mapped[int | None] = canvas(
        "Id of the linked object (the assignment id for `Assignment`, ...)", "content_id"
    )
    position: Mapped[int | None] = canvas_int(_POSITION, "position")
    indent: Mapped[int | None] = canvas_int("Indent level in the module", "indent")
    published: Mapped[bool | None] = canvas(_PUBLISHED, "published")
    url: Mapped[str | None] = canvas("API URL of the linked object", "url")
    html_url: Mapped[str | None] = canvas(_HTML_URL, "html_url")
    page_url: Mapped[str | None] = canvas("Page slug for `Page` items", "page_url")
    external_url: Mapped[str | None] = canvas(
        "Target of `ExternalUrl` / `ExternalTool` items", "external_url"
    )
    completion_requirement: Mapped[str | None] = canvas(
        "JSON object `{type, min_score, ...}`, when set", "completion_requirement", kind="json"
    )
    deleted_at: Mapped[datetime | None] = soft_delete_column()
    row_hash: Mapped[int | None] = row_hash_column()

    __table_args__ = (
        sa.Index(None, "course_id"),
        sa.Index(None, "module_id"),
        {"info": {"record": "module item"}},
    )


class CanvasStudentSummary(Base):
    """Analytics per student and course; `tardiness_breakdown` is flattened."""

    __tablename__ = "canvas_student_summaries"

    course_id: Mapped[int] = canvas_id(
        "Course of the summary (primary key with `user_id`)", source=STAGING_COURSE
    )
    user_id: Mapped[int] = canvas_id("The student (the summary's `id` is the user id)", "id")
    page_views: Mapped[int | None] = canvas_int("Page views in the course", "page_views")
    page_views_level: Mapped[int | None] = canvas_int(
        "Canvas's 0-3 level of page views relative to the class", "page_views_level"
    )
    participations: Mapped[int | None] = canvas_int(
        "Participations (submissions, posts, ...)", "participations"
    )
    participations_level: Mapped[int | None] = canvas_int(
        "Canvas's 0-3 participation level", "participations_level"
    )
    tardiness_on_time: Mapped[int | None] = canvas_int(
        "Assignments submitted on time", "tardiness_breakdown.on_time"
    )
    tardiness_late: Mapped[int | None] = canvas_int("Assignments submitted late", "tardiness_breakdown.late")
    tardiness_missing: Mapped[int | None] = canvas_int("Assignments missing", "tardiness_breakdown.missing")
    tardiness_floating: Mapped[int | None] = canvas_int(
        "Assignments not yet due or without a due date", "tardiness_breakdown.floating"
    )
    tardiness_total: Mapped[int | None] = canvas_int("Assignments counted", "tardiness_breakdown.total")
    deleted_at: Mapped[datetime | None] = soft_delete_column(
        "When the student no longer appeared in the course's summaries (soft delete); NULL while present"
    )
    row_hash: Mapped[int | None] = row_hash_column()

    __table_args__ = {"info": {"record": "student summary"}}


# Sections, assignment groups, grading periods and period scores: Layer-1 tables declared in a module of their
# own (this one would pass the size every module keeps), registered here before the tables are listed.
from canvas_assets.warehouse import course_models  # noqa: E402, F401


class CanvasScoreHistory(Base):
    """One row each time an enrollment's scores are first seen or change: grades over time."""

    __tablename__ = "canvas_score_history"

    id: Mapped[int] = column(
        "Surrogate key", source=LOAD, type_=SurrogateKey, primary_key=True, autoincrement=True
    )
    enrollment_id: Mapped[int] = column(
        "The enrollment whose scores changed (`canvas_enrollments.id`)", source=LOAD
    )
    course_id: Mapped[int] = column("Course of the enrollment", source=LOAD)
    user_id: Mapped[int | None] = column("User of the enrollment", source=LOAD)
    recorded_at: Mapped[datetime] = column("The load that saw the new scores (its sync time)", source=LOAD)
    current_score: Mapped[float | None] = column("`current_score` as it became at `recorded_at`", source=LOAD)
    final_score: Mapped[float | None] = column("`final_score` as it became at `recorded_at`", source=LOAD)
    current_grade: Mapped[str | None] = column("`current_grade` as it became at `recorded_at`", source=LOAD)
    final_grade: Mapped[str | None] = column("`final_grade` as it became at `recorded_at`", source=LOAD)
    run_id: Mapped[str | None] = column("The Dagster run of that load", source=LOAD, type_=sa.String(64))

    __table_args__ = (sa.Index(None, "enrollment_id", "recorded_at"), sa.Index(None, "course_id"))


class CanvasSubmissionScoreHistory(Base):
    """One row each time a submission is first seen graded or its score, grade or state changes."""

    __tablename__ = "canvas_submission_score_history"

    id: Mapped[int] = column(
        "Surrogate key", source=LOAD, type_=SurrogateKey, primary_key=True, autoincrement=True
    )
    submission_id: Mapped[int] = column("The submission that changed (`canvas_submissions.id`)", source=LOAD)
    course_id: Mapped[int] = column("Course of the submission", source=LOAD)
    assignment_id: Mapped[int | None] = column("Assignment of the submission", source=LOAD)
    user_id: Mapped[int | None] = column("Student of the submission", source=LOAD)
    recorded_at: Mapped[datetime] = column("The load that saw the change (its sync time)", source=LOAD)
    score: Mapped[float | None] = column("`score` as it became at `recorded_at`", source=LOAD)
    grade: Mapped[str | None] = column("`grade` as it became at `recorded_at`", source=LOAD)
    workflow_state: Mapped[str | None] = column("`workflow_state` as it became at `recorded_at`", source=LOAD)
    run_id: Mapped[str | None] = column("The Dagster run of that load", source=LOAD, type_=sa.String(64))

    __table_args__ = (sa.Index(None, "submission_id", "recorded_at"), sa.Index(None, "course_id"))


# The account's terms and the grade change audit log are declared in a module of their own (kept short).
from canvas_assets.warehouse import models_account_audit  # noqa: E402, F401  (registers their tables)

metadata = Base.metadata


# Layer-1 tables are the ones mirroring a Canvas object (`info["record"]`), in the order defined above.
LAYER1_TABLES: tuple[str, ...] = tuple(n for n, t in metadata.tables.items() if "record" in t.info)
OPERATIONAL_TABLES: tuple[str, ...] = tuple(n for n in metadata.tables if n not in LAYER1_TABLES)
ALL_TABLES: tuple[str, ...] = LAYER1_TABLES + OPERATIONAL_TABLES

# Which column scopes a Layer-1 table's rows to a course (soft delete works per course), None = global:
# `info["course"]` where the table says it, else `course_id` where it has one.
COURSE_SCOPE_COLUMN: dict[str, str | None] = {
    n: metadata.tables[n].info.get("course", "course_id" if "course_id" in metadata.tables[n].c else None)
    for n in LAYER1_TABLES
}
# The column holding the Canvas id of the object a row mirrors (what a quarantined record names): the one
# read from the record's `id`.
CANVAS_ID_COLUMN: dict[str, str] = {
    n: next(c.name for c in metadata.tables[n].c if c.info.get("path") == "id") for n in LAYER1_TABLES
}


def table(name: str) -> sa.Table:
    """The `Table` called `name` (KeyError names the known ones)."""
    try:
        return metadata.tables[name]
    except KeyError:
        raise KeyError(f"unknown warehouse table {name!r}; known: {sorted(metadata.tables)}") from None
