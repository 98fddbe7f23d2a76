"""All HTTP to Canvas: the paced, retrying, paginating client (Dagster-free: the `canvas` resource that
hands it out is in `canvas_assets.defs.resources`)."""

from canvas_assets.canvas.client import ALL_ENROLLMENT_STATES_BUT_DELETED, PER_PAGE, CanvasClient
from canvas_assets.canvas.metrics import ClientMetrics
from canvas_assets.canvas.pacer import Pacer
from canvas_assets.canvas.redact import RedactingFilter, redact, redact_url
from canvas_assets.canvas.retry import backoff_delay, is_throttle, should_retry

__all__ = [
    "ALL_ENROLLMENT_STATES_BUT_DELETED",
    "PER_PAGE",
    "CanvasClient",
    "ClientMetrics",
    "Pacer",
    "RedactingFilter",
    "backoff_delay",
    "is_throttle",
    "redact",
    "redact_url",
    "should_retry",
]
