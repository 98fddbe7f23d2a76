"""The `warehouse` Dagster resource: where the staging and Layer-1 tables live."""

import os
from pathlib import Path
from typing import Optional

import dagster as dg
from pydantic import Field

from canvas_assets.warehouse.db import Warehouse

DATABASE_URL_ENV = "CANVAS_ASSETS_DATABASE_URL"
DEFAULT_DB_FILE = "canvas_assets.db"


def default_database_url() -> str:
    """The warehouse URL when none is configured: env var, else a SQLite file under $DAGSTER_HOME,
    else `./.canvas_assets/canvas_assets.db` (the folder is created; the path is made absolute so that
    every process of a run, whatever its working directory, opens the same file)."""
    url = os.environ.get(DATABASE_URL_ENV, "").strip()
    if url:
        return url
    home = os.environ.get("DAGSTER_HOME", "").strip()
    if home:
        return f"sqlite:///{Path(home).expanduser().resolve() / DEFAULT_DB_FILE}"
    folder = Path.cwd() / ".canvas_assets"
    folder.mkdir(parents=True, exist_ok=True)
    return f"sqlite:///{folder / DEFAULT_DB_FILE}"


class WarehouseResource(dg.ConfigurableResource):
    """The SQL warehouse (SQLite by default, PostgreSQL in production) that holds the raw staging records,
    the course catalog, the sync log, the quarantine and the Layer-1 tables."""

    url: Optional[str] = Field(
        default=None,
        description=(
            "SQLAlchemy URL of the warehouse. Unset: $CANVAS_ASSETS_DATABASE_URL, else "
            "sqlite:///$DAGSTER_HOME/canvas_assets.db, else ./.canvas_assets/canvas_assets.db."
        ),
    )

    def get_warehouse(self) -> Warehouse:
        """The warehouse for this URL (engines are cached per URL per process)."""
        return Warehouse(self.url or default_database_url())
