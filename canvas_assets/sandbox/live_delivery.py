"""How the sandbox's Live Events travel: faults, a release schedule, and the SQS and HTTPS sinks.

Canvas promises at-least-once, unordered, sometimes-lost delivery: it does not deduplicate or order
events ("check event_time"), drops an event when its in-process queue is full (LiveEvents::AsyncWorker#push
refuses once `max_queue_size` events wait) or when the record is over 1 MB (KINESIS_RECORD_SIZE_LIMIT in
gems/live_events/lib/live_events/async_worker.rb). `LiveFaults` makes the sandbox do the same on purpose, in
measured doses: drops, duplicates, reordering within a window, a fixed delay.

The `Pipeline` holds each event until its release time (now + delay + a random share of the reorder
window) and its sender threads hand due events to a sink: `SqsSink` (SendMessageBatch, 10 messages a
call, the SQS maximum) or `HttpsSink` (one POST per event, the body a signed JWT when a `KeyRing` is given,
15 s timeout, retries with backoff, switched off after too many failures, as Data Services does).
"""

from __future__ import annotations

import heapq
import itertools
import logging
import random
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol

import orjson
import requests

from canvas_assets.sandbox.live_events import Event, LedgerEntry, LiveEmitter, attach

if TYPE_CHECKING:
    from canvas_assets.sandbox.data import SandboxData
    from canvas_assets.sandbox.live_keys import KeyRing

log = logging.getLogger(__name__)

MAX_RECORD_BYTES = 1_000_000  # Canvas drops a bigger event (async_worker.rb)
SQS_BATCH = 10  # SendMessageBatch's limit


@dataclass(frozen=True)
class LiveFaults:
    """What delivery does wrong on purpose, each decided per event from `seed`.

    drop_rate: share of events never sent. duplicate_rate: share sent twice (the copy released
    independently, so with a window it may overtake the original). reorder_window_s: each copy is held a
    random 0..window seconds, so events within a window arrive in any order. delay_s: every copy is
    held this long first (a slow Canvas queue).
    """

    drop_rate: float = 0.0
    duplicate_rate: float = 0.0
    reorder_window_s: float = 0.0
    delay_s: float = 0.0
    seed: int = 23

    def __post_init__(self) -> None:
        for name in ("drop_rate", "duplicate_rate"):
            if not 0.0 <= getattr(self, name) <= 1.0:
                raise ValueError(f"{name} must be between 0 and 1, got {getattr(self, name)!r}")
        if self.reorder_window_s < 0 or self.delay_s < 0:
            raise ValueError("reorder_window_s and delay_s must be >= 0 seconds")


class Sink(Protocol):
    """Sends serialised events; returns the indexes of those that failed (the pipeline retries them)."""

    batch_size: int
    retry_delays_s: tuple[float, ...]

    def send(self, events: list[Event], texts: list[bytes]) -> list[int]: ...


@dataclass
class _Item:
    event: Event
    text: bytes
    entry: LedgerEntry | None
    attempt: int = 0


class Pipeline:
    """Schedules events for release and sends them from `workers` threads (a `live_events.Delivery`).

    `max_pending`: events waiting at most (more are dropped and counted, as Canvas's full queue drops).
    `stats()` counts what happened; `flush()` waits (bounded) until nothing waits or is in flight.
    """

    def __init__(
        self, sink: Sink, faults: LiveFaults | None = None, *, workers: int = 1, max_pending: int = 100_000
    ) -> None:
        if workers < 1:
            raise ValueError("workers must be >= 1")
        self.sink = sink
        self.faults = faults or LiveFaults()
        self.max_pending = max_pending
        self._rng = random.Random(self.faults.seed)
        self._heap: list[tuple[float, int, _Item]] = []
        self._order = itertools.count()
        self._cv = threading.Condition()
        self._in_flight = 0
        self._closed = False
        self._stats = dict.fromkeys(
            ("submitted", "sent", "dropped", "duplicated", "overflow", "oversize", "retries", "lost"), 0
        )
        self._threads = [
            threading.Thread(target=self._run, name=f"live-delivery-{i}", daemon=True) for i in range(workers)
        ]
        for t in self._threads:
            t.start()

    # ---------------------------------------------------------------- in
    def submit(self, event: Event, entry: LedgerEntry | None = None) -> None:
        f = self.faults
        text = orjson.dumps(event)
        with self._cv:
            self._stats["submitted"] += 1
            if len(text) > MAX_RECORD_BYTES:
                self._lose(entry, "oversize")
                return
            if self._rng.random() < f.drop_rate:
                self._lose(entry, "dropped")
                return
            copies = 2 if self._rng.random() < f.duplicate_rate else 1
            if copies == 2:
                self._stats["duplicated"] += 1
            if len(self._heap) + copies > self.max_pending:
                self._lose(entry, "overflow")
                return
            now = time.monotonic()
            for _ in range(copies):
                release = now + f.delay_s + self._rng.random() * f.reorder_window_s
                heapq.heappush(self._heap, (release, next(self._order), _Item(event, text, entry)))
            self._cv.notify()

    def _lose(self, entry: LedgerEntry | None, why: str) -> None:
        self._stats[why] += 1
        if entry is not None:
            entry.dropped = True

    # ---------------------------------------------------------------- out
    def _take(self) -> list[_Item] | None:
        """Up to a batch of due items, waiting for the first; None once closed and empty."""
        with self._cv:
            while True:
                if self._heap and self._heap[0][0] <= time.monotonic():
                    batch: list[_Item] = []
                    while (
                        self._heap
                        and len(batch) < self.sink.batch_size
                        and self._heap[0][0] <= time.monotonic()
                    ):
                        batch.append(heapq.heappop(self._heap)[2])
                    self._in_flight += len(batch)
                    return batch
                if self._closed and not self._heap:
                    return None
                wait = None if not self._heap else max(0.0, self._heap[0][0] - time.monotonic())
                self._cv.wait(timeout=0.5 if wait is None else min(wait, 0.5))

    def _run(self) -> None:
        while (batch := self._take()) is not None:
            try:
                failed = set(self.sink.send([i.event for i in batch], [i.text for i in batch]))
            except Exception as exc:  # a sink bug or an unreachable endpoint: retry the whole batch
                log.warning("live event delivery failed: %s", type(exc).__name__)
                failed = set(range(len(batch)))
            self._settle(batch, failed)

    def _settle(self, batch: list[_Item], failed: set[int]) -> None:
        now_mono = time.monotonic()
        with self._cv:
            for i, item in enumerate(batch):
                if i not in failed:
                    self._stats["sent"] += 1
                    if item.entry is not None:
                        item.entry.copies += 1
                        item.entry.sent_monotonic.append(now_mono)
                    continue
                delays = self.sink.retry_delays_s
                if item.attempt < len(delays) and not self._closed:
                    self._stats["retries"] += 1
                    item.attempt += 1
                    heapq.heappush(self._heap, (now_mono + delays[item.attempt - 1], next(self._order), item))
                else:
                    self._stats["lost"] += 1
            self._in_flight -= len(batch)
            self._cv.notify_all()

    # ---------------------------------------------------------------- control
    def pending(self) -> int:
        with self._cv:
            return len(self._heap) + self._in_flight

    def flush(self, timeout_s: float = 60.0) -> bool:
        """Wait until every event is sent, lost or dropped (held ones included); False on timeout."""
        deadline = time.monotonic() + timeout_s
        with self._cv:
            while self._heap or self._in_flight:
                left = deadline - time.monotonic()
                if left <= 0:
                    return False
                self._cv.wait(timeout=min(left, 0.2))
        return True

    def close(self, timeout_s: float = 30.0) -> None:
        """Send what is due within `timeout_s`, then stop the threads (what still waits is not sent)."""
        self.flush(timeout_s)
        with self._cv:
            self._closed = True
            self._heap.clear()
            self._cv.notify_all()
        for t in self._threads:
            t.join(timeout=max(1.0, timeout_s))

    def stats(self) -> dict[str, int]:
        with self._cv:
            return dict(self._stats, pending=len(self._heap) + self._in_flight)


class Fanout:
    """Several deliveries at once (Data Services can feed an SQS queue and an HTTPS endpoint side by side):
    each gets every event; a ledger entry's `copies` then counts the copies sent over all of them."""

    def __init__(self, *deliveries: Pipeline) -> None:
        if not deliveries:
            raise ValueError("Fanout needs at least one delivery")
        self.deliveries = deliveries

    def submit(self, event: Event, entry: LedgerEntry | None = None) -> None:
        for delivery in self.deliveries:
            delivery.submit(event, entry)

    def flush(self, timeout_s: float = 60.0) -> bool:
        return all([d.flush(timeout_s) for d in self.deliveries])

    def close(self, timeout_s: float = 30.0) -> None:
        for delivery in self.deliveries:
            delivery.close(timeout_s)

    def stats(self) -> dict[str, int]:
        total: dict[str, int] = {}
        for delivery in self.deliveries:
            for key, value in delivery.stats().items():
                total[key] = total.get(key, 0) + value
        return total


# ---------------------------------------------------------------------- sinks
class SqsSink:
    """SendMessageBatch to one queue, 10 events a call; the message body is the event's JSON."""

    batch_size = SQS_BATCH

    def __init__(
        self, queue_url: str, *, endpoint_url: str | None = None, region: str = "us-east-1",
        client: Any = None, retry_delays_s: Sequence[float] = (0.2, 1.0, 5.0),
    ) -> None:  # fmt: skip
        name = queue_url.rstrip("/").rsplit("/", 1)[-1]
        if not name.startswith("canvas-live-events") or name.endswith(".fifo"):
            raise ValueError(
                f"queue {name!r}: Data Services delivers to standard queues named canvas-live-events..."
            )
        self.queue_url = queue_url
        self.client = client if client is not None else _sqs_client(endpoint_url, region)
        self.retry_delays_s = tuple(retry_delays_s)
        self.calls = 0

    def send(self, events: list[Event], texts: list[bytes]) -> list[int]:
        entries = [{"Id": str(i), "MessageBody": t.decode()} for i, t in enumerate(texts)]
        self.calls += 1
        answer = self.client.send_message_batch(QueueUrl=self.queue_url, Entries=entries)
        return [int(f["Id"]) for f in answer.get("Failed", [])]


def _sqs_client(endpoint_url: str | None, region: str) -> Any:
    """boto3's SQS client: loopback (moto, placeholder credentials) or AWS from the environment."""
    import boto3
    import botocore.config

    config = botocore.config.Config(retries={"max_attempts": 3, "mode": "standard"}, connect_timeout=5)
    if endpoint_url is None:
        return boto3.client("sqs", region_name=region, config=config)
    return boto3.client(
        "sqs", endpoint_url=endpoint_url, region_name=region, config=config,
        aws_access_key_id="sandbox", aws_secret_access_key="sandbox",
    )  # fmt: skip


class HttpsSink:
    """One POST per event to `url`: the JWT (`application/jwt`) when `signer` is set, else the JSON.

    Canvas waits 15 s for an answer and counts anything but 2xx as a failure; it retries 3 times with
    backoff over 10-20 minutes (`retry_delays_s`, shorter in tests) and switches the subscription off after
    `disable_after` failures (`disabled`; nothing is sent from then on, every event is lost).
    """

    batch_size = 1

    def __init__(
        self, url: str, *, signer: KeyRing | None = None, timeout_s: float = 15.0,
        retry_delays_s: Sequence[float] = (120.0, 300.0, 600.0), disable_after: int = 1000,
        verify: bool | str = True,
    ) -> None:  # fmt: skip
        if not url.startswith(("https://", "http://127.0.0.1", "http://localhost")):
            raise ValueError(
                f"live event endpoint {url!r}: Canvas posts to https:// URLs (http only on loopback)"
            )
        self.url = url
        self.signer = signer
        self.timeout_s = timeout_s
        self.retry_delays_s = tuple(retry_delays_s)
        self.disable_after = disable_after
        self.verify = verify
        self.failures = 0
        self.disabled = False
        self.statuses: dict[str, int] = {}
        self._local = threading.local()
        self._lock = threading.Lock()

    def _session(self) -> requests.Session:
        """One session (one kept-alive connection) per sender thread. `trust_env` off: the endpoint is
        configured, and reading the proxy settings from the environment was a fifth of each POST's CPU."""
        session: requests.Session | None = getattr(self._local, "session", None)
        if session is None:
            session = self._local.session = requests.Session()
            session.trust_env = False
        return session

    def send(self, events: list[Event], texts: list[bytes]) -> list[int]:
        failed = []
        for i, (event, text) in enumerate(zip(events, texts, strict=True)):
            if not self._post(event, text):
                failed.append(i)
        return failed

    def _post(self, event: Event, text: bytes) -> bool:
        if self.disabled:
            return False
        if self.signer is not None:
            body, ctype = self.signer.sign(event).encode(), "application/jwt"
        else:
            body, ctype = text, "application/json"
        try:
            r = self._session().post(
                self.url,
                data=body,
                headers={"Content-Type": ctype},
                timeout=self.timeout_s,
                verify=self.verify,
            )
            status = str(r.status_code)
            ok = 200 <= r.status_code < 300
        except requests.RequestException as exc:
            status, ok = type(exc).__name__, False
        with self._lock:
            self.statuses[status] = self.statuses.get(status, 0) + 1
            if not ok:
                self.failures += 1
                self.disabled = self.failures >= self.disable_after
        return ok


# ---------------------------------------------------------------------- wiring
def attach_sqs(
    d: SandboxData, queue_url: str, *, endpoint_url: str | None = None, faults: LiveFaults | None = None,
    workers: int = 1, **emitter_options: Any,
) -> LiveEmitter:  # fmt: skip
    """From now on `d`'s mutations send Live Events to the SQS queue (`LiveEmitter` options pass through:
    subscribed, compact_fraction, shard, keep_ledger). `close()` the emitter to stop."""
    pipeline = Pipeline(SqsSink(queue_url, endpoint_url=endpoint_url), faults, workers=workers)
    return attach(d, LiveEmitter(d, pipeline, **emitter_options))


def attach_https(
    d: SandboxData, url: str, *, signer: KeyRing | None = None, faults: LiveFaults | None = None,
    retry_delays_s: Sequence[float] = (120.0, 300.0, 600.0), workers: int = 1, verify: bool | str = True,
    **emitter_options: Any,
) -> LiveEmitter:  # fmt: skip
    """From now on `d`'s mutations POST Live Events to `url` (signed JWTs when `signer` is given)."""
    sink = HttpsSink(url, signer=signer, retry_delays_s=retry_delays_s, verify=verify)
    return attach(d, LiveEmitter(d, Pipeline(sink, faults, workers=workers), **emitter_options))
