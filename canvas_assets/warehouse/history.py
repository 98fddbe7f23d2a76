"""History tables: a row each time a tracked value of a Layer-1 row is first seen or changes (which tables and
columns: `HISTORY`). The load marks the rows that need one in its diff, before any write; this module appends.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime

import numpy as np
import pandas as pd
import sqlalchemy as sa

from canvas_assets.warehouse.bulk import insert_frame
from canvas_assets.warehouse.columns import UTCDateTime
from canvas_assets.warehouse.models import table
from canvas_assets.warehouse.sql import distinct_sql, utc


@dataclass(frozen=True)
class History:
    """A Layer-1 table whose changes are also appended to a history table (grades over time).

    A history row is written for a row that is new with a value in `first_when`, or whose `columns` differ
    from the stored ones; it holds `columns` as they stand after the load, the row's identity (`ids`:
    history column -> Layer-1 column), `recorded_at` and `run_id`.
    """

    table: str
    ids: tuple[tuple[str, str], ...]
    columns: tuple[str, ...]
    first_when: tuple[str, ...]


HISTORY: dict[str, History] = {
    "canvas_enrollments": History(
        "canvas_score_history",
        ids=(("enrollment_id", "id"), ("course_id", "course_id"), ("user_id", "user_id")),
        columns=("current_score", "final_score", "current_grade", "final_grade"),
        first_when=("current_score", "final_score", "current_grade", "final_grade"),
    ),
    "canvas_submissions": History(
        "canvas_submission_score_history",
        ids=(
            ("submission_id", "id"),
            ("course_id", "course_id"),
            ("assignment_id", "assignment_id"),
            ("user_id", "user_id"),
        ),
        columns=("score", "grade", "workflow_state"),
        first_when=("score", "grade"),
    ),
    "canvas_enrollment_period_scores": History(
        "canvas_enrollment_period_score_history",
        ids=(
            ("enrollment_id", "enrollment_id"),
            ("grading_period_id", "grading_period_id"),
            ("course_id", "course_id"),
            ("user_id", "user_id"),
        ),
        columns=("current_score", "final_score", "current_grade", "final_grade"),
        first_when=("current_score", "final_score", "current_grade", "final_grade"),
    ),
}


def tracked_columns(history: History | None, columns: Sequence[str]) -> list[str]:
    """The history's columns that the load's frame carries (a profile may leave some out)."""
    return [] if history is None else [c for c in history.columns if c in columns]


def first_columns(history: History, tracked: Sequence[str]) -> list[str]:
    """The tracked columns whose value makes a new row's first history row (all tracked ones when the
    frame carries none of `first_when`)."""
    return [c for c in history.first_when if c in tracked] or list(tracked)


def marks_sql(conn: sa.Connection, history: History, tracked: Sequence[str], is_new: str) -> str:
    """The diff's `scored` expression: new with a value in `first_when`, or a tracked value that differs."""
    q = conn.dialect.identifier_preparer.quote
    first = first_columns(history, tracked)
    has_value = " OR ".join(f"s.{q(c)} IS NOT NULL" for c in first)
    differs = distinct_sql(conn, [f"t.{q(c)}" for c in tracked], [f"s.{q(c)}" for c in tracked])
    return f"CASE WHEN {is_new} THEN ({has_value}) ELSE ({differs}) END"


def append_history(
    conn: sa.Connection,
    history: History,
    target: sa.Table,
    temp: str,
    diff: str,
    key: list[str],
    tracked: list[str],
    run_id: str,
    recorded_at: datetime,
) -> int:
    """Append history for the existing rows the diff marked (`scored`). Runs before the writes, so `target`
    still holds the previous values. A history row holds the tracked values as they stand after the load:
    the incoming ones, and the stored ones for columns the frame lacks."""
    q = conn.dialect.identifier_preparer.quote
    after = [f"s.{q(c)}" if c in tracked else f"t.{q(c)}" for c in history.columns]
    join_target = ""
    if len(tracked) < len(history.columns):
        on = " AND ".join(f"t.{q(k)} = s.{q(k)}" for k in key)
        join_target = f" LEFT JOIN {q(target.name)} t ON {on}"
    names = [h for h, _ in history.ids] + ["recorded_at", *history.columns, "run_id"]
    ids = [f"s.{q(source)}" for _, source in history.ids]
    stmt = sa.text(
        f"INSERT INTO {q(history.table)} ({', '.join(q(n) for n in names)}) "
        f"SELECT {', '.join(ids)}, :recorded_at, {', '.join(after)}, :run_id "
        f"FROM {q(diff)} d JOIN {q(temp)} s ON s._n = d._n{join_target} WHERE d.scored"
    ).bindparams(sa.bindparam("recorded_at", type_=UTCDateTime()), sa.bindparam("run_id", type_=sa.String()))
    result = conn.execute(stmt, {"recorded_at": recorded_at, "run_id": run_id})
    return int(result.rowcount or 0)


def new_row_history(
    conn: sa.Connection,
    history: History,
    new: pd.DataFrame,
    tracked: list[str],
    run_id: str,
    recorded_at: datetime,
) -> int:
    """The first history rows of new rows (`new`, from the frame) that have a value in `first_when`: built
    from the frame (there are no stored values to compare with) and inserted in bulk."""
    first = first_columns(history, tracked)
    new = new[new[first].notna().any(axis=1).to_numpy()]
    if not len(new):
        return 0
    target = table(history.table)
    n = len(new)
    rows = pd.DataFrame({h: new[source].to_numpy() for h, source in history.ids})
    rows["recorded_at"] = pd.Series(
        np.full(n, np.datetime64(utc(recorded_at).replace(tzinfo=None), "us"))
    ).dt.tz_localize("UTC")
    for c in history.columns:
        if c in tracked:
            rows[c] = new[c].to_numpy()
        else:
            is_float = isinstance(target.c[c].type, sa.Float)
            rows[c] = pd.Series([None] * n, dtype="float64" if is_float else "string")
    rows["run_id"] = pd.Series([run_id] * n, dtype="string")
    insert_frame(conn, target, rows)
    return n
