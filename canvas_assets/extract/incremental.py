"""Incremental fetching: after a course's first full fetch, ask Canvas only for what changed since.

Only submissions can be filtered by time (`submitted_since`, `graded_since`), so this is what an entity
with `Entity.incremental` uses. The rules (watermark, overlap, newcomers, merge, full refreshes) are
docs/operations.md, "Incremental submissions"; the watermark is committed with the records it describes.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
from datetime import datetime, timedelta, timezone
from typing import Any

from canvas_assets.jsontext import record_id

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
    """What to ask for changes after; None means fetch in full (docs/operations.md, "Incremental
    submissions"). `refresh_days` None: never in full again once a watermark is known (an append-only log,
    whose old records never change)."""
    if watermark is None or full_fetched_at is None:
        return None
    if refresh_days is None:
        return watermark - OVERLAP
    if refresh_days <= 0 or now - full_fetched_at >= timedelta(days=refresh_days):
        return None
    return watermark - OVERLAP


def merge(
    previous: Iterable[Any], changes: Iterable[Any], keep: Callable[[Mapping[str, Any]], bool] | None = None
) -> list[Any]:
    """The previous records with the changed ones laid over them by key (`jsontext.record_id`), in key order,
    less those `keep` refuses. A changed record without a usable key is kept as it came (the transformer
    quarantines it, with its reason); a previous one without a key was quarantined before and is dropped.
    (Staging does the same in SQL for a staged course: `warehouse.staging.write_staging`.)"""
    by_key: dict[str, Any] = {}
    for record in previous:
        key = record_id(record)
        if key is not None:
            by_key[key] = record
    unidentified: list[Any] = []
    for record in changes:
        key = record_id(record)
        if key is None:
            unidentified.append(record)
        else:
            by_key[key] = record
    merged = [by_key[k] for k in sorted(by_key, key=lambda k: (len(k), k))]
    return [r for r in merged if keep is None or keep(r)] + unidentified
