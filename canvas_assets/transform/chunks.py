"""A run's Layer-1 transform in chunks of whole courses, each chunk's result pickled to a file, in this
process or in spawned workers (Dagster-free: the `transform_<entity>` ops in `defs/assets/layer1.py` call
it). Planning, workers and keys shared by two chunks: docs/architecture.md, "The Layer-1 hand-over".
"""

from __future__ import annotations

import dataclasses
import multiprocessing
import os
import pickle
import shutil
from collections.abc import Iterator, Sequence
from concurrent.futures import Future, ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from canvas_assets.errors import ConfigurationError, TransformationError
from canvas_assets.extract.memory import release_free_heap
from canvas_assets.transform import TRANSFORMERS, TransformOptions, TransformResult
from canvas_assets.transform.base import incomplete_courses
from canvas_assets.transform.quarantine import Rejected
from canvas_assets.transform.schema import key_of
from canvas_assets.warehouse.db import Warehouse

# Staged records per chunk: a chunk this size costs its process 100-150 MB at the peak (decoded records,
# frames). Smaller chunks save little (a course is never split, and the large sandbox's biggest has 135k
# submissions) and cost time: each chunk's load is a round of statements (the first load of 1,500 courses'
# submissions takes 9-11 s in chunks of 100k records, 15 s in chunks of 25k).
CHUNK_RECORDS = 100_000
# Worker processes start for an entity with at least this many staged records in the run (below it, the
# ~1 s of starting them is not won back); at most WORKERS of them (None: the environment's
# CANVAS_ASSETS_TRANSFORM_WORKERS, else one per CPU this process may use).
PARALLEL_RECORDS = 3 * CHUNK_RECORDS
WORKERS: int | None = None
WORKERS_ENV = "CANVAS_ASSETS_TRANSFORM_WORKERS"


@dataclasses.dataclass
class Chunk:
    """One chunk of the run's transform: its pickled `TransformResult` and what the load op reports of it."""

    path: str
    course_ids: list[int]  # the courses whose rows this chunk's load replaces
    rows_of: dict[int, int]  # rows per course, over the tables that carry a course_id
    rows: int
    records_in: int
    rejected: int
    repeated: dict[str, list[int]] = dataclasses.field(
        default_factory=dict
    )  # table -> rows an earlier chunk had
    # table -> courses whose list was incomplete (a record quarantined without its key): the load soft-deletes
    # none of their rows of that table (`transform.base.incomplete_courses`)
    incomplete: dict[str, list[int]] = dataclasses.field(default_factory=dict)


@dataclasses.dataclass
class _Transformed:
    """What a worker hands back of a chunk it transformed and wrote: enough to mark repeated keys."""

    course_ids: list[int]
    keys: dict[str, np.ndarray]  # table -> the key of each row, in row order
    courses: dict[str, np.ndarray]  # table -> course_id of each row, for the tables that carry one
    records_in: int
    rejected: int
    incomplete: dict[str, list[int]] = dataclasses.field(default_factory=dict)


def plan_chunks(record_counts: dict[int, int]) -> list[list[int]]:
    """Courses by ascending id in chunks of at most CHUNK_RECORDS records (a larger course alone); at least
    one chunk, empty when nothing is staged."""
    chunks: list[list[int]] = [[]]
    size = 0
    for course_id in sorted(record_counts):
        count = record_counts[course_id]
        if chunks[-1] and size + count > CHUNK_RECORDS:
            chunks.append([])
            size = 0
        chunks[-1].append(course_id)
        size += count
    return chunks


def transform_to_chunks(
    wh: Warehouse, entity: str, course_ids: Sequence[int], options: TransformOptions, directory: Path
) -> list[Chunk]:
    """Transform the staged records of `course_ids` chunk by chunk, each chunk's result pickled to a file in
    `directory` (emptied first: an earlier attempt's files are stale). Courses without staging are in no
    chunk; a run with nothing staged still has one (empty) chunk, whose load reports every table with zeros.
    On failure, the files written so far are removed."""
    shutil.rmtree(directory, ignore_errors=True)
    directory.mkdir(parents=True)
    counts = {c: s.record_count for c, s in wh.fetch_states(entity, course_ids).items()}
    planned = plan_chunks(counts)
    paths = [str(directory / f"chunk-{index:05d}.pickle") for index in range(len(planned))]
    jobs = [(wh.url, entity, ids, options, path) for ids, path in zip(planned, paths, strict=True)]
    try:
        workers = _workers(len(planned), sum(counts.values()))
        if workers < 2:
            transformed = (transform_chunk(*job) for job in jobs)
            return _mark_repeated_keys(paths, transformed)
        context = multiprocessing.get_context("spawn")
        with ProcessPoolExecutor(max_workers=workers, mp_context=context) as pool:
            futures = [pool.submit(transform_chunk, *job) for job in jobs]
            try:
                return _mark_repeated_keys(paths, (_result(f) for f in futures))
            finally:
                for future in futures:
                    future.cancel()
    except BaseException:
        shutil.rmtree(directory, ignore_errors=True)
        raise


def _workers(chunks: int, records: int) -> int:
    limit = WORKERS or configured_workers()
    if chunks < 2 or records < PARALLEL_RECORDS:
        return 1
    if limit is None:
        limit = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    return max(1, min(chunks, limit))


def configured_workers() -> int | None:
    """CANVAS_ASSETS_TRANSFORM_WORKERS as a number of processes (None when unset)."""
    raw = os.environ.get(WORKERS_ENV, "").strip()
    if not raw:
        return None
    if not raw.isdigit() or int(raw) < 1:
        raise ConfigurationError(
            f"{WORKERS_ENV}={raw!r} is not a number of processes: set it to 1 (transform in the run's own "
            "process) or more, or unset it (one worker per CPU)",
            stage="transform",
        )
    return int(raw)


def _result(future: Future[_Transformed]) -> _Transformed:
    try:
        return future.result()
    except BrokenProcessPool as exc:
        raise TransformationError(
            f"a transform worker process died ({exc}); if the machine ran out of memory, give the run "
            f"worker more, or set {WORKERS_ENV}=1 to transform in the run's own process",
            stage="transform",
        ) from None


def transform_chunk(
    url: str, entity: str, course_ids: list[int], options: TransformOptions, path: str
) -> _Transformed:
    """Read one chunk's staging, transform it and pickle the result to `path` (in a worker or in-process)."""
    staged: list[int] = []

    def batches() -> Iterator[dict[int, list[Any]]]:  # one server-side cursor per batch of courses
        for batch in Warehouse(url).staged_batches(entity, course_ids):
            staged.extend(batch)
            yield batch

    try:
        result = TRANSFORMERS[entity].batches(batches(), options)
    except Exception as exc:
        # Raised as a plain message: the error crosses a process boundary, and the step reports it.
        raise TransformationError(
            f"transformer for {entity} failed: {type(exc).__name__}: {exc}", stage="transform"
        ) from None
    with open(path, "wb") as f:
        pickle.dump(result, f, protocol=pickle.HIGHEST_PROTOCOL)
    transformed = _Transformed(
        course_ids=sorted(staged),
        keys={name: _keys(frame, key_of(name)) for name, frame in result.tables.items()},
        courses={
            name: frame["course_id"].to_numpy(dtype=np.int64)
            for name, frame in result.tables.items()
            if "course_id" in frame.columns
        },
        records_in=result.records_in,
        rejected=len(result.rejected),
        incomplete={name: sorted(c) for name, c in incomplete_courses(result).items()},
    )
    del result
    release_free_heap()
    return transformed


def _mark_repeated_keys(paths: Sequence[str], transformed: Iterator[_Transformed]) -> list[Chunk]:
    """The chunks, in order, with the rows whose key an earlier chunk had marked as repeated (per table, one
    sorted array of keys per chunk is kept: 8 bytes a key column)."""
    seen: dict[str, list[np.ndarray]] = {}
    chunks: list[Chunk] = []
    for path, t in zip(paths, transformed, strict=True):
        repeated: dict[str, list[int]] = {}
        rows_of: dict[int, int] = {}
        rows = 0
        for name, keys in t.keys.items():
            earlier = seen.setdefault(name, [])
            again = np.zeros(len(keys), dtype=bool)
            for previous in earlier:
                again |= _isin_sorted(keys, previous)
            if again.any():
                repeated[name] = np.flatnonzero(again).tolist()
            earlier.append(np.sort(keys[~again]))
            rows += int((~again).sum())
            if name in t.courses:
                course_ids, n = np.unique(t.courses[name][~again], return_counts=True)
                for course_id, count in zip(course_ids.tolist(), n.tolist(), strict=True):
                    rows_of[course_id] = rows_of.get(course_id, 0) + count
        chunks.append(
            Chunk(
                path=path,
                course_ids=t.course_ids,
                rows_of=rows_of,
                rows=rows,
                records_in=t.records_in,
                rejected=t.rejected,
                repeated=repeated,
                incomplete=t.incomplete,
            )
        )
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
    """A chunk's result as written, less the rows whose key an earlier chunk had."""
    try:
        with open(chunk.path, "rb") as f:
            result: TransformResult = pickle.load(f)
    except FileNotFoundError:
        raise TransformationError(
            f"the transform output {chunk.path} is gone (its load committed, or it was written on another "
            f"machine): materialize the asset again, its transform step included",
            stage="load",
        ) from None
    for name, positions in chunk.repeated.items():
        frame = result.tables[name]
        keep = np.ones(len(frame), dtype=bool)
        keep[positions] = False
        result.tables[name] = frame[keep].reset_index(drop=True)
    return result


def _keys(frame: pd.DataFrame, key: Sequence[str]) -> np.ndarray:
    """The frame's keys (integer key columns): a plain array of ids, or one structured array for a key of
    several columns (course and user). A plain array sorts and searches several times faster. A text key
    (the audit log's event uuids) is an array of its UTF-8 bytes: numpy's text arrays take 4 bytes a
    character, and a run's million uuids were 144 MB of them in the process that checks the chunks."""
    if len(key) == 1:
        column = frame[key[0]]
        if not pd.api.types.is_integer_dtype(column.dtype):
            return np.char.encode(column.to_numpy(dtype=str), "utf-8")
        return column.to_numpy(dtype=np.int64)
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
