"""What the client asks Canvas for: one method per Canvas list or object, its path and its parameters.

`CanvasClient` inherits these; the machinery they call (`_paginate`, `_get_object`, `_fan_out_map`) is
the client's. Parameters Canvas defaults badly are always sent (docs/canvas-api.md).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from datetime import datetime, timezone
from typing import Any

from canvas_assets.canvas import budget
from canvas_assets.canvas.urls import Params, array_params, path_segment
from canvas_assets.errors import ConfigurationError
from canvas_assets.extract.incremental import parse_time
from canvas_assets.jsontext import RecordTexts

Record = dict[str, Any]

ALL_ENROLLMENT_STATES_BUT_DELETED: tuple[str, ...] = (
    "active",
    "invited",
    "creation_pending",
    "completed",
    "inactive",
    "rejected",
)


# Discovery's own time budget: listing an account's courses, every page and retry included. A 50,000-course
# account is 500 pages, a few minutes at worst; a listing that never ends (a next link to a new page on every
# page) fails here instead of running for ever.
DISCOVERY_BUDGET_S = 900.0


class CanvasAPI:
    """The domain methods of `CanvasClient`, over the client's machinery (declared here, defined there)."""

    _pages: Callable[..., Iterator[list[Record]]]
    _get_object: Callable[..., Record]
    _fan_out_map: Callable[[Callable[[int], Any], Sequence[int]], list[Any]]

    def _paginate(
        self,
        path: str,
        params: Params | None = None,
        *,
        timeout: float | None = None,
        wrapped_in: str | None = None,
    ) -> list[Record]:
        """Every record of a list endpoint (see `CanvasClient._pages`)."""
        return [r for page in self._pages(path, params, timeout=timeout, wrapped_in=wrapped_in) for r in page]

    def list_records(
        self,
        path: str,
        params: Params | None = None,
        *,
        timeout: float | None = None,
        wrapped_in: str | None = None,
    ) -> list[Record]:
        """Every record of the Canvas list at `path` (under /api/v1, `/courses/7/sections`) with `params`, for
        an entity that needs nothing but its path and parameters (`entities.listed`). `wrapped_in`: the key
        each page holds its records under, for the lists Canvas wraps in an object (docs/canvas-api.md §2)."""
        if not path.startswith("/") or "?" in path or "#" in path:
            raise ConfigurationError(
                f"a Canvas list path starts with / and carries no query ({path!r}): give the path under "
                "/api/v1, such as /courses/7/sections, and the query as params",
                stage="extract",
            )
        if wrapped_in is not None and not wrapped_in:
            raise ConfigurationError(
                "wrapped_in names the key that holds the list; it is empty", stage="extract"
            )
        return self._paginate(path, params, timeout=timeout, wrapped_in=wrapped_in)

    def list_courses(
        self,
        *,
        account_id: int | str | None = None,
        states: Sequence[str] = ("available", "completed"),
        enrollment_term_id: int | str | None = None,
        include: Sequence[str] = ("term", "total_students"),
        timeout: float | None = None,
        budget_seconds: float = DISCOVERY_BUDGET_S,
    ) -> list[Record]:
        """Courses of an account (admin token) or, without `account_id`, the token's own courses, listed
        within `budget_seconds` (retries, waits and every page included: past it, `CanvasTimeout`)."""
        params = array_params("state[]", states) + array_params("include[]", include)
        path = "/courses"
        if account_id is not None:
            if enrollment_term_id is not None:
                params.append(("enrollment_term_id", str(enrollment_term_id)))
            path = f"/accounts/{path_segment(account_id)}/courses"
        with budget.within(budget_seconds, "discovering courses", setting="the catalog's timeout_seconds"):
            return self._paginate(path, params, timeout=timeout)

    def get_course(
        self,
        course_id: int | str,
        *,
        include: Sequence[str] = ("term", "total_students"),
        timeout: float | None = None,
    ) -> Record:
        return self._get_object(
            f"/courses/{path_segment(course_id)}", array_params("include[]", include), timeout=timeout
        )

    def get_course_settings(self, course_id: int | str, *, timeout: float | None = None) -> Record:
        return self._get_object(f"/courses/{path_segment(course_id)}/settings", timeout=timeout)

    def list_students(
        self,
        course_id: int | str,
        *,
        include: Sequence[str] = ("email",),
        enrollment_states: Sequence[str] = ("active", "invited", "completed", "inactive"),
        timeout: float | None = None,
    ) -> list[Record]:
        """Students of a course (`enrollment_state[]` is sent: Canvas defaults to active, invited)."""
        params = [
            ("enrollment_type[]", "student"),
            *array_params("enrollment_state[]", enrollment_states),
            *array_params("include[]", include),
        ]
        return self._paginate(f"/courses/{path_segment(course_id)}/users", params, timeout=timeout)

    def list_enrollments(
        self,
        course_id: int | str,
        *,
        types: Sequence[str] | None = None,
        states: Sequence[str] = ALL_ENROLLMENT_STATES_BUT_DELETED,
        timeout: float | None = None,
    ) -> list[Record]:
        """Enrollments of a course. `state[]` is always sent: Canvas changed its default once."""
        if not states:
            raise ConfigurationError("list_enrollments needs at least one enrollment state", stage="extract")
        params = array_params("type[]", types or ()) + array_params("state[]", states)
        return self._paginate(f"/courses/{path_segment(course_id)}/enrollments", params, timeout=timeout)

    def list_assignments(
        self, course_id: int | str, *, include: Sequence[str] = (), timeout: float | None = None
    ) -> list[Record]:
        return self._paginate(
            f"/courses/{path_segment(course_id)}/assignments",
            array_params("include[]", include),
            timeout=timeout,
        )

    def list_modules(self, course_id: int | str, *, timeout: float | None = None) -> list[Record]:
        """Modules with their complete `items` lists: those `include[]=items` leaves out (over 100 items) are
        fetched from `/modules/:id/items`, concurrently through the same pacer (docs/canvas-api.md §2)."""
        path = f"/courses/{path_segment(course_id)}/modules"
        modules = self._paginate(path, [("include[]", "items")], timeout=timeout)
        missing = [i for i, m in enumerate(modules) if _items_missing(m)]
        if not missing:
            return modules

        def fetch(index: int) -> list[Record]:
            return self._paginate(f"{path}/{path_segment(modules[index]['id'])}/items", timeout=timeout)

        for index, items in zip(missing, self._fan_out_map(fetch, missing), strict=True):
            modules[index] = {**modules[index], "items": items}
        return modules

    def list_submissions(
        self,
        course_id: int | str,
        *,
        submitted_since: datetime | None = None,
        graded_since: datetime | None = None,
        assignment_ids: Sequence[int] = (),
        student_ids: Sequence[int] = (),
        timeout: float | None = None,
    ) -> list[Record]:
        """Submissions of a course: of every student (`student_ids[]=all`) or of `student_ids`, of every
        assignment or of `assignment_ids`, submitted / graded strictly after `submitted_since` /
        `graded_since` when given (docs/canvas-api.md §3)."""
        params = _submissions_params(student_ids, assignment_ids)
        for name, since in (("submitted_since", submitted_since), ("graded_since", graded_since)):
            if since is not None:
                params.append((name, canvas_time(since)))
        return self._paginate(_submissions_path(course_id), params, timeout=timeout)

    def list_submissions_by_assignments(
        self, course_id: int | str, slices: Sequence[Sequence[int]], *, timeout: float | None = None
    ) -> RecordTexts:
        """Every student's submissions to the assignments of `slices`, one list per slice fetched
        concurrently, returned one after another, kept compressed (docs/canvas-api.md §1, Long lists)."""

        def fetch(index: int) -> RecordTexts:
            texts = RecordTexts()
            params = _submissions_params((), slices[index])
            for page in self._pages(_submissions_path(course_id), params, timeout=timeout):
                texts.add(page)
            return texts

        return RecordTexts(self._fan_out_map(fetch, list(range(len(slices)))))

    def list_terms(self, account_id: int | str, *, timeout: float | None = None) -> list[Record]:
        """The enrollment terms of a root account (`self`: the token's own) in every state, deleted ones
        included (`workflow_state[]=all`), read under `enrollment_terms` (docs/canvas-api.md §7)."""
        path = f"/accounts/{path_segment(account_id)}/terms"
        return self._paginate(
            path, [("workflow_state[]", "all")], timeout=timeout, wrapped_in="enrollment_terms"
        )

    def list_grade_changes(
        self, course_id: int | str, *, start_time: datetime | None = None, timeout: float | None = None
    ) -> list[Record]:
        """A course's grade change audit events, newest first, those created at or after `start_time` when
        given, read under `events` (docs/canvas-api.md §7)."""
        params: Params = [] if start_time is None else [("start_time", canvas_time(start_time))]
        path = _grade_changes_path(course_id)
        return self._paginate(path, params, timeout=timeout, wrapped_in="events")

    def list_grade_changes_in_windows(
        self, course_id: int | str, cuts: Sequence[datetime], *, timeout: float | None = None
    ) -> RecordTexts:
        """A course's whole grade change log as one list per time window around the `cuts`, fetched
        concurrently, newest window first as one list would give them, kept compressed; an event at a cut
        is kept in the later window only (docs/canvas-api.md §7)."""
        # The cuts in UTC to the second, as Canvas reads them; a window before, between and after them.
        seconds = sorted({c.astimezone(timezone.utc).replace(microsecond=0) for c in cuts})
        bounds = list(zip([None, *seconds], [*seconds, None], strict=True))

        def fetch(index: int) -> RecordTexts:
            start, end = bounds[index]
            params: Params = [] if start is None else [("start_time", canvas_time(start))]
            params += [] if end is None else [("end_time", canvas_time(end))]
            texts = RecordTexts()
            path = _grade_changes_path(course_id)
            for page in self._pages(path, params, timeout=timeout, wrapped_in="events"):
                texts.add(page if end is None else [e for e in page if not _at_or_after(e, end)])
            return texts

        return RecordTexts(self._fan_out_map(fetch, list(range(len(bounds))))[::-1])

    def list_student_summaries(self, course_id: int | str, *, timeout: float | None = None) -> list[Record]:
        """Per-student analytics. Raises CanvasNotFound when analytics is unavailable for the course."""
        return self._paginate(
            f"/courses/{path_segment(course_id)}/analytics/student_summaries", timeout=timeout
        )


def _grade_changes_path(course_id: int | str) -> str:
    return f"/audit/grade_change/courses/{path_segment(course_id)}"


def _submissions_path(course_id: int | str) -> str:
    return f"/courses/{path_segment(course_id)}/students/submissions"


def _submissions_params(student_ids: Sequence[int], assignment_ids: Sequence[int]) -> Params:
    """Every student's (`student_ids[]=all`) or `student_ids`' submissions, to `assignment_ids` or to all."""
    params = array_params("student_ids[]", [str(i) for i in student_ids] or ["all"])
    return params + array_params("assignment_ids[]", [str(i) for i in assignment_ids])


def _at_or_after(event: Any, cut: datetime) -> bool:
    """Whether an audit event was created at or after `cut` (False when its time is unreadable: kept)."""
    at = parse_time(event.get("created_at")) if isinstance(event, dict) else None
    return at is not None and at >= cut


def canvas_time(at: datetime) -> str:
    """An instant as Canvas takes it in a query: ISO 8601 in UTC with `Z`, to the second."""
    if at.tzinfo is None:
        raise ValueError("canvas_time needs an aware datetime")
    return at.astimezone(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def _items_missing(module: Record) -> bool:
    items = module.get("items")
    if not isinstance(items, list):
        return True
    count = module.get("items_count")
    return isinstance(count, int) and len(items) < count
