"""The course catalog, the sync log and the quarantine: what the runs record beside the data.

Each function takes a `Connection` inside the caller's transaction; `Warehouse` opens the transactions.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any

import sqlalchemy as sa

from canvas_assets.jsontext import encode_json
from canvas_assets.transform.convert import to_id
from canvas_assets.transform.quarantine import Rejected
from canvas_assets.warehouse.models import COURSE_SCOPE_COLUMN, table
from canvas_assets.warehouse.sql import chunks, upsert_statement, utc


# --- catalog ----------------------------------------------------------------------------------------------
@dataclass
class CatalogDiff:
    """What a course listing changed in the catalog."""

    new: list[int] = field(default_factory=list)  # never seen before
    returned: list[int] = field(default_factory=list)  # had gone, listed again
    vanished: list[int] = field(default_factory=list)  # known, absent from a full listing: now gone
    listed: list[int] = field(default_factory=list)  # every course id of this listing
    active: list[int] = field(default_factory=list)  # every course in the catalog that is not gone
    invalid: int = 0  # listing entries without a usable id (ignored)

    def to_metadata(self) -> dict[str, int]:
        return {
            "listed": len(self.listed),
            "new": len(self.new),
            "returned": len(self.returned),
            "vanished": len(self.vanished),
            "active": len(self.active),
        }


def upsert_catalog(
    conn: sa.Connection, courses: Sequence[Mapping[str, Any]], *, seen_at: datetime, full_listing: bool
) -> CatalogDiff:
    t = table("canvas_course_catalog")
    seen_at = utc(seen_at)
    diff = CatalogDiff()
    rows: dict[int, dict[str, Any]] = {}
    for course in courses:
        course_id = to_id(course.get("id")) if isinstance(course, Mapping) else None
        if not isinstance(course_id, int):
            diff.invalid += 1
            continue
        account_id = to_id(course.get("account_id"))
        term_id = to_id(course.get("enrollment_term_id"))
        rows[course_id] = {
            "course_id": course_id,
            "name": course.get("name"),
            "course_code": course.get("course_code"),
            "workflow_state": course.get("workflow_state"),
            "account_id": account_id if isinstance(account_id, int) else None,
            "enrollment_term_id": term_id if isinstance(term_id, int) else None,
            "first_seen_at": seen_at,
            "last_seen_at": seen_at,
            "gone_at": None,
            "gone_reason": None,
        }
    before = {int(c): gone for c, gone in conn.execute(sa.select(t.c.course_id, t.c.gone_at))}
    diff.listed = sorted(rows)
    diff.new = [c for c in diff.listed if c not in before]
    diff.returned = [c for c in diff.listed if c in before and before[c] is not None]
    if rows:
        stmt = upsert_statement(conn, t)
        update = ("name", "course_code", "workflow_state", "account_id", "enrollment_term_id", "last_seen_at")
        stmt = stmt.on_conflict_do_update(
            index_elements=["course_id"],
            set_={**{c: stmt.excluded[c] for c in update}, "gone_at": None, "gone_reason": None},
        )
        conn.execute(stmt, list(rows.values()))
    if full_listing:
        diff.vanished = sorted(c for c, gone in before.items() if gone is None and c not in rows)
        for chunk in chunks(diff.vanished):
            conn.execute(
                sa.update(t)
                .where(t.c.course_id.in_(chunk))
                .values(gone_at=seen_at, gone_reason="not in the course listing")
            )
    diff.active = catalog_course_ids(conn, include_gone=False)
    return diff


def mark_course_gone(conn: sa.Connection, course_id: int, *, reason: str, at: datetime) -> None:
    t = table("canvas_course_catalog")
    at = utc(at)
    stmt = upsert_statement(conn, t).values(
        course_id=int(course_id), first_seen_at=at, last_seen_at=None, gone_at=at, gone_reason=reason
    )
    stmt = stmt.on_conflict_do_update(
        index_elements=["course_id"], set_={"gone_at": at, "gone_reason": reason}
    )
    conn.execute(stmt)
    for name, scope in COURSE_SCOPE_COLUMN.items():
        target = table(name)
        if scope is None or "deleted_at" not in target.c:  # global rows, or an append-only log (audit events)
            continue
        conn.execute(
            sa.update(target)
            .where(target.c[scope] == int(course_id), target.c.deleted_at.is_(None))
            .values(deleted_at=at)
        )


def catalog_course_ids(conn: sa.Connection, *, include_gone: bool) -> list[int]:
    t = table("canvas_course_catalog")
    query = sa.select(t.c.course_id).order_by(t.c.course_id)
    if not include_gone:
        query = query.where(t.c.gone_at.is_(None))
    return [int(c) for c in conn.scalars(query)]


# --- sync log and quarantine ------------------------------------------------------------------------------
def write_sync_log(conn: sa.Connection, rows: Sequence[Mapping[str, Any]]) -> None:
    t = table("canvas_sync_log")
    allowed = set(t.c.keys()) - {"id"}
    out = []
    for row in rows:
        unknown = set(row) - allowed
        if unknown:
            raise ValueError(f"unknown canvas_sync_log columns: {sorted(unknown)}; known: {sorted(allowed)}")
        values: dict[str, Any] = dict.fromkeys(allowed)
        values.update(row)
        started, finished = values["started_at"], values["finished_at"]
        if values["duration_s"] is None and started is not None and finished is not None:
            values["duration_s"] = (utc(finished) - utc(started)).total_seconds()
        if values["course_id"] is not None:
            values["course_id"] = int(values["course_id"])
        if values["message"] is not None:
            values["message"] = str(values["message"])[:4000]
        out.append(values)
    conn.execute(sa.insert(t), out)


def write_rejected(conn: sa.Connection, rejected: Sequence[Rejected], *, run_id: str) -> None:
    t = table("canvas_rejected_records")
    now = datetime.now(timezone.utc)
    rows = [
        {
            "run_id": run_id,
            "entity": r.entity,
            "course_id": r.course_id,
            "canvas_id": r.canvas_id,
            "reason": r.reason,
            "payload": encode_json(r.payload),
            "rejected_at": now,
        }
        for r in rejected
    ]
    for chunk in chunks(rows, 5000):
        conn.execute(sa.insert(t), list(chunk))
