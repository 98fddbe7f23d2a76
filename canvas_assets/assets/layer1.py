"""Layer-1 tables: `layer1/<entity>` graph assets, each `load_<entity>(transform_<entity>(staging))`.

The transformer op reads the run's courses from staging and turns raw Canvas records into typed rows
(one registry of transformers, shared with the tests); the load op upserts them, soft-deletes what
vanished and records score history, for every course of a ranged run in ONE transaction.

Memory is bounded by a chunk of courses, not by the run. A ranged run of 1,500 courses stages about a
million submissions; transformed, handed over and loaded in one piece, the Layer-1 step peaked near 900 MB
(benchmarks/load_benchmark.py). So the transform op works in chunks of whole courses (at most
`CHUNK_RECORDS` staged records; a larger course is a chunk of its own): it reads one chunk's staging,
transforms it and writes the chunk's `TransformResult`, pickled, to a file in this run's own directory of
the instance's storage (where Dagster's filesystem IO manager keeps the run's step outputs). The op's
output is a small manifest, `StagedTransform`. The load op feeds the chunk files one at a time to
`Warehouse.load_chunks`, which loads them all in one transaction: a failure in any chunk leaves the
warehouse exactly as it was before the load.

Why files: Dagster hands an op's output over in one piece (kept in memory, or pickled whole by the IO
manager), so the chunks cannot be the output without the whole run's rows being in memory at once; and an
op per chunk would split the load into one transaction per chunk. The files are written and read by the
same run (the definitions run every step of a run in one process, `in_process_executor`): nothing depends
on a file shared between runs. The load op deletes them when it has finished; a load op that fails keeps
them, so that Dagster's retry of a load that lost its database reads them again (so does a re-execution of
the failed run, which reads its parent's manifest from the IO manager too). A failed transform op removes
what it wrote.

A chunk holds whole courses, so its soft delete covers exactly its own courses, and the peak is at least
what the run's biggest course needs. A key can still occur in two chunks (a student enrolled in courses of
both: students are global); the first occurrence wins across chunks as it does within a transform, so the
rows, figures and loads are those of a one-piece transform.
"""

import dataclasses
import pickle
import shutil
import time
from collections.abc import Iterator, Sequence
from datetime import datetime, timezone
from pathlib import Path

import dagster as dg
import numpy as np
import pandas as pd

from canvas_assets.assets.common import (
    add_course_metadata,
    course_keys,
    course_metadata,
    dagster_failures,
    database_retries,
    extract_outcomes,
    gone_course_ids,
    record_run_figures,
)
from canvas_assets.assets.tables import table_metadata
from canvas_assets.entities import ENTITIES
from canvas_assets.errors import TransformationError
from canvas_assets.memory import release_free_heap
from canvas_assets.partitions import COURSES, SINGLE_RUN
from canvas_assets.profiles import STAGING_ENTITIES, SyncProfileResource
from canvas_assets.progress import report as report_progress
from canvas_assets.transform import TRANSFORMERS, TransformOptions, TransformResult
from canvas_assets.transform.quarantine import Rejected
from canvas_assets.transform.schema import key_of
from canvas_assets.warehouse.db import Warehouse
from canvas_assets.warehouse.load import refresh_statistics
from canvas_assets.warehouse.resource import WarehouseResource
from canvas_assets.warehouse.staging import StagedRecords

# Staged records per chunk: a chunk this size costs the ops 100-150 MB at their peak (decoded records,
# frames). Smaller chunks save little (a course is never split, and the large sandbox's biggest has 135k
# submissions) and cost time: each chunk's load is a round of statements (the first load of 1,500 courses'
# submissions takes 9-11 s in chunks of 100k records, 15 s in chunks of 25k).
CHUNK_RECORDS = 100_000
READ_COURSES = 100  # courses per staging read while chunks are assembled (compressed records)


@dataclasses.dataclass
class Chunk:
    """One chunk of the run's transform: its pickled `TransformResult` and what the load op reports of it."""

    path: str
    course_ids: list[int]  # the courses whose rows this chunk's load replaces
    rows_of: dict[int, int]  # rows per course, over the tables that carry a course_id
    rows: int
    records_in: int
    rejected: int


@dataclasses.dataclass
class StagedTransform:
    """What the transform op hands to the load op: where the chunks are, and the run's own figures."""

    chunks: list[Chunk]
    directory: str  # the run's chunk files of this entity: removed after the load
    seconds: float
    not_loaded: dict[int, str]  # course -> why its rows were left as they were (failed fetch, no staging)
    gone: list[int]
    entities_in_run: int  # how many Layer-1 entities this run loads (for progress)

    @property
    def course_ids(self) -> list[int]:
        """The courses whose rows this load replaces (gone ones were soft-deleted already)."""
        return [c for chunk in self.chunks for c in chunk.course_ids]


def build_layer1_asset(entity: str) -> dg.AssetsDefinition:
    transformer = TRANSFORMERS[entity]

    @dg.op(
        name=f"transform_{entity}",
        ins={"staged": dg.In(dg.Nothing)},
        out=dg.Out(StagedTransform, is_required=False),
        tags={"canvas/stage": "transform"},
    )
    def transform_op(
        context: dg.OpExecutionContext, warehouse: WarehouseResource, sync_profile: SyncProfileResource
    ) -> Iterator[dg.Output]:
        with database_retries(), dagster_failures("transform"):
            profile = sync_profile.resolve()
            if not profile.wants(entity):
                context.log.info(f"profile {profile.name} switches {entity} off: layer1/{entity} skipped")
                return
            t0 = time.monotonic()
            courses = course_keys(context)
            wh = warehouse.get_warehouse()
            wh.ensure_schema()
            gone = gone_course_ids(wh, courses)
            fetched = extract_outcomes(wh, context.run_id, entity)
            failed: list[int] = []
            wanted = [c for c in courses if c not in gone]
            if fetched:
                # The extract ran in this run: load what it fetched, and leave the rows of a course it could
                # not fetch as they are (its staging is an older fetch; loading it would pass as fresh).
                failed = sorted(
                    c for c, (status, _) in fetched.items() if status not in ("success", "skipped")
                )
                wanted = [c for c in wanted if c in fetched and c not in failed]
                if failed:
                    context.log.warning(
                        f"{entity} of {len(failed)} course(s) not fetched, left as they were: {failed[:20]}"
                    )
            directory = chunk_directory(context, entity)
            chunks = transform_to_chunks(wh, entity, wanted, profile.transform_options(), directory)
            staged = {c for chunk in chunks for c in chunk.course_ids}
            missing = [c for c in courses if c not in staged and c not in gone and c not in fetched]
            if missing:
                context.log.warning(
                    f"{len(missing)} course(s) have no {entity} staging yet and are left as they are: "
                    f"{missing[:20]}"
                )
            not_loaded = {c: "not fetched in this run: its rows were left as they were" for c in failed}
            not_loaded.update({c: "no staging yet: its rows were left as they were" for c in missing})
            yield dg.Output(
                StagedTransform(
                    chunks=chunks,
                    directory=str(directory),
                    seconds=time.monotonic() - t0,
                    not_loaded=not_loaded,
                    gone=sorted(gone),
                    entities_in_run=len(profile.staging_entities),
                )
            )

    @dg.op(name=f"load_{entity}", tags={"canvas/stage": "load"})
    def load_op(
        context: dg.OpExecutionContext, staged: StagedTransform, warehouse: WarehouseResource
    ) -> None:
        with database_retries(), dagster_failures("load"):
            wh = warehouse.get_warehouse()
            synced_at = datetime.now(timezone.utc)
            t0 = time.monotonic()
            stats = wh.load_chunks(chunk_results(staged.chunks), run_id=context.run_id, synced_at=synced_at)
            analyzed = refresh_statistics(wh.engine, stats)
            rejected = read_rejected(staged.chunks)
            if rejected:
                wh.write_rejected(rejected, run_id=context.run_id)
                context.log.warning(
                    f"{len(rejected)} {entity} record(s) quarantined in canvas_rejected_records; "
                    f"first: {rejected[0].reason}"
                )
            load_seconds = time.monotonic() - t0
            rows = sum(chunk.rows for chunk in staged.chunks)
            records_in = sum(chunk.records_in for chunk in staged.chunks)
            per_course: dict[int, dict] = {
                c: course_metadata(status="success", rows=chunk.rows_of.get(c, 0))
                for chunk in staged.chunks
                for c in chunk.course_ids
            }
            per_course.update({c: course_metadata(status="gone", rows=0) for c in staged.gone})
            per_course.update(
                {
                    c: {**course_metadata(status="failed", rows=0), "canvas/error": why}
                    for c, why in staged.not_loaded.items()
                }
            )
            add_course_metadata(context, dg.AssetKey(["layer1", entity]), per_course)
            record_run_figures(
                context,
                {
                    f"canvas/rows.{entity}": str(rows),
                    f"canvas/rejected.{entity}": str(len(rejected)),
                    f"canvas/transform_seconds.{entity}": f"{staged.seconds:.3f}",
                    f"canvas/load_seconds.{entity}": f"{load_seconds:.3f}",
                },
            )
            run = context.instance.get_run_by_id(context.run_id)
            loaded = sum(1 for k in (run.tags if run else {}) if k.startswith("canvas/rows."))
            report_progress("layer1", loaded, staged.entities_in_run, f"{entity}: {rows} rows")
            context.log.info(
                f"layer1/{entity}: {rows} rows of {len(staged.course_ids)} course(s) "
                f"({records_in} records in, {len(rejected)} rejected, {len(staged.chunks)} chunk(s)); "
                f"transform {staged.seconds:.2f}s, load {load_seconds:.2f}s; {stats.to_metadata()}"
                + (f"; planner statistics refreshed: {', '.join(analyzed)}" if analyzed else "")
            )
            # Last, so that a step retried after anything above failed still finds its chunks.
            shutil.rmtree(staged.directory, ignore_errors=True)

    @dg.graph_asset(
        name=entity,
        key_prefix="layer1",
        group_name="layer1",
        partitions_def=COURSES,
        backfill_policy=SINGLE_RUN,
        description=ENTITIES[entity].layer1_description,
        ins={"staged": dg.AssetIn(dg.AssetKey(["staging", entity]), dagster_type=dg.Nothing)},
        kinds={"sql"},
        metadata=table_metadata(*transformer.tables, *ENTITIES[entity].extra_tables),
    )
    def layer1_asset(staged):  # type: ignore[no-untyped-def]
        return load_op(transform_op(staged))

    return layer1_asset


def chunk_directory(context: dg.OpExecutionContext, entity: str) -> Path:
    """This run's directory for the chunk files of `entity`, beside the run's IO-manager outputs."""
    return Path(context.instance.storage_directory()) / context.run_id / "layer1_chunks" / entity


def transform_to_chunks(
    wh: Warehouse, entity: str, course_ids: Sequence[int], options: TransformOptions, directory: Path
) -> list[Chunk]:
    """Transform the staged records of `course_ids` chunk by chunk, each chunk's result pickled to a file in
    `directory` (emptied first: an earlier attempt's files are stale). Courses without staging are in no
    chunk; a run with nothing staged still has one (empty) chunk, whose load reports every table with zeros.
    On failure, the files written so far are removed."""
    transformer = TRANSFORMERS[entity]
    shutil.rmtree(directory, ignore_errors=True)
    directory.mkdir(parents=True)
    seen: dict[str, list[np.ndarray]] = {}
    chunks: list[Chunk] = []
    try:
        for index, records in enumerate(_staged_chunks(wh, entity, course_ids)):
            try:
                result = transformer(records, options)
            except Exception as exc:
                raise TransformationError(
                    f"transformer for {entity} failed: {type(exc).__name__}: {exc}", stage="transform"
                ) from exc
            _drop_earlier_keys(result, seen)
            path = directory / f"chunk-{index:05d}.pickle"
            with path.open("wb") as f:
                pickle.dump(result, f, protocol=pickle.HIGHEST_PROTOCOL)
            chunks.append(
                Chunk(
                    path=str(path),
                    course_ids=sorted(records),
                    rows_of=_rows_per_course(result),
                    rows=result.rows_out,
                    records_in=result.records_in,
                    rejected=len(result.rejected),
                )
            )
            del records, result  # before the next chunk is read
            release_free_heap()
    except BaseException:
        shutil.rmtree(directory, ignore_errors=True)
        raise
    return chunks


def chunk_results(chunks: Sequence[Chunk]) -> Iterator[tuple[TransformResult, list[int]]]:
    """The chunks' results with their courses, read one at a time (for `Warehouse.load_chunks`)."""
    for chunk in chunks:
        release_free_heap()  # the previous chunk is loaded and released by now
        yield _read_chunk(chunk), chunk.course_ids


def read_rejected(chunks: Sequence[Chunk]) -> list[Rejected]:
    """The quarantined records of every chunk (only chunks that have any are read)."""
    return [r for chunk in chunks if chunk.rejected for r in _read_chunk(chunk).rejected]


def _read_chunk(chunk: Chunk) -> TransformResult:
    try:
        with open(chunk.path, "rb") as f:
            result: TransformResult = pickle.load(f)
    except FileNotFoundError:
        raise TransformationError(
            f"the transform output {chunk.path} is gone (its load committed, or it was written on another "
            f"machine): materialize the asset again, its transform step included",
            stage="load",
        ) from None
    return result


def _staged_chunks(
    wh: Warehouse, entity: str, course_ids: Sequence[int]
) -> Iterator[dict[int, StagedRecords]]:
    """The staged records of `course_ids`, by ascending course id, in chunks of whole courses of at most
    CHUNK_RECORDS records (a larger course alone); at least one chunk, empty when nothing is staged.
    Staging is read READ_COURSES courses at a time, so only those and the chunk are in memory."""
    ids = sorted({int(c) for c in course_ids})
    chunk: dict[int, StagedRecords] = {}
    size = 0
    for start in range(0, len(ids), READ_COURSES):
        staged = wh.read_staging(entity, ids[start : start + READ_COURSES])
        for course_id in sorted(staged):
            records = staged.pop(course_id)
            if chunk and size + len(records) > CHUNK_RECORDS:
                yield chunk
                chunk, size = {}, 0
            chunk[course_id] = records
            size += len(records)
    yield chunk


def _drop_earlier_keys(result: TransformResult, seen: dict[str, list[np.ndarray]]) -> None:
    """Drop the rows whose key an earlier chunk had (the first occurrence wins, as within a transform), and
    add this chunk's keys to `seen` (per table, one sorted array of keys per chunk: 8 bytes a key column)."""
    for name, frame in result.tables.items():
        keys = _keys(frame, key_of(name))
        earlier = seen.setdefault(name, [])
        repeated = np.zeros(len(keys), dtype=bool)
        for previous in earlier:
            repeated |= _isin_sorted(keys, previous)
        if repeated.any():
            result.tables[name] = frame[~repeated].reset_index(drop=True)
            keys = keys[~repeated]
        earlier.append(np.sort(keys))


def _keys(frame: pd.DataFrame, key: Sequence[str]) -> np.ndarray:
    """The frame's keys as one structured array (integer key columns: ids, or course and user)."""
    keys = np.empty(len(frame), dtype=[(k, np.int64) for k in key])
    for k in key:
        keys[k] = frame[k].to_numpy(dtype=np.int64)
    return keys


def _isin_sorted(values: np.ndarray, sorted_keys: np.ndarray) -> np.ndarray:
    """Which of `values` are in `sorted_keys` (binary search)."""
    if not len(sorted_keys):
        return np.zeros(len(values), dtype=bool)
    positions = np.minimum(np.searchsorted(sorted_keys, values), len(sorted_keys) - 1)
    found: np.ndarray = sorted_keys[positions] == values
    return found


def _rows_per_course(result: TransformResult) -> dict[int, int]:
    """Rows per course over the result's tables that carry a course_id."""
    counts: dict[int, int] = {}
    for df in result.tables.values():
        if "course_id" in df.columns and len(df):
            for course_id, n in df["course_id"].value_counts().items():
                counts[int(course_id)] = counts.get(int(course_id), 0) + int(n)
    return counts


LAYER1_ASSETS = [build_layer1_asset(entity) for entity in STAGING_ENTITIES]
