"""The fetch plans of `period_scores` (canvas_assets.entities): a course's student enrollments once per grading
period, each with that period's grades.

EnrollmentsApiController#index with `grading_period_id` fills each record's `grades` with the period's scores
(lib/api/v1/user.rb `grades_hash`, `score_opts = {grading_period_id:}`), and the record does not say which
period: each is staged with the period it was asked for, under `grading_period_id`. A period id that does not
apply to the course is refused with `400 {"error": "invalid grading_period_id"}` (docs/canvas-api.md §7).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from canvas_assets.canvas.api import ALL_ENROLLMENT_STATES_BUT_DELETED
from canvas_assets.canvas.urls import Params, path_segment
from canvas_assets.transform.convert import to_id


def _without_user(enrollment: Mapping[str, Any]) -> dict:
    """The enrollment without its embedded `user`: the `enrollments` entity stages each user once, and the
    periods' copies would hold it once per period (a third of the staged bytes, for nothing read from it)."""
    return {k: v for k, v in enrollment.items() if k != "user"}


def scores_of_periods(client: Any, course_id: int, periods: Sequence[Any], timeout: float) -> list[dict]:
    """One enrollments list per period (student enrollments in every state but deleted), the records
    staged with `grading_period_id` and without their embedded user."""
    path = f"/courses/{path_segment(course_id)}/enrollments"
    states = [("state[]", s) for s in ALL_ENROLLMENT_STATES_BUT_DELETED]
    out: list[dict] = []
    for period in periods:
        period_id = to_id(period.get("id")) if isinstance(period, Mapping) else None
        if period_id is None:  # the grading periods' transformer quarantines the malformed record
            continue
        params: Params = [("type[]", "StudentEnrollment"), *states, ("grading_period_id", str(period_id))]
        rows = client.list_records(path, params, timeout=timeout)
        out += [{**_without_user(r), "grading_period_id": period_id} for r in rows]
    return out


def fetch(client: Any, profile: Any, course_id: int, timeout: float) -> list[dict]:
    """The full plan, when this run's grading periods are not at hand: the periods are listed first."""
    periods = client.list_records(
        f"/courses/{path_segment(course_id)}/grading_periods", timeout=timeout, wrapped_in="grading_periods"
    )
    return scores_of_periods(client, course_id, periods, timeout)


def fetch_for_fetched_periods(
    client: Any, course_id: int, records_of: Mapping[str, Sequence[Any]], timeout: float
) -> Sequence[Any] | None:
    """The sliced plan: the periods this run fetched for the course name the requests (no second periods
    request); None when the run has none, and `fetch` lists them."""
    if "grading_periods" not in records_of:
        return None
    return scores_of_periods(client, course_id, records_of["grading_periods"], timeout)
