"""The Canvas REST API client: every HTTP request the project makes goes through `CanvasClient`.

Assets and the extractor call domain methods (`list_enrollments(course_id, states=...)`) and get plain
records back; they never build URLs or headers. Inside, one private method (`_get`) is the choke
point for every request: session, timeouts, auth header, pacing, the retry decision, error mapping,
logging and metrics. Facts about Canvas that shape it are in docs/canvas-api.md; the ones that bite
are noted where they matter.

The hot path is lean on purpose: with a dozen requests in flight and 30 ms round trips the client makes
hundreds of requests a second, and every microsecond of CPU under the GIL delays the threads reading
responses (which holds their pacer slots longer). So requests go straight to one urllib3 connection pool
for the base URL's origin (requests' per-request machinery cost about 0.6 ms of CPU per request), and
the token-free URL shown in logs and errors is only built when something is logged or raised.
"""

from __future__ import annotations

import ipaddress
import json
import logging
import os
import random
import re
import threading
import time
from collections.abc import Callable, Iterable, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any
from urllib.parse import quote, unquote, urlencode, urljoin, urlsplit

import certifi
import requests
import urllib3

from canvas_assets.canvas.metrics import ClientMetrics
from canvas_assets.canvas.pacer import Pacer
from canvas_assets.canvas.redact import install_redaction, redact, redact_url
from canvas_assets.canvas.retry import backoff_delay, is_throttle, should_retry
from canvas_assets.errors import (
    CanvasAPIError,
    CanvasAuthError,
    CanvasBadRequest,
    CanvasConnectionError,
    CanvasNotFound,
    CanvasPermissionError,
    CanvasServerError,
    CanvasThrottled,
    CanvasTimeout,
    ConfigurationError,
)

log = logging.getLogger(__name__)

BASE_URL_ENV = "CANVAS_BASE_URL"
TOKEN_ENV = "CANVAS_API_TOKEN"

# Canvas's default page size is 10, which silently truncates clients that forget it; 100 is the maximum
# (larger values are clamped, not rejected). Old or self-hosted instances may cap lower: we follow
# `next` links, so a smaller page only costs requests.
PER_PAGE = 100

ALL_ENROLLMENT_STATES_BUT_DELETED: tuple[str, ...] = (
    "active",
    "invited",
    "creation_pending",
    "completed",
    "inactive",
    "rejected",
)

Params = list[tuple[str, str]]
Record = dict[str, Any]


class _Reply:
    """A successful response: its parsed JSON body, its headers and the (token-free) URL asked for."""

    __slots__ = ("_shown", "data", "headers", "status")

    def __init__(self, data: Any, headers: Any, shown: Callable[[], str], status: int) -> None:
        self.data = data
        self.headers = headers
        self.status = status
        self._shown = shown

    @property
    def url(self) -> str:
        """The URL asked for as it may be shown (built on demand: only errors need it)."""
        return self._shown()


class _Transport:
    """The HTTP connections to one Canvas origin: a urllib3 pool, the default headers, the timeouts.

    The token travels only in the `Authorization` header of this object's requests; its repr hides it.
    Cookies are never stored or sent (Canvas sets session cookies on API responses), redirects are
    never followed and urllib3 never retries by itself: the client decides. Proxy and CA-bundle
    settings are read from the environment once, as requests would (`HTTPS_PROXY`, `NO_PROXY`,
    `REQUESTS_CA_BUNDLE`, `CURL_CA_BUNDLE`).
    """

    def __init__(self, base_url: str, token: str, *, maxsize: int) -> None:
        parts = urlsplit(base_url)
        self.scheme = parts.scheme.lower()
        self.origin = f"{parts.scheme}://{parts.netloc}"
        self._headers = {
            "Authorization": f"Bearer {token}",
            "Accept": "application/json",
            "Accept-Encoding": "gzip, deflate",
            "User-Agent": "canvas-assets/0.1",
            "Connection": "keep-alive",
        }
        # One pool big enough for every request the pacer may let fly, plus slack for ones being torn down
        # (a request finding the pool empty opens a new connection rather than waiting).
        options: dict[str, Any] = {"num_pools": 2, "maxsize": maxsize, "block": False, "retries": False}
        if self.scheme == "https":
            bundle = (
                os.environ.get("REQUESTS_CA_BUNDLE") or os.environ.get("CURL_CA_BUNDLE") or certifi.where()
            )
            options["cert_reqs"] = "CERT_REQUIRED"
            options["ca_cert_dir" if os.path.isdir(bundle) else "ca_certs"] = bundle
        proxies = requests.utils.get_environ_proxies(base_url)
        proxy = proxies.get(self.scheme) or proxies.get("all")
        self.manager: urllib3.PoolManager = (
            _proxy_manager(proxy, options) if proxy else urllib3.PoolManager(**options)
        )
        # A plain-http request through a forwarding proxy needs the absolute URL: the manager does that.
        self._absolute = bool(proxy) and self.scheme == "http"
        self.pool = self.manager.connection_from_url(base_url)
        self._timeouts: dict[tuple[float, float], urllib3.Timeout] = {}

    def get(self, target: str, *, connect_timeout: float, read_timeout: float) -> urllib3.BaseHTTPResponse:
        """GET `target` (path and query) on this origin: the response once its headers are in.

        The caller reads the body (`read_body`), which also returns the connection to the pool.
        """
        timeout = self._timeouts.get((connect_timeout, read_timeout))
        if timeout is None:
            timeout = urllib3.Timeout(connect=connect_timeout, read=read_timeout)
            if len(self._timeouts) < 64:  # per-course budgets vary: keep the cache small
                self._timeouts[(connect_timeout, read_timeout)] = timeout
        if self._absolute:
            return self.manager.urlopen(
                "GET", self.origin + target, headers=self._headers, retries=False, redirect=False,
                timeout=timeout, preload_content=False,
            )  # fmt: skip
        return self.pool.urlopen(
            "GET", target, headers=self._headers, retries=False, redirect=False, timeout=timeout,
            assert_same_host=False, preload_content=False,
        )  # fmt: skip

    @staticmethod
    def read_body(response: urllib3.BaseHTTPResponse) -> bytes:
        """The whole (decompressed) body; the connection goes back to the pool, or is closed on error."""
        try:
            return response.data
        finally:
            response.release_conn()

    def close(self) -> None:
        self.manager.clear()

    def __repr__(self) -> str:
        return f"_Transport(origin={self.origin!r}, authorization=[REDACTED])"


def _proxy_manager(proxy: str, options: dict[str, Any]) -> urllib3.PoolManager:
    """A urllib3 manager for the proxy URL (credentials in it become a Proxy-Authorization header)."""
    parts = urlsplit(proxy)
    if parts.scheme.lower().startswith("socks"):
        try:
            from urllib3.contrib.socks import SOCKSProxyManager
        except ImportError:  # PySocks missing
            raise ConfigurationError(
                "A SOCKS proxy is configured for Canvas but PySocks is not installed", stage="configuration"
            ) from None
        return SOCKSProxyManager(proxy, **options)
    headers = None
    if parts.username:
        credentials = f"{unquote(parts.username)}:{unquote(parts.password or '')}"
        headers = urllib3.util.make_headers(proxy_basic_auth=credentials)
    return urllib3.ProxyManager(proxy, proxy_headers=headers, **options)


class _RequestCounter:
    """Requests made by one thread and the follow-up fetches it fanned out (for per-entity api_calls)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.value = 0

    def add(self, n: int = 1) -> None:
        with self._lock:
            self.value += n


# --- base URL and link handling -----------------------------------------------------------------------
def _is_loopback(host: str) -> bool:
    if host.lower() in ("localhost", "localhost.localdomain") or host.lower().endswith(".localhost"):
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def normalize_base_url(base_url: str | None) -> str:
    """The instance root without a trailing slash or `/api/v1` (`https://school.instructure.com`).

    Accepts both `https://host` and `https://host/api/v1/`. Refuses `http://` except on loopback: the
    token travels in every request header.
    """
    if base_url is None or not str(base_url).strip():
        raise ConfigurationError(
            f"The Canvas base URL is not set: set {BASE_URL_ENV} (e.g. https://school.instructure.com)",
            stage="configuration",
        )
    url = str(base_url).strip().rstrip("/")
    if url.lower().endswith("/api/v1"):
        url = url[: -len("/api/v1")].rstrip("/")
    try:
        parts = urlsplit(url)
        parts.port  # noqa: B018 - raises ValueError on a malformed port
    except ValueError as exc:
        raise ConfigurationError(
            f"{BASE_URL_ENV} is not a valid URL ({redact_url(url)}): {exc}", stage="configuration"
        ) from None
    scheme = parts.scheme.lower()
    if scheme not in ("http", "https") or not parts.hostname:
        raise ConfigurationError(
            f"{BASE_URL_ENV} must be an https:// URL such as https://school.instructure.com, "
            f"got {redact_url(url)!r}",
            stage="configuration",
        )
    if parts.username or parts.password:
        raise ConfigurationError(
            f"{BASE_URL_ENV} must not contain credentials; put the token in {TOKEN_ENV}",
            stage="configuration",
        )
    if parts.query or parts.fragment:
        raise ConfigurationError(
            f"{BASE_URL_ENV} must not contain a query or fragment: {redact_url(url)!r}", stage="configuration"
        )
    if scheme == "http" and not _is_loopback(parts.hostname):
        raise ConfigurationError(
            f"{BASE_URL_ENV} uses http:// for {parts.hostname}: use https:// (the token would travel in "
            "clear text; plain http is only accepted for loopback test servers)",
            stage="configuration",
        )
    return url


def origin_of(url: str) -> tuple[str, str, int | None]:
    """(scheme, host, port), lower-cased, default port filled in: what "same origin" compares."""
    parts = urlsplit(url)
    scheme = parts.scheme.lower()
    port = parts.port or {"http": 80, "https": 443}.get(scheme)
    return scheme, (parts.hostname or "").lower(), port


_LINK_RE = re.compile(r"<([^>]*)>\s*((?:;\s*[^;,]*)*)")
_PARAM_RE = re.compile(r";\s*([A-Za-z0-9_*-]+)\s*=\s*(\"[^\"]*\"|[^;,\s]*)")


def parse_link_header(value: str | None) -> dict[str, str]:
    """Map each (lower-cased) rel of an RFC 8288 `Link` header to its URL; the first link per rel wins.

    Canvas sends `<url>; rel="next"`; rel values are compared case-insensitively and a link may carry
    several space-separated rels.
    """
    links: dict[str, str] = {}
    if not value:
        return links
    for match in _LINK_RE.finditer(value):
        url, params = match.group(1).strip(), match.group(2)
        for name, raw in _PARAM_RE.findall(params):
            if name.lower() != "rel":
                continue
            for rel in raw.strip('"').split():
                links.setdefault(rel.lower(), url)
    return links


# --- error mapping ---------------------------------------------------------------------------------
def canvas_error_text(body: str, *, limit: int = 300) -> str:
    """Canvas's own error text, whatever its shape: `errors` as a list or a dict, `error`, `message`."""
    text = body.strip()
    try:
        payload = json.loads(text) if text else None
    except ValueError:
        payload = None
    messages: list[str] = []

    def collect(value: Any, prefix: str = "") -> None:
        if isinstance(value, str):
            messages.append(f"{prefix}{value}")
        elif isinstance(value, dict):
            if "message" in value and isinstance(value["message"], str):
                messages.append(f"{prefix}{value['message']}")
            else:
                for key, sub in value.items():
                    if key in ("error_code", "attribute", "type"):
                        continue
                    collect(sub, f"{prefix}{key}: ")
        elif isinstance(value, list):
            for item in value:
                collect(item, prefix)

    if isinstance(payload, dict):
        for key in ("errors", "error", "message"):
            if key in payload:
                collect(payload[key])
                if messages:
                    break
    elif isinstance(payload, list | str):
        collect(payload)
    if not messages:
        messages = [" ".join(text.split())] if text and not text.startswith("<") else []
    joined = "; ".join(m.strip() for m in messages if m and m.strip())
    return joined[:limit] + ("…" if len(joined) > limit else "")


_AUTH_CAUSES = (
    "invalid access token",
    "revoked",
    "expired",
    "user authorization required",
    "unauthenticated",
)


def error_for_response(
    status: int, body: str, *, method: str, url: str, www_authenticate: str | None = None
) -> CanvasAPIError:
    """The typed error for a Canvas error response. `url` must already be token-free."""
    detail = canvas_error_text(body)
    lowered = body.lower()
    where = f"{method} {url}"
    kwargs: dict[str, Any] = {"status": status, "method": method, "url": url}
    if is_throttle(status, body):
        return CanvasThrottled(
            f"Canvas throttled the request ({status} {detail or 'Rate Limit Exceeded'}): the token's "
            f"rate-limit bucket is full; {where}",
            **kwargs,
        )
    if status == 401:
        # Canvas answers 401 both for a bad token and for "authenticated but not allowed".
        if "unauthorized" in lowered and not any(c in lowered for c in _AUTH_CAUSES):
            return CanvasPermissionError(
                f"The Canvas token is not permitted to do this ({detail or 'unauthorized'}): {where}; the "
                "token's user needs the matching permission in Canvas",
                **kwargs,
            )
        if "user authorization required" in lowered or "unauthenticated" in lowered:
            return CanvasAuthError(
                f"Canvas did not recognise the request as authenticated "
                f"({detail or 'user authorization required'}): check {TOKEN_ENV}; {where}",
                **kwargs,
            )
        return CanvasAuthError(
            f"Canvas rejected the access token ({detail or 'Invalid access token.'}): check {TOKEN_ENV} "
            f"(it may be invalid, revoked or expired); {where}",
            **kwargs,
        )
    if status == 403:
        return CanvasPermissionError(
            f"Canvas refused the request (403 {detail or 'Forbidden'}): {where}; the token's user lacks the "
            "permission",
            **kwargs,
        )
    if status == 404:
        return CanvasNotFound(f"Canvas has no such resource (404 {detail or 'Not Found'}): {where}", **kwargs)
    if status in (400, 422):
        return CanvasBadRequest(
            f"Canvas rejected the request ({status} {detail or 'Bad Request'}): {where}", **kwargs
        )
    if status == 408:
        return CanvasTimeout(f"Canvas timed out the request (408): {where}", **kwargs)
    if 500 <= status <= 599:
        return CanvasServerError(
            f"Canvas failed with {status} ({detail or 'server error'}): {where}", **kwargs
        )
    return CanvasAPIError(f"Canvas answered {status} ({detail or 'unexpected status'}): {where}", **kwargs)


def _is_read_timeout(exc: BaseException) -> bool:
    """requests raises ConnectionError (not ReadTimeout) when the timeout strikes while reading the body."""
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        if isinstance(current, requests.Timeout | urllib3.exceptions.TimeoutError):
            return True
        nested = [a for a in getattr(current, "args", ()) if isinstance(a, BaseException)]
        reason = getattr(current, "reason", None)
        current = (
            nested[0] if nested else (reason if isinstance(reason, BaseException) else current.__cause__)
        )
    return False


def error_for_transport(exc: Exception, *, method: str, url: str, read_timeout: float) -> CanvasAPIError:
    """The typed error for an exchange that produced no usable response (a urllib3 or requests error)."""
    if isinstance(exc, requests.ConnectTimeout | urllib3.exceptions.ConnectTimeoutError):
        return CanvasTimeout(f"Connecting to Canvas timed out: {method} {url}", method=method, url=url)
    if _is_read_timeout(exc):
        return CanvasTimeout(
            f"Canvas did not answer within {read_timeout:g} s: {method} {url}", method=method, url=url
        )
    kind = type(exc).__name__
    return CanvasConnectionError(
        f"The connection to Canvas failed or was dropped ({kind}): {method} {url}", method=method, url=url
    )


def _text(content: bytes | None) -> str:
    """A body as text (an error body need not be valid UTF-8)."""
    return (content or b"").decode("utf-8", "replace")


def _float_header(headers: Any, name: str) -> float | None:
    value = headers.get(name)
    if value is None:
        return None
    try:
        return float(value)
    except (TypeError, ValueError):
        return None


# Canvas tokens are printable ASCII without spaces (e.g. "7~AbC..."); anything else is a paste error.
_TOKEN_CHARS = re.compile(r"[\x21-\x7e]+")


# --- the client ---------------------------------------------------------------------------------------
class CanvasClient:
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
        self._local = threading.local()
        self._fanout: ThreadPoolExecutor | None = None
        self._fanout_lock = threading.Lock()
        self._transport = _Transport(self.base_url, self._token, maxsize=self.max_in_flight + 4)
        self._origin_prefix = self._transport.origin + "/"

    def __repr__(self) -> str:
        return f"CanvasClient(base_url={self.base_url!r}, max_in_flight={self.max_in_flight})"

    def __enter__(self) -> CanvasClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        with self._fanout_lock:
            if self._fanout is not None:
                self._fanout.shutdown(wait=True, cancel_futures=True)
                self._fanout = None
        self._transport.close()

    # --- per-thread request counting -----------------------------------------------------------------
    def _counter(self) -> _RequestCounter:
        counter = getattr(self._local, "counter", None)
        if counter is None:
            counter = _RequestCounter()
            self._local.counter = counter
        return counter

    def thread_requests(self) -> int:
        """HTTP requests made so far by the calling thread, including the follow-ups it fanned out."""
        return self._counter().value

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

    def _get(self, url: str, params: Params | None = None, *, timeout: float | None = None) -> _Reply:
        """Send one GET, paced and retried, and return its parsed JSON or raise a typed CanvasAPIError.

        Every request of the client passes through here and nowhere else.
        """
        method = "GET"
        shown_cache: list[str] = []

        def shown() -> str:  # the token-free URL, built only when a log line or an error needs it
            if not shown_cache:
                shown_cache.append(self.safe_url(url, params))
            return shown_cache[0]

        read_timeout = self.read_timeout if timeout is None else max(0.001, float(timeout))
        counter = self._counter()
        retries = 0
        # Built once, before taking a pacer slot: the slot should cover the exchange, not the set-up.
        target = self._target(url, params)
        while True:
            slot = self.pacer.acquire()
            self.metrics.started(in_flight=slot.in_flight, waited=slot.waited)
            counter.add()
            started = time.monotonic()
            remaining: float | None = None
            throttled = False
            error: CanvasAPIError | None = None
            status: int | None = None
            body = ""
            reply: _Reply | None = None
            response: urllib3.BaseHTTPResponse | None = None
            try:
                response = self._transport.get(
                    target, connect_timeout=self.connect_timeout, read_timeout=read_timeout
                )
                self.pacer.mark_received(slot)
                status = response.status
                remaining = _float_header(response.headers, "X-Rate-Limit-Remaining")
                if status in (403, 429):
                    body = _text(self._transport.read_body(response))
                    throttled = is_throttle(status, body)
            except Exception as exc:
                self.pacer.mark_received(slot)
                error = self._transport_error(exc, shown, read_timeout)
                response = None
            finally:
                # Canvas released this request's hold before answering: free the slot as soon as the
                # headers are in, before reading and parsing the body.
                self.pacer.release(slot, remaining=remaining, throttled=throttled)
            if response is not None:
                try:
                    content = self._transport.read_body(response)
                except Exception as exc:  # cut off or timed out while reading the body
                    error = self._transport_error(exc, shown, read_timeout)
                else:
                    reply, error = self._interpret(response, content, shown)
                    if not body and status is not None and status >= 400:
                        body = _text(content)
            if log.isEnabledFor(logging.DEBUG):
                log.debug(
                    "%s %s -> %s in %.3fs",
                    method,
                    shown(),
                    status if status is not None else "no response",
                    time.monotonic() - started,
                )
            if error is None and reply is not None:
                if remaining is None:
                    self.pacer.grow()
                return reply
            assert error is not None
            self.metrics.add(throttled=int(throttled), errors=int(not throttled))
            transport = status is None or (200 <= status < 300)  # no response, or a cut-off body
            if not should_retry(
                status=None if transport else status,
                body=body,
                transport_error=transport and error.recoverable,
                retries_done=retries,
                max_retries=self.max_retries,
            ):
                raise error
            with self._rng_lock:
                delay = backoff_delay(retries, base=self.backoff_base, cap=self.backoff_cap, rng=self._rng)
            retries += 1
            log.info(
                "retrying %s %s in %.2fs after %s (retry %d of %d)",
                method,
                shown(),
                delay,
                error.error_type,
                retries,
                self.max_retries,
            )
            self.metrics.add(retries=1, wait_seconds=delay)
            if delay > 0:
                self._sleep(delay)

    def _transport_error(
        self, exc: Exception, shown: Callable[[], str], read_timeout: float
    ) -> CanvasAPIError:
        if isinstance(exc, urllib3.exceptions.HTTPError | requests.RequestException):
            return error_for_transport(exc, method="GET", url=shown(), read_timeout=read_timeout)
        # Anything else from the HTTP stack may quote headers: redact it.
        return CanvasConnectionError(
            f"{type(exc).__name__} while calling Canvas: {redact(str(exc), self._secrets)}",
            method="GET",
            url=shown(),
            recoverable=False,
        )

    def _interpret(
        self, response: urllib3.BaseHTTPResponse, content: bytes, shown: Callable[[], str]
    ) -> tuple[_Reply | None, CanvasAPIError | None]:
        """The parsed reply of a response, or the typed error it amounts to."""
        status = response.status
        method = "GET"
        if status >= 400:
            body = redact(_text(content), self._secrets)
            return None, error_for_response(status, body, method=method, url=shown())
        if 300 <= status < 400:
            location = redact_url(response.headers.get("Location", "?"), self._secrets)
            return None, CanvasAPIError(
                f"Canvas redirected {method} {shown()} to {location}: check {BASE_URL_ENV} "
                "(https, and the instance's own host name)",
                status=status,
                method=method,
                url=shown(),
            )
        return self._parse(response, content, shown)

    def _parse(
        self, response: urllib3.BaseHTTPResponse, content: bytes, shown: Callable[[], str]
    ) -> tuple[_Reply | None, CanvasAPIError | None]:
        try:
            # json.loads reads bytes directly (UTF-8, -16 or -32, as RFC 8259 allows).
            data = json.loads(content) if content else None
        except ValueError:
            ctype = response.headers.get("Content-Type", "")
            if "html" in ctype.lower():
                # A login or landing page: the base URL points at something that is not the Canvas API.
                return None, CanvasAPIError(
                    f"Canvas answered GET {shown()} with an HTML page instead of JSON: check {BASE_URL_ENV}",
                    status=response.status,
                    url=shown(),
                    recoverable=False,
                )
            return None, CanvasConnectionError(
                f"Canvas's response to GET {shown()} was cut off or is not valid JSON",
                status=response.status,
                url=shown(),
            )
        return _Reply(data, response.headers, shown, response.status), None

    # --- pagination -------------------------------------------------------------------------------------
    def _check_next(self, next_url: str, current: str) -> str:
        """Follow only links on the base URL's own origin: the token must never go anywhere else."""
        absolute = urljoin(current, next_url)
        if origin_of(absolute) != self._origin:
            shown = redact_url(absolute, self._secrets)
            raise CanvasAPIError(
                f"Canvas sent a pagination link to another origin ({shown}) than {self.base_url}; refusing "
                "to follow it with the token attached. Check that CANVAS_BASE_URL is the instance's "
                "canonical URL.",
                method="GET",
                url=shown,
            )
        return absolute

    def _paginate(
        self, path: str, params: Params | None = None, *, timeout: float | None = None
    ) -> list[Record]:
        """Every record of a list endpoint: per_page=100 on the first page, then `rel="next"` links only.

        Page URLs are never built: many Canvas collections use opaque bookmarks and have no `last` link.
        """
        url: str | None = self.api_url + path
        query: Params | None = [("per_page", str(PER_PAGE)), *(params or [])]
        records: list[Record] = []
        seen: set[str] = set()
        while url is not None:
            reply = self._get(url, query, timeout=timeout)
            if not isinstance(reply.data, list):
                raise CanvasAPIError(
                    f"Canvas answered GET {reply.url} with a {type(reply.data).__name__}, expected a list",
                    status=reply.status,
                    url=reply.url,
                )
            records.extend(r for r in reply.data if isinstance(r, dict))
            current = url
            next_link = parse_link_header(reply.headers.get("Link")).get("next")
            url, query = None, None
            if next_link:
                url = self._check_next(next_link, current)
                if url in seen:  # a server bug would otherwise loop for ever
                    raise CanvasAPIError(
                        f"Canvas's pagination repeated a page: {reply.url}",
                        status=reply.status,
                        url=reply.url,
                    )
                seen.add(url)
        return records

    def _get_object(self, path: str, params: Params | None = None, *, timeout: float | None = None) -> Record:
        reply = self._get(self.api_url + path, params or None, timeout=timeout)
        if not isinstance(reply.data, dict):
            raise CanvasAPIError(
                f"Canvas answered GET {reply.url} with a {type(reply.data).__name__}, expected an object",
                status=reply.status,
                url=reply.url,
            )
        return reply.data

    # --- domain methods ---------------------------------------------------------------------------------
    def list_courses(
        self,
        *,
        account_id: int | str | None = None,
        states: Sequence[str] = ("available", "completed"),
        enrollment_term_id: int | str | None = None,
        include: Sequence[str] = ("term", "total_students"),
        timeout: float | None = None,
    ) -> list[Record]:
        """Courses of an account (admin token) or, without `account_id`, the token's own courses."""
        params = _array("state[]", states) + _array("include[]", include)
        if account_id is not None:
            if enrollment_term_id is not None:
                params.append(("enrollment_term_id", str(enrollment_term_id)))
            return self._paginate(f"/accounts/{_seg(account_id)}/courses", params, timeout=timeout)
        return self._paginate("/courses", params, timeout=timeout)

    def get_course(
        self,
        course_id: int | str,
        *,
        include: Sequence[str] = ("term", "total_students"),
        timeout: float | None = None,
    ) -> Record:
        return self._get_object(f"/courses/{_seg(course_id)}", _array("include[]", include), timeout=timeout)

    def get_course_settings(self, course_id: int | str, *, timeout: float | None = None) -> Record:
        return self._get_object(f"/courses/{_seg(course_id)}/settings", timeout=timeout)

    def list_students(
        self,
        course_id: int | str,
        *,
        include: Sequence[str] = ("email",),
        enrollment_states: Sequence[str] = ("active", "invited", "completed", "inactive"),
        timeout: float | None = None,
    ) -> list[Record]:
        """Students of a course (`enrollment_state[]` is sent: Canvas defaults to active, invited)."""
        params = [
            ("enrollment_type[]", "student"),
            *_array("enrollment_state[]", enrollment_states),
            *_array("include[]", include),
        ]
        return self._paginate(f"/courses/{_seg(course_id)}/users", params, timeout=timeout)

    def list_enrollments(
        self,
        course_id: int | str,
        *,
        types: Sequence[str] | None = None,
        states: Sequence[str] = ALL_ENROLLMENT_STATES_BUT_DELETED,
        timeout: float | None = None,
    ) -> list[Record]:
        """Enrollments of a course. `state[]` is always sent: Canvas changed its default once."""
        if not states:
            raise ConfigurationError("list_enrollments needs at least one enrollment state", stage="extract")
        params = _array("type[]", types or ()) + _array("state[]", states)
        return self._paginate(f"/courses/{_seg(course_id)}/enrollments", params, timeout=timeout)

    def list_assignments(
        self, course_id: int | str, *, include: Sequence[str] = (), timeout: float | None = None
    ) -> list[Record]:
        return self._paginate(
            f"/courses/{_seg(course_id)}/assignments", _array("include[]", include), timeout=timeout
        )

    def list_modules(self, course_id: int | str, *, timeout: float | None = None) -> list[Record]:
        """Modules with their complete `items` lists.

        `include[]=items` inlines a module's items only when it has at most 100; for the others the items
        are fetched from `/modules/:id/items`, those fetches concurrently with each other (through the
        same pacer).
        """
        path = f"/courses/{_seg(course_id)}/modules"
        modules = self._paginate(path, [("include[]", "items")], timeout=timeout)
        missing = [i for i, m in enumerate(modules) if _items_missing(m)]
        if not missing:
            return modules

        def fetch(index: int) -> list[Record]:
            return self._paginate(f"{path}/{_seg(modules[index]['id'])}/items", timeout=timeout)

        for index, items in zip(missing, self._fan_out(fetch, missing), strict=True):
            modules[index] = {**modules[index], "items": items}
        return modules

    def list_student_summaries(self, course_id: int | str, *, timeout: float | None = None) -> list[Record]:
        """Per-student analytics. Raises CanvasNotFound when analytics is unavailable for the course."""
        return self._paginate(f"/courses/{_seg(course_id)}/analytics/student_summaries", timeout=timeout)

    # --- concurrency helper -----------------------------------------------------------------------------
    def _fan_out(self, fn: Callable[[int], list[Record]], args: Sequence[int]) -> list[list[Record]]:
        """Run `fn` over `args` concurrently (the calling thread does the first), results in order.

        Requests made by helper threads count towards the calling thread's `thread_requests()`.
        """
        if len(args) == 1 or self.max_in_flight == 1:
            return [fn(a) for a in args]
        parent = self._counter()

        def run(arg: int) -> list[Record]:
            previous = getattr(self._local, "counter", None)
            self._local.counter = parent
            try:
                return fn(arg)
            finally:
                self._local.counter = previous

        pool = self._pool()
        futures: list[Future[list[Record]]] = [pool.submit(run, a) for a in args[1:]]
        try:
            results = [fn(args[0])]
            results.extend(f.result() for f in futures)
        except BaseException:
            for f in futures:
                f.cancel()
            raise
        return results

    def _pool(self) -> ThreadPoolExecutor:
        with self._fanout_lock:
            if self._fanout is None:
                self._fanout = ThreadPoolExecutor(
                    max_workers=max(1, min(16, self.max_in_flight)), thread_name_prefix="canvas-fanout"
                )
            return self._fanout


def _array(key: str, values: Iterable[str]) -> Params:
    """Canvas array parameters are repeated `key[]=value` pairs."""
    return [(key, str(v)) for v in values]


def _seg(value: int | str) -> str:
    """One URL path segment (ids may be `sis_course_id:ABC` strings)."""
    return quote(str(value), safe=":")


def _items_missing(module: Record) -> bool:
    items = module.get("items")
    if not isinstance(items, list):
        return True
    count = module.get("items_count")
    return isinstance(count, int) and len(items) < count
