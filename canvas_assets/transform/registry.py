"""The one registry of transformers, shared by the Dagster ops and the tests."""

from __future__ import annotations

from canvas_assets.transform.assignments import transform_assignments
from canvas_assets.transform.base import Transformer
from canvas_assets.transform.courses import transform_courses
from canvas_assets.transform.enrollments import transform_enrollments
from canvas_assets.transform.modules import transform_modules
from canvas_assets.transform.student_summaries import transform_student_summaries
from canvas_assets.transform.students import transform_students

TRANSFORMERS: dict[str, Transformer] = {
    t.entity: t
    for t in (
        Transformer("courses", ("canvas_courses",), transform_courses, "Course objects -> canvas_courses"),
        Transformer("students", ("canvas_students",), transform_students, "Users -> canvas_students"),
        Transformer(
            "enrollments", ("canvas_enrollments",), transform_enrollments, "Enrollments -> canvas_enrollments"
        ),
        Transformer(
            "assignments", ("canvas_assignments",), transform_assignments, "Assignments -> canvas_assignments"
        ),
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
