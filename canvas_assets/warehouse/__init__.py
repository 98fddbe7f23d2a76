"""The warehouse: SQLAlchemy models (the one schema), loaders, staging and migrations.

    wh = Warehouse(url); wh.ensure_schema()
    wh.replace_staging("enrollments", course_id, records, run_id=..., fetched_at=...)
    stats = wh.load(TRANSFORMERS["enrollments"](wh.read_staging("enrollments", ids)), course_ids=ids, ...)

`WarehouseResource` (the Dagster resource) lives in `canvas_assets.defs.resources`.
"""

from canvas_assets.warehouse.catalog import CatalogDiff
from canvas_assets.warehouse.db import Warehouse
from canvas_assets.warehouse.engine import display_url, get_engine
from canvas_assets.warehouse.migrate import current_revision, head_revision, upgrade
from canvas_assets.warehouse.stats import LoadStats, TableLoadStats

__all__ = [
    "CatalogDiff",
    "LoadStats",
    "TableLoadStats",
    "Warehouse",
    "current_revision",
    "display_url",
    "get_engine",
    "head_revision",
    "upgrade",
]
