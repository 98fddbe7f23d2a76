"""The `warehouse` Dagster resource: where the staging and Layer-1 tables live."""

import os
from typing import Optional

import dagster as dg
from pydantic import Field

from canvas_assets.warehouse.db import Warehouse

DATABASE_URL_ENV = "CANVAS_ASSETS_DATABASE_URL"


def default_database_url() -> str:
    """The warehouse URL when none is configured: $CANVAS_ASSETS_DATABASE_URL, else the database
    `canvas_assets` of the local embedded PostgreSQL (started on demand; see
    `canvas_assets.instance.local_store`)."""
    url = os.environ.get(DATABASE_URL_ENV, "").strip()
    if url:
        return url
    from canvas_assets.instance.local_store import local_warehouse_url

    return local_warehouse_url()


class WarehouseResource(dg.ConfigurableResource):
    """The SQL warehouse (SQLite by default, PostgreSQL in production) that holds the raw staging records,
    the course catalog, the sync log, the quarantine and the Layer-1 tables."""

    url: Optional[str] = Field(
        default=None,
        description=(
            "SQLAlchemy URL of the warehouse. Unset: $CANVAS_ASSETS_DATABASE_URL, else the local "
            "embedded PostgreSQL in $CANVAS_ASSETS_HOME (./.canvas_assets when unset)."
        ),
    )

    def get_warehouse(self) -> Warehouse:
        """The warehouse for this URL (engines are cached per URL per process)."""
        return Warehouse(self.url or default_database_url())
