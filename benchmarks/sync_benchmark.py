"""Sync benchmark: a full `canvas-assets sync` (FULL_PROCESSING) of a sandbox, Dagster included.

The sandbox runs in a separate process (medium scale, hosted throttle, 30 ms latency by default). Before
any clock starts it derives every course's grade change log (on first use otherwise: 21.7 s of its one
core at large scale, under its data lock, while a real Canvas reads a stored log). The benchmark runs
exactly what the CLI runs (discovery, then the profile's staging and Layer-1 assets in ranged runs) on
one of two Dagster instances:

- `--instance local`: what `canvas-assets sync` uses with nothing configured (the embedded PostgreSQL
  for the Dagster instance and the warehouse, in a fresh temporary folder);
- `--instance postgres`: the production configuration (`canvas_assets/instance/production.yaml`) on
  the PostgreSQL server at 127.0.0.1:5432, with the warehouse in another database of that server.

It reports the wall time against the sandbox's lower bound for the requests it served (bound_ratio),
throttled responses, Layer-1 rows per second of transform+load, peak RSS of this process and the largest
peak of its finished child processes (the Layer-1 transform's worker processes), and
`dagster_ms_per_course`: (wall - the extract's fetch time - transform and load time) / courses, i.e.
what Dagster's own bookkeeping (runs, steps, events) and discovery cost per course.

When the profile fetches submissions, two more syncs follow on the same instance: an ANALYTICS_FOCUSED
sync (submissions fetched incrementally) with nothing changed in Canvas, whose `staging_rows_written` is the
staging rows it wrote (0: an unchanged fetch writes none); then, after submissions are handed in and graded
in a tenth of the courses, another. `submissions_rows` is the live rows of `canvas_submissions` after it, and
`incremental_request_ratio` the submissions requests of that re-sync over those of the full fetch.
Last line:

`sync: courses=<n> wall_s=<x> bound_s=<x> bound_ratio=<x> dagster_ms_per_course=<x> throttled=<n> load_rows_per_s=<x> peak_rss_mb=<x> worker_peak_rss_mb=<x> [submissions_rows=<n> incremental_request_ratio=<x> staging_rows_written=<n>]`

    python benchmarks/sync_benchmark.py --scale large --instance local
    python benchmarks/sync_benchmark.py --scale medium --instance postgres
"""

import argparse
import os
import resource
import shutil
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import sqlalchemy as sa

from canvas_assets.sandbox.process import SandboxProcess

PG_ADMIN_URL = os.environ.get(
    "CANVAS_ASSETS_TEST_PG", "postgresql+psycopg2://postgres@127.0.0.1:5432/postgres"
)


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


class ChildRss:
    """The largest resident size any child process of this one reached, sampled every 0.2 s: the Layer-1
    transform's worker processes (the sandbox's process is left out; the embedded PostgreSQL is not a child).
    `getrusage(RUSAGE_CHILDREN)` cannot tell: a child started by fork and exec keeps, as its peak, the
    parent's size at the fork."""

    def __init__(self, exclude: set[int]) -> None:
        self.exclude = exclude
        self.peak_kb = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._sample, name="child-rss", daemon=True)
        self._thread.start()

    def _sample(self) -> None:
        me = os.getpid()
        while not self._stop.wait(0.2):
            for pid in _children(me):
                if pid in self.exclude:
                    continue
                try:
                    with open(f"/proc/{pid}/status") as f:
                        for line in f:
                            if line.startswith("VmRSS:"):
                                self.peak_kb = max(self.peak_kb, int(line.split()[1]))
                except OSError:
                    continue

    def stop(self) -> float:
        self._stop.set()
        self._thread.join()
        return self.peak_kb / 1024.0


def _children(pid: int) -> list[int]:
    out: list[int] = []
    try:
        for task in os.listdir(f"/proc/{pid}/task"):
            with open(f"/proc/{pid}/task/{task}/children") as f:
                out += [int(c) for c in f.read().split()]
    except OSError:
        pass
    return out


def submission_requests(stats: dict[str, Any]) -> int:
    return sum(n for endpoint, n in stats["by_endpoint"].items() if "/students/submissions" in endpoint)


def stage_seconds_by_entity(runs: list[Any]) -> dict[str, float]:
    """Transform+load seconds per Layer-1 entity, from the runs' sync reports (slowest first)."""
    seconds: dict[str, float] = {}
    for run in runs:
        for key, value in run.figures.items():
            if key.startswith(("canvas/transform_seconds.", "canvas/load_seconds.")):
                entity = key.rsplit(".", 1)[1]
                seconds[entity] = seconds.get(entity, 0.0) + float(value)
    return dict(sorted(seconds.items(), key=lambda kv: -kv[1]))


def stage_figures(runs: list[Any]) -> tuple[float, int, float]:
    """(extract fetch seconds, Layer-1 rows, transform+load seconds) from the runs' sync reports."""
    fetch, rows, seconds = 0.0, 0, 0.0
    for run in runs:
        for key, value in run.figures.items():
            if key == "canvas/fetch_seconds":
                fetch += float(value)
            elif key.startswith("canvas/rows."):
                rows += int(value)
            elif key.startswith(("canvas/transform_seconds.", "canvas/load_seconds.")):
                seconds += float(value)
    return fetch, rows, seconds


@contextmanager
def instance_home(kind: str) -> Iterator[None]:
    """Point this process at a fresh Dagster instance and warehouse of `kind`; clean up afterwards."""
    from canvas_assets.instance import LOCAL_CONFIG, PRODUCTION_CONFIG, write_instance_config

    root = Path(tempfile.mkdtemp(prefix=f"canvas-bench-{kind}-"))
    created: list[str] = []
    admin = sa.create_engine(PG_ADMIN_URL, isolation_level="AUTOCOMMIT")
    try:
        if kind == "local":
            os.environ["CANVAS_ASSETS_HOME"] = str(root)
            os.environ.pop("CANVAS_ASSETS_DATABASE_URL", None)
            write_instance_config(root / "dagster_home", LOCAL_CONFIG)
        else:
            tag = uuid.uuid4().hex[:10]
            created = [f"canvas_bench_dagster_{tag}", f"canvas_bench_wh_{tag}"]
            with admin.connect() as conn:
                for name in created:
                    conn.execute(sa.text(f'CREATE DATABASE "{name}"'))
            url = sa.engine.make_url(PG_ADMIN_URL)
            os.environ.update(
                DAGSTER_PG_HOST=url.host or "127.0.0.1",
                DAGSTER_PG_PORT=str(url.port or 5432),
                DAGSTER_PG_USER=url.username or "postgres",
                DAGSTER_PG_PASSWORD=url.password or "",
                DAGSTER_PG_DB=created[0],
                CANVAS_ASSETS_DATABASE_URL=url.set(database=created[1]).render_as_string(hide_password=False),
            )
            write_instance_config(root / "dagster_home", PRODUCTION_CONFIG)
        os.environ["DAGSTER_HOME"] = str(root / "dagster_home")
        yield
    finally:
        from canvas_assets.instance.local_store import stop_embedded_server
        from canvas_assets.warehouse.engine import dispose_engines

        dispose_engines()
        with admin.connect() as conn:
            for name in created:
                conn.execute(sa.text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()
        stop_embedded_server(root / "pgdata")  # a large sync leaves 1.7 GB there
        shutil.rmtree(root, ignore_errors=True)


def run_through_execute_in_process() -> None:
    """`--run-path execute_in_process`: the CLI's runs through Dagster's public `execute_in_process`
    instead of `canvas_assets.instance.inprocess` (which streams the events instead of keeping them), to
    compare the two: same runs, same tags, in this process."""
    from canvas_assets.cli import sync as cli_sync
    from canvas_assets.cli.stopping import owner_tags

    def execute_run(job: Any, instance: Any, *, run_config: Any, tags: Any, asset_selection: Any = ()) -> Any:
        result = job.execute_in_process(
            run_config=run_config,
            instance=instance,
            tags={**tags, **owner_tags()},
            asset_selection=list(asset_selection) or None,
            raise_on_error=False,
        )
        failure = next((e for e in result.all_events if e.is_step_failure), None)
        return cli_sync.RunResult(result.run_id, result.success, failure)

    cli_sync.execute_run = execute_run  # type: ignore[assignment]


def run_one(sandbox: SandboxProcess, kind: str, profile_name: str) -> dict[str, Any]:
    import dagster as dg

    from canvas_assets.cli.sync import discover, run_sync, select_courses
    from canvas_assets.definitions import defs
    from canvas_assets.profiles import preset
    from canvas_assets.warehouse import Warehouse
    from canvas_assets.warehouse.engine import default_database_url

    os.environ.update(CANVAS_BASE_URL=sandbox.base_url, CANVAS_API_TOKEN=sandbox.token)
    profile = preset(profile_name)
    with instance_home(kind):
        warehouse = Warehouse(default_database_url())
        warehouse.ensure_schema()
        sandbox.reset_stats()
        children = ChildRss(exclude={sandbox.pid} if sandbox.pid is not None else set())
        with dg.DagsterInstance.get() as instance:
            started = time.monotonic()
            found = discover(defs, instance, {"states": ["available", "completed"]})
            if not found.success:
                raise SystemExit(f"discovery failed: {found.failure}")
            courses = select_courses(instance, warehouse.catalog_course_ids(), None, None)
            summary = run_sync(defs, instance, warehouse, profile, courses)
            wall = time.monotonic() - started
            stats = sandbox.stats()
            resync: dict[str, Any] = {}
            if "submissions" in profile.staging_entities:
                resync = incremental_resync(sandbox, defs, instance, warehouse, courses, stats)
        fetch_s, rows, stage_seconds = stage_figures(summary.runs)
    bound = float(stats["lower_bound_s"])
    dagster_s = wall - fetch_s - stage_seconds
    result = {
        "instance": kind,
        "courses": len(courses),
        "failed": len(summary.failed),
        "wall_s": wall,
        "bound_s": bound,
        "bound_ratio": wall / bound if bound > 0 else float("inf"),
        "dagster_ms_per_course": 1000.0 * dagster_s / max(1, len(courses)),
        "requests": int(stats["requests"]),
        "throttled": int(stats["throttled"]),
        "rows": rows,
        "stage_s": stage_seconds,
        "load_rows_per_s": rows / stage_seconds if stage_seconds > 0 else 0.0,
        "peak_rss_mb": peak_rss_mb(),
        "worker_peak_rss_mb": children.stop(),
        "runs": len(summary.runs),
        "fetch_s": fetch_s,
        **resync,
    }
    print(
        f"[{kind}] {result['courses']} courses ({result['failed']} failed) in {result['runs']} run(s): "
        f"wall {wall:.2f}s, bound {bound:.2f}s (ratio {result['bound_ratio']:.2f}), {result['requests']} "
        f"requests, throttled {result['throttled']}; extract fetch {fetch_s:.2f}s "
        f"({fetch_s / bound if bound else 0:.2f}x the bound), Layer-1 {rows} rows in {stage_seconds:.2f}s "
        f"of transform+load ({result['load_rows_per_s']:.0f} rows/s); Dagster and discovery {dagster_s:.1f}s "
        f"({result['dagster_ms_per_course']:.1f} ms per course); peak RSS {result['peak_rss_mb']:.0f} MB "
        f"(a transform worker process: {result['worker_peak_rss_mb']:.0f} MB at most)",
        flush=True,
    )
    by_entity = stage_seconds_by_entity(summary.runs)
    print(
        f"[{kind}] Layer-1 transform+load by entity: "
        + ", ".join(f"{entity} {seconds:.1f}s" for entity, seconds in by_entity.items()),
        flush=True,
    )
    if resync:
        print(
            f"[{kind}] submissions: {resync['submissions_rows']} rows; full fetch "
            f"{resync['full_requests']} requests; after {resync['changed']} changes, the incremental re-sync "
            f"made {resync['incremental_requests']} ({resync['incremental_request_ratio']:.3f} of the full "
            f"fetch) in {resync['resync_s']:.2f}s, writing {resync['changed_staging_rows_written']} staging rows; "
            f"the no-change re-sync before it wrote staging_rows_written={resync['staging_rows_written']}",
            flush=True,
        )
    return result


def staging_rows_written(runs: list[Any]) -> int:
    """Staging record rows the runs' extracts inserted, updated or deleted (their sync reports)."""
    return sum(int(v) for run in runs for k, v in run.figures.items() if k == "canvas/staging_rows_written")


def incremental_resync(
    sandbox: SandboxProcess,
    defs: Any,
    instance: Any,
    warehouse: Any,
    courses: list[str],
    stats: dict[str, Any],
) -> dict[str, Any]:
    """Changes in a tenth of the courses, then an ANALYTICS_FOCUSED sync: its submissions requests."""
    from canvas_assets.cli.sync import run_sync
    from canvas_assets.profiles import preset

    full_requests = submission_requests(stats)
    # A re-sync with nothing changed in Canvas: staging should write no record row.
    unchanged = run_sync(defs, instance, warehouse, preset("ANALYTICS_FOCUSED"), courses)
    if unchanged.failed:
        raise SystemExit(f"the no-change re-sync failed for {len(unchanged.failed)} course(s)")
    rows_written = staging_rows_written(unchanged.runs)
    changed = sandbox.churn(0.1)
    sandbox.reset_stats()
    started = time.monotonic()
    summary = run_sync(defs, instance, warehouse, preset("ANALYTICS_FOCUSED"), courses)
    seconds = time.monotonic() - started
    if summary.failed:
        raise SystemExit(f"the incremental re-sync failed for {len(summary.failed)} course(s)")
    requests = submission_requests(sandbox.stats())
    with warehouse.engine.connect() as conn:
        live = conn.execute(sa.text("SELECT COUNT(*) FROM canvas_submissions WHERE deleted_at IS NULL"))
        submissions_rows = int(live.scalar_one())
    return {
        "submissions_rows": submissions_rows,
        "full_requests": full_requests,
        "incremental_requests": requests,
        "incremental_request_ratio": requests / full_requests if full_requests else 0.0,
        "changed": changed,
        "resync_s": seconds,
        "staging_rows_written": rows_written,
        "changed_staging_rows_written": staging_rows_written(summary.runs),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--scale", default="medium", choices=("small", "medium", "large"))
    parser.add_argument("--courses", type=int, default=None)
    parser.add_argument("--latency-ms", type=float, default=30.0)
    parser.add_argument("--throttle", default="hosted", choices=("hosted", "legacy"))
    parser.add_argument("--profile", default="FULL_PROCESSING")
    parser.add_argument("--instance", default="local", choices=("local", "postgres", "both"))
    parser.add_argument(
        "--run-path",
        default="inprocess",
        choices=("inprocess", "execute_in_process"),
        help="how the CLI's runs execute: the project's streaming adapter (what `canvas-assets sync` does) "
        "or Dagster's public execute_in_process, which keeps every event of a run until it ends",
    )
    args = parser.parse_args(argv)
    if args.run_path == "execute_in_process":
        run_through_execute_in_process()

    config: dict[str, Any] = {"scale": args.scale, "throttle": args.throttle, "latency_ms": args.latency_ms}
    if args.courses is not None:
        config["courses"] = args.courses
    print(f"starting the sandbox in a separate process: {config}", flush=True)
    sandbox = SandboxProcess(config)
    derived = time.monotonic()
    events = sandbox.derive_all()
    print(
        f"the sandbox derived its grade change logs ({events} events) in {time.monotonic() - derived:.1f}s, "
        "before any clock starts: a real Canvas has them stored",
        flush=True,
    )
    results = []
    try:
        kinds = ("local", "postgres") if args.instance == "both" else (args.instance,)
        for kind in kinds:
            results.append(run_one(sandbox, kind, args.profile))
    finally:
        sandbox.stop()
    for r in results:
        print(
            f"sync: courses={r['courses']} wall_s={r['wall_s']:.2f} bound_s={r['bound_s']:.2f} "
            f"bound_ratio={r['bound_ratio']:.2f} dagster_ms_per_course={r['dagster_ms_per_course']:.1f} "
            f"throttled={r['throttled']} load_rows_per_s={r['load_rows_per_s']:.0f} "
            f"peak_rss_mb={r['peak_rss_mb']:.0f} worker_peak_rss_mb={r['worker_peak_rss_mb']:.0f}"
            + (
                f" submissions_rows={r['submissions_rows']} "
                f"incremental_request_ratio={r['incremental_request_ratio']:.3f} "
                f"staging_rows_written={r['staging_rows_written']}"
                if "submissions_rows" in r
                else ""
            )
            + ("" if r is results[-1] else f"  ({r['instance']})")
        )
    return 1 if any(r["failed"] for r in results) else 0


if __name__ == "__main__":
    sys.exit(main())
