"""Canvas Live Events in the `live-event` format: parsing, validation, ids and the event key.

Canvas posts `{"metadata": {...}, "body": {...}}` (lib/canvas/live_events.rb, `post_event_stringified`):
ids are strings (`StringifyIds`), most of them *global* (shard * 10**13 + local id) but not all:
`course_grade_change` and `grade_override` send `enrollment.user_id`/`course_id`, which are local on the
enrollment's own shard. The REST API the nightly sync reads answers with local ids, so every id is reduced
to its local part (`local_id`). Nil fields are dropped only when the account compacts events
(`payload.compact!`), so a field may be absent or null: both mean "no value".

The event key, and why it is a digest of the content: docs/operations.md, "Run the consumer".
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Any

SHARD_MULTIPLIER = 10**13
MAX_EVENT_BYTES = 1_048_576  # Canvas drops events over 1 MB; anything larger is not from Canvas


class BadEvent(ValueError):
    """A message that is not a usable live event; the message says what is wrong with it."""


@dataclass(frozen=True)
class LiveEvent:
    """One parsed event. `course_id` is the local id of its course when the event names one."""

    key: str
    name: str
    event_time: datetime
    course_id: int | None
    metadata: dict[str, Any]
    body: dict[str, Any]
    raw: str
    shard: int | None = None

    def rest_id(self, value: Any) -> int | None:
        """An id of this event as the REST API (and so the warehouse) has it."""
        return local_id(value, self.shard)


def local_id(value: Any, shard: int | None = None) -> int | None:
    """The id the REST API serves for an id in an event (int or digit string); None for null/absent/not an
    id. REST serves ids of the account's own shard in their short form and ids of objects on another
    shard (a user from a trust, a cross-shard course) in global form: so a global id of `shard` loses its
    prefix and one of another shard keeps it. Without a known shard every global id is shortened."""
    if value is None or isinstance(value, bool):
        return None
    if isinstance(value, int):
        number = value
    elif isinstance(value, str) and value.isascii() and value.isdigit() and len(value) <= 20:
        number = int(value)
    else:
        return None
    if number < SHARD_MULTIPLIER:
        return number
    if shard is None or number // SHARD_MULTIPLIER == shard:
        return number % SHARD_MULTIPLIER
    return number


def shard_of(metadata: dict[str, Any]) -> int | None:
    """The shard of the event's root account (the prefix of its global `root_account_id`), if given."""
    root = metadata.get("root_account_id")
    number = local_id(root, shard=0) if root is not None else None
    return number // SHARD_MULTIPLIER if number is not None and number >= SHARD_MULTIPLIER else None


def parse_time(value: Any) -> datetime | None:
    """An ISO 8601 timestamp (`Z` or an offset; naive is UTC) as an aware UTC datetime; None if absent."""
    if value is None or value == "":
        return None
    if not isinstance(value, str):
        raise BadEvent(f"timestamp {value!r} is not a string")
    try:
        parsed = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        raise BadEvent(f"timestamp {value[:40]!r} is not ISO 8601") from None
    try:
        return (
            parsed.replace(tzinfo=timezone.utc) if parsed.tzinfo is None else parsed.astimezone(timezone.utc)
        )
    except OverflowError:
        raise BadEvent(f"timestamp {value[:40]!r} is outside the years 1-9999 in UTC") from None


def _without_nulls(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _without_nulls(v) for k, v in value.items() if v is not None}
    if isinstance(value, list):
        return [_without_nulls(v) for v in value]
    return value


def event_key(metadata: dict[str, Any], body: dict[str, Any]) -> str:
    """The event's stable identity: SHA-256 of its canonical JSON (docs/operations.md says why)."""
    canonical = json.dumps(
        {"metadata": _without_nulls(metadata), "body": _without_nulls(body)},
        sort_keys=True,
        separators=(",", ":"),
        ensure_ascii=False,
    )
    return hashlib.sha256(canonical.encode("utf-8")).hexdigest()


def course_of(metadata: dict[str, Any], body: dict[str, Any], shard: int | None) -> int | None:
    """The event's course: the metadata's Course context (submission and grade events), else the body's
    `course_id` (enrollments, course events) or a Course `context_id` (assignments)."""
    if metadata.get("context_type") == "Course" and local_id(metadata.get("context_id"), shard) is not None:
        return local_id(metadata.get("context_id"), shard)
    if local_id(body.get("course_id"), shard) is not None:
        return local_id(body.get("course_id"), shard)
    if body.get("context_type") == "Course":
        return local_id(body.get("context_id"), shard)
    return None


def parse_event(raw: str | bytes) -> LiveEvent:
    """Parse one message body (JSON text of a live event). Raises BadEvent saying what is wrong."""
    if isinstance(raw, bytes):
        if len(raw) > MAX_EVENT_BYTES:
            raise BadEvent(f"event of {len(raw)} bytes is over Canvas's 1 MB limit")
        try:
            raw = raw.decode("utf-8")
        except UnicodeDecodeError:
            raise BadEvent("event is not UTF-8 text") from None
    if len(raw) > MAX_EVENT_BYTES:
        raise BadEvent(f"event of {len(raw)} characters is over Canvas's 1 MB limit")
    try:
        data = json.loads(raw)
    except ValueError as exc:
        raise BadEvent(f"event is not JSON ({exc})") from None
    if not isinstance(data, dict):
        raise BadEvent("event is not a JSON object; expected the live-event format {metadata, body}")
    metadata, body = data.get("metadata"), data.get("body")
    if not isinstance(metadata, dict) or not isinstance(body, dict):
        raise BadEvent(
            "event lacks a `metadata` or `body` object: is the subscription's format `live-event` "
            "(not `caliper`)?"
        )
    name = metadata.get("event_name")
    if not isinstance(name, str) or not name or len(name) > 64:
        raise BadEvent("event has no usable `metadata.event_name`")
    event_time = parse_time(metadata.get("event_time"))
    if event_time is None:
        raise BadEvent(f"{name} event has no `metadata.event_time`")
    shard = shard_of(metadata)
    return LiveEvent(
        key=event_key(metadata, body),
        name=name,
        event_time=event_time,
        course_id=course_of(metadata, body, shard),
        metadata=metadata,
        body=body,
        raw=raw,
        shard=shard,
    )
