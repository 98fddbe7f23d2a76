"""Fetch benchmark: the Canvas client against the sandbox, concurrent vs sequential, vs the lower bound.

The sandbox runs in a separate process (its own interpreter and GIL, like a real Canvas) and answers
commands on a pipe: its statistics and the lower bound (README, Benchmarks) for what it served. The client
fetches every entity of every course (course, students, enrollments, assignments, submissions, modules
with their items, student summaries, whose 404 is tolerated):

1. concurrently: a pool of `--workers` threads over (course, entity) tasks, biggest courses first; the
   client's pacer decides how many requests are in flight;
2. sequentially: one thread, `max_in_flight=1`. When a full sequential run would take over ~3 minutes
   (or `--sequential-sample N` asks for it) only a deterministic sample of N courses, spread over the
   size range, is timed and the time is extrapolated by request count; the output says so.

The last line is
`fetch: wall_s=<x> bound_s=<x> bound_ratio=<x> speedup_vs_sequential=<x> requests=<n> throttled=<n>`.

    python benchmarks/fetch_benchmark.py                       # medium scale, hosted, 30 ms latency
    python benchmarks/fetch_benchmark.py --scale small --throttle legacy --sequential-sample 0
"""

import argparse
import math
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

from canvas_assets.canvas import CanvasClient
from canvas_assets.errors import CanvasNotFound
from canvas_assets.sandbox.process import SandboxProcess

ENTITIES = ("course", "students", "enrollments", "assignments", "submissions", "modules", "summaries")
STUDENT_STATES = ("active", "invited", "completed", "inactive")
SEQUENTIAL_BUDGET_S = 180.0


# --- fetching ---------------------------------------------------------------------------------------------
def fetch_entity(client: CanvasClient, course_id: int, entity: str) -> int:
    """Records fetched for one entity of one course (summaries' 404 counts as none)."""
    if entity == "course":
        client.get_course(course_id)
        return 1
    if entity == "students":
        return len(client.list_students(course_id, enrollment_states=STUDENT_STATES))
    if entity == "enrollments":
        return len(client.list_enrollments(course_id))
    if entity == "assignments":
        return len(client.list_assignments(course_id))
    if entity == "submissions":
        return len(client.list_submissions(course_id))
    if entity == "modules":
        return sum(1 + len(m.get("items") or ()) for m in client.list_modules(course_id))
    try:
        return len(client.list_student_summaries(course_id))
    except CanvasNotFound:
        return 0


@dataclass
class Run:
    wall_s: float
    records: int
    requests: int
    throttled: int
    bound_s: float
    peak_in_flight: int
    client: dict[str, Any]
    server_cpu_s: float
    client_cpu_s: float


def timed_fetch(sandbox: SandboxProcess, client: CanvasClient, course_ids: list[int], *, workers: int) -> Run:
    tasks = [(cid, e) for cid in course_ids for e in ENTITIES]
    sandbox.reset_stats()
    started = time.perf_counter()
    cpu_started = time.process_time()
    if workers == 1:
        records = sum(fetch_entity(client, cid, e) for cid, e in tasks)
    else:
        with ThreadPoolExecutor(workers) as pool:
            records = sum(pool.map(lambda t: fetch_entity(client, *t), tasks))
    wall = time.perf_counter() - started
    client_cpu = time.process_time() - cpu_started
    stats = sandbox.stats()
    return Run(
        wall_s=wall,
        records=records,
        requests=stats["requests"],
        throttled=stats["throttled"],
        bound_s=stats["lower_bound_s"],
        peak_in_flight=stats["peak_in_flight"],
        client=client.metrics.snapshot(),
        server_cpu_s=stats["server_cpu_s"],
        client_cpu_s=client_cpu,
    )


def _per_request_us(seconds: float, requests: int) -> str:
    return f"{seconds / max(1, requests) * 1e6:.0f}"


def spread_sample(course_ids: list[int], n: int) -> list[int]:
    """n courses evenly spaced over the list (which is sorted by size): deterministic, every size."""
    if n >= len(course_ids):
        return list(course_ids)
    step = len(course_ids) / n
    return [course_ids[int(i * step)] for i in range(n)]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--scale", default="medium", choices=("small", "medium", "large"))
    parser.add_argument("--throttle", default="hosted", choices=("hosted", "legacy"))
    parser.add_argument("--latency-ms", type=float, default=30.0)
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--courses", type=int, default=None, help="override the scale's course count")
    parser.add_argument("--workers", type=int, default=32, help="threads of the concurrent run")
    parser.add_argument("--max-in-flight", type=int, default=32)
    parser.add_argument(
        "--sequential-sample",
        type=int,
        default=None,
        help="time the sequential client over N courses and extrapolate (0 = every course; "
        "default: every course unless that would take over ~3 minutes)",
    )
    args = parser.parse_args(argv)

    config: dict[str, Any] = {
        "scale": args.scale,
        "throttle": args.throttle,
        "latency_ms": args.latency_ms,
        "seed": args.seed,
    }
    if args.courses is not None:
        config["courses"] = args.courses
    print(f"starting the sandbox in a separate process: {config}", flush=True)
    sandbox = SandboxProcess(config)
    try:
        with CanvasClient(sandbox.base_url, sandbox.token, max_in_flight=args.max_in_flight) as client:
            catalog = client.list_courses(
                account_id=sandbox.account_id, states=("unpublished", "available", "completed")
            )
            # Biggest first, so the longest page chains start early and do not trail at the end.
            catalog.sort(key=lambda c: (-(c.get("total_students") or 0), c["id"]))
            course_ids = [c["id"] for c in catalog]
            print(f"{len(course_ids)} courses; concurrent run with {args.workers} threads ...", flush=True)
            conc = timed_fetch(sandbox, client, course_ids, workers=args.workers)
        print(
            f"concurrent: wall {conc.wall_s:.2f}s, {conc.requests} requests, {conc.records} records, "
            f"throttled {conc.throttled}, peak in flight {conc.peak_in_flight}, bound {conc.bound_s:.2f}s, "
            f"CPU: sandbox {conc.server_cpu_s:.2f}s, client {conc.client_cpu_s:.2f}s "
            f"({_per_request_us(conc.server_cpu_s, conc.requests)} + "
            f"{_per_request_us(conc.client_cpu_s, conc.requests)} us per request); client {conc.client}",
            flush=True,
        )

        sample_n = args.sequential_sample
        if sample_n is None:
            estimate = conc.requests * (args.latency_ms / 1000 + 0.004)
            sample_n = 0
            if estimate > SEQUENTIAL_BUDGET_S:
                sample_n = max(1, math.ceil(len(course_ids) * 60.0 / estimate))
                print(
                    f"a full sequential run would take ~{estimate:.0f}s: sampling {sample_n} courses",
                    flush=True,
                )
        sampled = 0 < sample_n < len(course_ids)
        seq_courses = spread_sample(course_ids, sample_n) if sampled else course_ids
        with CanvasClient(sandbox.base_url, sandbox.token, max_in_flight=1) as seq_client:
            seq = timed_fetch(sandbox, seq_client, seq_courses, workers=1)
        if sampled:
            seq_wall = seq.wall_s * conc.requests / max(1, seq.requests)
            print(
                f"sequential: SAMPLED {len(seq_courses)} of {len(course_ids)} courses: {seq.wall_s:.2f}s for "
                f"{seq.requests} requests, extrapolated by requests to {seq_wall:.1f}s for {conc.requests}",
                flush=True,
            )
        else:
            seq_wall = seq.wall_s
            print(f"sequential: every course, {seq.wall_s:.2f}s for {seq.requests} requests", flush=True)
    finally:
        sandbox.stop()

    bound_ratio = conc.wall_s / conc.bound_s if conc.bound_s > 0 else float("inf")
    speedup = seq_wall / conc.wall_s
    print(
        f"fetch: wall_s={conc.wall_s:.2f} bound_s={conc.bound_s:.2f} bound_ratio={bound_ratio:.2f} "
        f"speedup_vs_sequential={speedup:.1f} requests={conc.requests} throttled={conc.throttled}"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
