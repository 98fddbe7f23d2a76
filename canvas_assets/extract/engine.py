"""The extraction engine: many courses fetched concurrently into staging (Dagster-free; the
`canvas_extract` asset in `assets/extract.py` runs it).

One thread-pool task per (course, entity); the Canvas client's pacer decides how many requests are in
flight. A course is staged once all its entities are in, in transactions of `processing.batch_size`
courses, so a crash loses at most one batch. See docs/architecture.md, "Data flow" (2. Extract); what each
processing value means: README, "Sync profiles", and docs/failures.md for the time budgets.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from datetime import datetime
from typing import Any, Protocol

from canvas_assets.canvas import budget
from canvas_assets.canvas.redact import install_redaction, redact_known
from canvas_assets.entities import ENTITIES, ID_CHECKED_ENTITIES
from canvas_assets.errors import (
    CanvasAssetsError,
    CanvasAuthError,
    CanvasNotFound,
    CanvasPermissionError,
    CanvasTimeout,
    ConfigurationError,
)
from canvas_assets.extract import incremental
from canvas_assets.extract.memory import limit_malloc_arenas, release_free_heap
from canvas_assets.extract.outcomes import CourseOutcome, EntityOutcome, ExtractReport, repeated_ids, utcnow
from canvas_assets.extract.schedule import RunSchedule
from canvas_assets.jsontext import encode_json, record_id
from canvas_assets.profiles import Profile
from canvas_assets.warehouse.staging import (
    FULL,
    INCREMENTAL,
    FetchState,
    StagedCourse,
    StagingItem,
    record_keys,
)

log = logging.getLogger(__name__)
install_redaction(__name__)

# The longest a single request may wait for an answer: Canvas Cloud drops requests after 60 s.
MAX_READ_TIMEOUT_S = 60.0
# Between staging writes, the C heap's free pages go back to the OS at most this often (`memory`): the pool's
# threads decode and free records all through the extract, and glibc keeps what they free.
TRIM_EVERY_S = 2.0


class CanvasSource(Protocol):
    """What the engine needs of a Canvas client (canvas_assets.canvas.CanvasClient is one)."""

    metrics: Any

    def get_course(
        self, course_id: int, *, include: Sequence[str] = ..., timeout: float | None = ...
    ) -> dict: ...


class StagingSink(Protocol):
    """What the engine needs of a warehouse (canvas_assets.warehouse.Warehouse is one)."""

    def write_staging(
        self, items: Sequence[tuple[Any, ...]], *, run_id: str, fetched_at: datetime
    ) -> int: ...

    def read_staging(self, entity: str, course_ids: Iterable[int]) -> Mapping[int, Sequence[Any]]: ...

    def fetch_states(self, entity: str, course_ids: Iterable[int]) -> Mapping[int, FetchState]: ...

    def mark_course_gone(self, course_id: int, *, reason: str, at: datetime) -> None: ...

    def write_sync_log(self, rows: list[dict[str, Any]]) -> None: ...


def fetch_entity(
    client: CanvasSource,
    profile: Profile,
    entity_name: str,
    course_id: int,
    timeout: float,
    needs: Mapping[str, Sequence[Any]] | None = None,
) -> Sequence[Any]:
    """One staging entity of one course, fetched with the entity's plan (canvas_assets.entities): in slices
    when the entity has a sliced plan, `needs` (the course's records of the entities it needs, fetched in
    this run) are given and the plan takes them."""
    if entity_name not in ENTITIES:
        raise ConfigurationError(f"unknown staging entity {entity_name!r}", stage="extract")
    spec = ENTITIES[entity_name]
    if needs is not None and spec.sliced is not None:
        records = spec.sliced(client, course_id, needs, timeout)
        if records is not None:
            return records
    return spec.fetch(client, profile, course_id, timeout)


class Extractor:
    """Fetches the selected entities of many courses concurrently and stages each finished course."""

    def __init__(
        self,
        client: CanvasSource,
        warehouse: StagingSink,
        profile: Profile,
        *,
        entities: Iterable[str],
        run_id: str,
        workers: int = 32,
        on_course_done: Callable[[CourseOutcome], None] | None = None,
        fetch: Callable[..., Sequence[Any]] = fetch_entity,
    ) -> None:
        self.client = client
        self.warehouse = warehouse
        self.profile = profile
        self.entities = [e for e in entities]
        self.run_id = run_id
        self.workers = workers
        self.on_course_done = on_course_done
        self.fetch = fetch
        self._cancel = threading.Event()
        self._lock = threading.Lock()
        self._states: dict[str, Mapping[int, FetchState]] = {}
        self._futures: dict[tuple[int, str], Future[EntityOutcome]] = {}  # (course, entity) -> its task
        self.rows_written = 0  # staged record rows written (`staging.write_staging`)

    # -- one task -----------------------------------------------------------------------------------
    def _task(self, course: CourseOutcome, entity: str, since: datetime | None = None) -> EntityOutcome:
        outcome = EntityOutcome(entity=entity, started_at=utcnow())
        with self._lock:
            if course.started_monotonic is None:
                course.started_monotonic = time.monotonic()
            deadline = course.started_monotonic + self.profile.request_timeout_seconds
        calls_before = _thread_requests(self.client)
        try:
            if self._cancel.is_set():
                raise CanvasAssetsError("cancelled after a fatal error in another task", stage="extract")
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise CanvasTimeout(
                    f"course {course.course_id} ran past its {self.profile.request_timeout_seconds:g} s budget "
                    "(processing.request_timeout_seconds)",
                    stage="extract",
                )
            timeout = min(MAX_READ_TIMEOUT_S, remaining)
            rules = ENTITIES[entity].incremental if entity in ENTITIES else None
            # The course's budget is a hard deadline for every request of this task and of the threads it
            # fans out to: waits, retries, pages and slow bodies included (canvas_assets.canvas.budget).
            with budget.within(
                self.profile.request_timeout_seconds,
                f"course {course.course_id} ({entity})",
                setting="processing.request_timeout_seconds",
                at=deadline,
            ):
                if since is not None and rules is not None:
                    self._fetch_changes(course, outcome, since, timeout)
                else:
                    needs = self._fetched_needs(course.course_id, entity, deadline)
                    outcome.records = self.fetch(
                        self.client, self.profile, entity, course.course_id, timeout, needs
                    )
                    if rules is not None:
                        outcome.watermark = incremental.watermark_of(outcome.records, rules.change_times)
                    if entity in ID_CHECKED_ENTITIES:
                        outcome.repeated = repeated_ids(outcome.records)
        except CanvasNotFound as exc:
            outcome.error = exc
            if ENTITIES[entity].absent_when_not_found:
                # Analytics 404s for courses that are unpublished or have analytics off: no data, no failure.
                outcome.status, outcome.records = "unavailable", []
            elif entity == "courses" or self._course_is_gone(course.course_id):
                outcome.status = "gone"
            else:
                # The course is there; one of its lists vanished mid-fetch (a module deleted between the
                # list and its items, say). The entity failed; the course's other data stands.
                outcome.status = "failed"
        except CanvasPermissionError as exc:  # the audit log may not be this token's to read: skipped, kept
            outcome.error = exc
            outcome.status = "unavailable" if ENTITIES[entity].optional_permission else "failed"
        except (CanvasAuthError, ConfigurationError):
            self._cancel.set()
            raise
        except CanvasAssetsError as exc:
            outcome.status, outcome.error = "failed", exc
        except Exception as exc:  # a bug or an unexpected library error: keep the other courses going
            log.exception("unexpected error fetching %s of course %s", entity, course.course_id)
            outcome.status = "failed"
            outcome.error = CanvasAssetsError(
                f"unexpected {type(exc).__name__} while fetching {entity}: {redact_known(str(exc))}",
                stage="extract",
            )
        outcome.finished_at = utcnow()
        outcome.api_calls = _thread_requests(self.client) - calls_before
        if outcome.error is not None:
            outcome.error.course_id = course.course_id
            outcome.error.stage = outcome.error.stage or "extract"
        return outcome

    def _fetch_changes(
        self, course: CourseOutcome, o: EntityOutcome, since: datetime, timeout: float
    ) -> None:
        """An incremental fetch: what changed after `since`, plus the records of parents the staged records
        do not know yet (a new student's or a new assignment's submissions carry no change time), to be
        upserted into the staged records; the keys of those whose parent vanished are to be deleted
        (canvas_assets.extract.incremental)."""
        spec = ENTITIES[o.entity]
        rules = spec.incremental
        assert rules is not None
        o.mode, o.since, o.changed = INCREMENTAL, since, 0
        failed = [n for n in spec.needs if n in course.entities and course.entities[n].status != "success"]
        if failed:  # nothing to merge with: the course keeps its records and watermark (not staged)
            raise CanvasAssetsError(
                f"{o.entity} not staged: {', '.join(failed)} failed in this run, and merging changes needs "
                f"them; the course keeps its previous {o.entity} and watermark until the next sync",
                stage="extract",
            )
        needs: dict[str, Sequence[Any]] = {}
        for needed in spec.needs:
            fetched = course.entities.get(needed)
            # Not in this run's selection: what staging holds. Unknown parents are left out (the rules
            # then drop nothing for them).
            records = fetched.records if fetched is not None else self._staged(needed, course.course_id)
            if records is not None:
                needs[needed] = records
        changes = rules.changes(self.client, course.course_id, since, timeout)
        staged = self._staged(o.entity, course.course_id) or []
        added = rules.new_parents(self.client, course.course_id, staged, needs, timeout)
        keep = rules.keep(needs)
        changed = [*added, *changes]
        o.records = [r for r in changed if keep(r)]
        o.changed = len(changed)
        gone = {key for r in changed if not keep(r) and (key := record_id(r)) is not None}
        # One pass over the staged records (read a row at a time): the keys of those `keep` refuses.
        keyed = staged.keyed() if isinstance(staged, StagedCourse) else record_keys(staged)
        o.removed = gone | {key for key, r in keyed if not keep(r)}
        state = self._states[o.entity][course.course_id]
        o.watermark = incremental.watermark_of(changes, rules.change_times, previous=state.watermark)

    def _fetched_needs(
        self, course_id: int, entity: str, deadline: float
    ) -> Mapping[str, Sequence[Any]] | None:
        """For an entity with a sliced plan: the course's records of the entities it needs, as this run
        fetched them (their tasks were queued before this one, so they are running or done: waited for).
        None when one of them is not in the run or did not succeed: the entity is then fetched whole."""
        spec = ENTITIES.get(entity)
        if spec is None or spec.sliced is None:
            return None
        out: dict[str, Sequence[Any]] = {}
        for needed in (*spec.needs, *spec.slice_by):
            future = self._futures.get((course_id, needed))
            if future is None:
                return None
            try:
                fetched = future.result(timeout=max(0.0, deadline - time.monotonic()))
            except Exception:  # past the course's budget, or the task failed: its own outcome says so
                return None
            if fetched.status != "success" or fetched.records is None:
                return None
            out[needed] = fetched.records
        return out

    def _staged(self, entity: str, course_id: int) -> Sequence[Any] | None:
        """The course's staged records of `entity`, None when nothing is staged."""
        return self.warehouse.read_staging(entity, [course_id]).get(course_id)

    def _since(self, entity: str, course_id: int) -> datetime | None:
        """For an incremental entity with a usable watermark: what to ask for changes after (else None)."""
        spec = ENTITIES.get(entity)
        state = self._states.get(entity, {}).get(course_id)
        if spec is None or spec.incremental is None or state is None:
            return None
        field = spec.incremental.refresh_days_field
        days = int(self.profile.processing_value(field)) if field else None
        return incremental.since(state.watermark, state.full_fetched_at, refresh_days=days, now=utcnow())

    def _course_is_gone(self, course_id: int) -> bool:
        """Only a 404 on the course itself means the course is gone."""
        try:
            self.client.get_course(course_id, include=(), timeout=MAX_READ_TIMEOUT_S)
        except CanvasNotFound:
            return True
        except CanvasAssetsError:
            return False
        return False

    # -- the whole run -------------------------------------------------------------------------------
    def run(self, course_ids: Iterable[int]) -> ExtractReport:
        """Fetch every selected entity of `course_ids`, staging each course once all of its entities are in
        (`processing.batch_size` courses per transaction) while the pool goes on fetching (`RunSchedule`
        decides what starts when)."""
        limit_malloc_arenas()  # before the pool's threads allocate (canvas_assets.extract.memory)
        courses = {int(c): CourseOutcome(course_id=int(c)) for c in course_ids}
        self._states = {
            e: self.warehouse.fetch_states(e, list(courses)) for e in self.entities if ENTITIES[e].incremental
        }
        write_seconds = 0.0
        started = trimmed = time.monotonic()
        with ThreadPoolExecutor(max_workers=self.workers, thread_name_prefix="canvas-extract") as pool:
            run = RunSchedule(
                pool,
                courses,
                self.entities,
                workers=self.workers,
                task=self._task,
                since=self._since,
                futures=self._futures,
            )
            run.start_courses()
            while run.pending:
                run.collect_finished()
                if run.fatal is not None:
                    run.cancel_pending()
                    break
                if len(run.ready) >= self.profile.batch_size or (not run.pending and run.ready):
                    write_seconds += self._stage(run.take_ready())
                    if time.monotonic() - trimmed > TRIM_EVERY_S:
                        release_free_heap()
                        trimmed = time.monotonic()
                run.start_courses()
        self._futures.clear()
        release_free_heap()  # before Dagster stores the run's events
        if run.fatal is not None:
            # Courses that finished before the fatal error are kept: they are complete and valid.
            if run.ready:
                write_seconds += self._stage(run.take_ready())
            raise run.fatal
        return ExtractReport(
            courses=courses,
            # Staging writes happen on this thread while the pool keeps fetching: they overlap the fetch.
            fetch_seconds=time.monotonic() - started,
            staging_write_seconds=write_seconds,
            metrics=self.client.metrics.snapshot(),
            staging_rows_written=self.rows_written,
        )

    def _stage(self, finished: list[CourseOutcome]) -> float:
        """Write finished courses' staging (successful entities only) and their sync-log rows."""
        t0 = time.monotonic()
        now = utcnow()
        items: list[StagingItem] = []
        log_rows: list[dict[str, Any]] = []
        for course in finished:
            gone = course.status == "gone"
            for entity, o in course.entities.items():
                o.record_count = len(o.records or [])
                if not gone and o.status in ("success", "unavailable") and o.records is not None:
                    items.append(self._staging_item(course, entity, o))
        if items:
            self.rows_written += self.warehouse.write_staging(items, run_id=self.run_id, fetched_at=now)
        for entity in {i.entity for i in items if i.mode == INCREMENTAL}:  # counted by the write
            ids = [i.course_id for i in items if i.entity == entity and i.mode == INCREMENTAL]
            by_id = {c.course_id: c for c in finished}
            for course_id, state in self.warehouse.fetch_states(entity, ids).items():
                by_id[course_id].entities[entity].record_count = state.record_count
        for course in finished:
            log_rows += [self._log_row(course, o, course.status == "gone") for o in course.entities.values()]
        for course in finished:
            if course.status == "gone":
                self.warehouse.mark_course_gone(
                    course.course_id, reason="Canvas answered 404 for the course", at=now
                )
        self.warehouse.write_sync_log(log_rows)
        for course in finished:
            for o in course.entities.values():
                o.records = None  # staged: a run of thousands of courses need not hold them all
            if self.on_course_done is not None:
                self.on_course_done(course)
        return time.monotonic() - t0

    def _staging_item(self, course: CourseOutcome, entity: str, o: EntityOutcome) -> StagingItem:
        """What to stage for one fetched entity of a course: an incremental entity's records (its changes and
        the keys it drops, when the fetch was incremental) with how they were fetched."""
        assert o.records is not None
        if ENTITIES[entity].incremental is None:
            return StagingItem(entity, course.course_id, o.records)
        if o.mode == FULL:
            return StagingItem(entity, course.course_id, o.records, FULL, o.watermark)
        state = self._states[entity][course.course_id]
        return StagingItem(
            entity, course.course_id, o.records, INCREMENTAL, o.watermark, state.full_fetched_at, o.removed
        )

    def _log_row(self, course: CourseOutcome, o: EntityOutcome, gone: bool) -> dict[str, Any]:
        status = "gone" if gone else ("skipped" if o.status == "unavailable" else o.status)
        err = o.error if status in ("failed", "gone") else None
        duration = (o.finished_at - o.started_at).total_seconds() if o.started_at and o.finished_at else None
        return {
            "run_id": self.run_id,
            "course_id": course.course_id,
            "entity": o.entity,
            "stage": "extract",
            "records": o.record_count,
            "api_calls": o.api_calls,
            "started_at": o.started_at,
            "finished_at": o.finished_at,
            "duration_s": duration,
            "status": status,
            "error_type": err.error_type if err else None,
            "error_category": err.category.value if err else None,
            "message": err.message if err else (o.error.message if o.error else _fetch_note(o)),
            "repeated_ids": encode_json(o.repeated) if o.repeated and status == "success" else None,
        }


def _fetch_note(o: EntityOutcome) -> str | None:
    """The sync log's note on an incremental fetch: how many records changed since when."""
    if o.mode != INCREMENTAL or o.since is None:
        return None
    return (
        f"incremental: {o.changed} changed since {o.since:%Y-%m-%dT%H:%M:%SZ}, merged into {o.record_count}"
    )


def _thread_requests(client: Any) -> int:
    """Requests made so far by the calling thread (and the work it fanned out), if the client counts them."""
    counter = getattr(client, "thread_requests", None)
    return int(counter()) if callable(counter) else 0
