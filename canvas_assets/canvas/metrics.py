"""Counters the client keeps for Dagster metadata and the sync log (never URLs, bodies or tokens)."""

from __future__ import annotations

import threading
from typing import Any


class ClientMetrics:
    """Thread-safe counters of one client's traffic (docs/canvas-api.md §1, What gets counted)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.requests = 0
        self.retries = 0
        self.throttled = 0
        self.errors = 0
        self.wait_seconds = 0.0
        self.peak_in_flight = 0

    def add(
        self, *, retries: int = 0, throttled: int = 0, errors: int = 0, wait_seconds: float = 0.0
    ) -> None:
        """Retries, refused and failed attempts, waits; an attempt itself is counted by `started`."""
        with self._lock:
            self.retries += retries
            self.throttled += throttled
            self.errors += errors
            self.wait_seconds += wait_seconds

    def started(self, *, in_flight: int, waited: float) -> None:
        """One attempt sent after waiting `waited` seconds for the pacer, `in_flight` requests in flight."""
        with self._lock:
            self.requests += 1
            self.wait_seconds += waited
            if in_flight > self.peak_in_flight:
                self.peak_in_flight = in_flight

    def snapshot(self) -> dict[str, Any]:
        with self._lock:
            return {
                "requests": self.requests,
                "retries": self.retries,
                "throttled": self.throttled,
                "errors": self.errors,
                "wait_seconds": round(self.wait_seconds, 3),
                "peak_in_flight": self.peak_in_flight,
            }

    def __repr__(self) -> str:
        return f"ClientMetrics({self.snapshot()})"
