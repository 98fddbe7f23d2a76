"""Courses: the one course object per staging partition (GET /courses/:id with include[]) -> canvas_courses.

The `term` include gives term_name and the term dates; the settings object (GET /courses/:id/settings),
when the profile asks for it, arrives under the extra key `settings` and is stored as JSON text.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from canvas_assets.transform.base import TransformResult, transform_records
from canvas_assets.transform.options import TransformOptions
from canvas_assets.transform.schema import fields_of

ENTITY = "courses"
TABLE = "canvas_courses"
FIELDS = fields_of(TABLE)  # the model's columns read from the record (warehouse/models.py)


def transform_courses(
    records_by_course: Mapping[int, list[dict[str, Any]]], options: TransformOptions
) -> TransformResult:
    frame, rejected, n = transform_records(ENTITY, TABLE, FIELDS, records_by_course, options)
    return TransformResult(ENTITY, {TABLE: frame}, rejected, n)
