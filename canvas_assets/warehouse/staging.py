"""Raw staging: one row per Canvas record (`canvas_staging_records`, keyed by `jsontext.record_id`), and per
(entity, course) how the records were fetched (`canvas_staging`); a fetch writes only what changed
(docs/architecture.md, "Data flow", step 2). Reads go in key order (numeric for Canvas ids) through
server-side cursors, so no course's records are ever one text or one list in memory. Each function runs in
the caller's transaction.
"""

from __future__ import annotations

import hashlib
import struct
import uuid
from collections.abc import Collection, Iterable, Iterator, Sequence
from contextlib import closing
from dataclasses import dataclass
from datetime import datetime
from itertools import chain, islice
from typing import Any, NamedTuple

import sqlalchemy as sa

from canvas_assets.jsontext import LazySequence, decode_json, encode_json_bytes, record_id
from canvas_assets.warehouse.models import table
from canvas_assets.warehouse.pgcopy import BINARY_HEADER, BINARY_TRAILER, uses_copy
from canvas_assets.warehouse.sql import chunks, upsert_statement, utc

FULL, INCREMENTAL = "full", "incremental"
BATCH_RECORDS = 10_000  # records per batch of `staged_batches` (whole courses, one at least)
ROWS_PER_FETCH = 2_000  # rows per round trip of a server-side cursor
COPY_BLOCK = 1 << 20  # bytes per block handed to a COPY
INSERT_ROWS = 1_000  # rows per executemany where there is no COPY (SQLite)


class StagingItem(NamedTuple):
    """One (entity, course)'s records to stage, with how they were fetched (a plain 3-tuple is a full fetch).

    A full fetch's `records` are all of the course's; an incremental fetch's are its changes (upserted by key,
    the last of a key winning), `removed` the keys it drops, and the records without a key go (quarantined
    before, they are not carried forward). `full_fetched_at` is kept from the previous fetch by an incremental
    one (None: this fetch's time); `watermark` is an incremental entity's latest Canvas change time."""

    entity: str
    course_id: int
    records: Iterable[Any]
    mode: str = FULL
    watermark: datetime | None = None
    full_fetched_at: datetime | None = None
    removed: Collection[str] = ()


@dataclass(frozen=True)
class FetchState:
    """How a course's staged records of an entity were last fetched (`canvas_staging`)."""

    fetched_at: datetime
    mode: str | None
    full_fetched_at: datetime | None
    watermark: datetime | None
    record_count: int


def record_keys(records: Iterable[Any]) -> Iterator[tuple[str, Any]]:
    """(key, record) for one fetch's records in their order: `jsontext.record_id`; an id repeated within the
    fetch `<id>#<position>` and a record without one `#<position>`, so that no record is lost."""
    seen: set[str] = set()
    for position, record in enumerate(records):
        key = record_id(record)
        if key is None:
            key = f"#{position}"
        elif key in seen:
            key = f"{key}#{position:09d}"
        else:
            seen.add(key)
        yield key, record


def records_digest(hashes: Iterable[tuple[str, bytes]]) -> str:
    """`records_digest` of a course from (key, SHA-256 of the record's text) pairs, in any order: SHA-256 (hex)
    over the keys and text hashes in key order (hashing each text lets a fetch be compared without holding
    its texts)."""
    digest = hashlib.sha256()
    for key, text_hash in sorted(hashes, key=lambda pair: (len(pair[0]), pair[0])):
        digest.update(key.encode("utf-8") + b"\0" + text_hash)
    return digest.hexdigest()


def write_staging(
    conn: sa.Connection, items: Sequence[tuple[Any, ...]], *, run_id: str, fetched_at: datetime
) -> int:
    """Stage each item's records (see `StagingItem`); the number of record rows inserted, updated or deleted.
    On PostgreSQL each (entity, course) is locked first, in one order, so two syncs staging it take turns."""
    fetched_at = utc(fetched_at)
    staged = [StagingItem(*raw) for raw in items]
    if not staged:
        return 0
    if conn.dialect.name == "postgresql":
        for entity, course_id in sorted({(i.entity, int(i.course_id)) for i in staged}):
            conn.execute(
                sa.text("SELECT pg_advisory_xact_lock(hashtextextended(:k, 0))"),
                {"k": f"{entity}:{course_id}"},
            )
    previous = _previous(conn, staged)
    written = 0
    fresh: dict[tuple[str, int], list[tuple[str, bytes]]] = {}  # (key, text hash), made as it is written
    fresh_items: list[StagingItem] = []
    changed: list[StagingItem] = []
    rows: list[dict[str, Any]] = []
    for item in staged:
        course = (item.entity, int(item.course_id))
        values = _values(item, run_id, fetched_at)
        old = previous.get(course)
        if item.mode == INCREMENTAL:
            written += _delete_keys(conn, item)
            changed.append(item)
        elif old is None or old[1] == 0:
            fresh[course] = []
            fresh_items.append(item)
        else:
            hashes = [
                (k, hashlib.sha256(encode_json_bytes(r)).digest()) for k, r in record_keys(item.records)
            ]
            values.update(records_digest=records_digest(hashes), record_count=len(hashes))
            if old[0] != values["records_digest"]:
                changed.append(item)
        rows.append(values)
    written += _put(conn, "canvas_staging_records", fresh_items, hashes=fresh)
    for values in rows:
        made = fresh.get((values["entity"], values["course_id"]))
        if made is not None:
            values.update(records_digest=records_digest(made), record_count=len(made))
    if changed:
        written += _merge(conn, changed)
    _recount(conn, [r for r in rows if r["fetch_mode"] == INCREMENTAL])
    t = table("canvas_staging")
    stmt = upsert_statement(conn, t)
    replaced = [c for c in rows[0] if c not in ("entity", "course_id")]
    conn.execute(
        stmt.on_conflict_do_update(
            index_elements=["entity", "course_id"], set_={c: stmt.excluded[c] for c in replaced}
        ),
        rows,
    )
    return written


def _values(item: StagingItem, run_id: str, fetched_at: datetime) -> dict[str, Any]:
    """The `canvas_staging` row of an item (an incremental one's count is made after its writes)."""
    return {
        "entity": item.entity,
        "course_id": int(item.course_id),
        "records_digest": None,
        "record_count": 0,
        "fetched_at": fetched_at,
        "run_id": run_id,
        "fetch_mode": item.mode,
        "full_fetched_at": fetched_at if item.full_fetched_at is None else utc(item.full_fetched_at),
        "watermark": None if item.watermark is None else utc(item.watermark),
    }


def _previous(
    conn: sa.Connection, items: Sequence[StagingItem]
) -> dict[tuple[str, int], tuple[str | None, int]]:
    """(records_digest, record_count) of the items' courses already staged."""
    t = table("canvas_staging")
    query = sa.select(t.c.course_id, t.c.records_digest, t.c.record_count)
    out: dict[tuple[str, int], tuple[str | None, int]] = {}
    for entity in {i.entity for i in items}:
        ids = [i.course_id for i in items if i.entity == entity]
        out.update({(entity, int(c)): (d, int(n)) for c, d, n in _of_courses(conn, query, t, entity, ids)})
    return out


def _of_courses(
    conn: sa.Connection, query: sa.Select[Any], t: sa.Table, entity: str, course_ids: Iterable[int]
) -> Iterator[Any]:
    """The rows of `query` (over `t`, a staging table) of `entity` and the courses, a chunk at a time."""
    for chunk in chunks(sorted({int(c) for c in course_ids})):
        yield from conn.execute(query.where(t.c.entity == entity, t.c.course_id.in_(chunk)))


def _texts(item: StagingItem) -> Iterator[tuple[str, bytes]]:
    """(key, text) of the rows an item writes: a full fetch's every record, an incremental one's changes (the
    last of a key winning: an upsert may touch a row once)."""
    if item.mode != INCREMENTAL:
        return ((k, encode_json_bytes(r)) for k, r in record_keys(item.records))
    last: dict[str, Any] = {}
    for position, record in enumerate(item.records):
        last[record_id(record) or f"#{position}"] = record
    return ((k, encode_json_bytes(r)) for k, r in last.items())


def _put(
    conn: sa.Connection,
    target: str,
    items: Sequence[StagingItem],
    *,
    hashes: dict[tuple[str, int], list[tuple[str, bytes]]] | None = None,
) -> int:
    """Write the items' rows into `target` (the records table or a temporary one): the rows written. A course
    in `hashes` gets the (key, SHA-256 of the text) of its rows appended as they are written, so that a first
    fetch's texts are made once."""
    rows = _item_rows(items, hashes)
    if uses_copy(conn):
        stream = _CopyStream(rows)
        copy = f"COPY {target} (entity, course_id, record_key, record) FROM STDIN (FORMAT binary)"
        with closing(conn.connection.dbapi_connection.cursor()) as cursor:  # type: ignore[union-attr]
            try:
                cursor.copy_expert(copy, stream)
            except Exception:
                if stream.error is not None:  # a record that cannot be written: its own error, not the cancel
                    raise stream.error from None
                raise
        return stream.rows
    written = 0
    insert = sa.text(f"INSERT INTO {target} (entity, course_id, record_key, record) VALUES (:e, :c, :k, :r)")
    while batch := [
        {"e": e, "c": c, "k": k, "r": r.decode("utf-8")} for e, c, k, r in islice(rows, INSERT_ROWS)
    ]:
        conn.execute(insert, batch)
        written += len(batch)
    return written


def _item_rows(
    items: Sequence[StagingItem], hashes: dict[tuple[str, int], list[tuple[str, bytes]]] | None = None
) -> Iterator[tuple[str, int, str, bytes]]:
    for item in items:
        entity, course_id = item.entity, int(item.course_id)
        collect = hashes[(entity, course_id)].append if hashes else None
        for key, text in _texts(item):
            if collect is not None:
                collect((key, hashlib.sha256(text).digest()))
            yield entity, course_id, key, text


class _CopyStream:
    """A binary COPY stream of (entity, course_id, record_key, record) tuples, handed over in blocks of about
    COPY_BLOCK bytes: a record's text is held only until its block is read."""

    def __init__(self, rows: Iterator[tuple[str, int, str, bytes]]) -> None:
        self._rows = rows
        self._started = self._ended = False
        self._course: tuple[str, int] | None = None
        self._head = b""
        self.rows = 0
        self.error: Exception | None = None  # what making the stream raised (psycopg2 reports it as a cancel)

    def read(self, size: int = -1) -> bytes:
        if self._ended:
            return b""
        parts = [] if self._started else [BINARY_HEADER]
        self._started, length = True, 0
        pack, append = struct.pack, parts.append
        try:
            for entity, course_id, key, text in self._rows:
                if (entity, course_id) != self._course:  # the row's first two fields, made once per course
                    self._course = (entity, course_id)
                    name = entity.encode("utf-8")
                    self._head = pack("!hi", 4, len(name)) + name + pack("!iq", 8, course_id)
                k = key.encode("utf-8")
                append(self._head + pack("!i", len(k)) + k + pack("!i", len(text)))
                append(text)
                self.rows += 1
                length += len(text) + 64
                if length >= COPY_BLOCK:
                    return b"".join(parts)
        except Exception as exc:
            self.error = exc
            raise
        self._ended = True
        return b"".join([*parts, BINARY_TRAILER])


def _temporary(conn: sa.Connection) -> str:
    name = f"canvas_staging_in_{uuid.uuid4().hex[:12]}"
    drop = " ON COMMIT DROP" if conn.dialect.name == "postgresql" else ""
    conn.exec_driver_sql(
        f"CREATE TEMPORARY TABLE {name} (entity text, course_id bigint, record_key text, record text){drop}"
    )
    return name


def _merge(conn: sa.Connection, items: Sequence[StagingItem]) -> int:
    """Write the changed courses' rows through a temporary table: new keys inserted, changed texts updated
    and, for a full fetch, the keys it no longer has deleted."""
    name = _temporary(conn)
    _put(conn, name, items)
    written = conn.exec_driver_sql(
        f"INSERT INTO canvas_staging_records (entity, course_id, record_key, record) "
        f"SELECT entity, course_id, record_key, record FROM {name} WHERE true "
        "ON CONFLICT (entity, course_id, record_key) DO UPDATE SET record = excluded.record "
        "WHERE canvas_staging_records.record <> excluded.record"
    ).rowcount
    for item in items:
        if item.mode != INCREMENTAL:
            written += conn.execute(
                sa.text(
                    f"DELETE FROM canvas_staging_records WHERE entity = :e AND course_id = :c AND NOT EXISTS "
                    f"(SELECT 1 FROM {name} n WHERE n.entity = :e AND n.course_id = :c "
                    "AND n.record_key = canvas_staging_records.record_key)"
                ),
                {"e": item.entity, "c": int(item.course_id)},
            ).rowcount
    if conn.dialect.name != "postgresql":
        conn.exec_driver_sql(f"DROP TABLE {name}")
    return written


def _delete_keys(conn: sa.Connection, item: StagingItem) -> int:
    """An incremental fetch's deletions: the keys it drops, and the rows without a key."""
    t = table("canvas_staging_records")
    course = (t.c.entity == item.entity) & (t.c.course_id == int(item.course_id))
    written = conn.execute(sa.delete(t).where(course, t.c.record_key.like("#%"))).rowcount
    for keys in chunks(sorted(set(item.removed))):
        written += conn.execute(sa.delete(t).where(course, t.c.record_key.in_(keys))).rowcount
    return written


def _recount(conn: sa.Connection, rows: Sequence[dict[str, Any]]) -> None:
    """Set the record_count of incrementally fetched courses from their rows."""
    t = table("canvas_staging_records")
    query = sa.select(t.c.course_id, sa.func.count()).group_by(t.c.course_id)
    for entity in {r["entity"] for r in rows}:
        of_entity = {r["course_id"]: r for r in rows if r["entity"] == entity}
        for course_id, count in _of_courses(conn, query, t, entity, of_entity):
            of_entity[int(course_id)]["record_count"] = int(count)


def read_fetch_states(conn: sa.Connection, entity: str, course_ids: Iterable[int]) -> dict[int, FetchState]:
    """How each course's staged records of `entity` were fetched; courses with nothing staged are absent."""
    t = table("canvas_staging")
    c = t.c
    query = sa.select(c.course_id, c.fetched_at, c.fetch_mode, c.full_fetched_at, c.watermark, c.record_count)
    rows = _of_courses(conn, query, t, entity, course_ids)
    return {int(i): FetchState(at, mode, full, mark, int(n)) for i, at, mode, full, mark, n in rows}


def _rows(conn: sa.Connection, entity: str, course_ids: Sequence[int]) -> Iterator[tuple[int, str, str]]:
    """(course_id, record_key, record) of the courses' staged records, course by course in key order, through
    a server-side cursor (PostgreSQL) fetching ROWS_PER_FETCH rows at a time."""
    t = table("canvas_staging_records")
    query = (
        sa.select(t.c.course_id, t.c.record_key, t.c.record)
        .where(t.c.entity == entity, t.c.course_id.in_(course_ids))
        .order_by(t.c.course_id, sa.func.length(t.c.record_key), _bytewise(conn, t.c.record_key))
    )
    result = conn.execution_options(stream_results=True, max_row_buffer=ROWS_PER_FETCH).execute(query)
    with result:
        yield from result  # type: ignore[misc]


def _bytewise(conn: sa.Connection, key: sa.ColumnElement[str]) -> sa.ColumnElement[str]:
    """The key compared byte by byte (as SQLite does and `records_digest` orders), whatever the collation."""
    return key.collate("C") if conn.dialect.name == "postgresql" else key


class StagedCourse(LazySequence):
    """One course's staged records of an entity, read from the warehouse (in key order, decoded a row at a
    time) each time they are iterated: nothing of them is held. Behaves as a read-only list (len, index,
    iterate, ==); `keyed()` gives (key, record) pairs."""

    __slots__ = ("_engine", "course_id", "entity", "size")

    def __init__(self, engine: sa.Engine, entity: str, course_id: int, size: int) -> None:
        self._engine, self.entity, self.course_id, self.size = engine, entity, int(course_id), size

    def keyed(self) -> Iterator[tuple[str, Any]]:
        with self._engine.connect() as conn:
            for _, key, text in _rows(conn, self.entity, [self.course_id]):
                yield key, decode_json(text)

    def __iter__(self) -> Iterator[Any]:
        return (record for _, record in self.keyed())

    def __len__(self) -> int:
        return self.size

    def __repr__(self) -> str:
        return f"StagedCourse({self.entity!r}, {self.course_id}: {self.size} records)"


def staged_counts(conn: sa.Connection, entity: str, course_ids: Iterable[int]) -> dict[int, int]:
    """{course: record_count} of the courses with staged records of `entity`, in course order."""
    t = table("canvas_staging")
    query = sa.select(t.c.course_id, t.c.record_count)
    return dict(sorted((int(c), int(n)) for c, n in _of_courses(conn, query, t, entity, course_ids)))


def read_staging(engine: sa.Engine, entity: str, course_ids: Iterable[int]) -> dict[int, StagedCourse]:
    """Staged records per course (`StagedCourse`, read when iterated); courses with nothing staged are absent."""
    with engine.connect() as conn:
        counts = staged_counts(conn, entity, course_ids)
    return {c: StagedCourse(engine, entity, c, n) for c, n in counts.items()}


def staged_batches(
    conn: sa.Connection, entity: str, course_ids: Iterable[int], records: int = BATCH_RECORDS
) -> Iterator[dict[int, list[Any]]]:
    """The courses' staged records decoded, in batches of whole courses of about `records` records (a course
    at least), each read through one server-side cursor; every staged course is in a batch, those without
    records with an empty list."""
    batch: list[int] = []
    size = 0
    counts = staged_counts(conn, entity, course_ids)
    for course_id, count in chain(counts.items(), [(None, 0)]):
        if batch and (course_id is None or size + count > records):
            out: dict[int, list[Any]] = {c: [] for c in batch}
            for course, _, text in _rows(conn, entity, batch):
                out[int(course)].append(decode_json(text))
            yield out
            batch, size = [], 0
        if course_id is not None:
            batch.append(course_id)
            size += count


def staged_courses(conn: sa.Connection, entity: str) -> dict[int, datetime]:
    t = table("canvas_staging")
    query = sa.select(t.c.course_id, t.c.fetched_at).where(t.c.entity == entity)
    return {int(c): at for c, at in conn.execute(query)}
