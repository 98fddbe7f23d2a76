"""JSON text in and out, fast and exact: orjson where it gives what the standard library gives, the
standard library where it does not (Canvas bodies in the client, staged records in the warehouse)."""

from __future__ import annotations

import json
from typing import Any

try:
    import orjson
except ImportError:  # pragma: no cover - a dependency; without it the stdlib does all the work
    orjson = None  # type: ignore[assignment]

# Every digit byte -> "0", everything else -> " ": a run of 19 zeros marks a number of 19 or more digits.
_DIGITS = bytes(0x30 if 0x30 <= b <= 0x39 else 0x20 for b in range(256))
_LONG_NUMBER = b"0" * 19  # 2**63 has 19 digits: no shorter integer lies outside orjson's 64-bit range


def decode_json(content: bytes) -> Any:
    """The Python objects of a JSON body, exactly as `json.loads` makes them; ValueError if not JSON.
    (`decode_json_exact` also says which decoder read them.)

    orjson decodes a page 2-4 times faster and gives the same objects for what it accepts. Two gaps
    are closed here: it turns integers beyond 64 bits into floats (so a body with a run of 19 or more
    digits anywhere, even inside a string, goes to `json.loads`), and it refuses some JSON that
    `json.loads` reads (NaN and Infinity, lone surrogates, UTF-16/32 and BOMs, nesting over 1024):
    `json.loads` then decides, and raises for what is really not JSON.
    """
    return decode_json_exact(content)[0]


def decode_json_exact(content: bytes) -> tuple[Any, bool]:
    """`decode_json`, and whether orjson read the text: then `orjson.dumps` writes the objects back exactly
    and `orjson.loads` reads that back to equal objects (no NaN or Infinity, which it would write as null;
    no integer beyond 64 bits, no lone surrogate, which it refuses), so they can be kept as compact text."""
    if orjson is not None and content.translate(_DIGITS).find(_LONG_NUMBER) < 0:
        try:
            return orjson.loads(content), True
        except orjson.JSONDecodeError:
            pass
    # json.loads reads bytes directly (UTF-8, -16 or -32, as RFC 8259 allows).
    return json.loads(content), False


def encode_json(value: Any) -> str:
    """Compact JSON text of raw records: orjson (several times faster on the extract's hot path), the
    standard library for what orjson refuses (integers beyond 64 bits, lone surrogates, which no database
    text can hold: written as `\\udXXX` escapes, so the record is kept and reads back as it came)."""
    if orjson is not None:
        try:
            return orjson.dumps(value, default=str).decode()
        except (orjson.JSONEncodeError, TypeError):
            pass
    return _stdlib_text(value)


def encode_json_bytes(value: Any) -> bytes:
    """`encode_json` as UTF-8 bytes, without the str in between (a big course's text is tens of MB, and a
    str of it with one CJK character twice that)."""
    if orjson is not None:
        try:
            return orjson.dumps(value, default=str)
        except (orjson.JSONEncodeError, TypeError):
            pass
    return _stdlib_text(value).encode("utf-8")


def _stdlib_text(value: Any) -> str:
    text = json.dumps(value, separators=(",", ":"), ensure_ascii=False, default=str)
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return json.dumps(value, separators=(",", ":"), ensure_ascii=True, default=str)
    return text
