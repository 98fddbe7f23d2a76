"""Enrollments: GET /courses/:id/enrollments (every state but deleted) -> canvas_enrollments.

Scores and grades are flattened from the enrollment's `grades` object (StudentEnrollment only; others get
NULL). The record's own course_id is kept (the staging course fills it in when absent). With scores off the
score columns are not produced, so the loader neither overwrites them nor records score history.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from canvas_assets.transform.base import TransformOptions, TransformResult, fields_of, transform_records

ENTITY = "enrollments"
TABLE = "canvas_enrollments"
FIELDS = fields_of(TABLE)  # the model's columns read from the record (warehouse/models.py)


def transform_enrollments(
    records_by_course: Mapping[int, list[dict[str, Any]]], options: TransformOptions
) -> TransformResult:
    frame, rejected, n = transform_records(ENTITY, TABLE, FIELDS, records_by_course, options)
    return TransformResult(ENTITY, {TABLE: frame}, rejected, n)
