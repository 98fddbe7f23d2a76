"""Students: user objects from GET /courses/:id/users?enrollment_type[]=student -> canvas_students.

Users are global: one row per Canvas user however many courses list them (first listing wins).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from canvas_assets.transform.base import Field, TransformOptions, TransformResult, transform_records

ENTITY = "students"
TABLE = "canvas_students"

FIELDS: tuple[Field, ...] = (
    Field("id", "id", required=True),
    Field("name", "str"),
    Field("sortable_name", "str"),
    Field("short_name", "str"),
    Field("sis_user_id", "str", group="student_basic_info"),
    Field("login_id", "str", group="student_basic_info"),
    Field("email", "str", group="student_basic_info"),
    Field("pronouns", "str"),
    Field("avatar_url", "str"),
    Field("created_at", "ts"),
)


def transform_students(
    records_by_course: Mapping[int, list[dict[str, Any]]], options: TransformOptions
) -> TransformResult:
    frame, rejected, n = transform_records(ENTITY, TABLE, FIELDS, ("id",), records_by_course, options)
    return TransformResult(ENTITY, {TABLE: frame}, rejected, n)
