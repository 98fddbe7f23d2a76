"""The sandbox's pagination: numbered pages and bookmark (keyset) pages, with Canvas's `Link` headers.

Numbered lists link current/next/prev/first/last pages; bookmarked lists link current/next/first with
opaque `bookmark:` pages and no `last`. `per_page` defaults to 10 (Canvas's default) and is clamped to
the configured maximum.
"""

from __future__ import annotations

import base64
import binascii
import bisect
import itertools
import json
import math
from collections.abc import Callable, Iterator
from typing import Any
from urllib.parse import quote_plus

from canvas_assets.sandbox.config import SandboxConfig
from canvas_assets.sandbox.data import Record
from canvas_assets.sandbox.protocol import Request, Response, bad_request, json_response


def _encode_bookmark(key: tuple[Any, ...]) -> str:
    raw = json.dumps(list(key), separators=(",", ":")).encode()
    return "bookmark:" + base64.urlsafe_b64encode(raw).decode().rstrip("=")


def _decode_bookmark(page: str) -> tuple[Any, ...]:
    try:
        token = page.split(":", 1)[1]
        raw = base64.urlsafe_b64decode(token + "=" * (-len(token) % 4))
        value = json.loads(raw)
    except (IndexError, ValueError, binascii.Error):
        raise bad_request("invalid bookmark") from None
    if not isinstance(value, list):
        raise bad_request("invalid bookmark")
    return tuple(value)


class Pages:
    """Pages of a list endpoint's items, rendered, with the `Link` header and the request's list key."""

    def __init__(self, config: SandboxConfig, base_url: str) -> None:
        self.config = config
        self.base_url = base_url

    def per_page(self, req: Request) -> int:
        pp = req.integer("per_page")
        if pp is None or pp <= 0:
            return 10  # Canvas's default: clients that forget per_page silently get 10 records
        return min(pp, self.config.per_page_max)

    def _link(self, req: Request, page: str, per_page: int) -> str:
        return f"{req.link_prefix(self.base_url)}page={quote_plus(page, safe=':')}&per_page={per_page}"

    def _links(self, req: Request, rels: list[tuple[str, str]], per_page: int) -> tuple[str, str]:
        return ("Link", ",".join(f'<{self._link(req, page, per_page)}>; rel="{rel}"' for rel, page in rels))

    def numbered(self, req: Request, items: list[Record], render: Callable[[Record], Record]) -> Response:
        per_page = self.per_page(req)
        raw = req.one("page")
        if raw is None or raw == "first":
            page = 1
        else:
            try:
                page = max(1, int(raw))
            except ValueError:
                raise bad_request("page must be an integer") from None
        last = max(1, math.ceil(len(items) / per_page))
        chunk = [render(r) for r in items[(page - 1) * per_page : page * per_page]]
        rels = [("current", str(page))]
        if page < last:
            rels.append(("next", str(page + 1)))
        if page > 1:
            rels.append(("prev", str(page - 1)))
        rels += [("first", "1"), ("last", str(last))]
        return self._list_response(req, chunk, rels, per_page)

    def bookmarked(
        self, req: Request, items: list[Record], key: Callable[[Record], tuple[Any, ...]],
        render: Callable[[Record], Record],
    ) -> Response:  # fmt: skip
        """Bookmark pagination: keyset on `key` (items must be sorted by it); no `last` link."""
        per_page = self.per_page(req)
        raw = req.one("page")
        if raw is None or raw == "first":
            start = 0
        elif raw.startswith("bookmark:"):
            mark = _decode_bookmark(raw)
            try:
                start = bisect.bisect_right(items, mark, key=key)
            except TypeError:
                raise bad_request("invalid bookmark") from None
        else:
            raise bad_request("invalid page: this collection is bookmark-paginated; follow the Link header")
        page_items = items[start : start + per_page]
        rels = [("current", raw or "first")]
        if start + per_page < len(items):
            rels.append(("next", _encode_bookmark(key(page_items[-1]))))
        rels.append(("first", "first"))
        return self._list_response(req, [render(r) for r in page_items], rels, per_page)

    def keyset(
        self, req: Request, seek: Callable[[tuple[Any, ...] | None], Iterator[Record]],
        key: Callable[[Record], tuple[Any, ...]], render: Callable[[Record], Record] | None = None,
    ) -> Response:  # fmt: skip
        """Bookmark pagination over a lazy, key-ordered stream: `seek(mark)` yields the items whose key
        is after `mark` (all of them for None) and may raise `ApiError` for a mark it cannot use.
        Only one page (and one item more, to know whether a `next` exists) is drawn."""
        per_page = self.per_page(req)
        raw = req.one("page")
        if raw is None or raw == "first":
            mark = None
        elif raw.startswith("bookmark:"):
            mark = _decode_bookmark(raw)
        else:
            raise bad_request("invalid page: this collection is bookmark-paginated; follow the Link header")
        page_items = list(itertools.islice(seek(mark), per_page + 1))
        rels = [("current", raw or "first")]
        if len(page_items) > per_page:
            page_items = page_items[:per_page]
            rels.append(("next", _encode_bookmark(key(page_items[-1]))))
        rels.append(("first", "first"))
        chunk = page_items if render is None else [render(r) for r in page_items]
        return self._list_response(req, chunk, rels, per_page)

    def _list_response(
        self, req: Request, chunk: list[Record], rels: list[tuple[str, str]], per_page: int
    ) -> Response:
        records = len(chunk) + sum(len(items) for r in chunk if isinstance(items := r.get("items"), list))
        return json_response(
            200, chunk, headers=[self._links(req, rels, per_page)], records=records, list_key=req.list_key()
        )
