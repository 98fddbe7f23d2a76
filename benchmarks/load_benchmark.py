"""Load benchmark: how fast do transformed enrollments go into SQLite and PostgreSQL?

Generates realistic raw enrollment records (default 200,000 across 300 courses, with grades, timestamps
with offsets, sections and roles), transforms them with the registered transformer, then loads them into a
fresh SQLite file and a temporary PostgreSQL database (created and dropped here; 127.0.0.1:5432, user
postgres, trust auth, or $CANVAS_ASSETS_TEST_PG). Three loads per database: the first (inserts plus score
history), an identical re-run (updates, no history), and a re-run with 5% of the scores changed.

    python benchmarks/load_benchmark.py [--rows 200000] [--courses 300] [--skip-postgres]

The last line is machine-readable:
    load: sqlite_rows_per_s=<x> postgres_rows_per_s=<x> rows=<n>
(enrollment rows per second of the first load, the one that inserts everything; the first load also
writes a score-history row for every enrollment with a score, which the per-load lines count separately).
"""

from __future__ import annotations

import argparse
import os
import random
import sys
import tempfile
import time
import uuid
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import sqlalchemy as sa

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from canvas_assets.transform import TRANSFORMERS, TransformOptions
from canvas_assets.transform.base import TransformResult
from canvas_assets.warehouse import Warehouse
from canvas_assets.warehouse.engine import dispose_engines

PG_ADMIN_URL = os.environ.get(
    "CANVAS_ASSETS_TEST_PG", "postgresql+psycopg2://postgres@127.0.0.1:5432/postgres"
)
GRADES = ["A", "A-", "B+", "B", "B-", "C+", "C", "D", "F", None]


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


def timed_load(wh: Warehouse, result: TransformResult, course_ids: list[int], label: str) -> float:
    start = time.perf_counter()
    stats = wh.load(
        result, course_ids=course_ids, run_id=f"bench-{label}", synced_at=datetime.now(timezone.utc)
    )
    seconds = time.perf_counter() - start
    t = stats.tables["canvas_enrollments"]
    rate = t.upserted / seconds if seconds else float("inf")
    written = (t.upserted + t.history_rows) / seconds if seconds else float("inf")
    print(
        f"  {label:<28} {seconds:6.2f} s  {rate:>9,.0f} enrollment rows/s ({written:,.0f} rows/s written "
        f"incl. score history)  inserted={t.inserted} history={t.history_rows} soft_deleted={t.soft_deleted}"
    )
    return rate


def bench(url: str, name: str, records: dict[int, list[dict[str, Any]]]) -> float:
    transform = TRANSFORMERS["enrollments"]
    course_ids = sorted(records)
    wh = Warehouse(url)
    wh.ensure_schema()
    print(f"{name}: {wh.url_for_display}")
    first = timed_load(wh, transform(records, TransformOptions()), course_ids, "first load (insert)")
    timed_load(wh, transform(records, TransformOptions()), course_ids, "identical re-run (update)")
    changed = change_scores(records, 0.05)
    timed_load(wh, transform(records, TransformOptions()), course_ids, f"re-run, {changed} scores changed")
    return first


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--rows", type=int, default=200_000)
    parser.add_argument("--courses", type=int, default=300)
    parser.add_argument("--skip-postgres", action="store_true")
    args = parser.parse_args(argv)

    start = time.perf_counter()
    records = make_records(args.rows, args.courses)
    print(
        f"generated {args.rows} enrollment records in {args.courses} courses in {time.perf_counter() - start:.2f} s"
    )
    start = time.perf_counter()
    result = TRANSFORMERS["enrollments"](records, TransformOptions())
    seconds = time.perf_counter() - start
    print(
        f"transform: {result.records_in} records -> {len(result.tables['canvas_enrollments'])} rows in "
        f"{seconds:.2f} s ({result.records_in / seconds:,.0f} records/s), {len(result.rejected)} rejected"
    )

    with tempfile.TemporaryDirectory() as tmp:
        sqlite_rate = bench(
            f"sqlite:///{Path(tmp) / 'bench.db'}", "sqlite", make_records(args.rows, args.courses)
        )
        dispose_engines()

    postgres_rate = float("nan")
    if not args.skip_postgres:
        admin = sa.create_engine(PG_ADMIN_URL, isolation_level="AUTOCOMMIT")
        db = f"canvas_assets_bench_{uuid.uuid4().hex[:8]}"
        with admin.connect() as conn:
            conn.execute(sa.text(f'CREATE DATABASE "{db}"'))
        try:
            url = PG_ADMIN_URL.rsplit("/", 1)[0] + f"/{db}"
            postgres_rate = bench(url, "postgresql", make_records(args.rows, args.courses))
        finally:
            dispose_engines()
            with admin.connect() as conn:
                conn.execute(sa.text(f'DROP DATABASE IF EXISTS "{db}"'))
            admin.dispose()

    print(
        f"load: sqlite_rows_per_s={sqlite_rate:.0f} postgres_rows_per_s={postgres_rate:.0f} rows={args.rows}"
    )


if __name__ == "__main__":
    main()
