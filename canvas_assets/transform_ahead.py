"""Layer-1 transform of a run's courses while its extract is still fetching others (Dagster-free: the extract
op starts it, the `transform_<entity>` ops take what it made; `transform_chunks` says what a chunk is).

A big run's fetch is paced by Canvas's throttle, not by this machine: it keeps about one of two cores
busy, and the transform then takes 10-15 s of both after it. So as soon as the courses staged of an entity
hold `CHUNK_RECORDS` records, a worker process (one, at a lower CPU priority than the fetch) transforms them
into a chunk file, exactly as the transform op would. When the fetch is done, `finish` waits for the chunks
under way and writes each entity's manifest; whatever was not transformed yet (the last, partial chunk of
each entity) is left to the transform op.

The transform op uses a chunk made ahead only if every one of its courses is one it would load and the
course's staging is still what was transformed (same fetch time and record count), so a retried extract or
a course re-staged since is transformed again. Chunks made ahead come before the op's own in the run's chunk
order, so a key staged in two courses (a student of both) keeps the copy of the course staged first.
Nothing here changes what is loaded otherwise: a worker that fails only leaves its courses to the op.
"""

from __future__ import annotations

import dataclasses
import logging
import multiprocessing
import os
import pickle
import shutil
from collections.abc import Sequence
from concurrent.futures import Future, ProcessPoolExecutor
from datetime import datetime
from pathlib import Path

from canvas_assets.transform import TransformOptions
from canvas_assets.transform_chunks import CHUNK_RECORDS, Transformed, transform_chunk

log = logging.getLogger(__name__)

NICENESS = 10  # the worker yields the CPU to the fetch's threads (and to the Canvas sandbox in benchmarks)
MANIFEST = "manifest.pickle"


@dataclasses.dataclass
class AheadChunk:
    """A chunk transformed ahead: its file, the staging it read (course -> fetch time and record count) and
    what its worker reported."""

    path: str
    staged: dict[int, tuple[datetime, int]]
    transformed: Transformed


class TransformAhead:
    """Transforms full chunks of staged courses in a background worker process during the extract."""

    def __init__(
        self, url: str, entities: Sequence[str], options: TransformOptions, directory: Path
    ) -> None:
        self.url = url
        self.options = options
        self.directory = directory
        shutil.rmtree(directory, ignore_errors=True)  # an earlier attempt's chunks are stale
        self._pending: dict[str, dict[int, tuple[datetime, int]]] = {e: {} for e in entities}
        self._records: dict[str, int] = dict.fromkeys(entities, 0)
        self._jobs: list[tuple[str, str, dict[int, tuple[datetime, int]], Future[Transformed]]] = []
        self._pool: ProcessPoolExecutor | None = None

    def staged(self, entity: str, course_id: int, fetched_at: datetime, record_count: int) -> None:
        """A course's records of `entity` were staged: transform a chunk's worth once there is one."""
        if entity not in self._pending:
            return
        self._pending[entity][course_id] = (fetched_at, record_count)
        self._records[entity] += record_count
        if self._records[entity] >= CHUNK_RECORDS:
            self._submit(entity)

    def _submit(self, entity: str) -> None:
        staged, self._pending[entity], self._records[entity] = self._pending[entity], {}, 0
        folder = self.directory / entity
        folder.mkdir(parents=True, exist_ok=True)
        path = str(folder / f"ahead-{len(self._jobs):05d}.pickle")
        try:
            if self._pool is None:
                context = multiprocessing.get_context("spawn")
                self._pool = ProcessPoolExecutor(max_workers=1, mp_context=context, initializer=_lower_priority)
            future = self._pool.submit(transform_chunk, self.url, entity, sorted(staged), self.options, path)
        except Exception as exc:  # no worker: the transform op does these courses itself
            log.warning("no transform ahead of %s: %s", entity, exc)
            return
        self._jobs.append((entity, path, staged, future))

    def finish(self) -> None:
        """Wait for the chunks under way and write each entity's manifest of those that were made."""
        made: dict[str, list[AheadChunk]] = {}
        try:
            for entity, path, staged, future in self._jobs:
                try:
                    transformed = future.result()
                except Exception as exc:  # the transform op transforms these courses itself (and reports)
                    log.warning("transform ahead of %s failed, left to the transform step: %s", entity, exc)
                    continue
                made.setdefault(entity, []).append(AheadChunk(path, staged, transformed))
        finally:
            self.close()
        for entity, chunks in made.items():
            with open(self.directory / entity / MANIFEST, "wb") as f:
                pickle.dump(chunks, f, protocol=pickle.HIGHEST_PROTOCOL)

    def close(self) -> None:
        """Stop the worker (chunks not started are dropped)."""
        if self._pool is not None:
            self._pool.shutdown(wait=True, cancel_futures=True)
            self._pool = None


def _lower_priority() -> None:
    try:
        os.nice(NICENESS)
    except OSError:  # not allowed here: run at the same priority
        pass


def ahead_chunks(directory: Path, entity: str) -> list[AheadChunk]:
    """The chunks of `entity` transformed ahead in `directory` (none when there is no manifest)."""
    try:
        with open(directory / entity / MANIFEST, "rb") as f:
            chunks: list[AheadChunk] = pickle.load(f)
    except FileNotFoundError:
        return []
    return chunks
