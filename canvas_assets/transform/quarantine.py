"""The quarantine record: a Canvas record that could not become a row, with the reason and the raw payload.

Reasons name the field and show the value (`short_repr`: non-printable characters escaped, long text and
deep nesting cut). The payload is stored as JSON text, so it must be valid UTF-8: a lone surrogate in it
(only a broken JSON escape gives one) is written as its `\\udXXX` escape text (`storable_payload`).
"""

from __future__ import annotations

import json
import reprlib
from dataclasses import dataclass
from typing import Any


@dataclass
class Rejected:
    """A record that could not be transformed: quarantined with a precise reason and the raw payload."""

    entity: str
    course_id: int | None
    canvas_id: int | None
    reason: str
    payload: dict[str, Any]
    # The Layer-1 table the record would have gone to (modules yield modules and module items). The loader
    # does not soft-delete a row whose record was quarantined: a malformed record is not a deletion.
    table: str | None = None


_REPR = reprlib.Repr()
_REPR.maxstring = _REPR.maxother = 200
_REPR.maxlevel = 3


def short_repr(value: Any, limit: int = 80) -> str:
    """A short repr for a reason (non-printable characters escaped, deep nesting and long text cut)."""
    try:
        text = _REPR.repr(value)
    except (ValueError, RecursionError):  # an int of too many digits to print
        text = f"<{type(value).__name__}>"
    return text if len(text) <= limit else text[: limit - 3] + "..."


def storable_payload(value: Any) -> Any:
    """`value` as the quarantine can store it (JSON text): itself, unless some text in it (a key or a value)
    has a lone surrogate, which is not UTF-8: then a copy with each one written as its `\\udXXX` escape."""
    try:
        json.dumps(value, ensure_ascii=False, default=str).encode("utf-8")
        return value
    except UnicodeEncodeError:
        return _escape_surrogates(value)
    except (TypeError, ValueError, RecursionError):
        return value  # not storable for another reason: the writer's JSON fallback decides


def _escape_surrogates(value: Any) -> Any:
    if isinstance(value, str):
        return value.encode("utf-8", "backslashreplace").decode("utf-8")
    if isinstance(value, dict):
        return {_escape_surrogates(k): _escape_surrogates(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_escape_surrogates(v) for v in value]
    return value


def not_object_rejections(entity: str, table: str, items: list[tuple[int, Any]]) -> list[Rejected]:
    return [
        Rejected(
            entity=entity,
            course_id=cid,
            canvas_id=None,
            reason=f"record is not a JSON object: {short_repr(rec)}",
            payload=storable_payload({"value": rec}),
            table=table,
        )
        for cid, rec in items
    ]
