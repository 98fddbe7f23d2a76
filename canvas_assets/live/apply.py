"""Apply pending inbox events to the Layer-1 tables: idempotent, order-proof, one transaction per batch,
under the nightly loads' lock. The rules per row and column (event times against the live values in
`canvas_live_rows` and the course's last REST fetch, NULL fingerprints, created rows, history rows) are in
docs/operations.md, "Run the consumer".
"""

from __future__ import annotations

import json
from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any

import sqlalchemy as sa

from canvas_assets.live import inbox
from canvas_assets.live.events import BadEvent, LiveEvent, parse_event, parse_time
from canvas_assets.live.mapping import CREATE_REQUIRES, ENTITY_OF_TABLE, RowChange, changes_of, same_value
from canvas_assets.warehouse.columns import UTCDateTime
from canvas_assets.warehouse.engine import locked_transaction
from canvas_assets.warehouse.history import HISTORY
from canvas_assets.warehouse.models import table
from canvas_assets.warehouse.sql import IN_CHUNK, chunks, utc

LIVE_RUN_ID = "live"
LIVE_ROWS = "canvas_live_rows"


@dataclass
class ApplyStats:
    """What one or more batches did: events per outcome, rows written, and the newest event per course."""

    outcomes: dict[str, int] = field(default_factory=lambda: defaultdict(int))
    rows_written: int = 0
    history_rows: int = 0
    last_event: dict[int, datetime] = field(default_factory=dict)
    # Per course: seconds from its newest event's time to the commit that applied it (the feed's lag).
    last_lag_s: dict[int, float] = field(default_factory=dict)
    applied_at: datetime | None = None

    @property
    def events(self) -> int:
        return sum(self.outcomes.values())

    def add(self, other: ApplyStats) -> None:
        for k, v in other.outcomes.items():
            self.outcomes[k] += v
        self.rows_written += other.rows_written
        self.history_rows += other.history_rows
        for course, t in other.last_event.items():
            if course not in self.last_event or t >= self.last_event[course]:
                self.last_event[course] = t
                self.last_lag_s[course] = other.last_lag_s.get(course, 0.0)
        self.applied_at = other.applied_at or self.applied_at


def load_value(tbl: sa.Table, column: str, value: Any) -> Any:
    """A live value read back from `columns_json` in the column's own Python type (timestamps are stored
    as ISO text there)."""
    if isinstance(value, str) and isinstance(tbl.c[column].type, UTCDateTime):
        return parse_time(value)
    return value


def select_in(conn: sa.Connection, sql: str, ids: list[Any], **params: Any) -> list[Any]:
    """The rows of `sql` (which has `IN :ids`) over every id, asked in chunks of `IN_CHUNK`."""
    rows: list[Any] = []
    for part in chunks(sorted(ids), IN_CHUNK):
        stmt = sa.text(sql).bindparams(sa.bindparam("ids", expanding=True))
        rows.extend(conn.execute(stmt, {"ids": list(part), **params}))
    return rows


class _Batch:
    """The state of one batch: the rows it touches as stored, their live values, and what it wrote."""

    def __init__(self, conn: sa.Connection) -> None:
        self.conn = conn
        self.rows: dict[str, dict[int, dict[str, Any]]] = defaultdict(dict)
        self.new: dict[str, set[int]] = defaultdict(set)
        self.dirty: dict[str, dict[int, set[str]]] = defaultdict(lambda: defaultdict(set))
        self.live: dict[str, dict[int, dict[str, list[Any]]]] = defaultdict(dict)
        self.live_course: dict[tuple[str, int], int | None] = {}
        self.live_touched: set[tuple[str, int]] = set()
        self.fetched: dict[tuple[str, int], datetime] = {}
        self.history: dict[str, list[dict[str, Any]]] = defaultdict(list)

    # --- reading what the batch touches ---------------------------------------------------------------
    def load(self, changes: list[RowChange]) -> None:
        ids: dict[str, set[int]] = defaultdict(set)
        courses: set[int] = set()
        for c in changes:
            if c.row_id is not None:
                ids[c.table].add(c.row_id)
            if c.course_id is not None:
                courses.add(c.course_id)
        sql = (
            f"SELECT row_id, course_id, columns_json FROM {LIVE_ROWS} "
            "WHERE table_name = :t AND row_id IN :ids"
        )
        for name, wanted in ids.items():
            self.rows[name] = rows_by_id(self.conn, name, wanted)
            for r in select_in(self.conn, sql, list(wanted), t=name):
                self.live[name][int(r[0])] = json.loads(r[2])
                self.live_course[(name, int(r[0]))] = r[1]
        self.fetched = fetched_at(self.conn, courses)

    def resolve_students(self, changes: list[RowChange]) -> list[RowChange]:
        """`course_grade_change` names (course, user): one change per student enrollment of theirs."""
        wanted = {c.student_of for c in changes if c.student_of is not None}
        if not wanted:
            return changes
        found: dict[tuple[int, int], list[int]] = defaultdict(list)
        sql = (
            "SELECT id, course_id, user_id FROM canvas_enrollments WHERE type = 'StudentEnrollment' "
            "AND course_id IN :ids"
        )
        for r in select_in(self.conn, sql, list({course for course, _ in wanted})):
            if (int(r[1]), int(r[2])) in wanted:
                found[(int(r[1]), int(r[2]))].append(int(r[0]))
        out: list[RowChange] = []
        for c in changes:
            if c.student_of is None:
                out.append(c)
            else:
                out.extend(
                    RowChange(c.table, eid, c.course_id, dict(c.values))
                    for eid in found.get(c.student_of, [])
                )
        return out

    # --- applying one change ----------------------------------------------------------------------------
    def apply(self, event: LiveEvent, change: RowChange) -> str:
        """Apply one change in memory; its outcome (`applied`, `unchanged`, `stale`, `unmatched`)."""
        name, rid = change.table, change.row_id
        assert rid is not None
        row = self.rows[name].get(rid)
        course = row["course_id"] if row is not None and "course_id" in row else change.course_id
        if name == "canvas_courses":
            course = rid
        fetched = self.fetched.get((ENTITY_OF_TABLE[name], course)) if course is not None else None
        if fetched is not None and event.event_time <= fetched:
            return "stale"
        if row is None:
            row = self._create(name, rid, change)
            if row is None:
                return "unmatched"
        live = self.live[name].setdefault(rid, {})
        before = {c: row.get(c) for c in HISTORY[name].columns} if name in HISTORY else {}
        accepted = written = False
        for column, value in change.values.items():
            stored = live.get(column)
            if stored is not None and event.event_time < as_utc(stored[0]):
                continue
            accepted = True
            live[column] = [
                event.event_time.isoformat(),
                value.isoformat() if isinstance(value, datetime) else value,
            ]
            if not same_value(row.get(column), value):
                row[column] = value
                written = True
                if rid not in self.new[name]:
                    self.dirty[name][rid].add(column)
        if accepted:
            self.live_touched.add((name, rid))
            self.live_course[(name, rid)] = course
        if written and name in HISTORY:
            self._history(name, row, before, event.event_time, is_new=rid in self.new[name])
        return "applied" if written else "unchanged" if accepted else "stale"

    def _create(self, name: str, rid: int, change: RowChange) -> dict[str, Any] | None:
        needs = CREATE_REQUIRES.get(name)
        if needs is None or any(change.create.get(c) is None for c in needs):
            return None
        row: dict[str, Any] = {"id": rid, **{c: change.create[c] for c in needs}}
        self.rows[name][rid] = row
        self.new[name].add(rid)
        return row

    def _history(
        self, name: str, row: dict[str, Any], before: dict[str, Any], at: datetime, *, is_new: bool
    ) -> None:
        spec = HISTORY[name]
        if is_new and not any(row.get(c) is not None for c in spec.first_when):
            # A new row's first history row needs a value in `first_when` (as the REST load's rule).
            return
        if not is_new and all(same_value(before[c], row.get(c)) for c in spec.columns):
            return
        entry = {h: row.get(source) for h, source in spec.ids}
        entry.update({c: row.get(c) for c in spec.columns})
        entry.update(recorded_at=at, run_id=LIVE_RUN_ID)
        self.history[spec.table].append(entry)

    # --- writing ------------------------------------------------------------------------------------
    def flush(self, now: datetime) -> tuple[int, int]:
        written = 0
        for name, ids in self.new.items():
            tbl = table(name)
            same_keys: dict[tuple[str, ...], list[dict[str, Any]]] = defaultdict(list)
            for i in sorted(ids):
                row = {k: v for k, v in self.rows[name][i].items() if k in tbl.c}
                same_keys[tuple(sorted(row))].append({**row, "row_hash": None})
            for group in same_keys.values():
                self.conn.execute(tbl.insert(), group)
            written += len(ids)
        for name, by_row in self.dirty.items():
            tbl = table(name)
            groups: dict[tuple[str, ...], list[dict[str, Any]]] = defaultdict(list)
            for rid, columns in by_row.items():
                cols = tuple(sorted(columns))
                groups[cols].append({"_id": rid, **{f"v_{c}": self.rows[name][rid][c] for c in cols}})
            for cols, params in groups.items():
                stmt = (
                    tbl.update()
                    .where(tbl.c.id == sa.bindparam("_id"))
                    .values(
                        {**{c: sa.bindparam(f"v_{c}", type_=tbl.c[c].type) for c in cols}, "row_hash": None}
                    )
                )
                self.conn.execute(stmt, params)
                written += len(params)
        history = 0
        for hist_table, entries in self.history.items():
            self.conn.execute(table(hist_table).insert(), entries)
            history += len(entries)
        self._write_live_rows(now)
        return written, history

    def _write_live_rows(self, now: datetime) -> None:
        if not self.live_touched:
            return
        params: list[dict[str, Any]] = []
        for name, rid in sorted(self.live_touched):
            columns = self.live[name][rid]
            newest = max(as_utc(v[0]) for v in columns.values())
            params.append(
                {
                    "table_name": name,
                    "row_id": rid,
                    "course_id": self.live_course.get((name, rid)),
                    "event_time": newest,
                    "columns_json": json.dumps(columns, sort_keys=True, separators=(",", ":"), default=str),
                    "applied_at": now,
                    "reconciled_at": None,
                }
            )
        delete_live_rows(self.conn, self.live_touched)
        self.conn.execute(table(LIVE_ROWS).insert(), params)


def as_utc(value: Any) -> datetime:
    """A stored time (ISO text in `columns_json`, or a datetime read back, naive meaning UTC) as aware UTC."""
    if isinstance(value, str):
        parsed = parse_time(value)
        assert parsed is not None
        return parsed
    assert isinstance(value, datetime)
    return utc(value)


def rows_by_id(conn: sa.Connection, name: str, ids: Iterable[int]) -> dict[int, dict[str, Any]]:
    """The stored rows of Layer-1 table `name` with these ids, by id."""
    tbl = table(name)
    rows: dict[int, dict[str, Any]] = {}
    for part in chunks(sorted(ids), IN_CHUNK):
        for r in conn.execute(tbl.select().where(tbl.c.id.in_(list(part)))):
            rows[int(r._mapping["id"])] = dict(r._mapping)
    return rows


def fetched_at(conn: sa.Connection, courses: Iterable[int]) -> dict[tuple[str, int], datetime]:
    """(entity, course) -> the course's last REST fetch of the entity (`canvas_course_sync.fetched_at`)."""
    out: dict[tuple[str, int], datetime] = {}
    sql = "SELECT entity, course_id, fetched_at FROM canvas_course_sync WHERE course_id IN :ids"
    for r in select_in(conn, sql, list(courses)):
        if r[2] is not None:
            out[(str(r[0]), int(r[1]))] = as_utc(r[2])
    return out


def delete_live_rows(conn: sa.Connection, rows: Iterable[tuple[str, int]]) -> None:
    """Delete the `canvas_live_rows` entries of these (table name, row id)."""
    tbl = table(LIVE_ROWS)
    by_table: dict[str, list[int]] = defaultdict(list)
    for name, rid in rows:
        by_table[name].append(rid)
    for name, ids in by_table.items():
        for part in chunks(sorted(ids), IN_CHUNK):
            conn.execute(tbl.delete().where(tbl.c.table_name == name, tbl.c.row_id.in_(list(part))))


def apply_events(
    conn: sa.Connection, events: list[LiveEvent], now: datetime
) -> tuple[dict[str, str], ApplyStats]:
    """Apply parsed events in the caller's transaction; each event's outcome, and the batch's figures."""
    stats = ApplyStats()
    outcomes: dict[str, str] = {}
    planned: list[tuple[LiveEvent, list[RowChange]]] = []
    for event in sorted(events, key=lambda e: (e.event_time, e.key)):
        changes = changes_of(event)
        if changes is None:
            outcomes[event.key] = "ignored"
        else:
            planned.append((event, changes))
    batch = _Batch(conn)
    resolved = [(e, batch.resolve_students(cs)) for e, cs in planned]
    batch.load([c for _, cs in resolved for c in cs])
    rank = {"applied": 3, "unchanged": 2, "stale": 1, "unmatched": 0}
    for event, changes in resolved:
        results = [batch.apply(event, c) for c in changes] or ["unmatched"]
        outcomes[event.key] = max(results, key=rank.__getitem__)
        if event.course_id is not None and outcomes[event.key] != "unmatched":
            last = stats.last_event.get(event.course_id)
            stats.last_event[event.course_id] = max(event.event_time, last or event.event_time)
    stats.rows_written, stats.history_rows = batch.flush(now)
    stats.last_lag_s = {c: max(0.0, (now - t).total_seconds()) for c, t in stats.last_event.items()}
    for outcome in outcomes.values():
        stats.outcomes[outcome] += 1
    return outcomes, stats


def apply_pending(engine: sa.Engine, limit: int = 500) -> ApplyStats:
    """Apply up to `limit` pending inbox events in one transaction (under the loads' lock)."""
    with locked_transaction(engine) as conn:
        batch = inbox.pending(conn, limit)
        if not batch:
            return ApplyStats()
        events: list[LiveEvent] = []
        bad: dict[str, str] = {}
        for key, payload in batch:
            try:
                events.append(parse_event(payload))
            except BadEvent:
                bad[key] = "bad"
        now = datetime.now(timezone.utc)
        outcomes, stats = apply_events(conn, events, now)
        outcomes.update(bad)
        if bad:
            stats.outcomes["bad"] += len(bad)
        inbox.mark_applied(conn, outcomes, now)
        stats.applied_at = now
    return stats
