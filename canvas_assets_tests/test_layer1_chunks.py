"""Layer-1 in course chunks (canvas_assets/transform/chunks.py): with chunks forced tiny, a run transformed and
loaded chunk by chunk leaves the warehouse, the figures and the metadata of a one-piece transform and load,
and stays one transaction."""

import dataclasses
from collections.abc import Iterator
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import dagster as dg
import numpy as np
import pandas as pd
import pytest
import sqlalchemy as sa

from canvas_assets.defs.assets import common
from canvas_assets.errors import TransformationError
from canvas_assets.profiles import STAGING_ENTITIES, preset
from canvas_assets.sandbox import SandboxConfig, audit, structure
from canvas_assets.sandbox.data import SandboxData
from canvas_assets.transform import TRANSFORMERS, TransformResult
from canvas_assets.transform import chunks as transform_chunks
from canvas_assets.warehouse import Warehouse, db
from canvas_assets.warehouse.engine import dispose_engines
from canvas_assets.warehouse.models import LAYER1_TABLES
from canvas_assets.warehouse.stats import LoadStats
from canvas_assets_tests.conftest import PG_ADMIN_URL
from canvas_assets_tests.harness import create_database, drop_database, failure_text, pipeline_harness

T0 = datetime(2025, 3, 1, 12, 0, tzinfo=timezone.utc)
T1 = T0 + timedelta(hours=1)
OPTIONS = preset("FULL_PROCESSING").transform_options()
BIG = 1000  # the small sandbox's large course: 1,442 submissions, more than a tiny chunk


@pytest.fixture
def tiny_chunks(monkeypatch: pytest.MonkeyPatch) -> None:
    """Chunks of at most 10 staged records (every entity of the small sandbox spans several)."""
    monkeypatch.setattr(transform_chunks, "CHUNK_RECORDS", 10)


@pytest.fixture
def reference(db_url: str, tmp_path: Path) -> Iterator[Warehouse]:
    """A second migrated warehouse of the same kind as `wh`, for the one-piece loads."""
    name = None
    if db_url.startswith("sqlite"):
        url = f"sqlite:///{tmp_path / 'reference.db'}"
    else:
        name = create_database()
        url = PG_ADMIN_URL.rsplit("/", 1)[0] + f"/{name}"
    warehouse = Warehouse(url)
    warehouse.ensure_schema()
    yield warehouse
    dispose_engines()
    if name is not None:
        drop_database(name)


def sandbox_data() -> SandboxData:
    return SandboxData(SandboxConfig(scale="small"), "http://127.0.0.1:1")


def all_courses(data: SandboxData) -> list[int]:
    return data.course_ids(["available", "completed", "unpublished"])


def structure_items(data: SandboxData, cid: int) -> list[tuple[Any, ...]]:
    """Sections, assignment groups, grading periods and period scores of a course, as the sandbox serves
    them (period scores staged as the fetch stages them: with the period's id)."""
    periods = data.grading_periods_of(cid)
    students = data.enrollments_of(cid, types=["StudentEnrollment"])
    scores = [
        {**e, "grading_period_id": p["id"], "grades": data.period_grades(e, p["id"])}
        for p in periods
        for e in students
    ]
    return [
        (
            "sections",
            cid,
            [
                structure.section_json(data, s, total_students=True, limited=False)
                for s in data.sections_of(cid)
            ],
        ),
        ("assignment_groups", cid, [structure.group_json(g) for g in data.assignment_groups_of(cid)]),
        ("grading_periods", cid, [structure.period_json(data, p) for p in periods]),
        ("period_scores", cid, scores),
    ]


def stage(wh: Warehouse, data: SandboxData, course_ids: list[int], at: datetime) -> None:
    """Stage every entity of `course_ids` as the sandbox serves them."""
    items: list[tuple[Any, ...]] = []
    for cid in course_ids:
        items += [
            ("courses", cid, [data.courses[cid]]),
            ("students", cid, data.students_of(cid)),
            ("enrollments", cid, data.enrollments_of(cid)),
            ("assignments", cid, data.assignments_of(cid)),
            ("submissions", cid, data.submissions_of(cid)),
            ("modules", cid, data.modules_of(cid)),
            ("student_summaries", cid, data.summaries_of(cid) or []),
            ("grade_changes", cid, [audit.served_event(e) for e in audit.events_of(data, cid)]),
            *structure_items(data, cid),
        ]
    wh.write_staging(items, run_id=f"stage-{at:%H%M}", fetched_at=at - timedelta(minutes=5))


def one_piece(
    wh: Warehouse, entity: str, course_ids: list[int], at: datetime
) -> tuple[TransformResult, LoadStats]:
    """The unchunked path: every course's staging (by ascending course) in one transform and one load."""
    staged = dict(sorted(wh.read_staging(entity, course_ids).items()))
    result = TRANSFORMERS[entity](staged, OPTIONS)
    stats = wh.load(result, course_ids=sorted(staged), run_id=f"run-{at:%H%M}", synced_at=at)
    return result, stats


def chunked(
    wh: Warehouse, entity: str, course_ids: list[int], at: datetime, directory: Path
) -> tuple[list[transform_chunks.Chunk], LoadStats]:
    """What the transform and load ops do."""
    chunks = transform_chunks.transform_to_chunks(wh, entity, course_ids, OPTIONS, directory)
    stats = wh.load_chunks(transform_chunks.chunk_results(chunks), run_id=f"run-{at:%H%M}", synced_at=at)
    return chunks, stats


def rows_out(result: TransformResult) -> int:
    return sum(len(frame) for frame in result.tables.values())


def rows_per_course(result: TransformResult) -> dict[int, int]:
    counts: dict[int, int] = {}
    for frame in result.tables.values():
        if "course_id" in frame.columns:
            for course_id in frame["course_id"]:
                counts[int(course_id)] = counts.get(int(course_id), 0) + 1
    return counts


def snapshot(wh: Warehouse) -> dict[str, list[tuple]]:
    """Every table's rows, in a stable order. A Layer-1 table's `id` is a Canvas id; other tables' is a
    surrogate numbered in insert order, which is not the warehouse's content: left out."""
    metadata = sa.MetaData()
    metadata.reflect(wh.engine)
    out = {}
    with wh.engine.connect() as conn:
        for name, table in metadata.tables.items():
            columns = [c for c in table.c if name in LAYER1_TABLES or c.name != "id"]
            rows = conn.execute(sa.select(*columns)).all()
            out[name] = sorted((tuple(r) for r in rows), key=repr)
    return out


def change_canvas(data: SandboxData) -> None:
    """A day of Canvas: scores, a dropped enrollment, a deleted assignment, a renamed student enrolled in
    several courses, a regrade and a malformed record (quarantined)."""
    data.change_score(BIG)
    data.drop_enrollment(BIG)
    data.delete_assignment(1006)
    data.grade_submission(1006)
    courses_of: dict[int, int] = {}
    for cid in all_courses(data):
        for user in data.students_of(cid):
            courses_of[user["id"]] = courses_of.get(user["id"], 0) + 1
    shared = min(u for u, n in courses_of.items() if n > 1)  # staged in several chunks
    data.rename_user(shared, "Zoë Ångström-Renamed")
    data.corrupt_record("enrollments", 1006)


# --- Warehouse.load_chunks and the op functions, on SQLite and PostgreSQL ----------------------------------
def test_a_run_loaded_in_chunks_is_the_one_piece_load(wh, reference, tiny_chunks, tmp_path):
    data = sandbox_data()
    courses = all_courses(data)
    rejected = 0
    for at in (T0, T1):  # a first load, then a re-sync after Canvas changed
        if at == T1:
            change_canvas(data)
        stage(wh, data, courses, at)
        stage(reference, data, courses, at)
        for entity in STAGING_ENTITIES:
            expected, expected_stats = one_piece(reference, entity, courses, at)
            chunks, stats = chunked(wh, entity, courses, at, tmp_path / entity)
            # Every entity spans several chunks but grading periods (a few courses of the small sandbox have
            # any: fewer records than one chunk holds).
            assert len(chunks) > 1 or expected.records_in <= transform_chunks.CHUNK_RECORDS, entity
            assert stats.to_metadata() == expected_stats.to_metadata(), entity
            assert [c for chunk in chunks for c in chunk.course_ids] == sorted(courses)
            assert sum(chunk.rows for chunk in chunks) == rows_out(expected)
            assert sum(chunk.records_in for chunk in chunks) == expected.records_in
            assert {c: n for chunk in chunks for c, n in chunk.rows_of.items()} == rows_per_course(expected)
            assert transform_chunks.read_rejected(chunks) == expected.rejected
            rejected += sum(chunk.rejected for chunk in chunks)
        assert snapshot(wh) == snapshot(reference)
    assert rejected > 0  # the malformed record went through the chunks too


def test_worker_processes_make_the_chunks_of_the_in_process_transform(wh, reference, tiny_chunks, tmp_path):
    """Chunks transformed by two spawned workers (every entity forced through them) load exactly what the
    in-process transform loads: same chunks, figures, repeated keys dropped the same way, same tables."""
    data = sandbox_data()
    courses = all_courses(data)
    for at in (T0, T1):
        if at == T1:
            change_canvas(data)
        stage(wh, data, courses, at)
        stage(reference, data, courses, at)
        for entity in ("students", "enrollments", "submissions"):
            with pytest.MonkeyPatch.context() as inline:
                inline.setattr(transform_chunks, "WORKERS", 1)
                expected, expected_stats = chunked(
                    reference, entity, courses, at, tmp_path / "inline" / entity
                )
            with pytest.MonkeyPatch.context() as parallel:
                parallel.setattr(transform_chunks, "WORKERS", 2)
                parallel.setattr(transform_chunks, "PARALLEL_RECORDS", 0)
                assert transform_chunks._workers(len(expected), 1) == 2
                chunks, stats = chunked(wh, entity, courses, at, tmp_path / "workers" / entity)
            assert stats.to_metadata() == expected_stats.to_metadata(), entity
            assert [dataclasses.replace(c, path="") for c in chunks] == [
                dataclasses.replace(c, path="") for c in expected
            ], entity
            if entity == "students":
                assert any(c.repeated for c in chunks)  # students enrolled in courses of several chunks
        assert snapshot(wh) == snapshot(reference)


def test_the_number_of_transform_workers_comes_from_the_environment(monkeypatch):
    from canvas_assets.errors import ConfigurationError

    monkeypatch.setattr(transform_chunks, "PARALLEL_RECORDS", 0)
    monkeypatch.setenv("CANVAS_ASSETS_TRANSFORM_WORKERS", "1")
    assert transform_chunks._workers(8, 10**6) == 1
    monkeypatch.setenv("CANVAS_ASSETS_TRANSFORM_WORKERS", "3")
    assert transform_chunks._workers(8, 10**6) == 3
    assert transform_chunks._workers(2, 10**6) == 2  # never more than the chunks
    for bad in ("0", "two", "-1"):
        monkeypatch.setenv("CANVAS_ASSETS_TRANSFORM_WORKERS", bad)
        with pytest.raises(ConfigurationError, match=r"CANVAS_ASSETS_TRANSFORM_WORKERS=.* is not a number"):
            transform_chunks._workers(8, 10**6)
    monkeypatch.delenv("CANVAS_ASSETS_TRANSFORM_WORKERS")
    assert transform_chunks._workers(8, 10**6) >= 1


def test_a_key_in_two_chunks_keeps_its_first_occurrence(wh, monkeypatch, tmp_path):
    monkeypatch.setattr(transform_chunks, "CHUNK_RECORDS", 1)
    student = {"id": 7, "name": "From course 11", "sortable_name": "11, From"}
    wh.write_staging(
        [
            ("students", 12, [{**student, "name": "From course 12"}, {"id": 8, "name": "Only in 12"}]),
            ("students", 11, [student]),
        ],
        run_id="stage",
        fetched_at=T0,
    )
    chunks, stats = chunked(wh, "students", [11, 12], T0, tmp_path)
    assert [chunk.course_ids for chunk in chunks] == [[11], [12]]
    assert [chunk.rows for chunk in chunks] == [1, 1]  # student 7 is counted once, in course 11's chunk
    assert (stats.rows, stats.inserted, stats.unchanged) == (2, 2, 0)
    with wh.engine.connect() as conn:
        names = dict(conn.execute(sa.text("SELECT id, name FROM canvas_students")).all())
    assert names == {7: "From course 11", 8: "Only in 12"}


def test_a_run_with_nothing_staged_loads_one_empty_chunk(wh, tmp_path):
    chunks, stats = chunked(wh, "modules", [11, 12], T0, tmp_path)
    assert [(chunk.course_ids, chunk.rows) for chunk in chunks] == [([], 0)]
    assert sorted(stats.tables) == ["canvas_module_items", "canvas_modules"]  # as a one-piece load reports
    assert (stats.rows, stats.courses_confirmed) == (0, 0)


def test_a_failure_in_a_later_chunk_rolls_back_every_chunk(wh, tiny_chunks, monkeypatch, tmp_path):
    data = sandbox_data()
    courses = all_courses(data)
    stage(wh, data, courses, T0)
    chunked(wh, "enrollments", courses, T0, tmp_path / "first")
    change_canvas(data)
    stage(wh, data, courses, T1)
    before = snapshot(wh)
    chunks = transform_chunks.transform_to_chunks(wh, "enrollments", courses, OPTIONS, tmp_path / "second")
    assert (
        chunks[0].course_ids[0] == BIG
    )  # the first chunk holds the changed score and the dropped enrollment

    real_load_result = db.load_result
    loaded: list[list[int]] = []

    def load_then_fail_at_the_third(conn: sa.Connection, result: TransformResult, **kwargs: Any) -> LoadStats:
        stats = real_load_result(conn, result, **kwargs)
        loaded.append(list(kwargs["course_ids"]))
        if len(loaded) == 3:
            raise RuntimeError("disk full (injected)")
        return stats

    monkeypatch.setattr(db, "load_result", load_then_fail_at_the_third)
    with pytest.raises(RuntimeError, match="disk full"):
        wh.load_chunks(transform_chunks.chunk_results(chunks), run_id="run-1300", synced_at=T1)
    assert loaded == [chunk.course_ids for chunk in chunks[:3]]
    assert snapshot(wh) == before
    assert all(Path(chunk.path).exists() for chunk in chunks)  # a retry of the load reads them again

    monkeypatch.setattr(db, "load_result", real_load_result)
    Path(chunks[2].path).unlink()
    with pytest.raises(TransformationError, match="is gone"):
        wh.load_chunks(transform_chunks.chunk_results(chunks), run_id="run-1300", synced_at=T1)
    assert snapshot(wh) == before

    chunks = transform_chunks.transform_to_chunks(wh, "enrollments", courses, OPTIONS, tmp_path / "second")
    stats = wh.load_chunks(transform_chunks.chunk_results(chunks), run_id="run-1300", synced_at=T1)
    assert stats.tables["canvas_enrollments"].soft_deleted == 1  # the dropped enrollment, in chunk 1
    assert snapshot(wh) != before


def test_a_failed_transform_leaves_no_chunk_files(wh, tiny_chunks, monkeypatch, tmp_path):
    data = sandbox_data()
    courses = all_courses(data)
    stage(wh, data, courses, T0)
    transformer = TRANSFORMERS["enrollments"]
    calls: list[int] = []

    batches = transformer.batches

    def fail_at_the_third(records: Any, options: Any) -> TransformResult:
        calls.append(1)
        if len(calls) == 3:
            raise ValueError("a transformer bug (injected)")
        return batches(records, options)

    monkeypatch.setattr(transformer, "batches", fail_at_the_third)
    with pytest.raises(TransformationError, match="transformer for enrollments failed: ValueError"):
        transform_chunks.transform_to_chunks(wh, "enrollments", courses, OPTIONS, tmp_path / "chunks")
    assert not (tmp_path / "chunks").exists()


# --- the ops, through Dagster ---------------------------------------------------------------------------------
@pytest.fixture
def harness(make_sandbox, sqlite_url, monkeypatch, tiny_chunks):
    with pipeline_harness(make_sandbox(scale="small", throttle="hosted"), sqlite_url, monkeypatch) as h:
        assert h.discover().success
        yield h


def chunk_files(h: Any, run_id: str) -> list[Path]:
    return [
        p
        for p in (Path(h.instance.storage_directory()) / "layer1_handover" / run_id).rglob("*")
        if p.is_file()
    ]


@pytest.mark.parametrize("workers", [None, "2"], ids=["in-process", "two-worker-processes"])
def test_the_ops_in_tiny_chunks_report_what_a_one_piece_transform_does(harness, monkeypatch, workers):
    h = harness
    if workers is not None:  # every entity's transform in spawned worker processes, inside the run
        monkeypatch.setattr(transform_chunks, "PARALLEL_RECORDS", 0)
        monkeypatch.setenv("CANVAS_ASSETS_TRANSFORM_WORKERS", workers)
    result = h.sync("FULL_PROCESSING")
    assert result.success, failure_text(result)
    wh = Warehouse(h.db_url)
    courses = [int(k) for k in h.course_keys()]
    figures = common.run_figures(h.instance, result.run_id)
    materialized: dict[str, dict[int, Any]] = {}
    for event in result.get_asset_materialization_events():
        mat = event.event_specific_data.materialization
        if mat.asset_key.path[0] == "layer1" and mat.partition is not None:  # not the account's terms
            materialized.setdefault(mat.asset_key.path[1], {})[int(mat.partition)] = mat.metadata
    for entity in STAGING_ENTITIES:
        expected = TRANSFORMERS[entity](dict(sorted(wh.read_staging(entity, courses).items())), OPTIONS)
        assert figures[f"canvas/rows.{entity}"] == rows_out(expected), entity
        assert figures[f"canvas/rejected.{entity}"] == len(expected.rejected), entity
        by_course = rows_per_course(expected)
        rows = {c: meta["dagster/row_count"].value for c, meta in materialized[entity].items()}
        assert rows == {c: by_course.get(c, 0) for c in rows}, entity
        assert set(rows) == set(courses), entity
        for name, frame in expected.tables.items():  # a first sync: every row is this load's
            assert h.rows(f"SELECT COUNT(*) FROM {name}")[0][0] == len(frame), name
    assert chunk_files(h, result.run_id) == []  # the loads removed their chunks


def test_a_load_that_loses_the_database_in_a_later_chunk_is_run_again_from_its_chunk_files(
    harness, monkeypatch
):
    h = harness
    monkeypatch.setattr(common, "DATABASE_RETRY_WAIT_S", 0)
    real_load_result = db.load_result
    loaded: list[list[int]] = []

    def lose_the_database_once(conn: sa.Connection, result: TransformResult, **kwargs: Any) -> LoadStats:
        stats = real_load_result(conn, result, **kwargs)
        loaded.append(list(kwargs["course_ids"]))
        if len(loaded) == 3:
            raise sa.exc.OperationalError("COMMIT", {}, Exception("server closed the connection (injected)"))
        return stats

    monkeypatch.setattr(db, "load_result", lose_the_database_once)
    enrollments = [dg.AssetKey(["staging", "enrollments"]), dg.AssetKey(["layer1", "enrollments"])]
    result = h.sync("LIGHTWEIGHT", selection=enrollments)
    assert result.success, failure_text(result)
    retried = [e.step_key for e in result.all_events if e.event_type_value == "STEP_UP_FOR_RETRY"]
    assert len(retried) == 1 and retried[0].endswith("load_enrollments")
    staged = [int(c) for c in h.course_keys() if h.staging("enrollments", int(c)) is not None]
    assert len(loaded) > 6 and loaded[:3] == loaded[3:6]  # the second attempt loaded every chunk again
    assert [c for chunk in loaded[3:] for c in chunk] == sorted(staged)
    staged_rows = sum(len(h.staging("enrollments", c) or []) for c in staged)
    assert h.rows("SELECT COUNT(*) FROM canvas_enrollments")[0][0] == staged_rows
    assert chunk_files(h, result.run_id) == []


def lightweight_job() -> dg.JobDefinition:
    """The LIGHTWEIGHT sync job, for `dg.reconstructable` (a re-execution rebuilds the job from here)."""
    from canvas_assets.definitions import defs

    return defs.resolve_job_def("sync_lightweight")


def test_a_failed_load_keeps_its_hand_over_and_a_re_execution_from_failure_loads_it_without_transforming(
    harness, monkeypatch
):
    """The `layer1_handover` IO manager keeps a failed load's chunks and manifest, and a re-execution of the
    failed run (which does not run the transform step again) finds them under the parent run's identity."""
    h = harness
    real_load_result = db.load_result

    def a_bug_in_the_load(conn: sa.Connection, result: TransformResult, **kwargs: Any) -> LoadStats:
        raise ValueError("a load bug (injected)")

    monkeypatch.setattr(db, "load_result", a_bug_in_the_load)
    enrollments = [dg.AssetKey(["staging", "enrollments"]), dg.AssetKey(["layer1", "enrollments"])]
    failed = h.sync("LIGHTWEIGHT", selection=enrollments)
    assert not failed.success
    kept = chunk_files(h, failed.run_id)
    assert any(p.name.endswith(".manifest") for p in kept)
    assert sum(p.name.startswith("chunk-") for p in kept) > 1  # tiny chunks: several
    assert h.rows("SELECT COUNT(*) FROM canvas_enrollments")[0][0] == 0

    monkeypatch.setattr(db, "load_result", real_load_result)
    transformed: list[str] = []
    real_transform = transform_chunks.transform_to_chunks
    monkeypatch.setattr(
        transform_chunks,
        "transform_to_chunks",
        lambda *a, **k: transformed.append("again") or real_transform(*a, **k),
    )
    parent = h.instance.get_run_by_id(failed.run_id)
    assert parent is not None
    with dg.execute_job(
        dg.reconstructable(lightweight_job),
        h.instance,
        tags={k: v for k, v in parent.tags.items() if k.startswith("dagster/asset_partition_range")},
        reexecution_options=dg.ReexecutionOptions.from_failure(failed.run_id, h.instance),
    ) as again:
        assert again.success
        steps = {e.step_key for e in again.all_events if e.event_type_value == "STEP_SUCCESS"}
    assert any(s.endswith("load_enrollments") for s in steps)
    assert not any(s.endswith("transform_enrollments") for s in steps) and transformed == []
    staged = [int(c) for c in h.course_keys() if h.staging("enrollments", int(c)) is not None]
    staged_rows = sum(len(h.staging("enrollments", c) or []) for c in staged)
    assert h.rows("SELECT COUNT(*) FROM canvas_enrollments")[0][0] == staged_rows > 0
    assert chunk_files(h, failed.run_id) == []  # the re-execution's load released the parent's hand-over


def test_text_keys_are_checked_as_utf8_bytes_and_repeats_across_chunks_are_found():
    from canvas_assets.transform.chunks import _isin_sorted, _keys

    first = _keys(pd.DataFrame({"id": ["9b1d-é", "0a2c", "ffff"]}), ["id"])
    again = _keys(pd.DataFrame({"id": ["0a2c", "new", "9b1d-é"]}), ["id"])
    assert first.dtype.kind == "S"  # 1 byte a character, not numpy's 4
    assert _isin_sorted(again, np.sort(first)).tolist() == [True, False, True]
