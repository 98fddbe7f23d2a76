"""Layer-1 models of the account's enrollment terms and of Canvas's grade change audit log.

They live beside `models.py` (which imports this module before it lists the Layer-1 tables) only to keep
each module short; they follow its conventions and its column helpers (docs/maintaining.md).
"""

from __future__ import annotations

from datetime import datetime

import sqlalchemy as sa
from sqlalchemy.orm import Mapped

from canvas_assets.warehouse.columns import (
    STAGING_COURSE,
    Base,
    canvas,
    canvas_id,
    row_hash_column,
    soft_delete_column,
)


class CanvasTerm(Base):
    """The root account's enrollment terms (TermsApiController#index with `workflow_state[]=all`): an
    account-level table, not scoped to a course; `canvas_courses.enrollment_term_id` joins it."""

    __tablename__ = "canvas_terms"

    id: Mapped[int] = canvas_id("Canvas enrollment term id", "id")
    name: Mapped[str | None] = canvas("Term name, e.g. `Fall 2025`", "name")
    sis_term_id: Mapped[str | None] = canvas(
        "SIS id of the term, when the token may see SIS data", "sis_term_id"
    )
    start_at: Mapped[datetime | None] = canvas("Term start (may be unset)", "start_at")
    end_at: Mapped[datetime | None] = canvas("Term end (may be unset)", "end_at")
    workflow_state: Mapped[str | None] = canvas("`active` or `deleted`", "workflow_state")
    grading_period_group_id: Mapped[int | None] = canvas(
        "Grading period set the term uses, when one is attached", "grading_period_group_id"
    )
    created_at: Mapped[datetime | None] = canvas("When the term was created in Canvas", "created_at")
    deleted_at: Mapped[datetime | None] = soft_delete_column(
        "When a complete term list no longer held the term (soft delete); NULL while present"
    )
    row_hash: Mapped[int | None] = row_hash_column()

    __table_args__ = {"info": {"record": "enrollment term"}}


class CanvasGradeChange(Base):
    """One row per event of Canvas's grade change audit log (GradeChangeAuditApiController#for_course).

    Events are append-only: Canvas never edits one, so a row is written once and never soft-deleted. An
    event that ages out of Canvas's audit retention stays here: this table keeps what Canvas once said."""

    __tablename__ = "canvas_grade_changes"

    id: Mapped[str] = canvas(
        "Canvas's event id (a uuid)", "id", required=True, primary_key=True, type_=sa.Text()
    )
    course_id: Mapped[int] = canvas("Course of the event", "links.course", fallback=STAGING_COURSE)
    created_at: Mapped[datetime | None] = canvas("When the grade changed", "created_at")
    event_type: Mapped[str | None] = canvas(
        "`grade_change`, or what Canvas calls the change (`grade_change_override`, ...)", "event_type"
    )
    assignment_id: Mapped[int | None] = canvas(
        "Assignment graded (NULL for a course's final grade override)", "links.assignment"
    )
    student_id: Mapped[int | None] = canvas(
        "Student graded (NULL while the assignment is anonymous and muted)", "links.student"
    )
    grader_id: Mapped[int | None] = canvas(
        "Who changed the grade (NULL when Canvas graded it)", "links.grader"
    )
    grade_before: Mapped[str | None] = canvas("Grade before the change", "grade_before")
    grade_after: Mapped[str | None] = canvas("Grade after the change", "grade_after")
    excused_before: Mapped[bool | None] = canvas(
        "Whether the submission was excused before", "excused_before"
    )
    excused_after: Mapped[bool | None] = canvas("Whether the submission was excused after", "excused_after")
    graded_anonymously: Mapped[bool | None] = canvas(
        "Whether the grader could not see the student's name (NULL for old events)", "graded_anonymously"
    )
    points_possible_before: Mapped[float | None] = canvas(
        "Assignment's points possible before the change", "points_possible_before"
    )
    points_possible_after: Mapped[float | None] = canvas(
        "Assignment's points possible after the change", "points_possible_after"
    )
    version_number: Mapped[str | None] = canvas("Version of the submission the change made", "version_number")
    request_id: Mapped[str | None] = canvas(
        "The request that changed the grade (its page view id, when Canvas kept the page view)",
        "links.page_view",
    )
    course_override_grade: Mapped[bool | None] = canvas(
        "True for a change of the course's final grade override", "course_override_grade"
    )
    row_hash: Mapped[int | None] = row_hash_column()

    __table_args__ = (
        sa.Index(None, "course_id", "created_at"),
        {"info": {"record": "grade change event"}},
    )
