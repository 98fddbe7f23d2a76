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


def _id(**kw: Any) -> Mapped[int]:
    return mapped_column(sa.BigInteger(), primary_key=True, autoincrement=False, **kw)


# --- Layer 1 ---------------------------------------------------------------------------------------------
class CanvasCourse(Base):
    __tablename__ = "canvas_courses"

    id: Mapped[int] = _id()
    name: Mapped[str | None]
    course_code: Mapped[str | None]
    workflow_state: Mapped[str | None]
    account_id: Mapped[int | None]
    root_account_id: Mapped[int | None]
    enrollment_term_id: Mapped[int | None]
    uuid: Mapped[str | None]
    term_name: Mapped[str | None]
    term_start_at: Mapped[datetime | None]
    term_end_at: Mapped[datetime | None]
    start_at: Mapped[datetime | None]
    end_at: Mapped[datetime | None]
    created_at: Mapped[datetime | None]
    time_zone: Mapped[str | None]
    total_students: Mapped[int | None] = mapped_column(sa.Integer())
    is_public: Mapped[bool | None]
    public_description: Mapped[str | None]
    syllabus_body: Mapped[str | None]
    default_view: Mapped[str | None]
    sis_course_id: Mapped[str | None]
    course_format: Mapped[str | None]
    license: Mapped[str | None]
    settings: Mapped[str | None]  # JSON text of GET /courses/:id/settings
    deleted_at: Mapped[datetime | None]

    __table_args__ = (sa.Index(None, "account_id"),)


class CanvasStudent(Base):
    """Canvas users enrolled as students somewhere. Global (no course): never soft-deleted."""

    __tablename__ = "canvas_students"

    id: Mapped[int] = _id()
    name: Mapped[str | None]
    sortable_name: Mapped[str | None]
    short_name: Mapped[str | None]
    sis_user_id: Mapped[str | None]
    login_id: Mapped[str | None]
    email: Mapped[str | None]
    pronouns: Mapped[str | None]
    avatar_url: Mapped[str | None]
    created_at: Mapped[datetime | None]


class CanvasEnrollment(Base):
    __tablename__ = "canvas_enrollments"

    id: Mapped[int] = _id()
    course_id: Mapped[int]
    user_id: Mapped[int]
    course_section_id: Mapped[int | None]
    type: Mapped[str | None]
    role: Mapped[str | None]
    role_id: Mapped[int | None]
    enrollment_state: Mapped[str | None]
    associated_user_id: Mapped[int | None]
    start_at: Mapped[datetime | None]
    end_at: Mapped[datetime | None]
    created_at: Mapped[datetime | None]
    updated_at: Mapped[datetime | None]
    last_activity_at: Mapped[datetime | None]
    last_attended_at: Mapped[datetime | None]
    total_activity_time: Mapped[int | None]
    current_score: Mapped[float | None]
    final_score: Mapped[float | None]
    current_grade: Mapped[str | None]
    final_grade: Mapped[str | None]
    unposted_current_score: Mapped[float | None]
    unposted_final_score: Mapped[float | None]
    unposted_current_grade: Mapped[str | None]
    unposted_final_grade: Mapped[str | None]
    override_score: Mapped[float | None]
    override_grade: Mapped[str | None]
    deleted_at: Mapped[datetime | None]

    __table_args__ = (sa.Index(None, "course_id"), sa.Index(None, "user_id"))


class CanvasAssignment(Base):
    __tablename__ = "canvas_assignments"

    id: Mapped[int] = _id()
    course_id: Mapped[int]
    name: Mapped[str | None]
    description: Mapped[str | None]
    due_at: Mapped[datetime | None]
    unlock_at: Mapped[datetime | None]
    lock_at: Mapped[datetime | None]
    points_possible: Mapped[float | None]
    grading_type: Mapped[str | None]
    submission_types: Mapped[str | None]  # JSON list
    published: Mapped[bool | None]
    workflow_state: Mapped[str | None]
    position: Mapped[int | None] = mapped_column(sa.Integer())
    assignment_group_id: Mapped[int | None]
    omit_from_final_grade: Mapped[bool | None]
    html_url: Mapped[str | None]
    created_at: Mapped[datetime | None]
    updated_at: Mapped[datetime | None]
    deleted_at: Mapped[datetime | None]

    __table_args__ = (sa.Index(None, "course_id"),)


class CanvasModule(Base):
    __tablename__ = "canvas_modules"

    id: Mapped[int] = _id()
    course_id: Mapped[int]
    name: Mapped[str | None]
    position: Mapped[int | None] = mapped_column(sa.Integer())
    unlock_at: Mapped[datetime | None]
    published: Mapped[bool | None]
    items_count: Mapped[int | None] = mapped_column(sa.Integer())
    require_sequential_progress: Mapped[bool | None]
    prerequisite_module_ids: Mapped[str | None]  # JSON list
    deleted_at: Mapped[datetime | None]

    __table_args__ = (sa.Index(None, "course_id"),)


class CanvasModuleItem(Base):
    __tablename__ = "canvas_module_items"

    id: Mapped[int] = _id()
    course_id: Mapped[int]
    module_id: Mapped[int]
    title: Mapped[str | None]
    type: Mapped[str | None]
    content_id: Mapped[int | None]
    position: Mapped[int | None] = mapped_column(sa.Integer())
    indent: Mapped[int | None] = mapped_column(sa.Integer())
    published: Mapped[bool | None]
    url: Mapped[str | None]
    html_url: Mapped[str | None]
    page_url: Mapped[str | None]
    external_url: Mapped[str | None]
    completion_requirement: Mapped[str | None]  # JSON object
    deleted_at: Mapped[datetime | None]

    __table_args__ = (sa.Index(None, "course_id"), sa.Index(None, "module_id"))


class CanvasStudentSummary(Base):
    __tablename__ = "canvas_student_summaries"

    course_id: Mapped[int] = _id()
    user_id: Mapped[int] = _id()
    page_views: Mapped[int | None] = mapped_column(sa.Integer())
    page_views_level: Mapped[int | None] = mapped_column(sa.Integer())
    participations: Mapped[int | None] = mapped_column(sa.Integer())
    participations_level: Mapped[int | None] = mapped_column(sa.Integer())
    tardiness_on_time: Mapped[int | None] = mapped_column(sa.Integer())
    tardiness_late: Mapped[int | None] = mapped_column(sa.Integer())
    tardiness_missing: Mapped[int | None] = mapped_column(sa.Integer())
    tardiness_floating: Mapped[int | None] = mapped_column(sa.Integer())
    tardiness_total: Mapped[int | None] = mapped_column(sa.Integer())
    deleted_at: Mapped[datetime | None]


class CanvasScoreHistory(Base):
    """One row each time an enrollment's scores are first seen or change: grades over time."""

    __tablename__ = "canvas_score_history"

    id: Mapped[int] = mapped_column(SurrogateKey, primary_key=True, autoincrement=True)
    enrollment_id: Mapped[int]
    course_id: Mapped[int]
    user_id: Mapped[int | None]
    recorded_at: Mapped[datetime]
    current_score: Mapped[float | None]
    final_score: Mapped[float | None]
    current_grade: Mapped[str | None]
    final_grade: Mapped[str | None]
    run_id: Mapped[str | None] = mapped_column(sa.String(64))

    __table_args__ = (sa.Index(None, "enrollment_id", "recorded_at"), sa.Index(None, "course_id"))


# --- operational -----------------------------------------------------------------------------------------
class CanvasCourseCatalog(Base):
    """Every course the listing ever returned, with when it was first and last seen and when it went."""

    __tablename__ = "canvas_course_catalog"

    course_id: Mapped[int] = _id()
    name: Mapped[str | None]
    course_code: Mapped[str | None]
    workflow_state: Mapped[str | None]
    account_id: Mapped[int | None]
    enrollment_term_id: Mapped[int | None]
    first_seen_at: Mapped[datetime]
    last_seen_at: Mapped[datetime | None]
    gone_at: Mapped[datetime | None]
    gone_reason: Mapped[str | None]


class CanvasStaging(Base):
    """Raw Canvas records per (entity, course), replaced atomically: Layer 1 rebuilds from here."""

    __tablename__ = "canvas_staging"

    entity: Mapped[str] = mapped_column(sa.String(64), primary_key=True)
    course_id: Mapped[int] = _id()
    records: Mapped[str]  # JSON list of the raw records
    record_count: Mapped[int] = mapped_column(sa.Integer())
    fetched_at: Mapped[datetime]
    run_id: Mapped[str | None] = mapped_column(sa.String(64))


class CanvasSyncLog(Base):
    """One row per course, entity and stage of a run: the per-course figures Dagster metadata cannot hold."""

    __tablename__ = "canvas_sync_log"

    id: Mapped[int] = mapped_column(SurrogateKey, primary_key=True, autoincrement=True)
    run_id: Mapped[str | None] = mapped_column(sa.String(64))
    course_id: Mapped[int | None]
    entity: Mapped[str | None] = mapped_column(sa.String(64))
    stage: Mapped[str | None] = mapped_column(sa.String(16))  # extract | transform | load
    records: Mapped[int | None]
    api_calls: Mapped[int | None]
    started_at: Mapped[datetime | None]
    finished_at: Mapped[datetime | None]
    duration_s: Mapped[float | None]
    status: Mapped[str | None] = mapped_column(sa.String(16))  # success | failed | gone | skipped
    error_type: Mapped[str | None] = mapped_column(sa.String(128))
    error_category: Mapped[str | None] = mapped_column(sa.String(64))
    message: Mapped[str | None]

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

    entity: Mapped[str] = mapped_column(sa.String(64), primary_key=True)
    course_id: Mapped[int] = _id()
    confirmed_at: Mapped[datetime]
    fetched_at: Mapped[datetime | None]
    changed_at: Mapped[datetime | None]
    run_id: Mapped[str | None] = mapped_column(sa.String(64))

    __table_args__ = (sa.Index(None, "course_id"),)


class CanvasRejectedRecord(Base):
    """Quarantine: records a transformer could not turn into rows, with the reason and the raw payload."""

    __tablename__ = "canvas_rejected_records"

    id: Mapped[int] = mapped_column(SurrogateKey, primary_key=True, autoincrement=True)
    run_id: Mapped[str | None] = mapped_column(sa.String(64))
    entity: Mapped[str] = mapped_column(sa.String(64))
    course_id: Mapped[int | None]
    canvas_id: Mapped[int | None]
    reason: Mapped[str]
    payload: Mapped[str | None]  # JSON
    rejected_at: Mapped[datetime]

    __table_args__ = (sa.Index(None, "run_id"), sa.Index(None, "entity", "course_id"))


metadata = Base.metadata

LAYER1_TABLES: tuple[str, ...] = (
    "canvas_courses",
    "canvas_students",
    "canvas_enrollments",
    "canvas_assignments",
    "canvas_modules",
    "canvas_module_items",
    "canvas_student_summaries",
)
OPERATIONAL_TABLES: tuple[str, ...] = (
    "canvas_score_history",
    "canvas_course_catalog",
    "canvas_staging",
    "canvas_sync_log",
    "canvas_course_sync",
    "canvas_rejected_records",
)
ALL_TABLES: tuple[str, ...] = LAYER1_TABLES + OPERATIONAL_TABLES

# Which column scopes a Layer-1 table's rows to a course (soft delete works per course), None = global.
COURSE_SCOPE_COLUMN: dict[str, str | None] = {
    "canvas_courses": "id",
    "canvas_students": None,
    "canvas_enrollments": "course_id",
    "canvas_assignments": "course_id",
    "canvas_modules": "course_id",
    "canvas_module_items": "course_id",
    "canvas_student_summaries": "course_id",
}
# The column holding the Canvas id of the object a row mirrors (what a quarantined record names).
CANVAS_ID_COLUMN: dict[str, str] = {
    "canvas_courses": "id",
    "canvas_students": "id",
    "canvas_enrollments": "id",
    "canvas_assignments": "id",
    "canvas_modules": "id",
    "canvas_module_items": "id",
    "canvas_student_summaries": "user_id",
}


def table(name: str) -> sa.Table:
    """The `Table` called `name` (KeyError names the known ones)."""
    try:
        return metadata.tables[name]
    except KeyError:
        raise KeyError(f"unknown warehouse table {name!r}; known: {sorted(metadata.tables)}") from None
