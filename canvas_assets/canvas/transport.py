"""The client's HTTP transport: one urllib3 pool per Canvas origin, and what a response becomes (straight
urllib3, not requests: its per-request CPU slowed the hot path, docs/canvas-api.md "Code")."""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from typing import Any
from urllib.parse import unquote, urlsplit

import certifi
import requests
import urllib3

from canvas_assets.errors import ConfigurationError

# The largest body the client takes, decompressed. Canvas's pages are at most 100 records: a few hundred
# KB, a few MB with long HTML descriptions. Above this a body is a fault or an attack (a gzip body of 39 KB
# can expand to 20 MB of JSON), and the request fails with a Canvas error without holding more than this.
MAX_BODY_BYTES = 64 * 1024 * 1024
BODY_PIECE_BYTES = 1024 * 1024  # what one read returns at most (decompressed): the body is held this finely


class BodyTooLarge(Exception):
    """A response body over the limit (decompressed)."""

    def __init__(self, limit: int) -> None:
        super().__init__(f"the response body exceeded {limit // (1024 * 1024)} MB")
        self.limit = limit


class BodyTooSlow(Exception):
    """A response body still arriving at the caller's deadline."""

    def __init__(self, received: int) -> None:
        super().__init__(f"the response body was still arriving after {received} bytes")
        self.received = received


class Reply:
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


class Transport:
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
            proxy_manager(proxy, options) if proxy else urllib3.PoolManager(**options)
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
    def read_body(
        response: urllib3.BaseHTTPResponse, *, limit: int = MAX_BODY_BYTES, give_up: float | None = None
    ) -> bytes:
        """The whole (decompressed) body, read a piece at a time: at most `limit` bytes once decompressed
        (`BodyTooLarge` past it: a gzip body can expand a thousandfold, and only what is already read is
        held), and done by the monotonic instant `give_up` (`BodyTooSlow` past it: the read timeout bounds
        each socket read, not a body sent a byte at a time). The connection goes back to the pool, or is
        closed when the body was not read to its end."""
        pieces: list[bytes] = []
        size = 0
        complete = False
        try:
            while True:
                piece = response.read1(BODY_PIECE_BYTES)
                if not piece:
                    complete = True
                    break
                size += len(piece)
                if size > limit:
                    raise BodyTooLarge(limit)
                pieces.append(piece)
                if give_up is not None and time.monotonic() > give_up:
                    raise BodyTooSlow(size)
        finally:
            if not complete:
                response.close()  # never hand a half-read connection back to the pool
            response.release_conn()
        return pieces[0] if len(pieces) == 1 else b"".join(pieces)

    def close(self) -> None:
        self.manager.clear()

    def __repr__(self) -> str:
        return f"Transport(origin={self.origin!r}, authorization=[REDACTED])"


def proxy_manager(proxy: str, options: dict[str, Any]) -> urllib3.PoolManager:
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


def body_text(content: bytes | None) -> str:
    """A body as text (an error body need not be valid UTF-8)."""
    return (content or b"").decode("utf-8", "replace")


def float_header(headers: Any, name: str) -> float | None:
    value = headers.get(name)
    try:
        return None if value is None else float(value)
    except (TypeError, ValueError):
        return None
