"""Modules: GET /courses/:id/modules?include[]=items (items complete) -> canvas_modules + canvas_module_items.

Items come from each module's `items` list and take their module_id and course_id from the module. A
module that cannot be transformed is quarantined with its items; a bad item is quarantined alone. A module
listed twice is one row, the first listing's, with the first listing's items.

The items of a quarantined module are not in the load, and which items it had is not known (its own items
list may be what is broken): its course's items are not soft-deleted (`TransformResult.incomplete`).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np

from canvas_assets.transform.base import (
    TransformResult,
    as_int64,
    build_frame,
    canvas_id_of,
    finish,
    transform_table,
)
from canvas_assets.transform.options import TransformOptions
from canvas_assets.transform.quarantine import Rejected, not_object_rejections, storable_payload
from canvas_assets.transform.schema import fields_of, in_table_order, key_of

ENTITY = "modules"
MODULES_TABLE = "canvas_modules"
ITEMS_TABLE = "canvas_module_items"

# The models' columns read from the records (warehouse/models.py); items take course_id and module_id from
# their module.
MODULE_FIELDS = fields_of(MODULES_TABLE)
ITEM_FIELDS = fields_of(ITEMS_TABLE)


def transform_modules(
    records_by_course: Mapping[int, list[dict[str, Any]]], options: TransformOptions
) -> TransformResult:
    # Modules whose `items` is not a list are quarantined before the column conversion.
    rejected: list[Rejected] = []
    clean: dict[int, list[dict[str, Any]]] = {}
    for course_id, records in records_by_course.items():
        kept = []
        for record in records or ():
            raw_items = record.get("items") if isinstance(record, dict) else None
            if raw_items is not None and not isinstance(raw_items, list):
                rejected.append(
                    Rejected(
                        ENTITY,
                        int(course_id),
                        canvas_id_of(record),
                        f"items: not a list: {type(raw_items).__name__}",
                        storable_payload(record),
                        MODULES_TABLE,
                    )
                )
                continue
            kept.append(record)
        clean[int(course_id)] = kept
    n_bad_shape = len(rejected)

    t = transform_table(ENTITY, MODULES_TABLE, MODULE_FIELDS, clean, options)
    modules, n = t.frame, t.records_in
    rejected.extend(t.rejected)

    # Items of the module records whose rows were kept (not a quarantined one, not a second listing of a
    # module), in module order.
    items: list[dict[str, Any]] = []
    item_courses: list[int] = []
    item_modules: list[int] = []
    not_objects: list[tuple[int, Any]] = []
    for pos, module_id in zip(t.kept, modules["id"].tolist(), strict=True):
        record, course_id = t.records[pos], int(t.courses[pos])
        for item in record.get("items") or ():
            if isinstance(item, dict):
                items.append(item)
                item_courses.append(course_id)
                item_modules.append(module_id)
            else:
                not_objects.append((course_id, item))
    rejected.extend(not_object_rejections(ENTITY, ITEMS_TABLE, not_objects))
    built = build_frame(
        items,
        ITEM_FIELDS,
        options,
        extra={
            "course_id": np.asarray(item_courses, dtype="int64"),
            "module_id": np.asarray(item_modules, dtype="int64"),
        },
    )
    for pos, reason in sorted(built.reasons.items()):
        rejected.append(
            Rejected(
                ENTITY,
                item_courses[pos],
                canvas_id_of(items[pos]),
                f"module item in module {item_modules[pos]}: {reason}",
                storable_payload(items[pos]),
                ITEMS_TABLE,
            )
        )
    item_frame = finish(in_table_order(built.frame, ITEMS_TABLE), list(built.reasons), key_of(ITEMS_TABLE))
    item_frame = as_int64(item_frame, ["id"])
    item_frame["course_id"] = item_frame["course_id"].astype("int64")
    item_frame["module_id"] = item_frame["module_id"].astype("int64")
    lost_items = {int(r.course_id) for r in rejected if r.table == MODULES_TABLE and r.course_id is not None}
    return TransformResult(
        ENTITY,
        {MODULES_TABLE: modules, ITEMS_TABLE: item_frame},
        rejected,
        n + n_bad_shape,
        {ITEMS_TABLE: lost_items} if lost_items else {},
    )
