"""Canvas's leaky-bucket throttle (docs/canvas-api.md §1), one bucket per access token.

A request arriving when the bucket is at or above the high-water mark is refused; otherwise the
up-front cost (50) is added at once and replaced by the request's real cost when it finishes. The
bucket leaks `leak_rate` units per second. With the throttle off nothing is refused but the levels
are still tracked so the headers look like Canvas's.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable


class LeakyBucket:
    def __init__(
        self,
        hwm: float,
        leak_rate: float,
        upfront: float,
        *,
        enforce: bool = True,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.hwm = hwm
        self.leak_rate = leak_rate
        self.upfront = upfront
        self.enforce = enforce
        self._clock = clock
        self._level = 0.0
        self._last = clock()
        self._lock = threading.Lock()

    def _leak(self) -> None:
        now = self._clock()
        self._level = max(0.0, self._level - (now - self._last) * self.leak_rate)
        self._last = now

    @property
    def level(self) -> float:
        with self._lock:
            self._leak()
            return self._level

    def admit(self) -> bool:
        """Charge the up-front cost, or refuse (False) when the level is at/above the mark."""
        with self._lock:
            self._leak()
            if self.enforce and self._level >= self.hwm:
                return False
            self._level += self.upfront
            return True

    def finish(self, cost: float) -> float:
        """Replace the up-front charge by the real cost; returns X-Rate-Limit-Remaining."""
        with self._lock:
            self._leak()
            self._level = max(0.0, self._level - self.upfront + cost)
            return self.hwm - self._level

    def remaining(self) -> float:
        with self._lock:
            self._leak()
            return self.hwm - self._level
