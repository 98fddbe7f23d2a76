"""The retry decision and the backoff schedule, as pure functions (docs/canvas-api.md §1, Retrying).
Sleeping and randomness are the caller's, so tests can make backoff instant and deterministic."""

from __future__ import annotations

import random

THROTTLE_TEXT = "rate limit exceeded"


def is_throttle(status: int | None, body: str = "") -> bool:
    """Canvas's two ways of saying "the token's bucket is full": 429 (hosted, since 2025) or legacy 403."""
    if status == 429:
        return True
    return status == 403 and THROTTLE_TEXT in body.lower()


def should_retry(
    *,
    status: int | None,
    body: str = "",
    transport_error: bool = False,
    retries_done: int,
    max_retries: int,
) -> bool:
    """Retry a failed attempt only if it is recoverable and the retry budget is not spent.

    `status` is the HTTP status (None when no response arrived), `transport_error` says the exchange
    itself failed (timeout, connection refused or dropped), `retries_done` counts retries already made.
    A success (status < 400, no transport error) is never retried.
    """
    if retries_done >= max_retries:
        return False
    if transport_error:  # timeouts, refused or dropped connections, truncated bodies
        return True
    if status is None or status < 400:
        return False
    return is_throttle(status, body) or status == 408 or 500 <= status <= 599


def backoff_delay(retry_number: int, *, base: float, cap: float, rng: random.Random) -> float:
    """Capped exponential backoff with full jitter: uniform in [0, min(cap, base * 2**retry_number)].

    Full jitter spreads the retries of many threads that failed together (one throttle hits them all)
    instead of sending them back in one synchronised burst.
    """
    ceiling = min(cap, base * (2 ** max(0, retry_number)))
    return rng.uniform(0.0, max(0.0, ceiling))
