"""Pacing requests so the token's leaky bucket never overflows (docs/canvas-api.md §1, Pacing).

Canvas keeps one leaky bucket per token: each request holds 50 units while in flight, the bucket leaks
10 units/s, and a request whose own hold would reach the (unannounced) high-water mark is refused. The
pacer learns from what each response reports (`X-Rate-Limit-Remaining`, R) how many requests fit at once
(the cap, from readings with few others of ours in flight) and steers the limit inside it: shrink below
the low-water mark, grow by one per round trip with room to spare, halve on a throttle, keep more room
spare while another process spends the same token. A free slot goes to the waiting request of highest
priority (a list's page: the pages before it), then to the longest waiting; a page whose response links
a next page may keep its slot for it (`release(keep=True)`, then `acquire(kept=slot)`).

Thread-safe: every method but `mark_received` takes the pacer's lock.
"""

from __future__ import annotations

import heapq
import math
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass

UPFRONT_COST = 50.0
LEAK_RATE = 10.0
# A reading outside what a bucket can report is clamped before it steers anything: the level never exceeds
# Canvas's hard cap of 800 units, so no honest `X-Rate-Limit-Remaining` is above 800 or below -800. One
# hostile header (`-1000000`, `-1e300`) must not turn into a wait of days or an overflow.
MAX_REMAINING = 800.0
# The longest wait for the leak: a bucket at the 800-unit hard cap over a 600 high-water mark reports -200,
# which the leak brings back to the low-water mark in 27.5 s. No reading makes the pacer wait longer.
MAX_LEAK_WAIT_S = 30.0
# How long a sign of another process spending the same token keeps the pacer in its shared mode.
SHARED_MEMORY_S = 10.0
# Readings that show it: at least SIGHTINGS within the last SIGHTING_WINDOW_S, spread over more than
# SIGHTING_BURST_S.
SIGHTINGS, SIGHTING_BURST_S, SIGHTING_WINDOW_S = 4, 0.05, 0.25


class PacerTimeout(Exception):
    """`Pacer.acquire` waited `timeout` seconds without a slot (the caller's budget ran out)."""


@dataclass
class PacerSlot:
    """One request's permission to be in flight; hand it back to `Pacer.release` exactly once."""

    seq: int
    waited: float
    in_flight: int = 1  # requests in flight once this one started, itself included
    # The pacer's sequence counter when the response came back: requests started after that are not in
    # the level the response reports.
    received_mark: int | None = None
    # How many slots had been released when the response came back: the ones released after it may have
    # been in the bucket when Canvas measured the level this response reports.
    released_mark: int | None = None
    kept: bool = False  # released with keep=True: its place is held for the caller's next request


class _Waiter:
    """A request waiting for a slot; `Pacer._grant` fills in its slot and wakes it."""

    __slots__ = ("cond", "key", "slot")

    def __init__(self, rank: int, arrival: int) -> None:
        self.key = (rank, arrival)  # heap order: highest priority (lowest rank) first, then arrival
        self.cond: threading.Condition | None = None  # made only if the waiter has to sleep
        self.slot: PacerSlot | None = None

    def __lt__(self, other: _Waiter) -> bool:
        return self.key < other.key


class Pacer:
    def __init__(
        self,
        *,
        max_in_flight: int = 32,
        initial_in_flight: int = 1,
        safety_margin: int = 1,
        upfront_cost: float = UPFRONT_COST,
        leak_rate: float = LEAK_RATE,
        low_water: float = 75.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if max_in_flight < 1:
            raise ValueError("max_in_flight must be at least 1")
        self.max_in_flight = max_in_flight
        self.safety_margin = safety_margin
        self.upfront_cost = upfront_cost
        self.leak_rate = leak_rate
        self.low_water = low_water
        self._clock = clock
        self._lock = threading.Lock()
        self._waiting: list[_Waiter] = []  # a heap: the best waiter first
        self._arrivals = 0
        self._kept = 0  # places held for the next page of a list (`release(keep=True)`)
        self._limit = max(1, min(initial_in_flight, max_in_flight))
        self._cap = self._limit
        self._max_remaining = 0.0
        self.quiet_others = 3
        self.start_after_calibration = 4
        self._grow_credit = 0
        self._calibrated = False
        self._released = 0
        self._sightings: deque[float] = deque()
        self._shared_until = -math.inf
        self._in_flight: set[int] = set()
        self._next_seq = 0
        self._not_before = 0.0
        # Our own requests' real costs (`X-Request-Cost`) still in the bucket: each adds its cost when it
        # ends, and the bucket leaks them at `leak_rate`. They lower R as another process's holds would.
        self._own_cost = 0.0
        self._own_cost_at = clock()

    # --- state, for metrics and tests ------------------------------------------------------------
    @property
    def limit(self) -> int:
        with self._lock:
            return self._limit

    @property
    def cap(self) -> int:
        """The most requests the bucket takes at once, as last measured (the limit never exceeds it)."""
        with self._lock:
            return self._cap

    @property
    def in_flight(self) -> int:
        with self._lock:
            return len(self._in_flight)

    @property
    def kept(self) -> int:
        """Places held for the next page of a list (`release(keep=True)`), not yet taken or forgotten."""
        with self._lock:
            return self._kept

    def __repr__(self) -> str:
        return f"Pacer(limit={self.limit}, in_flight={self.in_flight}, max_in_flight={self.max_in_flight})"

    # --- the protocol ------------------------------------------------------------------------------
    def acquire(
        self, priority: int = 0, *, kept: PacerSlot | None = None, timeout: float | None = None
    ) -> PacerSlot:
        """Block until another request may start; return its slot (with the seconds spent waiting).

        Waiting requests get free slots highest `priority` first, then first come first served. A
        request that continues a list passes the slot its previous page kept (`release(keep=True)`):
        it starts at once, unless the pacer is waiting for the bucket to leak. `timeout`: give up after
        that many seconds (`PacerTimeout`), leaving the queue as if the request had never asked.
        """
        started = self._clock()
        give_up = None if timeout is None else started + max(0.0, timeout)
        with self._lock:
            if kept is not None and kept.kept:
                kept.kept = False
                self._kept -= 1
                if self._clock() >= self._not_before:
                    return self._take(waited=self._clock() - started)
            waiter = _Waiter(-priority, self._arrivals)
            self._arrivals += 1
            heapq.heappush(self._waiting, waiter)
            self._grant()
            while waiter.slot is None:
                if waiter.cond is None:
                    waiter.cond = threading.Condition(self._lock)
                now = self._clock()
                if give_up is not None and now >= give_up:
                    self._waiting.remove(waiter)
                    heapq.heapify(self._waiting)
                    raise PacerTimeout(f"no request slot within {timeout:g} s")
                delay = self._not_before - now
                wait = delay if delay > 0 else None
                if give_up is not None:
                    wait = give_up - now if wait is None else min(wait, give_up - now)
                waiter.cond.wait(wait)
                self._grant()  # a timed wait ends when the bucket has leaked enough
            slot = waiter.slot
        slot.waited = self._clock() - started
        return slot

    def mark_received(self, slot: PacerSlot) -> None:
        """Note that `slot`'s response (or failure) has just come back.

        No lock: reading one int is atomic, and taking the pacer's lock here would make the thread
        holding a fresh response queue behind the threads waiting for a slot.
        """
        slot.received_mark = self._next_seq
        slot.released_mark = self._released

    def release(
        self,
        slot: PacerSlot,
        *,
        remaining: float | None = None,
        cost: float | None = None,
        throttled: bool = False,
        keep: bool = False,
    ) -> None:
        """Give the slot back and learn from what its response reported (`remaining`: its
        `X-Rate-Limit-Remaining`; `cost`: its `X-Request-Cost`).

        `keep`: the caller's next request (the next page of the same list, known from this response's
        `Link` header) takes this one's place: no other request gets it meanwhile. The caller passes the
        slot to `acquire(kept=...)`, or to `forget` if it sends no next request after all.
        """
        with self._lock:
            saturated = len(self._in_flight) + self._kept >= self._limit
            self._in_flight.discard(slot.seq)
            self._released += 1
            mark = slot.received_mark if slot.received_mark is not None else self._next_seq
            others = sum(1 for s in self._in_flight if s < mark)
            now = self._clock()
            self._add_own_cost(cost, now)
            if throttled:
                self._limit = max(1, self._limit // 2)
                self._calibrated = True
            elif remaining is not None and math.isfinite(remaining):
                late = self._released - 1 - slot.released_mark if slot.released_mark is not None else 0
                reading = max(-MAX_REMAINING, min(MAX_REMAINING, remaining))
                self._learn(reading, others, saturated, late, now)
            if keep and not throttled:
                slot.kept = True
                self._kept += 1
            self._grant()

    def _add_own_cost(self, cost: float | None, now: float) -> None:
        """Leak what our costs left in the bucket since the last response, then add this one's (lock held)."""
        self._own_cost = max(0.0, self._own_cost - (now - self._own_cost_at) * self.leak_rate)
        self._own_cost_at = now
        if cost is not None and math.isfinite(cost):
            self._own_cost += max(0.0, min(MAX_REMAINING, cost))

    def forget(self, slot: PacerSlot) -> None:
        """Free the place `slot` kept (`release(keep=True)`) for a request that is not sent after all."""
        with self._lock:
            if slot.kept:
                slot.kept = False
                self._kept -= 1
                self._grant()

    def grow(self) -> None:
        """A success that carried no rate-limit headers (an instance without throttling): probe upwards."""
        with self._lock:
            if not self._calibrated and self._limit < self.max_in_flight:
                self._limit += 1
                self._cap = self._limit
                self._grant()

    def _grant(self) -> None:
        """Hand the free slots to the best waiting requests (lock held), unless the leak is awaited.

        The slot is taken on the waiter's behalf and only that waiter is woken: waking every waiter on
        each release makes dozens of threads fight over the GIL for nothing, which delays the threads
        reading responses.
        """
        if not self._waiting:
            return
        if self._clock() < self._not_before:
            head = self._waiting[0]
            if head.cond is not None:
                head.cond.notify()  # it sleeps untimed: let it wait for the leak instead
            return
        while self._waiting and len(self._in_flight) + self._kept < self._limit:
            waiter = heapq.heappop(self._waiting)
            waiter.slot = self._take(waited=0.0)
            if waiter.cond is not None:
                waiter.cond.notify()

    def _take(self, *, waited: float) -> PacerSlot:
        """A new slot in flight (lock held)."""
        seq = self._next_seq
        self._next_seq += 1
        self._in_flight.add(seq)
        return PacerSlot(seq=seq, waited=waited, in_flight=len(self._in_flight))

    def _learn(self, remaining: float, others: int, saturated: bool, late: int, now: float) -> None:
        unit = self.upfront_cost
        # No reading can exceed the high-water mark minus what the bucket holds: the largest R seen so far
        # bounds the room, whatever a lagging k suggests.
        # (The first reading has nothing to compare with: its own room estimate stands in.)
        if not self._calibrated:
            self._max_remaining = remaining + unit * others
        self._max_remaining = max(self._max_remaining, remaining)
        if others <= self.quiet_others or not self._calibrated:
            room = min(remaining + unit * others, self._max_remaining)
            fits = math.ceil(room / unit) if room > 0 else 0
            self._cap = max(1, min(self.max_in_flight, fits - self.safety_margin))
        # Holds beyond ours and our real costs: another process spends the token, so keep more room spare.
        # Sightings (two such holds, our `late` releases counted as still in the bucket), as many and as
        # spread as SIGHTING_* says, keep the shared mode on for SHARED_MEMORY_S (docs/canvas-api.md §1).
        foreign = self._max_remaining - (remaining + unit * others + self._own_cost)
        if foreign - unit * late >= unit * 1.8:
            self._sightings.append(now)
            while now - self._sightings[0] > SIGHTING_WINDOW_S:
                self._sightings.popleft()
            if len(self._sightings) >= SIGHTINGS and now - self._sightings[0] > SIGHTING_BURST_S:
                self._shared_until = now + SHARED_MEMORY_S
        shared = foreign >= unit * 0.8 or now < self._shared_until
        grow_above = self.low_water + unit * (3 if shared else 1)
        shrink_below = self.low_water + (unit if shared else 0)
        if remaining < shrink_below:
            self._limit = max(1, min(self._limit - 1, others))
            if others == 0 and remaining < self.low_water:
                wait = min(MAX_LEAK_WAIT_S, (self.low_water - remaining) / self.leak_rate)
                self._not_before = max(self._not_before, now + wait)
        elif not self._calibrated:
            # Not straight to the cap: another process may be starting on the same token right now, and
            # two clients that both jumped to the cap would overfill the bucket together. Growth by one
            # per response with room to spare gets there within a few round trips.
            self._limit = min(self._cap, self.start_after_calibration)
        elif remaining >= grow_above and saturated:
            # Additive increase once per round trip (a limit's worth of roomy responses), not once per
            # response: readings are stale by the time a busy process reads them, and a burst of stale
            # "room to spare" readings must not grow the limit by the size of the burst.
            self._grow_credit += 1
            if self._grow_credit >= self._limit:
                self._grow_credit = 0
                self._limit += 1
        if now < self._shared_until:
            # At most half of what the empty bucket admits: two busy processes' readings lag, and each can see
            # room the other is about to take (docs/canvas-api.md §1, Sharing).
            fits_all = math.ceil(self._max_remaining / unit) - self.safety_margin
            self._limit = min(self._limit, fits_all // 2)
        self._limit = max(1, min(self._limit, self._cap))
        self._calibrated = True
