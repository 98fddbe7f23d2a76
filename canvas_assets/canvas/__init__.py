"""All HTTP to Canvas: the paced, retrying, paginating client (Dagster-free: the `canvas` resource that
hands it out is in `canvas_assets.defs.resources`)."""

from canvas_assets.canvas.client import CanvasClient

__all__ = ["CanvasClient"]
