"""Concurrent follow-up fetches of one call (module items, submission slices), and per-thread request
counting; the helper threads work under the calling thread's deadline (`budget`)."""

from __future__ import annotations

import threading
from collections.abc import Callable, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from typing import TypeVar

from canvas_assets.canvas import budget

T = TypeVar("T")


class RequestCounter:
    """Requests made by one thread and the follow-up fetches it fanned out (for per-entity api_calls)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.value = 0

    def add(self, n: int = 1) -> None:
        with self._lock:
            self.value += n


class FanOut:
    """A lazily started thread pool (at most 16 threads) and the calling threads' request counters."""

    def __init__(self, max_in_flight: int) -> None:
        self.max_in_flight = max_in_flight
        self._local = threading.local()
        self._pool: ThreadPoolExecutor | None = None
        self._lock = threading.Lock()

    def counter(self) -> RequestCounter:
        """The calling thread's counter (a helper thread counts towards the thread it works for)."""
        counter: RequestCounter | None = getattr(self._local, "counter", None)
        if counter is None:
            counter = RequestCounter()
            self._local.counter = counter
        return counter

    def map(self, fn: Callable[[int], T], args: Sequence[int]) -> list[T]:
        """Run `fn` over `args` concurrently (the calling thread does the first), results in order.

        Requests made by helper threads count towards the calling thread's counter.
        """
        if len(args) == 1 or self.max_in_flight == 1:
            return [fn(a) for a in args]
        parent = self.counter()
        deadline = budget.current()  # the helper threads' requests stop at the caller's deadline too

        def run(arg: int) -> T:
            previous = getattr(self._local, "counter", None)
            self._local.counter = parent
            try:
                with budget.adopted(deadline):
                    return fn(arg)
            finally:
                self._local.counter = previous

        pool = self._executor()
        futures: list[Future[T]] = [pool.submit(run, a) for a in args[1:]]
        try:
            results = [fn(args[0])]
            results.extend(f.result() for f in futures)
        except BaseException:
            for f in futures:
                f.cancel()
            raise
        return results

    def _executor(self) -> ThreadPoolExecutor:
        with self._lock:
            if self._pool is None:
                self._pool = ThreadPoolExecutor(
                    max_workers=max(1, min(16, self.max_in_flight)), thread_name_prefix="canvas-fanout"
                )
            return self._pool

    def close(self) -> None:
        with self._lock:
            if self._pool is not None:
                self._pool.shutdown(wait=True, cancel_futures=True)
                self._pool = None
