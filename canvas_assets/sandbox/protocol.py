"""The sandbox's request and response model: parsed requests, responses, Canvas's error bodies.

Shared by the HTTP plumbing (`httpd`), pagination (`pagination`), the endpoints (`endpoints`) and the
request pipeline (`server`).
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable
from functools import lru_cache
from typing import Any
from urllib.parse import parse_qsl, urlencode

try:
    import orjson
except ImportError:  # pragma: no cover - a dependency; without it the stdlib encodes every body
    orjson = None  # type: ignore[assignment]

Json = Any

UNAUTHENTICATED = {"status": "unauthenticated", "errors": [{"message": "user authorization required"}]}
INVALID_TOKEN = {"errors": [{"message": "Invalid access token."}]}
UNAUTHORIZED = {
    "status": "unauthorized",
    "errors": [{"message": "user not authorized to perform that action"}],
}
NOT_FOUND = {"errors": [{"message": "The specified resource does not exist."}]}
FORBIDDEN = {"errors": [{"message": "Forbidden: access to this resource has been restricted."}]}
WWW_AUTH = ("WWW-Authenticate", 'Bearer realm="canvas-lms"')
# SubmissionsApiController#for_students: an `assignment_ids[]` id outside the course's published assignments.
INVALID_ASSIGNMENT_IDS = {"error": "invalid assignment ids requested"}


class ApiError(Exception):
    def __init__(self, status: int, body: Json, headers: Iterable[tuple[str, str]] = ()) -> None:
        super().__init__(status)
        self.status = status
        self.body = body
        self.headers = list(headers)


def ruby_to_i(text: str) -> int:
    """Ruby's `String#to_i`, as Rails controllers read integer parameters: leading whitespace, an optional
    sign and the leading digits; anything else is 0 (`"12abc"` is 12, `"all"` is 0)."""
    m = _LEADING_INT.match(text)
    return int(m.group(0)) if m else 0


_LEADING_INT = re.compile(r"\s*[+-]?\d+")


def bad_request(message: str) -> ApiError:
    return ApiError(400, {"errors": [{"message": message}]})


class Response:
    __slots__ = ("body", "content_type", "headers", "list_key", "records", "status", "trickle_s")

    def __init__(
        self,
        status: int,
        body: bytes,
        *,
        content_type: str = "application/json; charset=utf-8",
        headers: list[tuple[str, str]] | None = None,
        records: int = 0,
        list_key: str | None = None,
    ) -> None:
        self.status = status
        self.body = body
        self.content_type = content_type
        self.headers = headers or []
        self.records = records
        self.list_key = list_key
        self.trickle_s = 0.0  # hostile mode: seconds between the body's bytes


# Plain JSON types only: anything else (datetimes, dataclasses, subclasses) goes to json.dumps as before.
_ORJSON_OPTIONS = (
    orjson.OPT_PASSTHROUGH_DATETIME | orjson.OPT_PASSTHROUGH_DATACLASS | orjson.OPT_PASSTHROUGH_SUBCLASS
    if orjson is not None
    else 0
)


def encode_json(obj: Json) -> bytes:
    """`obj` as compact UTF-8 JSON: the same JSON value `json.dumps(obj, ensure_ascii=False)` writes.

    orjson encodes a 100-record page about ten times faster (JSON encoding was a quarter of the
    sandbox's CPU). It refuses integers beyond 64 bits, lone surrogates, non-string keys and types
    other than plain JSON ones: those go to `json.dumps`, which answers (or fails) exactly as before.
    (orjson writes NaN and Infinity as null; Canvas never sends them, the dataset has none.)
    """
    if orjson is not None:
        try:
            return orjson.dumps(obj, option=_ORJSON_OPTIONS)
        except TypeError:  # orjson.JSONEncodeError is a TypeError
            pass
    return json.dumps(obj, ensure_ascii=False).encode()


def json_response(status: int, obj: Json, **kw: Any) -> Response:
    return Response(status, encode_json(obj), **kw)


class Principal:
    __slots__ = ("kind", "token", "user_id")

    def __init__(self, token: str, user_id: int, kind: str) -> None:
        self.token = token
        self.user_id = user_id
        self.kind = kind

    @property
    def limited(self) -> bool:
        return self.kind == "limited"


class Request:
    """One parsed API request: path, repeated-key query, principal."""

    def __init__(self, path: str, query: str, principal: Principal) -> None:
        self.path = path
        self.pairs = _parse_query(query)
        self.principal = principal
        self._list_key: str | None = None
        self._link_prefix: str | None = None

    def values(self, name: str) -> list[str]:
        """`name[]=a&name[]=b` (and plain `name=a`), Rails style."""
        return [v for k, v in self.pairs if (k == name or k == f"{name}[]") and v != ""]

    def one(self, name: str) -> str | None:
        vals = self.values(name)
        return vals[-1] if vals else None

    def integer(self, name: str) -> int | None:
        raw = self.one(name)
        if raw is None:
            return None
        try:
            return int(raw)
        except ValueError:
            raise bad_request(f"{name} must be an integer") from None

    def flag(self, name: str) -> bool | None:
        raw = self.one(name)
        if raw is None:
            return None
        return raw.lower() in ("1", "true", "yes", "on")

    def includes(self) -> set[str]:
        return set(self.values("include"))

    def list_key(self) -> str:
        if self._list_key is None:
            kept = _sorted_query(_kept(self.pairs))
            self._list_key = self.path + ("?" + kept if kept else "")
        return self._list_key

    def link_prefix(self, base_url: str) -> str:
        """`base_url + path + "?"` and the query without page/per_page, ready for `page=...`."""
        if self._link_prefix is None:
            kept = _link_query(_kept(self.pairs))
            self._link_prefix = f"{base_url}{self.path}?{kept}{'&' if kept else ''}"
        return self._link_prefix


_PAGING = ("page", "per_page", "access_token")

# Most requests repeat a handful of query strings (the course id is in the path), and bookmarks differ
# only in `page`: parsing and encoding them once each saves much of a request's CPU.


@lru_cache(maxsize=4096)
def _parse_query(query: str) -> tuple[tuple[str, str], ...]:
    return tuple(parse_qsl(query, keep_blank_values=True))


def _kept(pairs: tuple[tuple[str, str], ...]) -> tuple[tuple[str, str], ...]:
    return tuple(p for p in pairs if p[0] not in _PAGING)


@lru_cache(maxsize=1024)
def _sorted_query(kept: tuple[tuple[str, str], ...]) -> str:
    return urlencode(sorted(kept))


@lru_cache(maxsize=1024)
def _link_query(kept: tuple[tuple[str, str], ...]) -> str:
    return urlencode(kept, safe=":")
