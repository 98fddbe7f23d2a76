"""The HTTPS receiver (`canvas-assets live --https HOST:PORT`): Canvas's HTTPS delivery of Live Events, one
event per POST, as a JWT verified against the JWKS (refetched, at a bounded rate, for an unknown `kid`); the
event is committed to the inbox before the answer. Status codes and why: docs/operations.md, "Subscribe".
Plain HTTP is served only on loopback; any other address needs a certificate and key.
"""

from __future__ import annotations

import ipaddress
import json
import logging
import ssl
import threading
import time
import urllib.request
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import urlsplit

import jwt
import sqlalchemy as sa

from canvas_assets.live import inbox
from canvas_assets.live.events import MAX_EVENT_BYTES, BadEvent, LiveEvent, parse_event

log = logging.getLogger(__name__)

JWKS_MIN_REFETCH_S = 10.0
JWKS_TIMEOUT_S = 10.0
JWKS_MAX_BYTES = 256 * 1024
REQUEST_TIMEOUT_S = 15.0  # Canvas gives up after 15 s: a slower client is not Canvas


class Unauthorized(Exception):
    """The request's signature is missing, malformed, or does not verify."""


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


class JwksKeys:
    """The signing keys of a JWKS URL by `kid`, fetched on first use and again (bounded) on an unknown kid."""

    def __init__(self, url: str, *, min_refetch_s: float = JWKS_MIN_REFETCH_S) -> None:
        parts = urlsplit(url)
        if parts.scheme not in ("https", "http") or not parts.hostname:
            raise ValueError(f"the JWKS URL {url[:100]!r} is not an http(s) URL")
        if parts.scheme == "http" and not is_loopback(parts.hostname):
            raise ValueError(f"the JWKS URL must use https (http only on loopback): {url[:100]!r}")
        self.url = url
        self.min_refetch_s = min_refetch_s
        self.fetches = 0
        self._keys: dict[str, Any] = {}
        self._fetched_at = float("-inf")
        self._lock = threading.Lock()

    def _fetch(self) -> None:
        with urllib.request.urlopen(self.url, timeout=JWKS_TIMEOUT_S) as response:
            data = response.read(JWKS_MAX_BYTES + 1)
        if len(data) > JWKS_MAX_BYTES:
            raise ValueError(f"the JWKS at {self.url} is over {JWKS_MAX_BYTES} bytes")
        keys: dict[str, Any] = {}
        for entry in json.loads(data).get("keys", []):
            try:
                jwk = jwt.PyJWK(entry)
            except (jwt.PyJWKError, jwt.InvalidKeyError, KeyError, TypeError, ValueError):
                continue
            if jwk.key_id:
                keys[jwk.key_id] = jwk.key
        self._keys = keys  # rotated-out keys go with the old set
        self.fetches += 1

    def key(self, kid: str) -> Any | None:
        with self._lock:
            if kid not in self._keys and time.monotonic() - self._fetched_at >= self.min_refetch_s:
                self._fetched_at = time.monotonic()
                try:
                    self._fetch()
                except Exception as exc:  # the JWKS host is away: known keys still verify
                    log.warning("live: fetching the JWKS failed (%s: %s)", type(exc).__name__, exc)
            return self._keys.get(kid)


def verify_jwt(token: str, keys: JwksKeys) -> dict[str, Any]:
    """The claims of an RS256 token signed by a key of the JWKS; Unauthorized otherwise."""
    try:
        header = jwt.get_unverified_header(token)
    except jwt.PyJWTError:
        raise Unauthorized("the body is not a JWT") from None
    if header.get("alg") != "RS256":
        raise Unauthorized(f"the JWT's algorithm is {header.get('alg')!r}, not RS256")
    kid = header.get("kid")
    if not isinstance(kid, str) or not kid:
        raise Unauthorized("the JWT header has no kid")
    key = keys.key(kid)
    if key is None:
        raise Unauthorized(f"no key {kid[:64]!r} in the JWKS")
    try:
        claims = jwt.decode(token, key, algorithms=["RS256"], options={"verify_aud": False})
    except jwt.PyJWTError as exc:
        raise Unauthorized(f"the JWT does not verify ({type(exc).__name__})") from None
    return dict(claims)


def event_from_request(body: bytes, *, keys: JwksKeys | None, allow_unsigned: bool) -> LiveEvent:
    """The live event a POST carries (signed JWT, or JSON when unsigned bodies are allowed)."""
    text = body.decode("utf-8", "replace").strip()
    if text.startswith("{"):
        if not allow_unsigned:
            raise Unauthorized("unsigned event: turn on Sign Payload in the Data Services subscription")
        return parse_event(body)
    if keys is None:
        raise Unauthorized("signed event but no JWKS URL configured")
    claims = verify_jwt(text, keys)
    event = {"metadata": claims.get("metadata"), "body": claims.get("body")}
    return parse_event(json.dumps(event, separators=(",", ":"), ensure_ascii=False))


class GroupCommitter:
    """Commits the events of concurrent requests together: each request waits for the transaction that
    holds its event (one commit, and one fsync, for all the requests that arrived meanwhile), so the
    answer still follows the commit and the throughput grows with Canvas's concurrency."""

    MAX_GROUP = 200

    def __init__(self, engine: sa.Engine) -> None:
        self.engine = engine
        self._waiting: list[tuple[LiveEvent, dict[str, Any]]] = []
        self._cv = threading.Condition()
        self._busy = False

    def commit(self, event: LiveEvent) -> bool | None:
        """True when stored now, False when already stored, None when the commit failed."""
        slot: dict[str, Any] = {}
        with self._cv:
            self._waiting.append((event, slot))
            while "new" not in slot:
                if not self._busy:
                    self._busy = True
                    group, self._waiting = self._waiting[: self.MAX_GROUP], self._waiting[self.MAX_GROUP :]
                    self._cv.release()
                    try:
                        self._store(group)
                    finally:
                        self._cv.acquire()
                        self._busy = False
                        self._cv.notify_all()
                else:
                    self._cv.wait(REQUEST_TIMEOUT_S)
        return slot["new"]  # type: ignore[no-any-return]

    def _store(self, group: list[tuple[LiveEvent, dict[str, Any]]]) -> None:
        try:
            new = inbox.store(self.engine, [e for e, _ in group], source="https")
        except Exception as exc:
            log.warning("live: storing HTTPS events failed (%s); answered 503", type(exc).__name__)
            for _, slot in group:
                slot["new"] = None
            return
        seen: set[str] = set()
        for event, slot in group:
            slot["new"] = event.key in new and event.key not in seen
            seen.add(event.key)


class LiveReceiver:
    """An HTTP(S) server storing posted events in the inbox; `on_stored` is called after each commit."""

    def __init__(
        self,
        engine: sa.Engine,
        host: str,
        port: int,
        *,
        jwks_url: str | None,
        allow_unsigned: bool = False,
        certfile: str | None = None,
        keyfile: str | None = None,
        on_stored: Callable[[], None] | None = None,
        jwks_min_refetch_s: float = JWKS_MIN_REFETCH_S,
    ) -> None:
        if certfile is None and not is_loopback(host):
            raise ValueError(
                f"plain HTTP only on loopback: to listen on {host}, give --certfile and --keyfile "
                "(or listen on 127.0.0.1 behind a TLS proxy)"
            )
        if jwks_url is None and not allow_unsigned:
            raise ValueError("give the JWKS URL that signs the events (--jwks-url), or allow unsigned events")
        self.engine = engine
        self.keys = JwksKeys(jwks_url, min_refetch_s=jwks_min_refetch_s) if jwks_url else None
        self.allow_unsigned = allow_unsigned
        self.on_stored = on_stored
        self.committer = GroupCommitter(engine)
        self.counts = {"stored": 0, "duplicate": 0, "unauthorized": 0, "bad": 0, "failed": 0}
        self._lock = threading.Lock()
        self.server = ThreadingHTTPServer((host, port), self._handler())
        self.server.daemon_threads = True
        if certfile is not None:
            context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
            context.load_cert_chain(certfile, keyfile)
            self.server.socket = context.wrap_socket(self.server.socket, server_side=True)
        self._thread: threading.Thread | None = None

    @property
    def url(self) -> str:
        host, port = str(self.server.server_address[0]), int(self.server.server_address[1])
        scheme = "https" if isinstance(self.server.socket, ssl.SSLSocket) else "http"
        return f"{scheme}://{host}:{port}/"

    def count(self, what: str) -> None:
        with self._lock:
            self.counts[what] += 1

    def handle(self, body: bytes) -> tuple[int, str]:
        """(status, message) for one posted body."""
        try:
            event = event_from_request(body, keys=self.keys, allow_unsigned=self.allow_unsigned)
        except Unauthorized as exc:
            self.count("unauthorized")
            return 401, str(exc)
        except BadEvent as exc:
            self.count("bad")
            return 400, str(exc)
        new = self.committer.commit(event)
        if new is None:
            self.count("failed")
            return 503, "the warehouse is unavailable; retry"
        self.count("stored" if new else "duplicate")
        if self.on_stored is not None:
            self.on_stored()
        return 200, "stored" if new else "already stored"

    def _handler(self) -> type[BaseHTTPRequestHandler]:
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            timeout = REQUEST_TIMEOUT_S

            def _answer(self, status: int, message: str) -> None:
                data = json.dumps({"status": status, "message": message}).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def do_POST(self) -> None:
                length = self.headers.get("Content-Length")
                if length is None or not length.isdigit():
                    self._answer(411, "a Content-Length is required")
                    return
                if int(length) > MAX_EVENT_BYTES:
                    self._answer(413, "an event is at most 1 MB")
                    self.close_connection = True
                    return
                self._answer(*receiver.handle(self.rfile.read(int(length))))

            def do_GET(self) -> None:
                self._answer(200, "canvas-assets live receiver") if self.path == "/health" else self._answer(
                    404, "POST events here"
                )

            def log_message(self, format: str, *args: Any) -> None:
                return  # one line per event would flood the log; counts are reported instead

        return Handler

    def start(self) -> LiveReceiver:
        self._thread = threading.Thread(target=self.server.serve_forever, name="live-https", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()
