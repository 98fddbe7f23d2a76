"""Transformers: raw Canvas records (as staged) -> typed DataFrames for the Layer-1 tables.

Pure functions, one per staging entity, registered once in `TRANSFORMERS`:

    result = TRANSFORMERS["enrollments"](records_by_course, TransformOptions(student_scores=False))
    result.tables["canvas_enrollments"]  # typed frame, score columns absent
    result.rejected                      # quarantined records with reasons
"""

from canvas_assets.transform.base import Transformer, TransformResult
from canvas_assets.transform.options import TransformOptions
from canvas_assets.transform.quarantine import Rejected
from canvas_assets.transform.registry import TRANSFORMERS
from canvas_assets.transform.schema import Field

__all__ = [
    "TRANSFORMERS",
    "Field",
    "Rejected",
    "TransformOptions",
    "TransformResult",
    "Transformer",
]
