"""The Canvas REST API client: every HTTP request the project makes goes through `CanvasClient`.

Callers use its domain methods (`api`) and get plain records back. Inside, `_get` is the one choke point:
the retry loop around `_attempt`, one paced exchange. The pure rules live beside it (`urls`, `error_map`,
`transport`, `fanout`, `pages`, `budget`); the Canvas facts that shape them are in docs/canvas-api.md. The
hot path is lean on purpose (docs/canvas-api.md, "Code"): the token-free URL for logs and errors, say, is
only built when something is logged or raised.
"""

from __future__ import annotations

import logging
import random
import re
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from typing import TypeVar
from urllib.parse import urlencode, urlsplit

import urllib3

from canvas_assets.canvas import budget
from canvas_assets.canvas.api import CanvasAPI, Record
from canvas_assets.canvas.error_map import (
    error_for_exchange,
    error_for_redirect,
    error_for_response,
    error_for_unparsable,
)
from canvas_assets.canvas.fanout import FanOut
from canvas_assets.canvas.metrics import ClientMetrics
from canvas_assets.canvas.pacer import Pacer, PacerSlot, PacerTimeout
from canvas_assets.canvas.pages import records_of_page
from canvas_assets.canvas.redact import install_redaction, redact, redact_url
from canvas_assets.canvas.retry import backoff_delay, is_throttle, should_retry
from canvas_assets.canvas.transport import MAX_BODY_BYTES, Reply, Transport, body_text, float_header
from canvas_assets.canvas.urls import (
    TOKEN_ENV,
    Params,
    normalize_base_url,
    origin_of,
    parse_link_header,
    same_origin_link,
)
from canvas_assets.errors import CanvasAPIError, ConfigurationError
from canvas_assets.jsontext import UnstorableNumber, decode_json

log = logging.getLogger(__name__)

PER_PAGE = 100  # Canvas's maximum page size; its default is 10 (docs/canvas-api.md §2)
# The most pages followed in one list: a million records, several times the longest list known (1,347 pages
# in the large benchmark). A list still linking a new next page past it fails rather than grow for ever.
MAX_PAGES = 10_000
# The most JSON objects and arrays one page may hold, counted before decoding: a page of 100 records holds a
# few tens of thousands; a hostile body of `{}` would cost 64 bytes or more each once decoded.
MAX_PAGE_OBJECTS = 250_000
MAX_ERROR_BODY_BYTES = 1024 * 1024  # an error body is shown in part at most: read no more than this


T = TypeVar("T")

# Canvas tokens are printable ASCII without spaces (e.g. "7~AbC..."); anything else is a paste error.
_TOKEN_CHARS = re.compile(r"[\x21-\x7e]+")


class _Attempt:
    """What one exchange came to: a reply, or an error and what the retry decision needs."""

    __slots__ = ("body", "cost", "error", "remaining", "reply", "status", "throttled")

    def __init__(self) -> None:
        self.status: int | None = None  # None: no response at all
        self.remaining: float | None = None  # X-Rate-Limit-Remaining
        self.cost: float | None = None  # X-Request-Cost
        self.throttled = False
        self.body = ""  # the error body as text (for the retry decision)
        self.reply: Reply | None = None
        self.error: CanvasAPIError | None = None


class _Chain:
    """The pages of one list being fetched: how many came back (the next page's pacer priority), and the
    slot the last one kept for it (docs/canvas-api.md §1, Who goes next)."""

    __slots__ = ("kept", "pages")

    def __init__(self) -> None:
        self.pages = 0
        self.kept: PacerSlot | None = None

    def forget(self, pacer: Pacer) -> None:
        """Free the kept slot: the next page is not sent now (a backoff, an error, the end of the list)."""
        if self.kept is not None:
            pacer.forget(self.kept)
            self.kept = None


class CanvasClient(CanvasAPI):
    """A thread-safe Canvas API client: paced, retried, paginated, typed errors, token kept secret.

    `read_timeout` is each request's read timeout (override per call with `timeout=`), `max_retries`
    how many times one request is retried after a recoverable error, `max_in_flight` the most requests
    in flight at once (the pacer usually allows fewer: as many as the token's bucket takes).
    `sleep` and `rng` are injectable so tests can make backoff instant.
    """

    def __init__(
        self,
        base_url: str | None,
        token: str | None,
        *,
        read_timeout: float = 60.0,
        connect_timeout: float = 10.0,
        max_retries: int = 3,
        max_in_flight: int = 32,
        backoff_base: float = 0.5,
        backoff_cap: float = 30.0,
        sleep: Callable[[float], None] = time.sleep,
        rng: random.Random | None = None,
        pacer: Pacer | None = None,
    ) -> None:
        self.base_url = normalize_base_url(base_url)
        if token is None or not str(token).strip():
            raise ConfigurationError(
                f"The Canvas API token is not set: set {TOKEN_ENV} to an access token", stage="configuration"
            )
        if max_in_flight < 1:
            raise ConfigurationError("max_in_flight must be at least 1", stage="configuration")
        if max_retries < 0:
            raise ConfigurationError("max_retries must not be negative", stage="configuration")
        self._token = str(token).strip()
        if not _TOKEN_CHARS.fullmatch(self._token):
            # http.client would refuse such a header with an error that quotes it: say so without the token.
            raise ConfigurationError(
                f"{TOKEN_ENV} contains spaces, line breaks, control or non-ASCII characters: "
                "paste the access token exactly as Canvas showed it",
                stage="configuration",
            )
        self._secrets = (self._token,)
        install_redaction(log.name).add_secret(self._token)
        self.api_url = self.base_url + "/api/v1"
        self._origin = origin_of(self.base_url)
        self.read_timeout = float(read_timeout)
        self.connect_timeout = float(connect_timeout)
        self.max_retries = int(max_retries)
        self.max_in_flight = int(max_in_flight)
        self.backoff_base = float(backoff_base)
        self.backoff_cap = float(backoff_cap)
        self._sleep = sleep
        self._rng = rng if rng is not None else random.Random()
        self._rng_lock = threading.Lock()
        self.pacer = pacer if pacer is not None else Pacer(max_in_flight=self.max_in_flight)
        self.metrics = ClientMetrics()
        self._fan = FanOut(self.max_in_flight)
        self._transport = Transport(self.base_url, self._token, maxsize=self.max_in_flight + 4)
        self._origin_prefix = self._transport.origin + "/"

    def __repr__(self) -> str:
        return f"CanvasClient(base_url={self.base_url!r}, max_in_flight={self.max_in_flight})"

    def __enter__(self) -> CanvasClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        self._fan.close()
        self._transport.close()

    def thread_requests(self) -> int:
        """HTTP requests made so far by the calling thread, including the follow-ups it fanned out."""
        return self._fan.counter().value

    # --- the choke point -----------------------------------------------------------------------------
    def safe_url(self, url: str, params: Params | None = None) -> str:
        """The URL as it may appear in logs, errors and metadata (query included, token never)."""
        full = url + ("?" + urlencode(params, safe="[]:") if params else "")
        return redact_url(full, self._secrets)

    def _target(self, url: str, params: Params | None) -> str:
        """Path and query of `url` (which is on the base URL's origin) with `params` appended."""
        if url.startswith(self._origin_prefix):
            target = url[len(self._transport.origin) :]
        else:  # a next link spelt differently (host case, default port), already checked to be same-origin
            parts = urlsplit(url)
            target = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
        if params:
            target += ("&" if "?" in target else "?") + urlencode(params)
        return target

    def _get(
        self,
        url: str,
        params: Params | None = None,
        *,
        timeout: float | None = None,
        chain: _Chain | None = None,
    ) -> Reply:
        """Send one GET, paced and retried, and return its parsed JSON or raise a typed CanvasAPIError.
        `chain`: the request is a page of that list (its pacer priority and kept slot)."""
        shown_cache: list[str] = []

        def shown() -> str:  # the token-free URL, built only when a log line or an error needs it
            if not shown_cache:
                shown_cache.append(self.safe_url(url, params))
            return shown_cache[0]

        read_timeout = self.read_timeout if timeout is None else max(0.001, float(timeout))
        # Built once, before taking a pacer slot: the slot should cover the exchange, not the set-up.
        target = self._target(url, params)
        deadline = budget.current()  # the work's hard deadline, over every attempt, wait and body
        retries = 0
        while True:
            attempt = self._attempt(target, shown, read_timeout, chain, deadline)
            if attempt.reply is not None:
                return attempt.reply
            delay = self._retry_delay(attempt, retries)  # raises the attempt's error if it is final
            retries += 1
            assert attempt.error is not None
            if deadline is not None and deadline.left() <= delay:
                # No retry fits in what is left: say so now rather than sleep into the deadline.
                raise deadline.expired(f"requesting GET {shown()} ({attempt.error.message})", url=shown())
            log.info(
                "retrying GET %s in %.2fs after %s (retry %d of %d)",
                shown(), delay, attempt.error.error_type, retries, self.max_retries,
            )  # fmt: skip
            self.metrics.add(retries=1, wait_seconds=delay)
            if chain is not None:  # no place is held during the backoff
                chain.forget(self.pacer)
            if delay > 0:
                self._sleep(delay)

    def _attempt(
        self,
        target: str,
        shown: Callable[[], str],
        read_timeout: float,
        chain: _Chain | None,
        deadline: budget.Deadline | None = None,
    ) -> _Attempt:
        """One paced exchange: take a pacer slot, send, free the slot once the headers are in, read.

        A page of a list whose response links a next page keeps its slot for that page. Under a
        `deadline`, the wait for a slot, the read timeout and the reading of the body all end at it.
        """
        wait: float | None = None
        if deadline is not None:
            wait = deadline.left()
            if wait <= 0:
                raise deadline.expired(f"waiting to send GET {shown()}", url=shown())
        try:
            if chain is None:
                slot = self.pacer.acquire(timeout=wait)
            else:
                kept, chain.kept = chain.kept, None
                slot = self.pacer.acquire(chain.pages, kept=kept, timeout=wait)
        except PacerTimeout:
            assert deadline is not None
            raise deadline.expired(
                f"waiting for a request slot (the token's rate limit) to send GET {shown()}", url=shown()
            ) from None
        connect_timeout = self.connect_timeout
        give_up: float | None = None
        if deadline is not None:
            left = max(0.001, deadline.left())
            read_timeout, connect_timeout = min(read_timeout, left), min(connect_timeout, left)
            give_up = deadline.at
        self.metrics.started(in_flight=slot.in_flight, waited=slot.waited)
        self._fan.counter().add()
        started = time.monotonic()
        attempt = _Attempt()
        response: urllib3.BaseHTTPResponse | None = None
        content: bytes | None = None  # the body, once read
        keep = False
        try:
            response = self._transport.get(target, connect_timeout=connect_timeout, read_timeout=read_timeout)
            self.pacer.mark_received(slot)
            attempt.status = response.status
            attempt.remaining = float_header(response.headers, "X-Rate-Limit-Remaining")
            attempt.cost = float_header(response.headers, "X-Request-Cost")
            if attempt.status in (403, 429):
                content = self._transport.read_body(response, limit=MAX_ERROR_BODY_BYTES, give_up=give_up)
                attempt.body = body_text(content)
                attempt.throttled = is_throttle(attempt.status, attempt.body)
            keep = (
                chain is not None
                and attempt.status == 200
                and "next" in parse_link_header(response.headers.get("Link"))
            )
        except Exception as exc:
            self.pacer.mark_received(slot)
            attempt.error = error_for_exchange(
                exc, url=shown(), read_timeout=read_timeout, deadline=deadline, secrets=self._secrets
            )
            response = None
        finally:
            # Canvas released this request's hold before answering: free the slot as soon as the
            # headers are in, before reading and parsing the body.
            self.pacer.release(
                slot, remaining=attempt.remaining, cost=attempt.cost, throttled=attempt.throttled, keep=keep
            )
        if keep:
            assert chain is not None
            chain.kept = slot
        if response is not None:
            try:
                if content is None:  # (a 403 or 429 was read already, for the throttle check)
                    limit = MAX_ERROR_BODY_BYTES if response.status >= 300 else MAX_BODY_BYTES
                    content = self._transport.read_body(response, limit=limit, give_up=give_up)
            except Exception as exc:  # cut off, timed out or too big while reading the body
                attempt.error = error_for_exchange(
                    exc, url=shown(), read_timeout=read_timeout, deadline=deadline, secrets=self._secrets
                )
            else:
                attempt.reply, attempt.error = self._interpret(response, content, shown)
                if not attempt.body and response.status >= 400:
                    attempt.body = body_text(content)
        if log.isEnabledFor(logging.DEBUG):
            status = attempt.status if attempt.status is not None else "no response"
            log.debug("GET %s -> %s in %.3fs", shown(), status, time.monotonic() - started)
        if attempt.reply is not None and attempt.remaining is None:
            self.pacer.grow()
        return attempt

    def _retry_delay(self, attempt: _Attempt, retries: int) -> float:
        """The backoff before the next try of a failed attempt; raises its error when it is final."""
        error = attempt.error
        assert error is not None
        self.metrics.add(throttled=int(attempt.throttled), errors=int(not attempt.throttled))
        status = attempt.status
        transport = status is None or (200 <= status < 300)  # no response, or a cut-off body
        if not should_retry(
            status=None if transport else status,
            body=attempt.body,
            transport_error=transport and error.recoverable,
            retries_done=retries,
            max_retries=self.max_retries,
        ):
            raise error
        with self._rng_lock:
            return backoff_delay(retries, base=self.backoff_base, cap=self.backoff_cap, rng=self._rng)

    def _interpret(
        self, response: urllib3.BaseHTTPResponse, content: bytes, shown: Callable[[], str]
    ) -> tuple[Reply | None, CanvasAPIError | None]:
        """The parsed reply of a response, or the typed error it amounts to."""
        status = response.status
        if status >= 400:
            body = redact(body_text(content), self._secrets)
            return None, error_for_response(status, body, method="GET", url=shown(), secrets=self._secrets)
        if 300 <= status < 400:
            location = redact_url(response.headers.get("Location", "?"), self._secrets)
            return None, error_for_redirect(status, location, method="GET", url=shown())
        if content.count(b"{") + content.count(b"[") > MAX_PAGE_OBJECTS:
            return None, CanvasAPIError(
                f"Canvas's answer to GET {shown()} holds more than {MAX_PAGE_OBJECTS:,} JSON objects, far more "
                "than a page of 100 records: the request fails (a fault or a hostile server)",
                status=status,
                url=shown(),
                recoverable=False,
            )
        try:
            data = decode_json(content) if content else None
        except UnstorableNumber as exc:  # a fault of the data, not of the transfer: asking again is no use
            return None, CanvasAPIError(
                f"Canvas's answer to GET {shown()}: {exc}", status=status, url=shown(), recoverable=False
            )
        except ValueError:
            return None, error_for_unparsable(status, response.headers.get("Content-Type", ""), url=shown())
        return Reply(data, response.headers, shown, status), None

    # --- pagination -------------------------------------------------------------------------------------
    def _pages(
        self,
        path: str,
        params: Params | None = None,
        *,
        timeout: float | None = None,
        wrapped_in: str | None = None,
    ) -> Iterator[list[Record]]:
        """The records of a list endpoint a page at a time (docs/canvas-api.md §2): per_page=100 on the first
        page, then `rel="next"` links only, each page checked by `pages.records_of_page`. A page waits for a
        pacer slot with the pages before it as its priority, and keeps its slot for the next (`_Chain`)."""
        url: str | None = self.api_url + path
        query: Params | None = [("per_page", str(PER_PAGE)), *(params or [])]
        seen: set[str] = set()
        chain = _Chain()
        try:
            while url is not None:
                if chain.pages >= MAX_PAGES:
                    raise CanvasAPIError(
                        f"Canvas's list {self.safe_url(self.api_url + path)} still links a next page after "
                        f"{MAX_PAGES:,} pages ({MAX_PAGES * PER_PAGE:,} records), far more than any course has: "
                        "the list is not taken (a fault or a hostile server)",
                        url=self.safe_url(url),
                        recoverable=False,
                    )
                reply = self._get(url, query, timeout=timeout, chain=chain)
                page = records_of_page(reply.data, wrapped_in, url=reply.url, status=reply.status)
                chain.pages += 1
                current = url
                next_link = parse_link_header(reply.headers.get("Link")).get("next")
                url, query = None, None
                if next_link:
                    url = same_origin_link(next_link, current, self._origin, self.base_url, self._secrets)
                    if url in seen:  # a server bug would otherwise loop for ever
                        raise CanvasAPIError(
                            f"Canvas's pagination repeated a page: {reply.url}",
                            status=reply.status,
                            url=reply.url,
                        )
                    seen.add(url)
                yield page
        finally:
            chain.forget(self.pacer)  # the last page kept no place, unless a next page was refused

    def _get_object(self, path: str, params: Params | None = None, *, timeout: float | None = None) -> Record:
        reply = self._get(self.api_url + path, params or None, timeout=timeout)
        if not isinstance(reply.data, dict):
            raise CanvasAPIError(
                f"Canvas answered GET {reply.url} with a {type(reply.data).__name__}, expected an object",
                status=reply.status,
                url=reply.url,
            )
        return reply.data

    def _fan_out_map(self, fn: Callable[[int], T], args: Sequence[int]) -> list[T]:
        return self._fan.map(fn, args)
