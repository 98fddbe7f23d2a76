"""Enrollments: GET /courses/:id/enrollments (every state but deleted) -> canvas_enrollments.

Scores and grades are flattened from the enrollment's `grades` object (StudentEnrollment only; others get
NULL). The record's own course_id is kept (the staging course fills it in when absent). With scores off the
score columns are not produced, so the loader neither overwrites them nor records score history.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from canvas_assets.transform.base import Field, TransformOptions, TransformResult, transform_records

ENTITY = "enrollments"
TABLE = "canvas_enrollments"

SCORES = "student_scores"
DETAILS = "student_enrollment_details"

FIELDS: tuple[Field, ...] = (
    Field("id", "id", required=True),
    Field("course_id", "id"),
    Field("user_id", "id", required=True),
    Field("course_section_id", "id"),
    Field("type", "str"),
    Field("role", "str"),
    Field("role_id", "id"),
    Field("enrollment_state", "str"),
    Field("associated_user_id", "id"),
    Field("start_at", "ts"),
    Field("end_at", "ts"),
    Field("created_at", "ts"),
    Field("updated_at", "ts"),
    Field("last_activity_at", "ts", group=DETAILS),
    Field("last_attended_at", "ts", group=DETAILS),
    Field("total_activity_time", "int", group=DETAILS),
    Field("current_score", "float", ("grades", "current_score"), group=SCORES),
    Field("final_score", "float", ("grades", "final_score"), group=SCORES),
    Field("current_grade", "str", ("grades", "current_grade"), group=SCORES),
    Field("final_grade", "str", ("grades", "final_grade"), group=SCORES),
    Field("unposted_current_score", "float", ("grades", "unposted_current_score"), group=SCORES),
    Field("unposted_final_score", "float", ("grades", "unposted_final_score"), group=SCORES),
    Field("unposted_current_grade", "str", ("grades", "unposted_current_grade"), group=SCORES),
    Field("unposted_final_grade", "str", ("grades", "unposted_final_grade"), group=SCORES),
    Field("override_score", "float", ("grades", "override_score"), group=SCORES),
    Field("override_grade", "str", ("grades", "override_grade"), group=SCORES),
)


def transform_enrollments(
    records_by_course: Mapping[int, list[dict[str, Any]]], options: TransformOptions
) -> TransformResult:
    frame, rejected, n = transform_records(
        ENTITY, TABLE, FIELDS, ("id",), records_by_course, options, staging_course_column="course_id"
    )
    return TransformResult(ENTITY, {TABLE: frame}, rejected, n)
