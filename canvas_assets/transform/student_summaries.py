"""Student summaries: GET /courses/:id/analytics/student_summaries -> canvas_student_summaries.

A summary's `id` is the user id; the course is the staging course. `tardiness_breakdown` is flattened.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from canvas_assets.transform.base import TransformResult, transform_records
from canvas_assets.transform.options import TransformOptions
from canvas_assets.transform.schema import fields_of

ENTITY = "student_summaries"
TABLE = "canvas_student_summaries"
FIELDS = fields_of(TABLE)  # the model's columns read from the record (warehouse/models.py)


def transform_student_summaries(
    records_by_course: Mapping[int, list[dict[str, Any]]], options: TransformOptions
) -> TransformResult:
    frame, rejected, n = transform_records(ENTITY, TABLE, FIELDS, records_by_course, options)
    return TransformResult(ENTITY, {TABLE: frame}, rejected, n)
