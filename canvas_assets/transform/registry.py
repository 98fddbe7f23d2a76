"""The one registry of transformers, shared by the Dagster ops and the tests.

Most entities map one Canvas record to one row of one table, every column declared in the model
(`warehouse/models.py`): `one_table` builds their transformer from the table alone. Entities that need more
(courses' settings, modules' items) have a module of their own.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from canvas_assets.transform.base import Transformer, TransformResult, transform_records
from canvas_assets.transform.courses import transform_courses
from canvas_assets.transform.modules import transform_modules
from canvas_assets.transform.options import TransformOptions
from canvas_assets.transform.schema import fields_of
from canvas_assets.transform.student_summaries import transform_student_summaries


def one_table(entity: str, table: str, description: str) -> Transformer:
    """The transformer of an entity whose records become rows of `table`, column by column as the model says."""
    fields = fields_of(table)

    def build(
        records_by_course: Mapping[int, list[dict[str, Any]]], options: TransformOptions
    ) -> TransformResult:
        frame, rejected, n = transform_records(entity, table, fields, records_by_course, options)
        return TransformResult(entity, {table: frame}, rejected, n)

    return Transformer(entity, (table,), build, description)


TRANSFORMERS: dict[str, Transformer] = {
    t.entity: t
    for t in (
        Transformer("courses", ("canvas_courses",), transform_courses, "Course objects -> canvas_courses"),
        one_table("students", "canvas_students", "Users -> canvas_students"),
        one_table("enrollments", "canvas_enrollments", "Enrollments -> canvas_enrollments"),
        one_table("assignments", "canvas_assignments", "Assignments -> canvas_assignments"),
        one_table("submissions", "canvas_submissions", "Submissions -> canvas_submissions"),
        Transformer(
            "modules",
            ("canvas_modules", "canvas_module_items"),
            transform_modules,
            "Modules with their items -> canvas_modules, canvas_module_items",
        ),
        Transformer(
            "student_summaries",
            ("canvas_student_summaries",),
            transform_student_summaries,
            "Analytics student summaries -> canvas_student_summaries",
        ),
    )
}


def get_transformer(entity: str) -> Transformer:
    try:
        return TRANSFORMERS[entity]
    except KeyError:
        raise KeyError(f"no transformer for entity {entity!r}; known: {sorted(TRANSFORMERS)}") from None
