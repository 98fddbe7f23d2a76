"""Layer-1 tables of how a course is organised and graded: sections, assignment groups, grading periods, and
the student enrollments' scores per grading period (with their history).

They are part of the one schema (`models` imports this module before it lists the Layer-1 tables; it stays
below the size every module keeps). docs/canvas-api.md §7 has the Canvas rules behind each.
"""

from __future__ import annotations

from datetime import datetime

import sqlalchemy as sa
from sqlalchemy.orm import Mapped

from canvas_assets.warehouse.columns import (
    LOAD,
    STAGING_COURSE,
    Base,
    SurrogateKey,
    canvas,
    canvas_id,
    canvas_int,
    column,
    row_hash_column,
    soft_delete_column,
)


class CanvasSection(Base):
    """Sections as SectionsController#index lists them: the course's active sections, including those
    cross-listed into it from another course (`nonxlist_course_id`); a section cross-listed out of a course
    moves to the other course's list."""

    __tablename__ = "canvas_sections"

    id: Mapped[int] = canvas_id("Canvas section id", "id")
    course_id: Mapped[int] = canvas(
        "Course the section is in now (the course it is cross-listed into, if it is)",
        "course_id",
        fallback=STAGING_COURSE,
    )
    name: Mapped[str | None] = canvas("Section name", "name")
    sis_section_id: Mapped[str | None] = canvas("SIS id, when the token may see it", "sis_section_id")
    sis_course_id: Mapped[str | None] = canvas(
        "SIS id of the section's course, when the token may see it", "sis_course_id"
    )
    integration_id: Mapped[str | None] = canvas("Integration id, when the token may see it", "integration_id")
    start_at: Mapped[datetime | None] = canvas("Section start, when set", "start_at")
    end_at: Mapped[datetime | None] = canvas("Section end, when set", "end_at")
    restrict_enrollments_to_section_dates: Mapped[bool | None] = canvas(
        "Whether enrollments follow the section's dates", "restrict_enrollments_to_section_dates"
    )
    nonxlist_course_id: Mapped[int | None] = canvas(
        "For a cross-listed section: the course it came from (NULL when not cross-listed)",
        "nonxlist_course_id",
    )
    total_students: Mapped[int | None] = canvas_int(
        "Active and invited students of the section (`include[]=total_students`)", "total_students"
    )
    deleted_at: Mapped[datetime | None] = soft_delete_column(
        "When the section left the course's list (deleted, or cross-listed into another course); NULL while "
        "listed"
    )
    row_hash: Mapped[int | None] = row_hash_column()

    __table_args__ = (sa.Index(None, "course_id"), {"info": {"record": "section"}})


class CanvasAssignmentGroup(Base):
    """Assignment groups (grading categories) with their weights and drop rules."""

    __tablename__ = "canvas_assignment_groups"

    id: Mapped[int] = canvas_id("Canvas assignment group id", "id")
    course_id: Mapped[int] = column("Course of the group", source=STAGING_COURSE)
    name: Mapped[str | None] = canvas("Group name", "name")
    position: Mapped[int | None] = canvas_int("Order of the group in the course", "position")
    group_weight: Mapped[float | None] = canvas(
        "Percent of the course grade, when the course's `apply_assignment_group_weights` is true",
        "group_weight",
    )
    drop_lowest: Mapped[int | None] = canvas_int(
        "Lowest scores dropped from the group (NULL when no rule)", "rules.drop_lowest"
    )
    drop_highest: Mapped[int | None] = canvas_int(
        "Highest scores dropped from the group (NULL when no rule)", "rules.drop_highest"
    )
    never_drop: Mapped[str | None] = canvas(
        "JSON list of the assignment ids never dropped (NULL when none)", "rules.never_drop", kind="json"
    )
    sis_source_id: Mapped[str | None] = canvas("SIS id, when set", "sis_source_id")
    integration_data: Mapped[str | None] = canvas(
        "JSON object of integration data, when set", "integration_data", kind="json"
    )
    deleted_at: Mapped[datetime | None] = soft_delete_column()
    row_hash: Mapped[int | None] = row_hash_column()

    __table_args__ = (sa.Index(None, "course_id"), {"info": {"record": "assignment group"}})


class CanvasGradingPeriod(Base):
    """The grading periods that apply to a course: its own, or those of its term's grading period group
    (one period can then apply to many courses: the key is course and period)."""

    __tablename__ = "canvas_grading_periods"

    course_id: Mapped[int] = canvas_id(
        "Course the period applies to (primary key with `id`)", source=STAGING_COURSE
    )
    id: Mapped[int] = canvas_id("Canvas grading period id", "id")
    title: Mapped[str | None] = canvas("Period title", "title")
    start_date: Mapped[datetime | None] = canvas("Start of the period", "start_date")
    end_date: Mapped[datetime | None] = canvas("End of the period", "end_date")
    close_date: Mapped[datetime | None] = canvas(
        "When grades in the period can no longer change", "close_date"
    )
    weight: Mapped[float | None] = canvas(
        "Percent of the course grade, when the period group is weighted", "weight"
    )
    is_closed: Mapped[bool | None] = canvas("Whether the close date has passed", "is_closed")
    grading_period_group_id: Mapped[int | None] = canvas(
        "The grading period group (set) the period belongs to", "grading_period_group_id"
    )
    deleted_at: Mapped[datetime | None] = soft_delete_column()
    row_hash: Mapped[int | None] = row_hash_column()

    __table_args__ = {"info": {"record": "grading period"}}


class CanvasEnrollmentPeriodScore(Base):
    """A student enrollment's scores within one grading period (`GET /courses/:id/enrollments` with
    `grading_period_id`: the `grades` object then holds that period's scores)."""

    __tablename__ = "canvas_enrollment_period_scores"

    enrollment_id: Mapped[int] = canvas_id("The enrollment (`canvas_enrollments.id`)", "id")
    grading_period_id: Mapped[int] = canvas_id(
        "The grading period (`canvas_grading_periods.id`; the request's `grading_period_id`, staged with "
        "the record)",
        "grading_period_id",
    )
    course_id: Mapped[int] = canvas("Course of the enrollment", "course_id", fallback=STAGING_COURSE)
    user_id: Mapped[int] = canvas("The student (`canvas_students.id`)", "user_id", required=True)
    current_score: Mapped[float | None] = canvas(
        "Percent over the period's graded work only", "grades.current_score"
    )
    final_score: Mapped[float | None] = canvas(
        "Percent over the period's work, ungraded counted as zero", "grades.final_score"
    )
    current_grade: Mapped[str | None] = canvas("Letter grade for `current_score`", "grades.current_grade")
    final_grade: Mapped[str | None] = canvas("Letter grade for `final_score`", "grades.final_grade")
    unposted_current_score: Mapped[float | None] = canvas(
        "`current_score` including unposted grades", "grades.unposted_current_score"
    )
    unposted_final_score: Mapped[float | None] = canvas(
        "`final_score` including unposted grades", "grades.unposted_final_score"
    )
    unposted_current_grade: Mapped[str | None] = canvas(
        "Grade for `unposted_current_score`", "grades.unposted_current_grade"
    )
    unposted_final_grade: Mapped[str | None] = canvas(
        "Grade for `unposted_final_score`", "grades.unposted_final_grade"
    )
    override_score: Mapped[float | None] = canvas(
        "The period's score override (only when set)", "grades.override_score"
    )
    override_grade: Mapped[str | None] = canvas(
        "The period's grade override (only when set)", "grades.override_grade"
    )
    deleted_at: Mapped[datetime | None] = soft_delete_column()
    row_hash: Mapped[int | None] = row_hash_column()

    __table_args__ = (
        sa.Index(None, "course_id"),
        sa.Index(None, "user_id"),
        {"info": {"record": "enrollment"}},
    )


class CanvasEnrollmentPeriodScoreHistory(Base):
    """One row each time an enrollment's scores in a grading period are first seen or change."""

    __tablename__ = "canvas_enrollment_period_score_history"

    id: Mapped[int] = column(
        "Surrogate key", source=LOAD, type_=SurrogateKey, primary_key=True, autoincrement=True
    )
    enrollment_id: Mapped[int] = column("The enrollment whose period scores changed", source=LOAD)
    grading_period_id: Mapped[int] = column("The grading period", source=LOAD)
    course_id: Mapped[int] = column("Course of the enrollment", source=LOAD)
    user_id: Mapped[int | None] = column("User of the enrollment", source=LOAD)
    recorded_at: Mapped[datetime] = column("The load that saw the new scores (its sync time)", source=LOAD)
    current_score: Mapped[float | None] = column("`current_score` as it became at `recorded_at`", source=LOAD)
    final_score: Mapped[float | None] = column("`final_score` as it became at `recorded_at`", source=LOAD)
    current_grade: Mapped[str | None] = column("`current_grade` as it became at `recorded_at`", source=LOAD)
    final_grade: Mapped[str | None] = column("`final_grade` as it became at `recorded_at`", source=LOAD)
    run_id: Mapped[str | None] = column("The Dagster run of that load", source=LOAD, type_=sa.String(64))

    __table_args__ = (
        # Named: the convention's name would pass PostgreSQL's 63 characters.
        sa.Index(
            "ix_canvas_period_score_history_enrollment", "enrollment_id", "grading_period_id", "recorded_at"
        ),
        sa.Index(None, "course_id"),
    )
