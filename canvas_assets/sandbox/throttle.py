"""Canvas's leaky-bucket throttle (docs/canvas-api.md §1), one bucket per access token.

A request adds the up-front cost (50) at once and is refused when the bucket, with that hold, is at or
above the high-water mark (the hold is then given back); an admitted request's hold is replaced by its
real cost when it finishes. Canvas's order: app/middleware/request_throttle.rb `reserve_capacity` adds
the up-front cost before the block asks `allowed?` (`full?`: `count >= hwm`), so from an empty bucket
ceil(hwm / up-front) - 1 requests fit at once (13 at 700, 11 at 600), not floor(hwm / up-front). The
bucket leaks `leak_rate` units per second. With the throttle off nothing is refused but the levels
are still tracked so the headers look like Canvas's.
"""

from __future__ import annotations

import math
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
        """Charge the up-front cost, or refuse (False) when the level with it is at/above the mark."""
        with self._lock:
            self._leak()
            if self.enforce and self._level + self.upfront >= self.hwm:
                return False
            self._level += self.upfront
            return True

    def finish(self, cost: float) -> float:
        """Replace the up-front charge by the real cost; returns X-Rate-Limit-Remaining."""
        with self._lock:
            self._leak()
            self._level = max(0.0, self._level - self.upfront + cost)
            return self.hwm - self._level

    def fit_at_once(self) -> int:
        """How many requests an empty bucket admits at once (the benchmarks' lower bound uses it)."""
        return fit_at_once(self.hwm, self.upfront)

    def remaining(self) -> float:
        with self._lock:
            self._leak()
            return self.hwm - self._level


def fit_at_once(hwm: float, upfront: float) -> int:
    """Requests an empty bucket admits at once: the n-th needs (n - 1) * upfront + upfront < hwm."""
    return max(1, math.ceil(hwm / upfront) - 1) if upfront > 0 else 1
