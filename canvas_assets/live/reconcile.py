"""Reconciliation after a REST sync: where the live path and the REST path disagree.

Per live column of the courses' rows (`canvas_live_rows`): older than the course's last REST fetch, a REST
value that differs is a *disagreement* (REST's stays) and the column is dropped; newer, a REST value the load
wrote over it is written back (*reapplied*). A row with no column left is deleted. See docs/operations.md,
"Watch it in Dagster" (`live_matches_rest`).
"""

from __future__ import annotations

import json
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any

import sqlalchemy as sa

from canvas_assets.live.apply import (
    LIVE_ROWS,
    as_utc,
    delete_live_rows,
    fetched_at,
    load_value,
    rows_by_id,
    select_in,
)
from canvas_assets.live.mapping import ENTITY_OF_TABLE, same_value
from canvas_assets.warehouse.engine import locked_transaction
from canvas_assets.warehouse.models import table

MAX_EXAMPLES = 20


@dataclass
class Reconciliation:
    rows_checked: int = 0
    values_checked: int = 0
    disagreements: int = 0
    reapplied: int = 0
    examples: list[str] = field(default_factory=list)

    def note(self, text: str) -> None:
        if len(self.examples) < MAX_EXAMPLES:
            self.examples.append(text)


def _show(value: Any) -> str:
    return value.isoformat() if isinstance(value, datetime) else repr(value)


def _live_rows(conn: sa.Connection, course_ids: Sequence[int] | None) -> list[Any]:
    sql = f"SELECT table_name, row_id, course_id, columns_json FROM {LIVE_ROWS}"
    if course_ids is None:
        return list(conn.execute(sa.text(sql)))
    return select_in(conn, sql + " WHERE course_id IN :ids", list(set(course_ids)))


def reconcile(engine: sa.Engine, course_ids: Sequence[int] | None = None) -> Reconciliation:
    """Compare the live values of `course_ids` (every course: None) with the REST copy; see the module."""
    result = Reconciliation()
    now = datetime.now(timezone.utc)
    with locked_transaction(engine) as conn:
        live = _live_rows(conn, course_ids)
        if not live:
            return result
        fetched = fetched_at(conn, {int(r[2]) for r in live if r[2] is not None})
        by_table: dict[str, list[Any]] = defaultdict(list)
        for r in live:
            by_table[r[0]].append(r)
        keep: list[dict[str, Any]] = []
        gone: list[tuple[str, int]] = []
        for name, rows in by_table.items():
            tbl = table(name)
            current = rows_by_id(conn, name, [int(r[1]) for r in rows])
            writes: dict[int, dict[str, Any]] = {}
            for _, rid, course, columns_json in rows:
                result.rows_checked += 1
                stored = current.get(int(rid))
                f = fetched.get((ENTITY_OF_TABLE[name], int(course))) if course is not None else None
                remaining: dict[str, Any] = {}
                for column, (when, value) in json.loads(columns_json).items():
                    live_value = load_value(tbl, column, value)
                    is_old = f is not None and as_utc(when) <= f
                    differs = stored is not None and not same_value(stored.get(column), live_value)
                    if is_old:
                        result.values_checked += 1
                        if differs:
                            result.disagreements += 1
                            rest = stored.get(column)  # type: ignore[union-attr]
                            result.note(
                                f"{name} {rid}.{column}: live {_show(live_value)} at {when}, REST {_show(rest)}"
                            )
                        continue
                    remaining[column] = [when, value]
                    if differs:
                        writes.setdefault(int(rid), {})[column] = live_value
                        result.reapplied += 1
                if remaining:
                    text = json.dumps(remaining, sort_keys=True, separators=(",", ":"))
                    keep.append({"_t": name, "_id": int(rid), "_cols": text})
                else:
                    gone.append((name, int(rid)))
            for rid, values in writes.items():
                conn.execute(tbl.update().where(tbl.c.id == rid).values(**values, row_hash=None))
        t = table(LIVE_ROWS)
        if keep:
            conn.execute(
                t.update()
                .where(t.c.table_name == sa.bindparam("_t"), t.c.row_id == sa.bindparam("_id"))
                .values(columns_json=sa.bindparam("_cols"), reconciled_at=now),
                keep,
            )
        delete_live_rows(conn, gone)
    return result
