"""Students: user objects from GET /courses/:id/users?enrollment_type[]=student -> canvas_students.

Users are global: one row per Canvas user however many courses list them (first listing wins).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from canvas_assets.transform.base import TransformOptions, TransformResult, fields_of, transform_records

ENTITY = "students"
TABLE = "canvas_students"
FIELDS = fields_of(TABLE)  # the model's columns read from the record (warehouse/models.py)


def transform_students(
    records_by_course: Mapping[int, list[dict[str, Any]]], options: TransformOptions
) -> TransformResult:
    frame, rejected, n = transform_records(ENTITY, TABLE, FIELDS, records_by_course, options)
    return TransformResult(ENTITY, {TABLE: frame}, rejected, n)
