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

from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Dialect
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

NAMING_CONVENTION = {
    "ix": "ix_%(table_name)s_%(column_0_N_name)s",
    "uq": "uq_%(table_name)s_%(column_0_N_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}


class UTCDateTime(sa.types.TypeDecorator[datetime]):
    """A timestamp stored as UTC and always read back as an aware UTC datetime.

    PostgreSQL stores `timestamptz` as an instant already; SQLite has no time zone support, so the value
    is converted to UTC and stored naive. Naive inputs are taken to be UTC.
    """

    impl = sa.DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            value = value.replace(tzinfo=timezone.utc)
        elif value.utcoffset():
            value = value.astimezone(timezone.utc)
        if dialect.name == "sqlite":
            return value.replace(tzinfo=None)
        return value

    def bind_processor(self, dialect: Dialect) -> Any:
        inner = self.impl_instance.dialect_impl(dialect).bind_processor(dialect)
        if dialect.name == "postgresql":
            # The warehouse engine pins the session time zone to UTC (see warehouse.db), so naive values
            # are read as UTC and aware ones carry their offset: nothing to do per value, which keeps bulk
            # loads fast. Values go to the driver unchanged.
            return inner
        return super().bind_processor(dialect)

    def process_result_value(self, value: Any, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            return value.replace(tzinfo=timezone.utc)  # type: ignore[no-any-return]
        return value.astimezone(timezone.utc)  # type: ignore[no-any-return]


# Surrogate keys: BIGINT on PostgreSQL, but SQLite only auto-increments an `INTEGER PRIMARY KEY`.
SurrogateKey = sa.BigInteger().with_variant(sa.Integer(), "sqlite")


class Base(DeclarativeBase):
    metadata = sa.MetaData(naming_convention=NAMING_CONVENTION)
    type_annotation_map = {
        int: sa.BigInteger(),
        float: sa.Float(),
        str: sa.Text(),
        bool: sa.Boolean(),
        datetime: UTCDateTime(),
    }


# --- column documentation ---------------------------------------------------------------------------------
# Every column carries, in `info` (kept by SQLAlchemy beside the column, never seen by the database, so it
# needs no migration), what it holds and where it comes from. The Dagster catalog (`assets.tables`), the
# transformers (`transform.schema.fields_of`) and docs/tables.md all read it:
#   doc       one line: what the value is
#   path      for a column read from a Canvas record: the key path in the record (`grades.current_score`)
#   kind      the converter (`transform.convert`), only where the column type does not say it: `json` for JSON
#             text, `int` for a count in a BIGINT (a BIGINT is otherwise a Canvas `id`)
#   group     the profile field group (a `TransformOptions` switch) without which the column is not produced
#   required  a record without this value is quarantined (ids)
#   fallback  what fills the column when the record has no value (`STAGING_COURSE`)
#   source    for a Layer-1 column that is not read from a record: what fills it (one of `SOURCES`)
# A Layer-1 table's own `info["record"]` names the Canvas object its rows mirror ("enrollment").
STAGING_COURSE = "staging_course"
PARENT_MODULE = "module"
LOAD = "load"
SOURCES: dict[str, str] = {  # what the catalog says of each
    STAGING_COURSE: "Set from the staging course (the course whose records these are)",
    PARENT_MODULE: "Set from the module whose `items` list holds the item",
    LOAD: "Written by the load, not read from a Canvas record",
}
FALLBACKS: dict[str, str] = {STAGING_COURSE: "the staging course"}

# Profile field groups: the `TransformOptions` switch of each optional column.
COURSE_PUBLIC = "course_public_info"
COURSE_EXTENDED = "course_extended_info"
COURSE_SETTINGS = "course_settings"
STUDENT_BASIC = "student_basic_info"
SCORES = "student_scores"
DETAILS = "student_enrollment_details"


def canvas(
    doc: str,
    path: str,
    *,
    kind: str | None = None,
    group: str | None = None,
    required: bool = False,
    fallback: str | None = None,
    type_: sa.types.TypeEngine[Any] | None = None,
    **kw: Any,
) -> Any:
    """A column read from the Canvas record at `path` (dotted for nested objects: `term.name`)."""
    info: dict[str, Any] = {"doc": doc, "path": path}
    if kind:
        info["kind"] = kind
    if group:
        info["group"] = group
    if required:
        info["required"] = True
    if fallback:
        info["fallback"] = fallback
    return mapped_column(*(() if type_ is None else (type_,)), info=info, **kw)


def column(
    doc: str, *, source: str | None = None, type_: sa.types.TypeEngine[Any] | None = None, **kw: Any
) -> Any:
    """A column that is not read from a Canvas record. Layer-1 columns say what fills it (`source`)."""
    info: dict[str, Any] = {"doc": doc}
    if source:
        info["source"] = source
    return mapped_column(*(() if type_ is None else (type_,)), info=info, **kw)


def _id(doc: str, path: str | None = None, *, source: str | None = None) -> Any:
    """A BIGINT primary key column: a Canvas id read from `path`, or (no path) one filled from `source`."""
    kw: dict[str, Any] = {"type_": sa.BigInteger(), "primary_key": True, "autoincrement": False}
    if path:
        return canvas(doc, path, required=True, **kw)
    return column(doc, source=source, **kw)


def _int(doc: str, path: str, **kw: Any) -> Any:
    """A 32-bit INTEGER read from the record (positions, counts, levels)."""
    return canvas(doc, path, type_=sa.Integer(), **kw)


def _deleted_at(
    doc: str = "When a load found the row missing from Canvas (soft delete); NULL while present, cleared when "
    "it comes back",
) -> Any:
    return column(doc, source=LOAD)


def _row_hash() -> Any:
    return column(
        "Fingerprint of the row's values: a load skips rows whose fingerprint matches; NULL makes the next "
        "load compare and rewrite the row",
        source=LOAD,
        type_=sa.BigInteger(),
    )


_CREATED = "When the object was created in Canvas"
_UPDATED = "When Canvas last changed the object"
_POSITION = "Order within its parent, as Canvas shows it"
_PUBLISHED = "Whether the object is published (visible to students)"
_HTML_URL = "Link to the object in the Canvas web UI"


# --- Layer 1 ---------------------------------------------------------------------------------------------
class CanvasCourse(Base):
    __tablename__ = "canvas_courses"

    id: Mapped[int] = _id("Canvas course id", "id")
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
    total_students: Mapped[int | None] = _int(
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
    deleted_at: Mapped[datetime | None] = _deleted_at()
    row_hash: Mapped[int | None] = _row_hash()

    __table_args__ = (sa.Index(None, "account_id"), {"info": {"record": "course", "course": "id"}})


class CanvasStudent(Base):
    """Canvas users enrolled as students somewhere. Global (no course): never soft-deleted."""

    __tablename__ = "canvas_students"

    id: Mapped[int] = _id("Canvas user id; users are global: one row however many courses list them", "id")
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
    row_hash: Mapped[int | None] = _row_hash()

    __table_args__ = {"info": {"record": "user"}}


class CanvasEnrollment(Base):
    __tablename__ = "canvas_enrollments"

    id: Mapped[int] = _id("Canvas enrollment id", "id")
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
    deleted_at: Mapped[datetime | None] = _deleted_at()
    row_hash: Mapped[int | None] = _row_hash()

    __table_args__ = (
        sa.Index(None, "course_id"),
        sa.Index(None, "user_id"),
        {"info": {"record": "enrollment"}},
    )


class CanvasAssignment(Base):
    __tablename__ = "canvas_assignments"

    id: Mapped[int] = _id("Canvas assignment id", "id")
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
    position: Mapped[int | None] = _int(_POSITION, "position")
    assignment_group_id: Mapped[int | None] = canvas(
        "Assignment group (weighting category)", "assignment_group_id"
    )
    omit_from_final_grade: Mapped[bool | None] = canvas(
        "Whether it is left out of the final grade", "omit_from_final_grade"
    )
    html_url: Mapped[str | None] = canvas(_HTML_URL, "html_url")
    created_at: Mapped[datetime | None] = canvas(_CREATED, "created_at")
    updated_at: Mapped[datetime | None] = canvas(_UPDATED, "updated_at")
    deleted_at: Mapped[datetime | None] = _deleted_at()
    row_hash: Mapped[int | None] = _row_hash()

    __table_args__ = (sa.Index(None, "course_id"), {"info": {"record": "assignment"}})


class CanvasSubmission(Base):
    """One row per (assignment, student): the student's submission with its grade, late and missing flags."""

    __tablename__ = "canvas_submissions"

    id: Mapped[int] = _id("Canvas submission id", "id")
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
    attempt: Mapped[int | None] = _int("Attempt number of the latest submission", "attempt")
    submission_type: Mapped[str | None] = canvas(
        "`online_text_entry`, `online_upload`, `online_url`, `online_quiz`, ...; NULL when unsubmitted",
        "submission_type",
    )
    deleted_at: Mapped[datetime | None] = _deleted_at(
        "When the submission disappeared from Canvas (its assignment deleted, its student dropped); NULL "
        "while present"
    )
    row_hash: Mapped[int | None] = _row_hash()

    __table_args__ = (
        sa.Index(None, "course_id"),
        sa.Index(None, "assignment_id", "user_id"),
        sa.Index(None, "user_id"),
        {"info": {"record": "submission"}},
    )


class CanvasModule(Base):
    __tablename__ = "canvas_modules"

    id: Mapped[int] = _id("Canvas module id", "id")
    course_id: Mapped[int] = column("Course of the module", source=STAGING_COURSE)
    name: Mapped[str | None] = canvas("Module name", "name")
    position: Mapped[int | None] = _int(_POSITION, "position")
    unlock_at: Mapped[datetime | None] = canvas("Unlock date, when set", "unlock_at")
    published: Mapped[bool | None] = canvas("Published (sent to editors only; NULL otherwise)", "published")
    items_count: Mapped[int | None] = _int("Number of items Canvas reports", "items_count")
    require_sequential_progress: Mapped[bool | None] = canvas(
        "Items must be completed in order", "require_sequential_progress"
    )
    prerequisite_module_ids: Mapped[str | None] = canvas(
        "JSON list of the module ids that must be completed first", "prerequisite_module_ids", kind="json"
    )
    deleted_at: Mapped[datetime | None] = _deleted_at()
    row_hash: Mapped[int | None] = _row_hash()

    __table_args__ = (sa.Index(None, "course_id"), {"info": {"record": "module"}})


class CanvasModuleItem(Base):
    __tablename__ = "canvas_module_items"

    id: Mapped[int] = _id("Canvas module item id", "id")
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
    position: Mapped[int | None] = _int(_POSITION, "position")
    indent: Mapped[int | None] = _int("Indent level in the module", "indent")
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
    deleted_at: Mapped[datetime | None] = _deleted_at()
    row_hash: Mapped[int | None] = _row_hash()

    __table_args__ = (
        sa.Index(None, "course_id"),
        sa.Index(None, "module_id"),
        {"info": {"record": "module item"}},
    )


class CanvasStudentSummary(Base):
    """Analytics per student and course; `tardiness_breakdown` is flattened."""

    __tablename__ = "canvas_student_summaries"

    course_id: Mapped[int] = _id("Course of the summary (primary key with `user_id`)", source=STAGING_COURSE)
    user_id: Mapped[int] = _id("The student (the summary's `id` is the user id)", "id")
    page_views: Mapped[int | None] = _int("Page views in the course", "page_views")
    page_views_level: Mapped[int | None] = _int(
        "Canvas's 0-3 level of page views relative to the class", "page_views_level"
    )
    participations: Mapped[int | None] = _int("Participations (submissions, posts, ...)", "participations")
    participations_level: Mapped[int | None] = _int(
        "Canvas's 0-3 participation level", "participations_level"
    )
    tardiness_on_time: Mapped[int | None] = _int(
        "Assignments submitted on time", "tardiness_breakdown.on_time"
    )
    tardiness_late: Mapped[int | None] = _int("Assignments submitted late", "tardiness_breakdown.late")
    tardiness_missing: Mapped[int | None] = _int("Assignments missing", "tardiness_breakdown.missing")
    tardiness_floating: Mapped[int | None] = _int(
        "Assignments not yet due or without a due date", "tardiness_breakdown.floating"
    )
    tardiness_total: Mapped[int | None] = _int("Assignments counted", "tardiness_breakdown.total")
    deleted_at: Mapped[datetime | None] = _deleted_at(
        "When the student no longer appeared in the course's summaries (soft delete); NULL while present"
    )
    row_hash: Mapped[int | None] = _row_hash()

    __table_args__ = {"info": {"record": "student summary"}}


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


# --- operational -----------------------------------------------------------------------------------------
class CanvasCourseCatalog(Base):
    """Every course the listing ever returned, with when it was first and last seen and when it went."""

    __tablename__ = "canvas_course_catalog"

    course_id: Mapped[int] = _id("Canvas course id; also the partition key of `canvas_course`")
    name: Mapped[str | None] = column("Course name at the last listing")
    course_code: Mapped[str | None] = column("Course code at the last listing")
    workflow_state: Mapped[str | None] = column("Course state at the last listing")
    account_id: Mapped[int | None] = column("Account of the course")
    enrollment_term_id: Mapped[int | None] = column("Term of the course")
    first_seen_at: Mapped[datetime] = column("First listing that returned the course")
    last_seen_at: Mapped[datetime | None] = column("Latest listing that returned the course")
    gone_at: Mapped[datetime | None] = column(
        "When the course was found gone (missing from a full listing, or 404); NULL while it exists"
    )
    gone_reason: Mapped[str | None] = column("Why the course was marked gone")


class CanvasStaging(Base):
    """How each (entity, course)'s staged records were fetched: one row per (entity, course), written in the
    same transaction as its records (`canvas_staging_records`)."""

    __tablename__ = "canvas_staging"

    entity: Mapped[str] = column(
        "Staging entity: the name of a `staging/<entity>` asset (`courses`, `enrollments`, `submissions`, ...)",
        type_=sa.String(64),
        primary_key=True,
    )
    course_id: Mapped[int] = _id("Canvas course id whose records these are")
    record_count: Mapped[int] = column("Number of staged records", type_=sa.Integer())
    fetched_at: Mapped[datetime] = column("When the extract finished fetching them from Canvas")
    run_id: Mapped[str | None] = column("The Dagster run that fetched them", type_=sa.String(64))
    fetch_mode: Mapped[str | None] = column(
        "`full` (every record fetched) or `incremental` (changes fetched and merged into the previous records)",
        type_=sa.String(16),
    )
    full_fetched_at: Mapped[datetime | None] = column(
        "When the records were last fetched in full (an incremental fetch keeps the previous value)"
    )
    watermark: Mapped[datetime | None] = column(
        "Incremental entities: the latest Canvas change time among the records; the next fetch asks for "
        "what changed after it"
    )


class CanvasStagingRecords(Base):
    """Raw Canvas records, one row per object: Layer 1 rebuilds from here. A full fetch replaces a course's
    rows of an entity in one transaction, writing only those that changed; an incremental one upserts the
    changed objects and deletes those whose parent vanished."""

    __tablename__ = "canvas_staging_records"

    entity: Mapped[str] = column(
        "Staging entity (as in `canvas_staging`)", type_=sa.String(64), primary_key=True
    )
    course_id: Mapped[int] = _id("Canvas course id whose record this is")
    record_key: Mapped[str] = column(
        "Canvas `id` as text; `<id>#<n>` for a repeat of an id, `#<n>` for a record without a usable id "
        "(n: its position in the fetched list)",
        type_=sa.String(64),
        primary_key=True,
    )
    record: Mapped[str] = column("The raw record, as JSON text, as Canvas sent it")


class CanvasSyncLog(Base):
    """One row per course, entity and stage of a run: the per-course figures Dagster metadata cannot hold."""

    __tablename__ = "canvas_sync_log"

    id: Mapped[int] = column("Surrogate key", type_=SurrogateKey, primary_key=True, autoincrement=True)
    run_id: Mapped[str | None] = column("Dagster run", type_=sa.String(64))
    course_id: Mapped[int | None] = column("Canvas course id")
    entity: Mapped[str | None] = column(
        "Entity (`*` for a row written by the failure reporter for a whole failed run)", type_=sa.String(64)
    )
    stage: Mapped[str | None] = column("`extract`, `transform`, `load` (or `run`)", type_=sa.String(16))
    records: Mapped[int | None] = column("Records fetched")
    api_calls: Mapped[int | None] = column("HTTP requests made for it (retries included)")
    started_at: Mapped[datetime | None] = column("Start")
    finished_at: Mapped[datetime | None] = column("End")
    duration_s: Mapped[float | None] = column("Seconds")
    status: Mapped[str | None] = column(
        "`success`, `failed`, `gone` or `skipped` (analytics not available)", type_=sa.String(16)
    )
    error_type: Mapped[str | None] = column("Error class, e.g. `CanvasServerError`", type_=sa.String(128))
    error_category: Mapped[str | None] = column(
        "`canvas_api`, `timeout`, `configuration`, `transformation` or `validation`", type_=sa.String(64)
    )
    message: Mapped[str | None] = column("Token-free error message")
    repeated_ids: Mapped[str | None] = column(
        "JSON list of the ids Canvas returned more than once in the course's list (students, enrollments, "
        "assignments, modules); NULL when none"
    )

    __table_args__ = (sa.Index(None, "run_id"), sa.Index(None, "course_id", "entity"))


class CanvasCourseSync(Base):
    """When a load last confirmed one course's rows of one entity against Canvas: one row per (entity, course).

    Layer-1 rows are written only when Canvas changed them, so this is where "last synced" lives:
    `confirmed_at` is the `synced_at` of the latest load that covered the course (every row of the course
    present in that load was checked, and, on a full refresh, every row missing from it soft-deleted),
    `fetched_at` when that load's records were fetched from Canvas (staging), `changed_at` the latest load
    that wrote any row of the course (insert, update, soft delete or restore); students are global rows
    that name no course, so their `changed_at` stays NULL.
    """

    __tablename__ = "canvas_course_sync"

    entity: Mapped[str] = column(
        "Entity (primary key with `course_id`)", type_=sa.String(64), primary_key=True
    )
    course_id: Mapped[int] = _id("Canvas course id")
    confirmed_at: Mapped[datetime] = column(
        "The latest load that covered the course: every row present was compared with Canvas, missing ones "
        "soft-deleted"
    )
    fetched_at: Mapped[datetime | None] = column(
        "When that load's records were fetched from Canvas (staging)"
    )
    changed_at: Mapped[datetime | None] = column(
        "The latest load that wrote any row of the course (insert, update, soft delete, restore); NULL for "
        "students"
    )
    run_id: Mapped[str | None] = column("The Dagster run of the confirming load", type_=sa.String(64))

    __table_args__ = (sa.Index(None, "course_id"),)


class CanvasRejectedRecord(Base):
    """Quarantine: records a transformer could not turn into rows, with the reason and the raw payload."""

    __tablename__ = "canvas_rejected_records"

    id: Mapped[int] = column("Surrogate key", type_=SurrogateKey, primary_key=True, autoincrement=True)
    run_id: Mapped[str | None] = column("The Dagster run that rejected the record", type_=sa.String(64))
    entity: Mapped[str] = column("Staging entity of the record", type_=sa.String(64))
    course_id: Mapped[int | None] = column("Canvas course id")
    canvas_id: Mapped[int | None] = column("Canvas id of the rejected object, when it has a usable one")
    reason: Mapped[str] = column("Why it could not be turned into a row (field and problem)")
    payload: Mapped[str | None] = column("The raw record (JSON)")
    rejected_at: Mapped[datetime] = column("When the record was rejected")

    __table_args__ = (sa.Index(None, "run_id"), sa.Index(None, "entity", "course_id"))


metadata = Base.metadata


@dataclass(frozen=True)
class History:
    """A Layer-1 table whose changes are also appended to a history table (grades over time).

    A history row is written for a row that is new with a value in `first_when`, or whose `columns` differ
    from the stored ones; it holds `columns` as they stand after the load, the row's identity (`ids`:
    history column -> Layer-1 column), `recorded_at` and `run_id`.
    """

    table: str
    ids: tuple[tuple[str, str], ...]
    columns: tuple[str, ...]
    first_when: tuple[str, ...]


HISTORY: dict[str, History] = {
    "canvas_enrollments": History(
        "canvas_score_history",
        ids=(("enrollment_id", "id"), ("course_id", "course_id"), ("user_id", "user_id")),
        columns=("current_score", "final_score", "current_grade", "final_grade"),
        first_when=("current_score", "final_score", "current_grade", "final_grade"),
    ),
    "canvas_submissions": History(
        "canvas_submission_score_history",
        ids=(
            ("submission_id", "id"),
            ("course_id", "course_id"),
            ("assignment_id", "assignment_id"),
            ("user_id", "user_id"),
        ),
        columns=("score", "grade", "workflow_state"),
        first_when=("score", "grade"),
    ),
}

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
