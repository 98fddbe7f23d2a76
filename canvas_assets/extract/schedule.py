"""The extract's schedule: which (course, entity) tasks run when, and which courses are ready to stage.

Every (course, entity) pair is one task in the extractor's thread pool. Two rules decide when it starts:

- Courses start a window at a time (COURSES_IN_FLIGHT_PER_WORKER per worker): the pool takes tasks in
  order, so an incremental fetch queued once its needs are in would otherwise wait behind every other
  course's tasks, whose records are all held until their courses are staged (the large benchmark's
  re-sync grew by 300 MB so).
- An incremental fetch merges with the course's entities it needs (submissions: assignments and
  enrollments), so it starts once they are in; a full fetch starts at once, beside them, and an entity's
  needs are queued before it (a sliced fetch waits for them, `Extractor._fetched_needs`). An incremental
  fetch holds only its changes: staging upserts them into the course's rows.
"""

from __future__ import annotations

import queue
from collections import deque
from collections.abc import Callable, Mapping
from concurrent.futures import Future, ThreadPoolExecutor
from datetime import datetime

from canvas_assets.entities import ENTITIES
from canvas_assets.extract.outcomes import CourseOutcome, EntityOutcome

# Courses started and not finished, per worker.
COURSES_IN_FLIGHT_PER_WORKER = 2

Task = Callable[[CourseOutcome, str, "datetime | None"], EntityOutcome]


class RunSchedule:
    """One run's tasks in `pool`: started a window of courses at a time, collected as they finish."""

    def __init__(
        self,
        pool: ThreadPoolExecutor,
        courses: Mapping[int, CourseOutcome],
        entities: list[str],
        *,
        workers: int,
        task: Task,
        since: Callable[[str, int], datetime | None],
        futures: dict[tuple[int, str], Future[EntityOutcome]],
    ) -> None:
        self.pool = pool
        self.task = task
        self.since = since
        self.futures = futures  # (course, entity) -> its task, for a sliced fetch waiting on its needs
        self.window = COURSES_IN_FLIGHT_PER_WORKER * workers
        self.needs = {e: [n for n in ENTITIES[e].needs if n in entities] for e in entities}
        # What a fetch waits for comes first: needs, and what a sliced plan reads (entities.Entity.slice_by).
        self.order = sorted(entities, key=lambda e: bool(self.needs[e]) or bool(ENTITIES[e].slice_by))
        self.pending: dict[Future[EntityOutcome], tuple[CourseOutcome, str]] = {}
        self.remaining = {cid: len(entities) for cid in courses}
        self.waiting: dict[int, dict[str, datetime]] = {}  # course -> incremental entity -> since
        self.unstarted = deque(courses.values())
        self.in_flight = 0  # courses started and not finished
        self.ready: list[CourseOutcome] = []  # finished, not yet staged
        self.fatal: BaseException | None = None
        # Finished tasks arrive here: `concurrent.futures.wait` would walk every pending future (thousands
        # in a big run, each behind its own lock) for each one that finishes, under the GIL the fetch
        # threads need to read their responses.
        self.finished: queue.SimpleQueue[Future[EntityOutcome]] = queue.SimpleQueue()

    def start_courses(self) -> None:
        """Start courses until the window is full; an incremental fetch with needs waits for them."""
        while self.unstarted and self.in_flight < self.window:
            course = self.unstarted.popleft()
            self.in_flight += 1
            for entity in self.order:
                since = self.since(entity, course.course_id)
                if since is not None and self.needs[entity]:
                    self.waiting.setdefault(course.course_id, {})[entity] = since
                else:
                    self._start(course, entity, since)

    def collect_finished(self) -> None:
        """Wait for a task to finish, then take every finished one: record its outcome, start the merges
        that waited for it, and move courses whose every entity is in to `ready`."""
        done = [self.finished.get()]
        while not self.finished.empty():
            done.append(self.finished.get())
        for future in done:
            course, entity = self.pending.pop(future)
            try:
                course.entities[entity] = future.result()
            except BaseException as exc:
                if self.fatal is None:
                    self.fatal = exc
                continue
            for later, since in list(self.waiting.get(course.course_id, {}).items()):
                if all(n in course.entities for n in self.needs[later]):
                    del self.waiting[course.course_id][later]
                    self._start(course, later, since)
            self.remaining[course.course_id] -= 1
            if self.remaining[course.course_id] == 0:
                self.ready.append(course)
                self.in_flight -= 1

    def take_ready(self) -> list[CourseOutcome]:
        """The finished courses, to be staged now."""
        ready, self.ready = self.ready, []
        return ready

    def cancel_pending(self) -> None:
        for future in self.pending:
            future.cancel()

    def _start(self, course: CourseOutcome, entity: str, since: datetime | None) -> None:
        future = self.pool.submit(self.task, course, entity, since)
        self.pending[future] = (course, entity)
        self.futures[(course.course_id, entity)] = future
        future.add_done_callback(self.finished.put)
