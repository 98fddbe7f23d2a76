"""The operational tables: the course catalog, raw staging, the per-course sync log, the confirmations of
`canvas_course_sync` and the quarantine of rejected records."""

from __future__ import annotations

from datetime import datetime

import sqlalchemy as sa
from sqlalchemy.orm import Mapped

from canvas_assets.warehouse.columns import Base, SurrogateKey, canvas_id, column


class CanvasCourseCatalog(Base):
    """Every course the listing ever returned, with when it was first and last seen and when it went."""

    __tablename__ = "canvas_course_catalog"

    course_id: Mapped[int] = canvas_id("Canvas course id; also the partition key of `canvas_course`")
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
    """How each (entity, course)'s raw records were fetched; the records are `canvas_staging_records`."""

    __tablename__ = "canvas_staging"

    entity: Mapped[str] = column(
        "Staging entity: the name of a `staging/<entity>` asset (`courses`, `enrollments`, `submissions`, ...)",
        type_=sa.String(64),
        primary_key=True,
    )
    course_id: Mapped[int] = canvas_id("Canvas course id whose records these are")
    records_digest: Mapped[str | None] = column(
        "SHA-256 of the staged records (keys and texts): an unchanged full fetch writes none; NULL after an "
        "incremental fetch",
        type_=sa.String(64),
    )
    record_count: Mapped[int] = column("Number of records", type_=sa.Integer())
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


class CanvasStagingRecord(Base):
    """Raw Canvas records, one row per record of each staged (entity, course): Layer 1 rebuilds from here."""

    __tablename__ = "canvas_staging_records"

    entity: Mapped[str] = column(
        "Staging entity (as in `canvas_staging`)", type_=sa.String(64), primary_key=True
    )
    course_id: Mapped[int] = canvas_id("Canvas course id whose record this is")
    record_key: Mapped[str] = column(
        "The record's Canvas id, or its string id (an audit event's uuid); `<id>#<position>` for an id repeated "
        "in a fetch, `#<position>` without one",
        type_=sa.String(80),
        primary_key=True,
    )
    record: Mapped[str] = column("The record's JSON text as Canvas sent it")


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
    course_id: Mapped[int] = canvas_id("Canvas course id")
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
