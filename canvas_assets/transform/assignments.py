"""Assignments: GET /courses/:id/assignments -> canvas_assignments (description HTML kept as text)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from canvas_assets.transform.base import Field, TransformOptions, TransformResult, transform_records

ENTITY = "assignments"
TABLE = "canvas_assignments"

FIELDS: tuple[Field, ...] = (
    Field("id", "id", required=True),
    Field("course_id", "id"),
    Field("name", "str"),
    Field("description", "str"),
    Field("due_at", "ts"),
    Field("unlock_at", "ts"),
    Field("lock_at", "ts"),
    Field("points_possible", "float"),
    Field("grading_type", "str"),
    Field("submission_types", "json"),
    Field("published", "bool"),
    Field("workflow_state", "str"),
    Field("position", "int"),
    Field("assignment_group_id", "id"),
    Field("omit_from_final_grade", "bool"),
    Field("html_url", "str"),
    Field("created_at", "ts"),
    Field("updated_at", "ts"),
)


def transform_assignments(
    records_by_course: Mapping[int, list[dict[str, Any]]], options: TransformOptions
) -> TransformResult:
    frame, rejected, n = transform_records(
        ENTITY, TABLE, FIELDS, ("id",), records_by_course, options, staging_course_column="course_id"
    )
    return TransformResult(ENTITY, {TABLE: frame}, rejected, n)
