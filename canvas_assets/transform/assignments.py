"""Assignments: GET /courses/:id/assignments -> canvas_assignments (description HTML kept as text)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from canvas_assets.transform.base import TransformOptions, TransformResult, fields_of, transform_records

ENTITY = "assignments"
TABLE = "canvas_assignments"
FIELDS = fields_of(TABLE)  # the model's columns read from the record (warehouse/models.py)


def transform_assignments(
    records_by_course: Mapping[int, list[dict[str, Any]]], options: TransformOptions
) -> TransformResult:
    frame, rejected, n = transform_records(ENTITY, TABLE, FIELDS, records_by_course, options)
    return TransformResult(ENTITY, {TABLE: frame}, rejected, n)
