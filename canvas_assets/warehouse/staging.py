"""Raw staging: one row per Canvas object (`canvas_staging_records`) and one per (entity, course) saying how
it was fetched (`canvas_staging`); and the SQL helpers the warehouse's other writers share.

Each function takes a `Connection` inside the caller's transaction; `Warehouse` opens the transactions.
"""

from __future__ import annotations

import struct
import uuid
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timezone
from itertools import chain
from typing import Any, NamedTuple

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql, sqlite

from canvas_assets.jsontext import decode_json, encode_json
from canvas_assets.transform.convert import to_id
from canvas_assets.warehouse.models import table
from canvas_assets.warehouse.pgcopy import BINARY_HEADER, BINARY_TRAILER, uses_copy

IN_CHUNK = 1000  # ids per IN (...) list: far below SQLite's 32766 host-parameter limit


def upsert_statement(conn: sa.Connection, target: sa.Table) -> Any:
    """The dialect's `INSERT` (both SQLite and PostgreSQL support `ON CONFLICT DO UPDATE`)."""
    if conn.dialect.name == "postgresql":
        return postgresql.insert(target)
    if conn.dialect.name == "sqlite":
        return sqlite.insert(target)
    raise NotImplementedError(f"upsert is not implemented for {conn.dialect.name}")


def distinct_sql(conn: sa.Connection, left: Sequence[str], right: Sequence[str]) -> str:
    """NULL-safe "some value differs" between two equally long lists of column expressions."""
    if conn.dialect.name == "postgresql":
        if len(left) == 1:
            return f"{left[0]} IS DISTINCT FROM {right[0]}"
        return f"({', '.join(left)}) IS DISTINCT FROM ({', '.join(right)})"
    return "(" + " OR ".join(f"{a} IS NOT {b}" for a, b in zip(left, right, strict=True)) + ")"


def chunks(values: Sequence[Any], size: int = IN_CHUNK) -> Iterable[Sequence[Any]]:
    for start in range(0, len(values), size):
        yield values[start : start + size]


def utc(at: datetime) -> datetime:
    return at.replace(tzinfo=timezone.utc) if at.tzinfo is None else at.astimezone(timezone.utc)


# --- staging ----------------------------------------------------------------------------------------------
FULL, INCREMENTAL = "full", "incremental"


class StagingItem(NamedTuple):
    """One (entity, course)'s records to stage, with how they were fetched (a plain 3-tuple is a full fetch).

    A full fetch's `records` are the course's whole list: they replace what staging holds. An incremental
    fetch's are the changed records only, upserted, and `removed` the keys of staged records to delete
    (their parent vanished). `full_fetched_at` is kept from the previous fetch by an incremental one (None:
    this fetch's time); `watermark` is an incremental entity's latest Canvas change time among the records."""

    entity: str
    course_id: int
    records: Sequence[Any]
    mode: str = FULL
    watermark: datetime | None = None
    full_fetched_at: datetime | None = None
    removed: Sequence[str] = ()


@dataclass(frozen=True)
class FetchState:
    """How a course's staged records of an entity were last fetched (`canvas_staging`)."""

    fetched_at: datetime
    mode: str | None
    full_fetched_at: datetime | None
    watermark: datetime | None
    record_count: int


@dataclass
class StagingWrite:
    """What a staging write did: record rows inserted, updated or deleted, and the record count it staged
    per (entity, course)."""

    rows_written: int = 0
    counts: dict[tuple[str, int], int] = field(default_factory=dict)


# Record keys (`canvas_staging_records.record_key`): the Canvas id; `<id>#<n>` for the n-th record of a list
# that repeats an id (Canvas serves them: pages that shift while being read), `#<n>` for one without a usable
# id (the transformer quarantines it). n is zero-padded so that keys of one id sort by position.
_POSITION_DIGITS = 9


def record_keys(records: Sequence[Any]) -> list[str]:
    """Each record's key in the list (see above), in order."""
    seen: set[int] = set()
    keys: list[str] = []
    for position, record in enumerate(records):
        canvas_id = to_id(record.get("id")) if isinstance(record, Mapping) else None
        if not isinstance(canvas_id, int):
            keys.append(f"#{position:0{_POSITION_DIGITS}d}")
        elif canvas_id in seen:
            keys.append(f"{canvas_id}#{position:0{_POSITION_DIGITS}d}")
        else:
            seen.add(canvas_id)
            keys.append(str(canvas_id))
    return keys


def key_order(key: str) -> tuple[int, int, str]:
    """Staged records are read back in id order, repeats after the first of their id, those without a
    usable id last, each in the position it was fetched at."""
    head, _, tail = key.partition("#")
    return (0, int(head), tail) if head else (1, 0, tail)


def record_text(record: Any) -> str:
    """A record as staged: compact JSON (`jsontext.encode_json`)."""
    return encode_json(record)


_STATE_COLUMNS = ("record_count", "fetched_at", "run_id", "fetch_mode", "full_fetched_at", "watermark")


def write_staging(
    conn: sa.Connection, items: Sequence[tuple[Any, ...]], *, run_id: str, fetched_at: datetime
) -> StagingWrite:
    """Stage each item's records, and its course's fetch state, in the caller's transaction.

    Only what changed is written: the records go to a temporary table (binary COPY on PostgreSQL), and from
    there a full fetch's course loses the keys it no longer has, gains the new ones and has the others
    updated where the text differs; an incremental fetch's changes are upserted the same way and its
    `removed` keys deleted. A no-change re-sync writes no record row (the state rows are always written)."""
    fetched_at = utc(fetched_at)
    staged = [StagingItem(*raw) for raw in items]
    if not staged:
        return StagingWrite()
    incoming = _fill_incoming(conn, staged)
    records = table("canvas_staging_records")
    written = 0
    full = [(item.entity, int(item.course_id)) for item in staged if item.mode == FULL]
    courses = _temp_table(conn, "canvas_staging_courses", "entity varchar(64), course_id bigint")
    if full:
        conn.execute(sa.text(f"INSERT INTO {courses} VALUES (:e, :c)"), [{"e": e, "c": c} for e, c in full])
        written += conn.exec_driver_sql(
            f"DELETE FROM canvas_staging_records WHERE EXISTS (SELECT 1 FROM {courses} c "
            "WHERE c.entity = canvas_staging_records.entity AND c.course_id = canvas_staging_records.course_id) "
            f"AND NOT EXISTS (SELECT 1 FROM {incoming} i WHERE i.entity = canvas_staging_records.entity "
            "AND i.course_id = canvas_staging_records.course_id "
            "AND i.record_key = canvas_staging_records.record_key)"
        ).rowcount
    removed = [
        {"e": item.entity, "c": int(item.course_id), "k": key} for item in staged for key in item.removed
    ]
    if removed:
        delete = sa.delete(records).where(
            records.c.entity == sa.bindparam("e"),
            records.c.course_id == sa.bindparam("c"),
            records.c.record_key == sa.bindparam("k"),
        )
        written += conn.execute(delete, removed).rowcount
    differs = distinct_sql(conn, ["canvas_staging_records.record"], ["excluded.record"])
    written += conn.exec_driver_sql(
        "INSERT INTO canvas_staging_records (entity, course_id, record_key, record) "
        f"SELECT entity, course_id, record_key, record FROM {incoming} WHERE true "
        "ON CONFLICT (entity, course_id, record_key) DO UPDATE SET record = excluded.record "
        f"WHERE {differs}"
    ).rowcount
    counts = _write_states(conn, staged, run_id, fetched_at)
    if conn.dialect.name != "postgresql":  # PostgreSQL drops them at commit
        conn.exec_driver_sql(f"DROP TABLE {incoming}")
        conn.exec_driver_sql(f"DROP TABLE {courses}")
    return StagingWrite(max(0, written), counts)


def _temp_table(conn: sa.Connection, prefix: str, columns: str) -> str:
    name = f"{prefix}_{uuid.uuid4().hex[:12]}"
    on_commit = " ON COMMIT DROP" if conn.dialect.name == "postgresql" else ""
    conn.exec_driver_sql(f"CREATE TEMPORARY TABLE {name} ({columns}){on_commit}")
    return name


def _incoming_rows(staged: Sequence[StagingItem]) -> Iterator[tuple[str, int, str, str]]:
    """(entity, course id, key, text) of every record to write, a record's text made when it is reached."""
    for item in staged:
        course_id = int(item.course_id)
        records = item.records
        for key, record in zip(record_keys(records), records, strict=True):
            yield item.entity, course_id, key, record_text(record)


# Records per insert statement into the temporary table where it is not filled by COPY (SQLite).
INSERT_BATCH = 5000


def _fill_incoming(conn: sa.Connection, staged: Sequence[StagingItem]) -> str:
    """A temporary table holding the records of `staged` with their keys; its name."""
    if uses_copy(conn):
        name = _temp_table(
            conn,
            "canvas_staging_in",
            "entity varchar(64), course_id bigint, record_key varchar(64), record text",
        )
        cursor = conn.connection.dbapi_connection.cursor()  # type: ignore[union-attr]
        try:
            stream = _CopyStream(_copy_tuples(_incoming_rows(staged)))
            try:
                cursor.copy_expert(
                    f"COPY {name} (entity, course_id, record_key, record) FROM STDIN (FORMAT binary)",
                    stream,
                    size=1 << 20,
                )
            except Exception:
                if stream.error is not None:  # a record that cannot be written: its own error, not the cancel
                    raise stream.error from None
                raise
        finally:
            cursor.close()
        return name
    # SQLite: a key, so that the delete's NOT EXISTS is a lookup
    name = _temp_table(
        conn,
        "canvas_staging_in",
        "entity varchar(64), course_id bigint, record_key varchar(64), record text, "
        "PRIMARY KEY (entity, course_id, record_key)",
    )
    insert = sa.text(f"INSERT INTO {name} VALUES (:e, :c, :k, :r)")
    batch: list[dict[str, Any]] = []
    for entity, course_id, key, text in _incoming_rows(staged):
        batch.append({"e": entity, "c": course_id, "k": key, "r": text})
        if len(batch) >= INSERT_BATCH:
            conn.execute(insert, batch)
            batch = []
    if batch:
        conn.execute(insert, batch)
    return name


def _copy_tuples(rows: Iterator[tuple[str, int, str, str]]) -> Iterator[bytes]:
    """Binary COPY tuples of (entity, course id, key, text), a few hundred records to a part."""
    count = struct.pack("!h", 4)
    part: list[bytes] = []
    for entity, course_id, key, text in rows:
        part.append(count)
        part.append(_binary_text(entity))
        part.append(struct.pack("!iq", 8, course_id))
        part.append(_binary_text(key))
        part.append(_binary_text(text))
        if len(part) >= 2000:
            yield b"".join(part)
            part = []
    if part:
        yield b"".join(part)


def _binary_text(value: str) -> bytes:
    data = value.encode("utf-8")
    return struct.pack("!i", len(data)) + data


class _CopyStream:
    """A binary COPY stream (header, `tuples`, trailer) that psycopg2 reads a part at a time."""

    def __init__(self, tuples: Iterator[bytes]) -> None:
        self._parts = chain([BINARY_HEADER], tuples, [BINARY_TRAILER])
        self.error: Exception | None = None  # what making the stream raised (psycopg2 reports it as a cancel)

    def read(self, size: int = -1) -> bytes:
        try:
            return next(self._parts, b"")
        except Exception as exc:
            self.error = exc
            raise


def _write_states(
    conn: sa.Connection, staged: Sequence[StagingItem], run_id: str, fetched_at: datetime
) -> dict[tuple[str, int], int]:
    """Upsert each item's `canvas_staging` row (an incremental item's record count counted in SQL); the
    record counts."""
    records = table("canvas_staging_records")
    rows: list[dict[str, Any]] = []
    for item in staged:
        count = len(item.records)
        if item.mode != FULL:
            count = conn.execute(
                sa.select(sa.func.count()).where(
                    records.c.entity == item.entity, records.c.course_id == int(item.course_id)
                )
            ).scalar_one()
        rows.append(
            {
                "entity": item.entity,
                "course_id": int(item.course_id),
                "record_count": int(count),
                "fetched_at": fetched_at,
                "run_id": run_id,
                "fetch_mode": item.mode,
                "full_fetched_at": fetched_at if item.full_fetched_at is None else utc(item.full_fetched_at),
                "watermark": None if item.watermark is None else utc(item.watermark),
            }
        )
    t = table("canvas_staging")
    stmt = upsert_statement(conn, t)
    stmt = stmt.on_conflict_do_update(
        index_elements=["entity", "course_id"], set_={c: stmt.excluded[c] for c in _STATE_COLUMNS}
    )
    conn.execute(stmt, rows)
    return {(row["entity"], row["course_id"]): row["record_count"] for row in rows}


def read_fetch_states(conn: sa.Connection, entity: str, course_ids: Iterable[int]) -> dict[int, FetchState]:
    """How each course's staged records of `entity` were fetched; courses with nothing staged are absent."""
    t = table("canvas_staging")
    out: dict[int, FetchState] = {}
    columns = (
        t.c.course_id,
        t.c.fetched_at,
        t.c.fetch_mode,
        t.c.full_fetched_at,
        t.c.watermark,
        t.c.record_count,
    )
    for chunk in chunks(sorted({int(c) for c in course_ids})):
        query = sa.select(*columns).where(t.c.entity == entity, t.c.course_id.in_(chunk))
        for course_id, fetched, mode, full, mark, count in conn.execute(query):
            out[int(course_id)] = FetchState(fetched, mode, full, mark, int(count))
    return out


# Record rows per fetch from the server-side cursor of `staged_batches`.
FETCH_ROWS = 2000


def staged_batches(
    conn: sa.Connection, entity: str, course_ids: Iterable[int], batch_records: int
) -> Iterator[dict[int, list[Any]]]:
    """The staged records of `course_ids` (decoded, in `key_order`), whole courses at a time: each batch has
    at least one course and, past its first, at most `batch_records` records. Read through a server-side
    cursor (PostgreSQL) in course order, so only a batch's records are in memory, whatever the range.
    Courses with nothing staged are absent."""
    records = table("canvas_staging_records")
    ids = sorted({int(c) for c in course_ids})
    batch: dict[int, list[Any]] = {}
    size = 0
    for chunk in chunks(ids):
        # A course staged with no records has a state row and no record row: it is in a batch, empty.
        empty = set(read_fetch_states(conn, entity, chunk))
        query = (
            sa.select(records.c.course_id, records.c.record_key, records.c.record)
            .where(records.c.entity == entity, records.c.course_id.in_(chunk))
            .order_by(records.c.course_id)
        )
        result = conn.execution_options(stream_results=True, yield_per=FETCH_ROWS).execute(query)
        course: int | None = None
        rows: list[tuple[str, str]] = []
        for course_id, key, text in chain(result, [(None, "", "")]):
            if course_id != course and course is not None:
                batch[course], size = _decoded(rows), size + len(rows)
                empty.discard(course)
                if size >= batch_records:
                    yield batch
                    batch, size = {}, 0
                rows = []
            course = None if course_id is None else int(course_id)
            rows.append((key, text))
        for course in sorted(empty):
            batch[course] = []
    if batch:
        yield batch


def _decoded(rows: list[tuple[str, str]]) -> list[Any]:
    rows.sort(key=lambda row: key_order(row[0]))
    return [decode_json(text) for _, text in rows]


def read_staging(conn: sa.Connection, entity: str, course_ids: Iterable[int]) -> dict[int, list[Any]]:
    """The staged records of each course (in `key_order`); courses with nothing staged are absent. All of
    them at once: for a few courses (a merge's needs, the checks); a range goes by `staged_batches`."""
    out: dict[int, list[Any]] = {}
    for batch in staged_batches(conn, entity, course_ids, 1 << 62):
        out.update(batch)
    return out


def staged_fields(
    conn: sa.Connection, entity: str, course_id: int, fields: Sequence[str]
) -> list[tuple[str, dict[str, Any]]]:
    """(key, {field: value}) of each staged record of one course, `fields` read from the JSON in SQL (an
    incremental fetch's parents' check and its `keep` rule need those, not the records)."""
    t = table("canvas_staging_records")
    if conn.dialect.name == "postgresql":
        parsed = sa.cast(t.c.record, postgresql.JSON)
        values = [parsed[f].astext for f in fields]
    else:
        values = [sa.func.json_extract(t.c.record, f"$.{f}") for f in fields]
    query = sa.select(t.c.record_key, *values).where(t.c.entity == entity, t.c.course_id == int(course_id))
    return [(row[0], dict(zip(fields, row[1:], strict=True))) for row in conn.execute(query)]


def staged_courses(conn: sa.Connection, entity: str) -> dict[int, datetime]:
    t = table("canvas_staging")
    query = sa.select(t.c.course_id, t.c.fetched_at).where(t.c.entity == entity)
    return {int(c): at for c, at in conn.execute(query)}
