"""Fault injection: random faults at `fault_rate` (deterministic from the seed and the request's
sequence number) and a test hook queue (`inject`) that fails the next matching requests."""

from __future__ import annotations

import threading
from dataclasses import dataclass

from canvas_assets.sandbox.data import stable_int

FAULT_KINDS = ("500", "503", "drop", "slow", "throttle", "forbidden")


@dataclass
class _Injection:
    kind: str
    remaining: int
    path_contains: str | None


class FaultPlan:
    def __init__(self, seed: int, rate: float, kinds: tuple[str, ...]) -> None:
        for k in kinds:
            if k not in FAULT_KINDS:
                raise ValueError(f"unknown fault kind {k!r}; expected one of {FAULT_KINDS}")
        self.seed = seed
        self.rate = rate
        self.kinds = kinds
        self._queue: list[_Injection] = []
        self._lock = threading.Lock()

    def inject(self, kind: str, count: int = 1, path_contains: str | None = None) -> None:
        if kind not in FAULT_KINDS:
            raise ValueError(f"unknown fault kind {kind!r}; expected one of {FAULT_KINDS}")
        if count < 1:
            raise ValueError("count must be >= 1")
        with self._lock:
            self._queue.append(_Injection(kind, count, path_contains))

    def clear(self) -> None:
        with self._lock:
            self._queue.clear()

    def pending(self) -> int:
        with self._lock:
            return sum(i.remaining for i in self._queue)

    def pick(self, seq: int, target: str) -> str | None:
        """The fault for request number `seq` on `target` (path + query), or None."""
        with self._lock:
            for inj in self._queue:
                if inj.path_contains is None or inj.path_contains in target:
                    inj.remaining -= 1
                    if inj.remaining <= 0:
                        self._queue.remove(inj)
                    return inj.kind
        if self.rate <= 0 or not self.kinds:
            return None
        h = stable_int(self.seed, "fault", seq)
        if (h % 1_000_000) / 1_000_000 >= self.rate:
            return None
        return self.kinds[(h >> 32) % len(self.kinds)]
