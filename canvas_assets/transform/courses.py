"""Courses: the one course object per staging partition (GET /courses/:id with include[]) -> canvas_courses.

The `term` include gives term_name and the term dates; the settings object (GET /courses/:id/settings),
when the profile asks for it, arrives under the extra key `settings` and is stored as JSON text.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from canvas_assets.transform.base import Field, TransformOptions, TransformResult, transform_records

ENTITY = "courses"
TABLE = "canvas_courses"

FIELDS: tuple[Field, ...] = (
    Field("id", "id", required=True),
    Field("name", "str"),
    Field("course_code", "str"),
    Field("workflow_state", "str"),
    Field("account_id", "id"),
    Field("root_account_id", "id"),
    Field("enrollment_term_id", "id"),
    Field("uuid", "str"),
    Field("term_name", "str", ("term", "name")),
    Field("term_start_at", "ts", ("term", "start_at"), group="course_extended_info"),
    Field("term_end_at", "ts", ("term", "end_at"), group="course_extended_info"),
    Field("start_at", "ts"),
    Field("end_at", "ts"),
    Field("created_at", "ts"),
    Field("time_zone", "str"),
    Field("total_students", "int"),
    Field("is_public", "bool", group="course_public_info"),
    Field("public_description", "str", group="course_public_info"),
    Field("syllabus_body", "str", group="course_extended_info"),
    Field("default_view", "str"),
    Field("sis_course_id", "str"),
    Field("course_format", "str"),
    Field("license", "str"),
    Field("settings", "json", group="course_settings"),
)


def transform_courses(
    records_by_course: Mapping[int, list[dict[str, Any]]], options: TransformOptions
) -> TransformResult:
    frame, rejected, n = transform_records(ENTITY, TABLE, FIELDS, ("id",), records_by_course, options)
    return TransformResult(ENTITY, {TABLE: frame}, rejected, n)
