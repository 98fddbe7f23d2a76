"""The three Dagster resources every asset and check takes: `canvas`, `sync_profile`, `warehouse`.

Bound once in `canvas_assets.definitions`. The sync profile's timeout and retry count belong to the run,
not to the `canvas` resource, so the caller passes them to `get_client`.
"""

from typing import Any, Optional

import dagster as dg
from pydantic import Field, ValidationError, model_validator

from canvas_assets.canvas.client import CanvasClient
from canvas_assets.profiles import (
    EntitiesConfig,
    FieldsConfig,
    ProcessingConfig,
    Profile,
    parse_profile,
    plain,
    profile_error,
)
from canvas_assets.warehouse.db import Warehouse
from canvas_assets.warehouse.engine import default_database_url


class CanvasResource(dg.ConfigurableResource):
    """Access to one Canvas instance with one API token (all HTTP to Canvas goes through its client)."""

    base_url: str = Field(
        description="The Canvas instance, e.g. https://school.instructure.com (with or without /api/v1). "
        "https is required except for loopback test servers."
    )
    # repr=False: the token must not show up in a repr of the resource (logs, tracebacks).
    api_token: str = Field(repr=False, description="A Canvas access token (sent only as a Bearer header).")
    max_in_flight: int = Field(
        default=32,
        description="The most requests in flight at once; the pacer usually allows fewer, as many as the "
        "token's rate-limit bucket takes (about 12 on hosted Canvas).",
    )

    def get_client(self, *, read_timeout: float = 60.0, max_retries: int = 3) -> CanvasClient:
        """A new client (close it, or use it as a context manager, when done)."""
        return CanvasClient(
            self.base_url,
            self.api_token,
            read_timeout=read_timeout,
            max_retries=max_retries,
            max_in_flight=self.max_in_flight,
        )


class SyncProfileResource(dg.ConfigurableResource):
    """The run's sync profile (resource key `sync_profile`), typed by the same models as `Profile`.

    Every field is optional here: unset fields come from the preset named by `name`; with no `name` the
    preset comes from the environment variable CANVAS_SYNC_PROFILE (runs launched by automation carry
    no run config), and LIGHTWEIGHT when that is unset too. Dagster refuses unknown keys and wrong
    types; an out-of-range number fails the resource with a ProfileError naming the field; `resolve()`
    completes the profile and refuses contradictions.
    """

    name: Optional[str] = Field(
        default=None,
        description="A preset (LIGHTWEIGHT, ANALYTICS_FOCUSED, FULL_PROCESSING) or your own name.",
    )
    entities: Optional[EntitiesConfig] = None
    fields: Optional[FieldsConfig] = None
    processing: Optional[ProcessingConfig] = None

    @model_validator(mode="wrap")
    @classmethod
    def _name_the_field(cls, data: Any, handler: Any) -> Any:
        try:
            return handler(data)
        except ValidationError as exc:
            raise profile_error(cls, exc) from None

    def resolve(self) -> Profile:
        """The complete, validated profile from the fields that are set (raises ProfileError naming the field)."""
        out = {key: plain(getattr(self, key)) for key in ("name", "entities", "fields", "processing")}
        return parse_profile({key: value for key, value in out.items() if value is not None})

    @classmethod
    def from_profile(cls, profile: Profile) -> "SyncProfileResource":
        return cls(
            name=profile.name,
            entities=profile.entities,
            fields=profile.fields,
            processing=profile.processing,
        )


class WarehouseResource(dg.ConfigurableResource):
    """The SQL warehouse (the local embedded PostgreSQL by default, a PostgreSQL server in production; SQLite works too) that holds the raw staging records,
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
