"""Student summaries: GET /courses/:id/analytics/student_summaries -> canvas_student_summaries.

A summary's `id` is the user id; the course is the staging course. `tardiness_breakdown` is flattened.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from canvas_assets.transform.base import Field, TransformOptions, TransformResult, transform_records

ENTITY = "student_summaries"
TABLE = "canvas_student_summaries"

FIELDS: tuple[Field, ...] = (
    Field("user_id", "id", ("id",), required=True),
    Field("page_views", "int"),
    Field("page_views_level", "int"),
    Field("participations", "int"),
    Field("participations_level", "int"),
    Field("tardiness_on_time", "int", ("tardiness_breakdown", "on_time")),
    Field("tardiness_late", "int", ("tardiness_breakdown", "late")),
    Field("tardiness_missing", "int", ("tardiness_breakdown", "missing")),
    Field("tardiness_floating", "int", ("tardiness_breakdown", "floating")),
    Field("tardiness_total", "int", ("tardiness_breakdown", "total")),
)


def transform_student_summaries(
    records_by_course: Mapping[int, list[dict[str, Any]]], options: TransformOptions
) -> TransformResult:
    frame, rejected, n = transform_records(
        ENTITY,
        TABLE,
        FIELDS,
        ("course_id", "user_id"),
        records_by_course,
        options,
        staging_course_column="course_id",
    )
    frame = frame[["course_id", *[c for c in frame.columns if c != "course_id"]]]
    return TransformResult(ENTITY, {TABLE: frame}, rejected, n)
