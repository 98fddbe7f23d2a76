"""Live-event benchmark: grades from the sandbox's mutation to the committed Layer-1 row, through SQS.

Per consumer count (default 1, then 2), on a fresh PostgreSQL database (127.0.0.1:5432, trust auth, or
$CANVAS_ASSETS_TEST_PG; created and dropped here):

1. the sandbox (`--scale`) is synced once (ANALYTICS_FOCUSED, through the real Dagster job) so the
   submissions exist, and moto's SQS server starts in its own process with a fresh standard queue;
2. `canvas-assets live` starts as child processes (the deployment shape), `--consumers` of them;
3. steady stream: `GradingLoad` regrades submissions at `--rate` a second for `--seconds`, each a
   `grade_change` event delivered to the queue without faults. The lag of an event is from the sandbox's
   mutation (wall clock, taken in the mutation) to the commit of its Layer-1 row (the inbox's
   `applied_at`, set in the applying transaction just before its commit): p50 and p99. `lost` counts
   delivered events that never reached the inbox and are not still waiting in the queue after the drain
   timeout (those are `undrained`: late, not lost);
4. faulty stream (`--fault-seconds`): 10% duplicates, reordering within 30 s, 1% drops. `duplicates_applied`
   counts live history rows written twice for one change plus inbox rows beyond the distinct events;
   `regressions` counts submissions whose score or grade is not the newest delivered one once everything
   is applied; then a nightly sync runs (with the `live_matches_rest` check) and `reconcile_diffs` counts
   submission scores and grades that still differ from the sandbox's newest values;
5. the consumers' CPU (utime + stime from /proc) per applied event, their peak RSS (VmHWM, the largest
   consumer), and moto's CPU over the steady stream, to say which side limits.

    python benchmarks/live_benchmark.py [--rate 200] [--seconds 60] [--consumers 1,2] [--scale small]
                                        [--transport sqs|https]

`--transport https` posts signed JWTs straight to one consumer's `--https` receiver (no queue server in
between), which measures the consumer without moto. The line before the last says where the time goes:
`send_to_commit_*` is the part after the sandbox handed the event over (the consumer's part and the
transport's), `moto_cpu_ms_per_event` the queue server's CPU, `cpu_ms_per_event` the consumers'.
moto's SQS server computes the queue's attributes (scans of every message in the queue) for each message
it accepts, so it slows down as the queue fills: at 200 events/s it falls behind and the lag is moto's.

The last line (of the last consumer count) is machine-readable:
    live: events=<n> events_per_s=<x> p50_s=<x> p99_s=<x> lost=<n> duplicates_applied=<n> regressions=<n>
          reconcile_diffs=<n> peak_rss_mb=<x>        (one line)
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager, nullcontext
from pathlib import Path
from typing import Any

import sqlalchemy as sa

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import dagster as dg

from canvas_assets.definitions import defs
from canvas_assets.defs.partitions import COURSES, range_tags
from canvas_assets.live.events import parse_event
from canvas_assets.live.mapping import changes_of
from canvas_assets.live.sqs_server import SqsServer
from canvas_assets.profiles import preset
from canvas_assets.sandbox import CanvasSandbox, SandboxConfig
from canvas_assets.sandbox.live_delivery import LiveFaults, attach_https, attach_sqs
from canvas_assets.sandbox.live_keys import JwksServer, KeyRing
from canvas_assets.sandbox.live_load import GradingLoad, grading_targets
from canvas_assets.warehouse.engine import dispose_engines, get_engine

PG_ADMIN_URL = os.environ.get(
    "CANVAS_ASSETS_TEST_PG", "postgresql+psycopg2://postgres@127.0.0.1:5432/postgres"
)
BIN = Path(sys.executable).parent


@contextmanager
def fresh_database() -> Iterator[str]:
    name = f"canvas_assets_live_{uuid.uuid4().hex[:10]}"
    admin = sa.create_engine(PG_ADMIN_URL, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(sa.text(f'CREATE DATABASE "{name}"'))
    try:
        yield PG_ADMIN_URL.rsplit("/", 1)[0] + f"/{name}"
    finally:
        dispose_engines()
        with admin.connect() as conn:
            conn.execute(sa.text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()


def sync(instance: dg.DagsterInstance, first: bool) -> dg.ExecuteInProcessResult:
    """The nightly sync: course discovery (first time), then ANALYTICS_FOCUSED over every course."""
    if first:
        assert defs.resolve_job_def("discover_courses").execute_in_process(instance=instance).success
    keys = list(instance.get_dynamic_partitions(COURSES.name))
    job = defs.resolve_job_def("sync_analytics")
    config = preset("ANALYTICS_FOCUSED").to_run_config()
    result = job.execute_in_process(run_config=config, instance=instance, tags=range_tags(keys[0], keys[-1]))
    assert result.success, "the sync failed"
    return result


def proc_cpu_s(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def proc_hwm_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def start_consumers(n: int, source: list[str], db_url: str) -> list[subprocess.Popen[bytes]]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("CANVAS_", "DAGSTER_"))}
    env["CANVAS_ASSETS_DATABASE_URL"] = db_url
    command = [str(BIN / "canvas-assets"), "live", *source, "--no-dagster"]
    procs = [subprocess.Popen(command, env=env, stdout=subprocess.DEVNULL) for _ in range(n)]
    time.sleep(5.0)  # imports
    return procs


def free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class Transport:
    """Where the sandbox delivers and the consumers read: an SQS queue on moto, or HTTPS POSTs (signed JWTs)
    straight to the consumer (no queue server in between: the consumer's own limit)."""

    def __init__(
        self, kind: str, sqs: SqsServer | None, ring: KeyRing | None, jwks: JwksServer | None
    ) -> None:
        self.kind, self.sqs, self.ring, self.jwks = kind, sqs, ring, jwks
        if sqs is not None:
            self.queue = sqs.create_queue(visibility_timeout_s=60)
        else:
            self.port = free_port()

    def consumer_args(self) -> list[str]:
        if self.sqs is not None:
            return [
                "--queue-url",
                self.queue,
                "--endpoint-url",
                self.sqs.endpoint_url,
                "--wait-seconds",
                "1",
                "--receivers",
                "2",
            ]
        assert self.jwks is not None
        return ["--https", f"127.0.0.1:{self.port}", "--jwks-url", self.jwks.url]

    def attach(self, d: Any, faults: LiveFaults | None) -> Any:
        only = {"subscribed": ["grade_change"], "compact_fraction": 0.3}
        if self.sqs is not None:
            return attach_sqs(
                d, self.queue, endpoint_url=self.sqs.endpoint_url, faults=faults, workers=2, **only
            )
        # Canvas posts many events at once; each POST waits for the inbox commit, so senders must be many.
        return attach_https(d, f"http://127.0.0.1:{self.port}/", signer=self.ring, faults=faults, workers=16,
                            retry_delays_s=(1.0, 2.0, 4.0), **only)  # fmt: skip

    def depth(self) -> int:
        return sum(self.sqs.depth(self.queue)) if self.sqs is not None else 0

    def server_cpu(self) -> float:
        return proc_cpu_s(self.sqs.pid or 0) if self.sqs is not None else 0.0


def inbox_rows(engine: sa.Engine) -> dict[str, tuple[float | None, str | None]]:
    with engine.connect() as conn:
        rows = conn.execute(sa.text("SELECT event_key, applied_at, outcome FROM canvas_live_events"))
        return {r[0]: (r[1].timestamp() if r[1] else None, r[2]) for r in rows}


def wait_drained(engine: sa.Engine, keys: set[str], timeout: float = 180) -> float:
    """Seconds until every key is in the inbox and applied (or the timeout)."""
    start = time.monotonic()
    while time.monotonic() - start < timeout:
        rows = inbox_rows(engine)
        if all(k in rows and rows[k][0] is not None for k in keys):
            break
        time.sleep(0.5)
    return time.monotonic() - start


def newest(ledger: list[Any], delivered_only: bool) -> dict[tuple[int, str], Any]:
    """(submission, score|grade) -> the value of the newest event that set it."""
    out: dict[tuple[int, str], tuple[Any, Any]] = {}
    for entry in ledger:
        if delivered_only and entry.copies == 0:
            continue
        event = parse_event(json.dumps(entry.event))
        for change in changes_of(event) or []:
            for column in ("score", "grade"):
                key = (int(change.row_id or 0), column)
                if column in change.values and (key not in out or out[key][0] <= event.event_time):
                    out[key] = (event.event_time, change.values[column])
    return {k: v for k, (_, v) in out.items()}


def differing(engine: sa.Engine, expected: dict[tuple[int, str], Any]) -> int:
    ids = sorted({k[0] for k in expected})
    with engine.connect() as conn:
        stmt = sa.text("SELECT id, score, grade FROM canvas_submissions WHERE id IN :ids").bindparams(
            sa.bindparam("ids", expanding=True)
        )
        stored = {int(r[0]): {"score": r[1], "grade": r[2]} for r in conn.execute(stmt, {"ids": ids})}
    return sum(1 for (sid, col), v in expected.items() if stored.get(sid, {}).get(col) != v)


def key_of(entry: Any) -> str:
    return parse_event(json.dumps(entry.event)).key


def percentile(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


def run(consumers: int, args: argparse.Namespace) -> dict[str, Any]:
    config = SandboxConfig(scale=args.scale, throttle="off", latency_ms=0.0, fault_rate=0.0)
    sqs_server = SqsServer() if args.transport == "sqs" else nullcontext()
    ring = KeyRing() if args.transport == "https" else None
    jwks_server = JwksServer(ring) if ring is not None else nullcontext()
    with (
        fresh_database() as db_url,
        CanvasSandbox(config) as sb,
        sqs_server as sqs,
        jwks_server as jwks,
        dg.DagsterInstance.ephemeral() as inst,
    ):
        os.environ.update(
            CANVAS_BASE_URL=sb.base_url, CANVAS_API_TOKEN=sb.token, CANVAS_ASSETS_DATABASE_URL=db_url
        )
        t0 = time.monotonic()
        sync(inst, first=True)
        print(f"[{consumers} consumer(s)] initial sync {time.monotonic() - t0:.1f} s", file=sys.stderr)
        engine = get_engine(db_url)
        targets = grading_targets(sb.data, per_course=400)
        transport = Transport(args.transport, sqs, ring, jwks)
        procs = start_consumers(consumers, transport.consumer_args(), db_url)
        try:
            # 3. the steady stream
            emitter = transport.attach(sb.data, None)
            cpu0 = [proc_cpu_s(p.pid) for p in procs]
            moto0 = transport.server_cpu()
            depth_max = 0
            load = GradingLoad(sb.data, rate=args.rate, targets=targets).start(args.seconds)
            while load._thread is not None and load._thread.is_alive():
                depth_max = max(depth_max, transport.depth())
                time.sleep(1.0)
            report = load.join()
            emitter.flush(120)
            emitter.close()
            keys = {key_of(e) for e in emitter.ledger if e.copies}
            drain_s = wait_drained(engine, keys)
            rows = inbox_rows(engine)
            lags = [
                rows[key_of(e)][0] - e.mutation_wall
                for e in emitter.ledger
                if e.copies and rows.get(key_of(e), (None,))[0]
            ]  # type: ignore[operator]
            # The part after delivery: from the (first) send of the event to its commit.
            after_send = [
                rows[key_of(e)][0] - (e.mutation_wall + min(e.sent_monotonic) - e.mutation_monotonic)  # type: ignore[operator]
                for e in emitter.ledger
                if e.copies and e.sent_monotonic and rows.get(key_of(e), (None,))[0]
            ]
            # Not in the inbox yet but still in the queue (a server that fell behind) is late, not lost.
            undrained = transport.depth()
            lost = max(0, sum(1 for k in keys if k not in rows) - undrained)
            moto_cpu = transport.server_cpu() - moto0
            cpu = sum(proc_cpu_s(p.pid) - c for p, c in zip(procs, cpu0, strict=True))
            steady = {"events": len(lags), "events_per_s": report.mutations / report.seconds, "p50": percentile(lags, 0.5),
                      "p99": percentile(lags, 0.99), "lost": lost, "cpu_ms_per_event": 1000 * cpu / max(1, len(keys)),
                      "moto_cpu_ms_per_event": 1000 * moto_cpu / max(1, len(keys)), "max_queue_depth": depth_max, "undrained": undrained,
                      "drain_s": drain_s, "send_to_commit_p50": percentile(after_send, 0.5), "send_to_commit_p99": percentile(after_send, 0.99), "behind_s": report.max_behind_s}  # fmt: skip
            print(
                f"[{consumers} consumer(s)] steady: {json.dumps({k: round(v, 3) for k, v in steady.items()})}",
                file=sys.stderr,
            )
            # 4. the faulty stream
            faults = LiveFaults(duplicate_rate=0.1, reorder_window_s=30.0, drop_rate=0.01, seed=23)
            emitter = transport.attach(sb.data, faults)
            GradingLoad(sb.data, rate=args.rate, targets=targets, seed=5).run(args.fault_seconds)
            emitter.flush(120)
            emitter.close()
            delivered = {key_of(e) for e in emitter.ledger if e.copies}
            wait_drained(engine, delivered)
            with engine.connect() as conn:
                twice = conn.execute(sa.text(
                    "SELECT COUNT(*) FROM (SELECT submission_id, recorded_at FROM canvas_submission_score_history "
                    "WHERE run_id = 'live' GROUP BY submission_id, recorded_at HAVING COUNT(*) > 1) d")).scalar_one()  # fmt: skip
                inbox_total = conn.execute(sa.text("SELECT COUNT(*) FROM canvas_live_events")).scalar_one()
            duplicates_applied = int(twice) + max(0, int(inbox_total) - len(keys) - len(delivered))
            regressions = differing(engine, newest(emitter.ledger, delivered_only=True))
            lost += max(0, sum(1 for k in delivered if k not in inbox_rows(engine)) - transport.depth())
            peak = max(proc_hwm_mb(p.pid) for p in procs)
        finally:
            for p in procs:
                p.send_signal(signal.SIGTERM)
            for p in procs:
                p.wait(timeout=60)
        result = sync(inst, first=False)
        (check,) = [e for e in result.get_asset_check_evaluations() if e.check_name == "live_matches_rest"]
        dropped = sum(1 for e in emitter.ledger if e.copies == 0)
        reconcile_diffs = differing(engine, newest(emitter.ledger, delivered_only=False))
        print(
            f"[{consumers} consumer(s)] faulty: events {len(emitter.ledger)}, dropped {dropped}, duplicated "
            f"{sum(1 for e in emitter.ledger if e.copies > 1)}; live_matches_rest disagreements "
            f"{check.metadata['disagreements'].value} (what the nightly sync repaired)",
            file=sys.stderr,
        )
        return {**steady, "lost": lost, "duplicates_applied": duplicates_applied, "regressions": regressions,
                "reconcile_diffs": reconcile_diffs, "peak_rss_mb": peak}  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rate", type=float, default=200.0, help="grade_change events a second")
    parser.add_argument("--seconds", type=float, default=60.0)
    parser.add_argument("--fault-seconds", type=float, default=20.0)
    parser.add_argument("--consumers", default="1,2", help="consumer counts to run, e.g. 1,2")
    parser.add_argument("--scale", default="small", choices=["small", "medium"])
    parser.add_argument(
        "--transport", default="sqs", choices=["sqs", "https"], help="https: one consumer, no queue"
    )
    args = parser.parse_args()
    counts = [int(x) for x in args.consumers.split(",")]
    if args.transport == "https":
        # One receiver listens on one port; several would need a load balancer in front (docs/operations.md).
        if counts != [1]:
            print(
                "live_benchmark: --transport https runs one consumer (1 of --consumers 1,2)", file=sys.stderr
            )
        counts = [1]
    for n in counts:
        r = run(n, args)
        print(
            f"transport={args.transport} consumers={n} cpu_ms_per_event={r['cpu_ms_per_event']:.2f} moto_cpu_ms_per_event="
            f"{r['moto_cpu_ms_per_event']:.2f} max_queue_depth={r['max_queue_depth']} undrained={r['undrained']} "
            f"drain_s={r['drain_s']:.1f} "
            f"load_behind_s={r['behind_s']:.2f} send_to_commit_p50_s={r['send_to_commit_p50']:.3f} "
            f"send_to_commit_p99_s={r['send_to_commit_p99']:.3f}"
        )
        print(
            f"live: events={r['events']} events_per_s={r['events_per_s']:.1f} p50_s={r['p50']:.3f} "
            f"p99_s={r['p99']:.3f} lost={r['lost']} duplicates_applied={r['duplicates_applied']} "
            f"regressions={r['regressions']} reconcile_diffs={r['reconcile_diffs']} peak_rss_mb={r['peak_rss_mb']:.0f}",
            flush=True,
        )


if __name__ == "__main__":
    main()
