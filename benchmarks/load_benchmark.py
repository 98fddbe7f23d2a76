"""Load benchmark: transform and Layer-1 load of enrollments, SQLite and PostgreSQL, and peak memory.

Generates realistic raw enrollment records (default 200,000 across 300 courses, with grades, timestamps
with offsets, sections and roles) and measures, separately:

- transform: the registered enrollments transformer, raw records -> typed frame (best of two);
- per database (a fresh SQLite file and a temporary PostgreSQL database, created and dropped here;
  127.0.0.1:5432, user postgres, trust auth, or $CANVAS_ASSETS_TEST_PG), three loads of the whole range in
  one transaction each: the first (inserts plus score history), an identical re-sync (nothing changed:
  nothing may be written), and a re-sync with 5% of the scores changed (those rows plus their history);
  each timed from `Warehouse.load` call to commit, the frames transformed beforehand;
- on PostgreSQL, the rows the unchanged re-sync wrote, from `pg_stat_user_tables` (n_tup_ins + n_tup_upd
  + n_tup_del deltas over the Layer-1 tables, read after the loading backend has exited so its counters
  are flushed);
- peak memory: a separate process (which imports Dagster and the definitions, as a run process does) loads
  a `large` sandbox (1,500 courses, ~137k enrollments, ~1M submissions, plus students, assignments,
  modules and summaries) from staging into PostgreSQL with the Layer-1 ops' own functions (the transform
  op's chunks of courses written to files, then loaded chunk by chunk in one transaction), twice (a first
  load and a re-sync), and reports its peak RSS (VmHWM) for the whole process.

    python benchmarks/load_benchmark.py [--rows 200000] [--courses 300] [--skip-postgres] [--skip-memory]

The last two lines are machine-readable (rows per second of Layer-1 enrollment rows in the load):
    sqlite-load: rows=<n> first_rows_per_s=<x> unchanged_rows_per_s=<x> changed_rows_per_s=<x>
    load: rows=<n> transform_rows_per_s=<x> first_rows_per_s=<x> unchanged_rows_per_s=<x>
          changed_rows_per_s=<x> unchanged_rows_written=<n> peak_rss_mb=<x>       (one line, PostgreSQL)
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import pickle
import random
import resource
import shutil
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import sqlalchemy as sa

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from canvas_assets.transform import TRANSFORMERS, TransformOptions
from canvas_assets.transform.base import TransformResult
from canvas_assets.warehouse import Warehouse
from canvas_assets.warehouse.engine import dispose_engines
from canvas_assets.warehouse.models import LAYER1_TABLES

PG_ADMIN_URL = os.environ.get(
    "CANVAS_ASSETS_TEST_PG", "postgresql+psycopg2://postgres@127.0.0.1:5432/postgres"
)
GRADES = ["A", "A-", "B+", "B", "B-", "C+", "C", "D", "F", None]
ENTITIES = tuple(TRANSFORMERS)  # every staging entity, submissions included


def _ts(rng: random.Random, base: datetime) -> str:
    when = base + timedelta(seconds=rng.randrange(0, 200 * 86400))
    if rng.random() < 0.2:  # some instances answer with an offset instead of Z
        return when.astimezone(timezone(timedelta(hours=-5))).isoformat()
    return when.strftime("%Y-%m-%dT%H:%M:%SZ")


def make_records(rows: int, courses: int, seed: int = 7) -> dict[int, list[dict[str, Any]]]:
    rng = random.Random(seed)
    base = datetime(2025, 1, 6, tzinfo=timezone.utc)
    course_ids = [4_000_000_000 + i for i in range(courses)]
    per_course = [rows // courses + (1 if i < rows % courses else 0) for i in range(courses)]
    out: dict[int, list[dict[str, Any]]] = {}
    enrollment_id = 9_000_000_000
    for course_id, n in zip(course_ids, per_course, strict=False):
        records = []
        for _ in range(n):
            enrollment_id += 1
            user_id = 7_000_000_000 + rng.randrange(0, rows)
            student = rng.random() < 0.93
            score = round(rng.uniform(30, 100), 2) if student and rng.random() < 0.95 else None
            record: dict[str, Any] = {
                "id": enrollment_id,
                "user_id": user_id,
                "course_id": course_id,
                "course_section_id": course_id * 10 + rng.randrange(3),
                "type": "StudentEnrollment" if student else "TeacherEnrollment",
                "role": "StudentEnrollment" if student else "TeacherEnrollment",
                "role_id": 3 if student else 4,
                "enrollment_state": rng.choice(["active"] * 8 + ["completed", "inactive"]),
                "created_at": _ts(rng, base),
                "updated_at": _ts(rng, base),
                "start_at": None,
                "end_at": None,
                "last_activity_at": _ts(rng, base) if rng.random() < 0.9 else None,
                "last_attended_at": None,
                "total_activity_time": rng.randrange(0, 400_000),
                "associated_user_id": None,
                "user": {"id": user_id, "name": f"Student {user_id}", "sortable_name": f"{user_id}, Student"},
            }
            if student:
                record["grades"] = {
                    "html_url": f"https://canvas.example.edu/courses/{course_id}/grades/{user_id}",
                    "current_score": score,
                    "final_score": None if score is None else round(score * 0.9, 2),
                    "current_grade": rng.choice(GRADES),
                    "final_grade": rng.choice(GRADES),
                    "unposted_current_score": score,
                    "unposted_final_score": None if score is None else round(score * 0.9, 2),
                    "unposted_current_grade": None,
                    "unposted_final_grade": None,
                }
            records.append(record)
        out[course_id] = records
    return out


def change_scores(records: dict[int, list[dict[str, Any]]], fraction: float, seed: int = 11) -> int:
    rng = random.Random(seed)
    changed = 0
    for course_records in records.values():
        for record in course_records:
            grades = record.get("grades")
            if grades and rng.random() < fraction:
                grades["current_score"] = round(rng.uniform(30, 100), 2)
                changed += 1
    return changed


def transform(records: dict[int, list[dict[str, Any]]]) -> TransformResult:
    return TRANSFORMERS["enrollments"](records, TransformOptions())


def timed_load(wh: Warehouse, result: TransformResult, course_ids: list[int], label: str) -> float:
    gc.collect()
    start = time.perf_counter()
    stats = wh.load(
        result, course_ids=course_ids, run_id=f"bench-{label}", synced_at=datetime.now(timezone.utc)
    )
    seconds = time.perf_counter() - start
    t = stats.tables["canvas_enrollments"]
    rate = t.rows / seconds if seconds else float("inf")
    print(
        f"  {label:<30} {seconds:6.2f} s  {rate:>9,.0f} rows/s  rows={t.rows} inserted={t.inserted} "
        f"updated={t.updated} unchanged={t.unchanged} history={t.history_rows} soft_deleted={t.soft_deleted}"
    )
    return rate


def pg_write_counts(url: str, wh: Warehouse) -> int:
    """n_tup_ins + n_tup_upd + n_tup_del summed over the Layer-1 tables (after every backend has flushed)."""
    wh.engine.dispose()  # the loading backends exit, which flushes their statistics
    dispose_engines()
    engine = sa.create_engine(url, poolclass=sa.pool.NullPool)
    try:
        last = -1
        for _ in range(20):  # exiting backends report asynchronously: wait until the figure settles
            with engine.connect() as conn:
                conn.exec_driver_sql("SELECT pg_stat_clear_snapshot()")
                total = conn.execute(
                    sa.text(
                        "SELECT COALESCE(SUM(n_tup_ins + n_tup_upd + n_tup_del), 0) FROM pg_stat_user_tables "
                        "WHERE relname IN :tables"
                    ).bindparams(sa.bindparam("tables", expanding=True)),
                    {"tables": list(LAYER1_TABLES)},
                ).scalar_one()
            if total == last:
                return int(total)
            last = int(total)
            time.sleep(0.3)
        return last
    finally:
        engine.dispose()


def bench(url: str, name: str, rows: int, courses: int) -> dict[str, float]:
    records = make_records(rows, courses)
    course_ids = sorted(records)
    wh = Warehouse(url)
    wh.ensure_schema()
    postgres = wh.dialect == "postgresql"
    print(f"{name}: {wh.url_for_display}")
    out: dict[str, float] = {}
    out["first"] = timed_load(wh, transform(records), course_ids, "first load (insert)")
    result = transform(records)
    before = pg_write_counts(url, wh) if postgres else 0
    out["unchanged"] = timed_load(wh, result, course_ids, "re-sync, nothing changed")
    if postgres:
        out["unchanged_written"] = pg_write_counts(url, wh) - before
        print(f"  pg_stat_user_tables: {out['unchanged_written']:.0f} Layer-1 rows written by the re-sync")
    changed = change_scores(records, 0.05)
    result = transform(records)
    out["changed"] = timed_load(wh, result, course_ids, f"re-sync, {changed} scores changed")
    if postgres:
        out["changed_written"] = pg_write_counts(url, wh) - before
        print(f"  pg_stat_user_tables: {out['changed_written']:.0f} Layer-1 rows written by the two re-syncs")
    return out


@contextmanager
def pg_database() -> Iterator[str]:
    admin = sa.create_engine(PG_ADMIN_URL, isolation_level="AUTOCOMMIT")
    db = f"canvas_assets_bench_{uuid.uuid4().hex[:8]}"
    with admin.connect() as conn:
        conn.execute(sa.text(f'CREATE DATABASE "{db}"'))
    try:
        yield PG_ADMIN_URL.rsplit("/", 1)[0] + f"/{db}"
    finally:
        dispose_engines()
        with admin.connect() as conn:
            conn.execute(
                sa.text("SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = :n"),
                {"n": db},
            )
            conn.execute(sa.text(f'DROP DATABASE IF EXISTS "{db}"'))
        admin.dispose()


# --- memory: one ranged run of 1,500 courses -----------------------------------------------------------
def stage_sandbox(url: str, scale: str) -> list[int]:
    """Stage a sandbox's records (as its API serves them, by course) into the warehouse at `url`."""
    from canvas_assets.sandbox import SandboxConfig
    from canvas_assets.sandbox.data import SandboxData

    data = SandboxData(SandboxConfig(scale=scale), "http://127.0.0.1:1")
    wh = Warehouse(url)
    wh.ensure_schema()
    course_ids = data.course_ids(["available", "completed", "unpublished"])
    fetched_at = datetime.now(timezone.utc)
    for start in range(0, len(course_ids), 100):
        items: list[tuple[str, int, list[dict[str, Any]]]] = []
        for cid in course_ids[start : start + 100]:
            items.append(("courses", cid, [data.courses[cid]]))
            items.append(("students", cid, data.students_of(cid)))
            items.append(("enrollments", cid, data.enrollments_of(cid)))
            items.append(("assignments", cid, data.assignments_of(cid)))
            items.append(("submissions", cid, data.submissions_of(cid)))
            items.append(("modules", cid, data.modules_of(cid)))
            items.append(("student_summaries", cid, data.summaries_of(cid) or []))
        wh.write_staging(items, run_id="bench-stage", fetched_at=fetched_at)
    return course_ids


def memory_child(url: str, course_ids: list[int], passes: int) -> None:
    """What the Layer-1 ops of one ranged run do, entity after entity, in a process that imports Dagster:
    the transform op writes the run's chunk files and hands its manifest over pickled (as the run's IO
    manager does), the load op loads the chunks one at a time in one transaction and removes the files."""
    import canvas_assets.definitions  # noqa: F401  (a run process holds Dagster and the definitions)
    from canvas_assets.transform.chunks import chunk_results, read_rejected, transform_to_chunks

    wh = Warehouse(url)
    counts: dict[str, int] = {}
    with tempfile.TemporaryDirectory() as tmp:
        for n in range(passes):
            run_id = f"bench-mem-{n}"
            for entity in ENTITIES:
                directory = Path(tmp) / run_id / entity
                chunks = transform_to_chunks(wh, entity, course_ids, TransformOptions(), directory)
                manifest = Path(tmp) / f"{run_id}-{entity}.pickle"
                with manifest.open("wb") as f:
                    pickle.dump(chunks, f)
                del chunks
                gc.collect()
                with manifest.open("rb") as f:  # load op
                    chunks = pickle.load(f)
                stats = wh.load_chunks(
                    chunk_results(chunks), run_id=run_id, synced_at=datetime.now(timezone.utc)
                )
                wh.write_rejected(read_rejected(chunks), run_id=run_id)
                shutil.rmtree(directory)
                counts[entity] = stats.rows
                gc.collect()
    print(json.dumps({"peak_rss_mb": peak_rss_mb(), "rows": counts}))


def peak_rss_mb() -> float:
    """This process's peak resident set. Linux: VmHWM, which belongs to the process image; ru_maxrss would
    carry over the high-water mark of the parent that forked it (the benchmark itself, holding its data)."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def measure_memory(scale: str) -> float:
    script = str(Path(__file__).resolve())
    with pg_database() as url:
        start = time.perf_counter()
        staged = subprocess.run(
            [sys.executable, script, "--stage-child", url, "--scale", scale],
            check=True,
            capture_output=True,
            text=True,
        )
        course_ids = json.loads(staged.stdout.strip().splitlines()[-1])
        print(
            f"memory: staged a {scale} sandbox, {len(course_ids)} courses, in {time.perf_counter() - start:.1f} s"
        )
        with tempfile.NamedTemporaryFile("w", suffix=".json", delete=False) as f:
            json.dump(course_ids, f)
        try:
            start = time.perf_counter()
            child = subprocess.run(
                [sys.executable, script, "--memory-child", url, "--course-file", f.name],
                check=True,
                capture_output=True,
                text=True,
            )
        finally:
            os.unlink(f.name)
        report = json.loads(child.stdout.strip().splitlines()[-1])
        print(
            f"memory: one ranged run of {len(course_ids)} courses, first load and re-sync, rows per load "
            f"{report['rows']}, {time.perf_counter() - start:.1f} s, peak RSS {report['peak_rss_mb']:.0f} MB"
        )
        return float(report["peak_rss_mb"])


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--rows", type=int, default=200_000)
    parser.add_argument("--courses", type=int, default=300)
    parser.add_argument("--skip-postgres", action="store_true")
    parser.add_argument("--skip-memory", action="store_true")
    parser.add_argument("--scale", default="large", help="sandbox scale of the memory run")
    parser.add_argument("--stage-child", help=argparse.SUPPRESS)
    parser.add_argument("--memory-child", help=argparse.SUPPRESS)
    parser.add_argument("--course-file", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)

    if args.stage_child:
        print(json.dumps(stage_sandbox(args.stage_child, args.scale)))
        return
    if args.memory_child:
        memory_child(args.memory_child, json.loads(Path(args.course_file).read_text()), passes=2)
        return

    start = time.perf_counter()
    records = make_records(args.rows, args.courses)
    print(
        f"generated {args.rows} enrollment records in {args.courses} courses in {time.perf_counter() - start:.2f} s"
    )
    best = float("inf")
    for _ in range(2):
        gc.collect()
        start = time.perf_counter()
        result = transform(records)
        best = min(best, time.perf_counter() - start)
    transform_rate = result.records_in / best
    print(
        f"transform: {result.records_in} records -> {len(result.tables['canvas_enrollments'])} rows in "
        f"{best:.2f} s ({transform_rate:,.0f} records/s), {len(result.rejected)} rejected"
    )
    del records, result
    gc.collect()

    with tempfile.TemporaryDirectory() as tmp:
        lite = bench(f"sqlite:///{Path(tmp) / 'bench.db'}", "sqlite", args.rows, args.courses)
        dispose_engines()

    pg: dict[str, float] = {}
    if not args.skip_postgres:
        with pg_database() as url:
            pg = bench(url, "postgresql", args.rows, args.courses)
    peak = float("nan") if args.skip_memory or args.skip_postgres else measure_memory(args.scale)

    nan = float("nan")
    print(
        f"sqlite-load: rows={args.rows} first_rows_per_s={lite['first']:.0f} "
        f"unchanged_rows_per_s={lite['unchanged']:.0f} changed_rows_per_s={lite['changed']:.0f}"
    )
    print(
        f"load: rows={args.rows} transform_rows_per_s={transform_rate:.0f} "
        f"first_rows_per_s={pg.get('first', nan):.0f} unchanged_rows_per_s={pg.get('unchanged', nan):.0f} "
        f"changed_rows_per_s={pg.get('changed', nan):.0f} "
        f"unchanged_rows_written={pg.get('unchanged_written', nan):.0f} peak_rss_mb={peak:.0f}"
    )


if __name__ == "__main__":
    main()
