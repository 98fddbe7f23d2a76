"""The sandbox's pagination: numbered pages and bookmark (keyset) pages, with Canvas's `Link` headers.

Numbered lists link current/next/prev/first and, when they count their items, last (`Api.paginate` in
lib/api.rb sends `last` only when the collection knows its last page; `total_entries: nil`, as
CoursesController#users and AccountsController#courses_api pass, means no `last`). Bookmarked lists
(`BookmarkedCollection`) link current/next/first with opaque `bookmark:` pages and never `last`.
`per_page` follows `Api.per_page_for`: default 10, Ruby `to_i` then clamped to [1, max], so 0, a
negative or a non-number is 1, never an error. A bookmark that cannot be decoded, or a plain page such
as `page=2` on a bookmarked list, is read as the first page (gems/bookmarked_collection
`page_to_bookmark` rescues the decode and returns nil), never an error.
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
from canvas_assets.sandbox.protocol import Request, Response, bad_request, json_response, ruby_to_i

# Wraps a page's list in the object an endpoint answers with (`{"enrollment_terms": [...]}`).
Wrap = Callable[[list[Record]], Any]


def _encode_bookmark(key: tuple[Any, ...]) -> str:
    raw = json.dumps(list(key), separators=(",", ":")).encode()
    return "bookmark:" + base64.urlsafe_b64encode(raw).decode().rstrip("=")


def _decode_bookmark(page: str | None) -> tuple[Any, ...] | None:
    """The bookmark of a `page` value; None (the first page) for `first`, no page, a value that is not a
    bookmark, or one that does not decode, as BookmarkedCollection reads them."""
    if page is None or not page.startswith("bookmark:"):
        return None
    try:
        token = page.split(":", 1)[1]
        raw = base64.urlsafe_b64decode(token + "=" * (-len(token) % 4))
        value = json.loads(raw)
    except (IndexError, ValueError, binascii.Error):
        return None
    return tuple(value) if isinstance(value, list) else None


class Pages:
    """Pages of a list endpoint's items, rendered, with the `Link` header and the request's list key."""

    def __init__(self, config: SandboxConfig, base_url: str) -> None:
        self.config = config
        self.base_url = base_url

    def per_page(self, req: Request) -> int:
        raw = req.one("per_page")
        if raw is None:
            return 10  # Canvas's default: clients that forget per_page silently get 10 records
        # Api.per_page_for: `per_page.to_i.clamp(1, max)`: "abc", 0 and -5 all mean 1.
        return min(max(ruby_to_i(raw), 1), self.config.per_page_max)

    def _link(self, req: Request, page: str, per_page: int) -> str:
        return f"{req.link_prefix(self.base_url)}page={quote_plus(page, safe=':')}&per_page={per_page}"

    def _links(self, req: Request, rels: list[tuple[str, str]], per_page: int) -> tuple[str, str]:
        return ("Link", ",".join(f'<{self._link(req, page, per_page)}>; rel="{rel}"' for rel, page in rels))

    def numbered(
        self, req: Request, items: list[Record], render: Callable[[Record], Record], *, last: bool = True,
        wrapped_in: str | None = None,
        wrap: Wrap | None = None,
    ) -> Response:  # fmt: skip
        """Numbered pages; `last=False` for a collection paginated with `total_entries: nil` (no count, so
        no `last` link: CoursesController#users, AccountsController#courses_api). `wrapped_in`: each page is
        an object holding the page's records under that key and `meta.pagination` beside it, with the same
        `Link` header (Api.jsonapi_paginate: GradingPeriodsController#index)."""
        per_page = self.per_page(req)
        raw = req.one("page")
        if raw is None or raw == "first":
            page = 1
        else:
            try:
                page = max(1, int(raw))
            except ValueError:
                raise bad_request("page must be an integer") from None
        last_page = max(1, math.ceil(len(items) / per_page))
        chunk = [render(r) for r in items[(page - 1) * per_page : page * per_page]]
        rels = [("current", str(page))]
        if page < last_page:
            rels.append(("next", str(page + 1)))
        if page > 1:
            rels.append(("prev", str(page - 1)))
        rels.append(("first", "1"))
        if last:
            rels.append(("last", str(last_page)))
        if wrapped_in is not None:
            meta: dict[str, object] = {"per_page": per_page, "page": page, "count": len(items)}
            meta["page_count"] = last_page
            meta.update({rel: self._link(req, value, per_page) for rel, value in rels})
            body = {wrapped_in: chunk, "meta": {"pagination": meta}}
            link = self._links(req, rels, per_page)
            return json_response(200, body, headers=[link], records=len(chunk), list_key=req.list_key())
        return self._list_response(req, chunk, rels, per_page, wrap)

    def bookmarked(
        self, req: Request, items: list[Record], key: Callable[[Record], tuple[Any, ...]],
        render: Callable[[Record], Record], wrap: Wrap | None = None,
    ) -> Response:  # fmt: skip
        """Bookmark pagination: keyset on `key` (items must be sorted by it); no `last` link."""
        per_page = self.per_page(req)
        raw = req.one("page")
        mark = _decode_bookmark(raw)
        start = 0
        if mark is not None:
            try:
                start = bisect.bisect_right(items, mark, key=key)
            except (
                TypeError
            ):  # a bookmark of another list's shape: the first page, like one that does not decode
                start = 0
        page_items = items[start : start + per_page]
        rels = [("current", raw or "first")]
        if start + per_page < len(items):
            rels.append(("next", _encode_bookmark(key(page_items[-1]))))
        rels.append(("first", "first"))
        return self._list_response(req, [render(r) for r in page_items], rels, per_page, wrap)

    def keyset(
        self, req: Request, seek: Callable[[tuple[Any, ...] | None], Iterator[Record]],
        key: Callable[[Record], tuple[Any, ...]], render: Callable[[Record], Record] | None = None,
        wrap: Wrap | None = None,
    ) -> Response:  # fmt: skip
        """Bookmark pagination over a lazy, key-ordered stream: `seek(mark)` yields the items whose key
        is after `mark` (all of them for None); a mark it cannot use should mean the first page.
        Only one page (and one item more, to know whether a `next` exists) is drawn."""
        per_page = self.per_page(req)
        raw = req.one("page")
        mark = _decode_bookmark(raw)
        page_items = list(itertools.islice(seek(mark), per_page + 1))
        rels = [("current", raw or "first")]
        if len(page_items) > per_page:
            page_items = page_items[:per_page]
            rels.append(("next", _encode_bookmark(key(page_items[-1]))))
        rels.append(("first", "first"))
        chunk = page_items if render is None else [render(r) for r in page_items]
        return self._list_response(req, chunk, rels, per_page, wrap)

    def _list_response(
        self, req: Request, chunk: list[Record], rels: list[tuple[str, str]], per_page: int,
        wrap: Wrap | None = None,
    ) -> Response:  # fmt: skip
        """A page: the list itself, or for an endpoint that wraps it in an object (`wrap`) that object."""
        records = len(chunk) + sum(len(items) for r in chunk if isinstance(items := r.get("items"), list))
        body: Any = chunk if wrap is None else wrap(chunk)
        return json_response(
            200, body, headers=[self._links(req, rels, per_page)], records=records, list_key=req.list_key()
        )
