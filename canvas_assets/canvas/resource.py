"""The `canvas` Dagster resource: configuration in, a ready `CanvasClient` out.

Bound in definitions as
`CanvasResource(base_url=dg.EnvVar("CANVAS_BASE_URL"), api_token=dg.EnvVar("CANVAS_API_TOKEN"))`.
The sync profile's timeout and retry count belong to the run, not to the resource, so the caller
passes them to `get_client`.
"""

import dagster as dg
from pydantic import Field

from canvas_assets.canvas.client import CanvasClient


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
