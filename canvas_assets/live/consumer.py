"""The SQS consumer behind `canvas-assets live`: receiver threads (ReceiveMessage -> one inbox transaction ->
DeleteMessageBatch: a message is deleted only once its event is committed) and one applier thread
(`apply.apply_pending`). Why a process and not a sensor, and what happens to bad messages and after a crash:
docs/operations.md, "Run the consumer".
"""

from __future__ import annotations

import hashlib
import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any

import sqlalchemy as sa

from canvas_assets.live import apply, inbox
from canvas_assets.live.events import MAX_EVENT_BYTES, BadEvent, LiveEvent, parse_event
from canvas_assets.warehouse.engine import write_transaction

log = logging.getLogger(__name__)

MAX_WAIT_SECONDS = 20  # SQS's longest long poll
APPLY_IDLE_S = 2.0  # the applier looks for pending events at least this often


@dataclass(frozen=True)
class ConsumerSettings:
    """How `canvas-assets live` reads its queue. `endpoint_url` None means AWS itself (region and
    credentials from the usual AWS environment)."""

    queue_url: str | None
    endpoint_url: str | None = None
    region: str = "us-east-1"
    receivers: int = 2
    wait_seconds: int = 2
    visibility_timeout: int = 60
    apply_batch: int = 500
    report_every_s: float = 15.0

    def __post_init__(self) -> None:
        if self.queue_url is not None and not self.queue_url.startswith(("https://", "http://")):
            raise ValueError(
                f"the queue URL {self.queue_url[:80]!r} is not a URL: pass the queue's URL as SQS shows it"
            )
        if not 1 <= self.receivers <= 16:
            raise ValueError("receivers must be between 1 and 16")
        if not 0 <= self.wait_seconds <= MAX_WAIT_SECONDS:
            raise ValueError(f"wait_seconds must be between 0 and {MAX_WAIT_SECONDS} (SQS's long-poll limit)")
        if not 1 <= self.visibility_timeout <= 43200:
            raise ValueError("visibility_timeout must be between 1 s and 12 h (SQS's limits)")
        if not 1 <= self.apply_batch <= 10_000:
            raise ValueError("apply_batch must be between 1 and 10000")


@dataclass
class ConsumerStats:
    """Running totals of one consumer process (read by the reporter and the command line)."""

    received: int = 0
    stored: int = 0
    deleted: int = 0
    bad: int = 0
    applied: apply.ApplyStats = field(default_factory=apply.ApplyStats)
    errors: int = 0


def store_bad(engine: sa.Engine, rows: list[LiveEvent], source: str) -> None:
    """Store unusable messages as already handled (`outcome` bad), so no applier picks them up."""
    if not rows:
        return
    inbox.store(engine, rows, source=source)
    with write_transaction(engine) as conn:
        inbox.mark_applied(conn, {r.key: "bad" for r in rows}, datetime.now(timezone.utc))


def parse_messages(bodies: list[str]) -> tuple[list[LiveEvent], list[LiveEvent]]:
    """(events, unusable messages as inbox entries)."""
    events, bad = [], []
    for body in bodies:
        try:
            events.append(parse_event(body))
        except BadEvent as exc:
            log.warning("live: a message is not a usable live event (%s); stored as bad", exc)
            # Its text (cut at 1 MB) under a key of its own.
            key = hashlib.sha256(body.encode("utf-8", "replace")).hexdigest()
            now, metadata = datetime.now(timezone.utc), {"error": str(exc)}
            bad.append(LiveEvent(key, "(bad)", now, None, metadata, {}, body[:MAX_EVENT_BYTES]))
    return events, bad


class LiveConsumer:
    """Receivers and an applier over one queue and one warehouse; `run` blocks until `stop` is set."""

    def __init__(
        self,
        settings: ConsumerSettings,
        engine: sa.Engine,
        client: Any,
        *,
        reporter: Callable[[apply.ApplyStats], None] | None = None,
    ) -> None:
        self.settings = settings
        self.engine = engine
        self.client = client
        self.reporter = reporter
        self.stats = ConsumerStats()
        self.stop = threading.Event()
        self._stored = threading.Event()
        self._lock = threading.Lock()
        self._since_report = apply.ApplyStats()

    # --- receiving ------------------------------------------------------------------------------------
    def receive_once(self) -> int:
        """One ReceiveMessage -> inbox -> DeleteMessageBatch round; the number of messages handled."""
        s = self.settings
        response = self.client.receive_message(
            QueueUrl=s.queue_url,
            MaxNumberOfMessages=10,
            WaitTimeSeconds=s.wait_seconds,
            VisibilityTimeout=s.visibility_timeout,
        )
        messages = response.get("Messages") or []
        if not messages:
            return 0
        events, bad = parse_messages([m.get("Body") or "" for m in messages])
        new = len(inbox.store(self.engine, events, source="sqs"))
        store_bad(self.engine, bad, "sqs")
        self._stored.set()
        entries = [{"Id": str(i), "ReceiptHandle": m["ReceiptHandle"]} for i, m in enumerate(messages)]
        result = self.client.delete_message_batch(QueueUrl=s.queue_url, Entries=entries)
        with self._lock:
            self.stats.received += len(messages)
            self.stats.stored += new
            self.stats.bad += len(bad)
            self.stats.deleted += len(result.get("Successful") or [])
        for failure in result.get("Failed") or []:
            # Stored already: a later delivery is skipped by the inbox key. Nothing is lost.
            log.warning("live: SQS did not delete a stored message (%s)", failure.get("Code"))
        return len(messages)

    def _receiver(self) -> None:
        backoff = 1.0
        while not self.stop.is_set():
            try:
                self.receive_once()
                backoff = 1.0
            except Exception as exc:  # the queue or the database is away: wait, then try again
                backoff = self._wait_after("receiving", exc, backoff)

    def _wait_after(self, what: str, exc: Exception, backoff: float) -> float:
        """Count and log a failed round, wait `backoff` seconds (or until stopped); the next backoff."""
        with self._lock:
            self.stats.errors += 1
        log.warning("live: %s failed (%s: %s); retrying in %.0f s", what, type(exc).__name__, exc, backoff)
        self.stop.wait(backoff)
        return min(backoff * 2, 30.0)

    def wake(self) -> None:
        """Events were stored (by the HTTPS receiver): apply them now rather than at the next idle tick."""
        self._stored.set()

    # --- applying -------------------------------------------------------------------------------------
    def apply_available(self) -> apply.ApplyStats:
        """Apply pending events until none is left; what was applied."""
        total = apply.ApplyStats()
        while True:
            stats = apply.apply_pending(self.engine, self.settings.apply_batch)
            if not stats.events:
                return total
            total.add(stats)
            with self._lock:
                self.stats.applied.add(stats)
                self._since_report.add(stats)

    def _applier(self) -> None:
        last_report = time.monotonic()
        backoff = 1.0
        while not self.stop.is_set():
            self._stored.wait(APPLY_IDLE_S)
            self._stored.clear()
            try:
                self.apply_available()
                backoff = 1.0
            except Exception as exc:
                backoff = self._wait_after("applying", exc, backoff)
            if time.monotonic() - last_report >= self.settings.report_every_s:
                self.report()
                last_report = time.monotonic()

    def report(self) -> None:
        """Hand what was applied since the last report to the reporter (Dagster observations)."""
        with self._lock:
            since, self._since_report = self._since_report, apply.ApplyStats()
        if self.reporter is not None:
            try:
                self.reporter(since)
            except Exception as exc:  # reporting must never stop the consumer
                log.warning("live: reporting failed (%s: %s)", type(exc).__name__, exc)

    # --- running --------------------------------------------------------------------------------------
    def run(self) -> ConsumerStats:
        """Run until `stop` is set; then finish the calls in flight, apply what was stored and report."""
        receivers = self.settings.receivers if self.settings.queue_url is not None else 0
        threads = [
            threading.Thread(target=self._receiver, name=f"live-receiver-{i}", daemon=True)
            for i in range(receivers)
        ]
        applier = threading.Thread(target=self._applier, name="live-applier", daemon=True)
        for t in [*threads, applier]:
            t.start()
        self.stop.wait()
        for t in threads:
            t.join(timeout=self.settings.wait_seconds + 35)
        applier.join(timeout=60)
        try:
            self.apply_available()
        except Exception as exc:
            log.warning("live: the last apply failed (%s); the events stay pending in the inbox", exc)
        self.report()
        return self.stats
