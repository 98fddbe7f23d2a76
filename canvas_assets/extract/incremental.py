"""Incremental fetching: after a course's first full fetch, ask Canvas only for what changed since.

Of the lists the project mirrors, only submissions can be filtered by time (`submitted_since`,
`graded_since`), so this is what an entity with `Entity.incremental` uses (canvas_assets.entities). The
rules, per (entity, course):

- **The watermark** is the latest change time Canvas reported among the course's records (the newest
  `submitted_at` or `graded_at`). Anything that changes after a fetch gets a time after that fetch, hence
  after the watermark: deriving it from the data rather than from our clock makes it immune to the skew
  between our clock and Canvas's. A fetch asks for what changed after `watermark - OVERLAP`; the overlap
  re-reads a few minutes of changes, for rows Canvas committed late (a slow request on Canvas's side
  writes a time it commits later), and the merge makes re-reading harmless.
- **Committed with the data it describes**: the watermark is a column of the course's staging row, written
  in the same transaction as the merged records. A course whose fetch fails, or whose other entities fail
  in that run, is not staged: it keeps its records and its old watermark, and the next sync asks again.
- **Newcomers**: records of parents the staged records do not mention (a new student's or a new
  assignment's submissions: unsubmitted, or older than the watermark) have no change time to filter on;
  the entity's `new_parents` plan asks for them by parent id.
- **Merged**: changed records replace the stored ones by id; records whose parent vanished (a deleted
  assignment, a dropped student: the entity's `keep` rule over the same run's other entities) are dropped,
  so the staged list is what a full fetch would return, and the Layer-1 load treats it like one.
- **Full refreshes**: what Canvas changes without a change time is invisible to an incremental fetch
  (`missing` flips when a due date passes; a late policy changes `late` and `points_deducted`; a grade is
  posted later). A course is fetched in full when it has no watermark (first sync, or no record has a
  change time yet) or when its last full fetch is `processing.submissions_full_refresh_days` old or more;
  0 means every sync is full (FULL_PROCESSING, the weekly sync). Those flags are at most that many days
  stale (docs/operations.md).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
from contextlib import suppress
from datetime import datetime, timedelta, timezone
from typing import Any

import orjson

from canvas_assets.extract.records import Records, RecordsBuilder, roundtrips
from canvas_assets.transform.convert import to_id

OVERLAP = timedelta(minutes=15)


def parse_time(value: Any) -> datetime | None:
    """A Canvas timestamp as an aware UTC datetime; None when absent or unreadable."""
    if not isinstance(value, str) or not value:
        return None
    try:
        at = datetime.fromisoformat(value.replace("Z", "+00:00") if value.endswith("Z") else value)
    except ValueError:
        return None
    if at.tzinfo is None:
        return None  # Canvas always sends a zone; a naive time is not one we can place
    try:
        return at.astimezone(timezone.utc)
    except OverflowError:  # year 1 east of UTC, year 9999 west of it: no instant a datetime holds
        return None


def watermark_of(
    records: Iterable[Any], fields: Sequence[str], previous: datetime | None = None
) -> datetime | None:
    """The latest of `fields` over the records (and `previous`), None when there is none."""
    latest = previous
    for record in records:
        if not isinstance(record, Mapping):
            continue
        for name in fields:
            at = parse_time(record.get(name))
            if at is not None and (latest is None or at > latest):
                latest = at
    return latest


def since(
    watermark: datetime | None, full_fetched_at: datetime | None, *, refresh_days: int | None, now: datetime
) -> datetime | None:
    """What to ask for changes after; None means fetch in full (see the module docstring). `refresh_days`
    None: never in full again once a watermark is known (an append-only log, whose old records never change)."""
    if watermark is None or full_fetched_at is None:
        return None
    if refresh_days is None:
        return watermark - OVERLAP
    if refresh_days <= 0 or now - full_fetched_at >= timedelta(days=refresh_days):
        return None
    return watermark - OVERLAP


RecordKey = Callable[[Any], Any]


def canvas_key(record: Any) -> int | None:
    """A record's Canvas id, the key records are merged on; None when it has no usable one. An entity whose
    ids are not Canvas ids (the audit log's uuids) says how its records are keyed (`Incremental.key`)."""
    canvas_id = to_id(record.get("id")) if isinstance(record, Mapping) else None
    return canvas_id if isinstance(canvas_id, int) else None


def _by_id(changes: Iterable[Any], key: RecordKey = canvas_key) -> tuple[dict[Any, Any], list[Any]]:
    """The changed records by id (the last of an id wins), and those without a usable id, in order."""
    by_id: dict[Any, Any] = {}
    unidentified: list[Any] = []
    for record in changes:
        canvas_id = key(record)
        if canvas_id is not None:
            by_id[canvas_id] = record
        else:
            unidentified.append(record)
    return by_id, unidentified


def merge(
    previous: Iterable[Any],
    changes: Iterable[Any],
    keep: Callable[[Mapping[str, Any]], bool] | None = None,
    key: RecordKey = canvas_key,
) -> list[Any]:
    """The previous records with the changed ones laid over them by id, less those `keep` refuses.

    A changed record without a usable id is kept as it came (the transformer quarantines it, with its
    reason); a previous one without an id was quarantined before and is not carried forward."""
    by_id: dict[Any, Any] = {}
    for record in previous:
        canvas_id = key(record)
        if canvas_id is not None:
            by_id[canvas_id] = record
    changed, unidentified = _by_id(changes, key)
    by_id.update(changed)
    merged = [by_id[k] for k in sorted(by_id)]
    if keep is not None:
        merged = [r for r in merged if keep(r)]
    return merged + unidentified


def merge_in_order(
    previous: Iterable[tuple[list[Any], bool]],
    changes: Iterable[Any],
    keep: Callable[[Mapping[str, Any]], bool] | None = None,
    key: RecordKey = canvas_key,
) -> Records | None:
    """`merge` of previous records given a piece at a time (`(records, exact)`, as `records.array_pieces`
    gives them), into a compact `Records`, for previous records in strictly ascending id order (what a merge
    stages, and what Canvas lists by id): then the merged list is theirs and the changes' in one ascending
    pass, and only a piece of them is decoded at a time. None when they are not in that order (the caller
    then merges them with `merge_unordered`)."""
    by_id, unidentified = _by_id(changes, key)
    changed = sorted(by_id)
    exact_change = {k: roundtrips(by_id[k]) for k in changed}
    out = RecordsBuilder()
    last: Any = None
    i = 0
    for records, exact in previous:
        piece: list[Any] = []
        for record in records:
            canvas_id = key(record)
            if canvas_id is None:
                continue  # quarantined before: not carried forward (as in `merge`)
            if last is not None and canvas_id <= last:
                return None
            last = canvas_id
            while i < len(changed) and changed[i] <= canvas_id:
                if changed[i] == canvas_id:
                    record = None  # replaced by the change
                change = by_id[changed[i]]
                if keep is None or keep(change):
                    piece.append(change)
                    exact = exact and exact_change[changed[i]]
                i += 1
            if record is not None and (keep is None or keep(record)):
                piece.append(record)
        out.add(piece, exact)
    rest = [by_id[k] for k in changed[i:]]
    out.add([r for r in rest if keep is None or keep(r)], all(exact_change[k] for k in changed[i:]))
    out.add(unidentified, all(roundtrips(r) for r in unidentified))
    return out.build()


_DROPPED = object()


def merge_unordered(
    previous: Iterable[tuple[list[Any], bool]],
    changes: Iterable[Any],
    keep: Callable[[Mapping[str, Any]], bool] | None = None,
    key: RecordKey = canvas_key,
) -> Records:
    """`merge` of previous records given a piece at a time in any order, into a compact `Records`: each
    previous record is kept as its `orjson` text (about a third of it decoded) until the merged list is
    laid out by id. Slower than `merge_in_order` (a text per record), for a big course's first merge after
    a full fetch in Canvas's order."""
    # id -> a previous record's text (or, when orjson cannot write it exactly, the record), a change, or
    # _DROPPED when the record `keep` refuses is the last with its id
    by_id: dict[Any, Any] = {}
    for records, exact in previous:
        for record in records:
            canvas_id = key(record)
            if canvas_id is None:
                continue
            if keep is not None and not keep(record):
                by_id[canvas_id] = _DROPPED
                continue
            text = None
            if exact:
                with suppress(orjson.JSONEncodeError, TypeError):  # nesting beyond what orjson writes
                    text = orjson.dumps(record)
            by_id[canvas_id] = _Kept(record) if text is None else text
    changed, unidentified = _by_id(changes, key)
    for canvas_id, record in changed.items():
        by_id[canvas_id] = record if keep is None or keep(record) else _DROPPED
    out = RecordsBuilder()
    for canvas_id in sorted(by_id):
        value = by_id.pop(canvas_id)
        if isinstance(value, bytes):
            out.add_text(value)
        elif isinstance(value, _Kept):
            out.add([value.record], False)
        elif value is not _DROPPED:  # a change
            out.add([value], roundtrips(value))
    out.add(unidentified, all(roundtrips(r) for r in unidentified))
    return out.build()


class _Kept:
    """A previous record carried forward as it is (orjson cannot write it exactly)."""

    __slots__ = ("record",)

    def __init__(self, record: Any) -> None:
        self.record = record
