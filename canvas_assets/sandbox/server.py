"""The sandbox's HTTP side: a threaded loopback server speaking the Canvas REST API.

Request life cycle (mirrors Canvas): authenticate (401 bodies of docs/canvas-api.md §5), charge the
token's bucket the up-front cost or refuse (429 hosted / 403 text legacy), sleep the simulated
latency, maybe fail (injected or random fault), serve the page, then replace the up-front cost by
the real one and report it in `X-Request-Cost` / `X-Rate-Limit-Remaining`.

Cost model: `cost_base + cost_per_record * records serialised` (defaults 0.005 + 0.0003 per
record; a 100-record page costs 0.035, an inlined module counts its items as records). Faults and
errors cost `cost_base`. Latency does not add to the cost (Canvas charges CPU and DB time).
"""

from __future__ import annotations

import base64
import binascii
import bisect
import contextlib
import json
import math
import signal
import socket
import threading
from collections import Counter
from collections.abc import Callable, Iterable
from datetime import datetime
from functools import lru_cache
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from operator import itemgetter
from typing import Any
from urllib.parse import parse_qsl, quote_plus, urlencode, urlsplit

from canvas_assets.sandbox.config import SandboxConfig
from canvas_assets.sandbox.data import ENROLLMENT_STATES, ENROLLMENT_TYPES, Record, SandboxData, stable_int
from canvas_assets.sandbox.faults import FaultPlan
from canvas_assets.sandbox.throttle import LeakyBucket

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
REASONS = {
    200: "OK",
    400: "Bad Request",
    401: "Unauthorized",
    403: "Forbidden",
    404: "Not Found",
    429: "Too Many Requests",
    500: "Internal Server Error",
    503: "Service Unavailable",
}

COURSE_STATE_ALIASES = {"created": "unpublished", "claimed": "unpublished"}
COURSE_LIST_STATES = ("unpublished", "available", "completed", "deleted", "created", "claimed", "all")
ENROLLMENT_STATE_ALIASES = {
    "current_and_invited": ("active", "invited"),
    "current_and_future": ("active", "invited", "creation_pending"),
    "current_and_concluded": ("active", "completed"),
}
USER_ENROLLMENT_TYPES = {
    "student": ("StudentEnrollment", "StudentViewEnrollment"),
    "student_view": ("StudentViewEnrollment",),
    "teacher": ("TeacherEnrollment",),
    "ta": ("TaEnrollment",),
    "observer": ("ObserverEnrollment",),
    "designer": ("DesignerEnrollment",),
}
MAX_INLINE_ITEMS = 100
LIMITED_HIDDEN = ("sis_user_id", "sis_course_id", "integration_id", "login_id", "total_activity_time")
_USER_ORDER = itemgetter("sortable_name", "id")  # /courses/:id/users order, also its bookmark key


class ApiError(Exception):
    def __init__(self, status: int, body: Json, headers: Iterable[tuple[str, str]] = ()) -> None:
        super().__init__(status)
        self.status = status
        self.body = body
        self.headers = list(headers)


def bad_request(message: str) -> ApiError:
    return ApiError(400, {"errors": [{"message": message}]})


class Response:
    __slots__ = ("body", "content_type", "headers", "list_key", "records", "status")

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


def json_response(status: int, obj: Json, **kw: Any) -> Response:
    return Response(status, json.dumps(obj, ensure_ascii=False).encode(), **kw)


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


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    block_on_close = False
    allow_reuse_address = True
    request_queue_size = 512
    sandbox: CanvasSandbox


class _Headers(dict[str, str]):
    """Request headers by lower-cased name (the first of repeated headers wins, like `email.message`)."""

    def get(self, name: str, default: Any = None) -> Any:  # type: ignore[override]
        return super().get(name.lower(), default)

    def __getitem__(self, name: str) -> str:
        return super().__getitem__(name.lower())

    def __contains__(self, name: object) -> bool:
        return isinstance(name, str) and super().__contains__(name.lower())


_MAX_HEADERS = 100


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    disable_nagle_algorithm = True
    server: _Server
    raw_requestline: bytes

    def setup(self) -> None:
        super().setup()
        self.server.sandbox._track(self.connection, add=True)

    def finish(self) -> None:
        try:
            super().finish()
        finally:
            self.server.sandbox._track(self.connection, add=False)

    def log_message(self, format: str, *args: Any) -> None:  # quiet: no request log on stderr
        pass

    def parse_request(self) -> bool:
        """A lean parser for the usual `GET /path HTTP/1.1` and plain headers.

        The standard library's parser feeds headers through the `email` package, which cost more CPU
        per request than the rest of the sandbox's HTTP handling. Anything unusual in the request line
        (HTTP/0.9, /2, malformed) is left to it; the semantics (keep-alive, `Connection: close`, errors
        for oversized or too many header lines) are the same.
        """
        words = self.raw_requestline.rstrip(b"\r\n").split()
        if len(words) != 3 or words[2] not in (b"HTTP/1.1", b"HTTP/1.0"):
            return bool(super().parse_request())
        self.requestline = str(self.raw_requestline, "iso-8859-1").rstrip("\r\n")
        command, path, version = (str(w, "iso-8859-1") for w in words)
        self.command, self.path, self.request_version = command, path, version
        if path.startswith("//"):
            self.path = "/" + path.lstrip("/")  # as the standard parser does (gh-87389)
        headers = _Headers()
        last: str | None = None
        while True:
            line = self.rfile.readline(65537)
            if len(line) > 65536:
                self.send_error(431, "Line too long")
                return False
            if line in (b"\r\n", b"\n", b""):
                break
            if len(headers) >= _MAX_HEADERS:
                self.send_error(431, "Too many headers")
                return False
            text = str(line, "iso-8859-1")
            if text[0] in " \t" and last is not None:  # obsolete line folding continues the previous one
                headers[last] = f"{dict.__getitem__(headers, last)} {text.strip()}"
                continue
            name, sep, value = text.partition(":")
            if not sep:
                self.send_error(400, "Bad header line")
                return False
            last = name.strip().lower()
            headers.setdefault(last, value.strip())
        self.headers = headers  # type: ignore[assignment]
        connection = headers.get("connection", "").lower()
        self.close_connection = version != "HTTP/1.1"
        if connection == "close":
            self.close_connection = True
        elif connection == "keep-alive":
            self.close_connection = False
        return True

    def do_GET(self) -> None:
        self.server.sandbox._serve(self)


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


def _parse_time(raw: str | None, name: str) -> datetime | None:
    if raw is None:
        return None
    try:
        return datetime.fromisoformat(raw.replace("Z", "+00:00"))
    except ValueError:
        raise bad_request(f"{name} must be an ISO 8601 timestamp") from None


class CanvasSandbox:
    """A simulated Canvas served over real HTTP on loopback.

    Use as a context manager (or `start()`/`stop()`). `base_url` is `http://127.0.0.1:PORT` (the
    API lives under `/api/v1`), `token` is an admin token, `limited_token` a teacher token that is
    refused (401 unauthorized) on `/accounts/:id/courses` and does not see SIS ids/logins or
    activity time. `data` is the live ground truth.
    """

    def __init__(
        self, config: SandboxConfig | None = None, *, host: str = "127.0.0.1", port: int = 0
    ) -> None:
        self.config = config or SandboxConfig()
        self._server = _Server((host, port), _Handler, bind_and_activate=True)
        self._server.sandbox = self
        self.host = host
        self.port = int(self._server.server_address[1])
        self.base_url = f"http://{self.host}:{self.port}"
        self.api_url = self.base_url + "/api/v1"
        self.data = SandboxData(self.config, self.base_url)
        seed = self.config.seed
        self.token = f"1~sandbox{stable_int(seed, 'admin-token'):016x}"
        self.limited_token = f"1~limited{stable_int(seed, 'limited-token'):016x}"
        self._principals = {
            self.token: Principal(self.token, self.data.admin_user_id, "admin"),
            self.limited_token: Principal(self.limited_token, self.data.limited_user_id, "limited"),
        }
        self.faults = FaultPlan(seed, self.config.fault_rate, self.config.fault_kinds)
        self._buckets: dict[str, LeakyBucket] = {}
        self._lock = threading.Lock()
        self._stopping = threading.Event()
        self._connections: set[socket.socket] = set()
        self._thread: threading.Thread | None = None
        self._seq = 0
        self._in_flight = 0
        self.reset_stats()
        self._routes: list[tuple[str, list[str], Callable[..., Response]]] = [
            ("/users/self", ["users", "self"], self._users_self),
            ("/courses", ["courses"], self._courses),
            ("/accounts/:id/courses", ["accounts", "#", "courses"], self._account_courses),
            ("/courses/:id", ["courses", "#"], self._course),
            ("/courses/:id/settings", ["courses", "#", "settings"], self._settings),
            ("/courses/:id/users", ["courses", "#", "users"], self._course_users),
            ("/courses/:id/enrollments", ["courses", "#", "enrollments"], self._enrollments),
            ("/courses/:id/assignments", ["courses", "#", "assignments"], self._assignments),
            ("/courses/:id/modules", ["courses", "#", "modules"], self._modules),
            ("/courses/:id/modules/:id/items", ["courses", "#", "modules", "#", "items"], self._module_items),
            (
                "/courses/:id/analytics/student_summaries",
                ["courses", "#", "analytics", "student_summaries"],
                self._summaries,
            ),
            (
                "/courses/:id/students/submissions",
                ["courses", "#", "students", "submissions"],
                self._submissions,
            ),
        ]

    # ------------------------------------------------------------------ lifecycle
    def start(self) -> CanvasSandbox:
        if self._thread is None:
            self._thread = threading.Thread(
                target=self._server.serve_forever,
                kwargs={"poll_interval": 0.05},
                name="canvas-sandbox",
                daemon=True,
            )
            self._thread.start()
        return self

    def stop(self) -> None:
        """Stop serving; wakes sleeping requests and closes kept-alive connections. Never hangs."""
        self._stopping.set()
        if self._thread is not None:
            self._server.shutdown()
            self._thread.join(timeout=5)
            self._thread = None
        with self._lock:
            conns = list(self._connections)
        for conn in conns:
            with contextlib.suppress(OSError):
                conn.shutdown(socket.SHUT_RDWR)
        self._server.server_close()

    def __enter__(self) -> CanvasSandbox:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def _track(self, conn: socket.socket, *, add: bool) -> None:
        with self._lock:
            if add:
                self._connections.add(conn)
            else:
                self._connections.discard(conn)

    # ------------------------------------------------------------------ test hooks and mutations
    def inject(self, kind: str, count: int = 1, path_contains: str | None = None) -> None:
        """Fail the next `count` requests (whose path+query contains `path_contains`) with `kind`:
        "500", "503", "drop" (close without answering), "slow" (answer after `slow_seconds`),
        "throttle" (the mode's throttle refusal) or "forbidden" (a non-throttle 403, JSON body)."""
        self.faults.inject(kind, count, path_contains)

    def clear_faults(self) -> None:
        self.faults.clear()

    def drop_enrollment(self, course_id: int, enrollment_id: int | None = None) -> int:
        return self.data.drop_enrollment(course_id, enrollment_id)

    def change_score(
        self, course_id: int, enrollment_id: int | None = None, score: float | None = None
    ) -> int:
        return self.data.change_score(course_id, enrollment_id, score)

    def delete_assignment(self, course_id: int, assignment_id: int | None = None) -> int:
        return self.data.delete_assignment(course_id, assignment_id)

    def add_course(self, name: str | None = None, students: int = 5, state: str = "available") -> int:
        return self.data.add_course(name, students, state)

    def rename_user(self, user_id: int, name: str) -> int:
        return self.data.rename_user(user_id, name)

    def remove_course(self, course_id: int) -> int:
        return self.data.remove_course(course_id)

    def forbid_course(self, course_id: int) -> int:
        return self.data.forbid_course(course_id)

    def corrupt_record(self, entity: str, course_id: int) -> dict[str, Any]:
        return self.data.corrupt_record(entity, course_id)

    # ------------------------------------------------------------------ statistics
    def reset_stats(self) -> None:
        with self._lock:
            self._requests = 0
            self._by_endpoint: Counter[str] = Counter()
            self._statuses: Counter[str] = Counter()
            self._faults: Counter[str] = Counter()
            self._throttled = 0
            self._peak = self._in_flight
            self._total_cost = 0.0
            self._total_latency = 0.0
            self._lists: dict[str, list[float]] = {}  # list key -> [pages, latency seconds]

    def stats(self) -> dict[str, Any]:
        """Counters since the last `reset_stats()`.

        Keys: requests, by_endpoint (template such as `/courses/:id/enrollments` -> count),
        statuses ("200", "429", ..., "dropped" -> count), throttled, faults (kind -> count),
        in_flight, peak_in_flight, total_cost, total_latency_s (simulated latency and slow faults
        slept), lists (list key = path + query without page/per_page -> {pages, latency_s}),
        max_pages_per_list, longest_chain_s, params (the throttle/latency/fault/cost settings).
        """
        cfg = self.config
        with self._lock:
            lists = {k: {"pages": int(v[0]), "latency_s": v[1]} for k, v in self._lists.items()}
            return {
                "requests": self._requests,
                "by_endpoint": dict(self._by_endpoint),
                "statuses": dict(self._statuses),
                "throttled": self._throttled,
                "faults": dict(self._faults),
                "in_flight": self._in_flight,
                "peak_in_flight": self._peak,
                "total_cost": self._total_cost,
                "total_latency_s": self._total_latency,
                "lists": lists,
                "max_pages_per_list": max((v["pages"] for v in lists.values()), default=0),
                "longest_chain_s": max((v["latency_s"] for v in lists.values()), default=0.0),
                "params": {
                    "throttle": cfg.throttle,
                    "hwm": cfg.hwm,
                    "leak_rate": cfg.leak_rate,
                    "upfront": cfg.upfront_cost,
                    "latency_ms": cfg.latency_ms,
                    "latency_jitter": cfg.latency_jitter,
                    "fault_rate": cfg.fault_rate,
                    "slow_seconds": cfg.slow_seconds,
                    "per_page_max": cfg.per_page_max,
                    "cost_base": cfg.cost_base,
                    "cost_per_record": cfg.cost_per_record,
                    "seed": cfg.seed,
                    "scale": cfg.scale,
                    "courses": cfg.course_count,
                },
            }

    def lower_bound_seconds(self) -> float:
        """DESIGN.md §3: the fastest any client could have fetched what was served since reset.

        max of (a) total cost / leak rate, (b) total latency / floor(hwm / up-front cost) (the
        requests that fit under the mark at once), (c) the longest chain of pages of one list.
        With the throttle off, (a) does not apply and (b) assumes 16 requests at once.
        """
        s = self.stats()
        chain = s["longest_chain_s"]
        if self.config.throttle == "off":
            return max(chain, s["total_latency_s"] / 16)
        fit = max(1, math.floor(self.config.hwm / self.config.upfront_cost))
        return max(s["total_cost"] / self.config.leak_rate, s["total_latency_s"] / fit, chain)

    def bucket_remaining(self, token: str | None = None) -> float:
        return self._bucket(token or self.token).remaining()

    def _bucket(self, token: str) -> LeakyBucket:
        with self._lock:
            b = self._buckets.get(token)
            if b is None:
                cfg = self.config
                b = LeakyBucket(cfg.hwm, cfg.leak_rate, cfg.upfront_cost, enforce=cfg.throttle != "off")
                self._buckets[token] = b
            return b

    # ------------------------------------------------------------------ request pipeline
    def _serve(self, handler: _Handler) -> None:
        with self._lock:
            self._seq += 1
            seq = self._seq
            self._requests += 1
            self._in_flight += 1
            self._peak = max(self._peak, self._in_flight)
        try:
            resp = self._process(handler, seq)
        except Exception:  # a sandbox bug must still answer like Canvas would
            resp = json_response(
                500, {"errors": [{"message": "An error occurred.", "error_code": "sandbox_bug"}]}
            )
        finally:
            with self._lock:
                self._in_flight -= 1
        with self._lock:
            self._statuses["dropped" if resp is None else str(resp.status)] += 1
        if resp is None:
            handler.close_connection = True
            with contextlib.suppress(OSError):
                handler.connection.shutdown(socket.SHUT_RDWR)
            return
        head = [f"HTTP/1.1 {resp.status} {REASONS.get(resp.status, 'Error')}"]
        head.append(f"Content-Type: {resp.content_type}")
        head.append(f"Content-Length: {len(resp.body)}")
        head.extend(f"{k}: {v}" for k, v in resp.headers)
        head.append("Connection: close" if handler.close_connection else "Connection: keep-alive")
        try:
            handler.wfile.write(("\r\n".join(head) + "\r\n\r\n").encode("latin-1") + resp.body)
            handler.wfile.flush()
        except OSError:
            handler.close_connection = True

    def _route(self, path: str) -> tuple[str, int | None, int | None, Callable[..., Response]] | None:
        if not path.startswith("/api/v1/"):
            return None
        parts = [p for p in path[len("/api/v1/") :].split("/") if p]
        for template, pattern, fn in self._routes:
            if len(pattern) != len(parts):
                continue
            ids: list[int] = []
            for pat, part in zip(pattern, parts, strict=True):
                if pat == "#":
                    if not part.isdigit():
                        break
                    ids.append(int(part))
                elif pat != part:
                    break
            else:
                return template, ids[0] if ids else None, ids[1] if len(ids) > 1 else None, fn
        return None

    def _process(self, handler: _Handler, seq: int) -> Response | None:
        cfg = self.config
        split = urlsplit(handler.path)
        route = self._route(split.path)
        template = route[0] if route else "unknown"
        with self._lock:
            self._by_endpoint[template] += 1

        # authentication (Bearer header; access_token query parameter is accepted like Canvas)
        token: str | None = None
        auth = handler.headers.get("Authorization")
        if auth:
            scheme, _, value = auth.partition(" ")
            if scheme.lower() == "bearer" and value.strip():
                token = value.strip()
        if token is None:
            for k, v in parse_qsl(split.query):
                if k == "access_token":
                    token = v
        if token is None:
            return json_response(401, UNAUTHENTICATED, headers=[WWW_AUTH])
        principal = self._principals.get(token)
        if principal is None:
            return json_response(401, INVALID_TOKEN, headers=[WWW_AUTH])

        bucket = self._bucket(token)
        fault = self.faults.pick(seq, handler.path)
        if fault == "throttle" or not bucket.admit():
            with self._lock:
                self._throttled += 1
                if fault:
                    self._faults[fault] += 1
            rate_headers = [("X-Request-Cost", "0.0"), ("X-Rate-Limit-Remaining", "0.0")]
            if cfg.throttle == "legacy":
                body = b"403 Forbidden (Rate Limit Exceeded)"
                return Response(403, body, content_type="text/plain; charset=utf-8", headers=rate_headers)
            body = b"429 Too Many Requests (Rate Limit Exceeded)"
            return Response(429, body, content_type="text/plain; charset=utf-8", headers=rate_headers)

        resp: Response | None = None
        cost = cfg.cost_base
        sleep = self._latency(seq)
        if fault:
            with self._lock:
                self._faults[fault] += 1
        if fault == "slow":
            sleep += cfg.slow_seconds
        try:
            if sleep > 0:
                self._stopping.wait(sleep)
            if fault == "drop":
                return None
            if fault in ("500", "503"):
                code = "internal_server_error" if fault == "500" else "service_unavailable"
                resp = json_response(
                    int(fault), {"errors": [{"message": "An error occurred.", "error_code": code}]}
                )
            elif fault == "forbidden":
                resp = json_response(403, FORBIDDEN)
            elif route is None:
                resp = json_response(404, NOT_FOUND)
            else:
                _, id1, id2, fn = route
                req = Request(split.path, split.query, principal)
                try:
                    with self.data.lock:
                        resp = fn(req, id1, id2)
                except ApiError as exc:
                    resp = json_response(exc.status, exc.body, headers=exc.headers)
                cost += cfg.cost_per_record * resp.records
            return resp
        finally:
            remaining = bucket.finish(cost)
            with self._lock:
                self._total_cost += cost
                self._total_latency += sleep
                if resp is not None and resp.list_key is not None and resp.status == 200:
                    entry = self._lists.setdefault(resp.list_key, [0, 0.0])
                    entry[0] += 1
                    entry[1] += sleep
            if resp is not None:
                resp.headers.append(("X-Request-Cost", f"{cost:.6f}"))
                resp.headers.append(("X-Rate-Limit-Remaining", f"{remaining:.6f}"))

    def _latency(self, seq: int) -> float:
        cfg = self.config
        if cfg.latency_ms <= 0:
            return 0.0
        u = (stable_int(cfg.seed, "latency", seq) % 2_000_001) / 1_000_000 - 1.0  # in [-1, 1]
        return max(0.0, cfg.latency_ms * (1 + cfg.latency_jitter * u) / 1000)

    # ------------------------------------------------------------------ pagination
    def _per_page(self, req: Request) -> int:
        pp = req.integer("per_page")
        if pp is None or pp <= 0:
            return 10  # Canvas's default: clients that forget per_page silently get 10 records
        return min(pp, self.config.per_page_max)

    def _link(self, req: Request, page: str, per_page: int) -> str:
        return f"{req.link_prefix(self.base_url)}page={quote_plus(page, safe=':')}&per_page={per_page}"

    def _links(self, req: Request, rels: list[tuple[str, str]], per_page: int) -> tuple[str, str]:
        return ("Link", ",".join(f'<{self._link(req, page, per_page)}>; rel="{rel}"' for rel, page in rels))

    def _numbered(self, req: Request, items: list[Record], render: Callable[[Record], Record]) -> Response:
        per_page = self._per_page(req)
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

    def _bookmarked(
        self, req: Request, items: list[Record], key: Callable[[Record], tuple[Any, ...]],
        render: Callable[[Record], Record],
    ) -> Response:  # fmt: skip
        """Bookmark pagination: keyset on `key` (items must be sorted by it); no `last` link."""
        per_page = self._per_page(req)
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

    def _list_response(
        self, req: Request, chunk: list[Record], rels: list[tuple[str, str]], per_page: int
    ) -> Response:
        records = len(chunk) + sum(
            len(r.get("items") or ()) for r in chunk if isinstance(r.get("items"), list)
        )
        return json_response(
            200, chunk, headers=[self._links(req, rels, per_page)], records=records, list_key=req.list_key()
        )

    # ------------------------------------------------------------------ serialisers
    def _course_json(self, c: Record, inc: set[str], principal: Principal) -> Record:
        d = self.data
        out = {k: v for k, v in c.items() if k not in ("syllabus_body", "public_description")}
        if principal.limited:
            for k in LIMITED_HIDDEN:
                out.pop(k, None)
        if "syllabus_body" in inc:
            out["syllabus_body"] = c["syllabus_body"]
        if "public_description" in inc:
            out["public_description"] = c["public_description"]
        if "term" in inc:
            t = d.terms[c["enrollment_term_id"]]
            out["term"] = {k: t[k] for k in ("id", "name", "start_at", "end_at", "workflow_state")}
        if "total_students" in inc:
            out["total_students"] = d.total_students(c["id"])
        if "concluded" in inc:
            out["concluded"] = c["workflow_state"] == "completed"
        if "account_name" in inc:
            out["account_name"] = d.accounts[c["account_id"]]["name"]
        if "teachers" in inc:
            out["teachers"] = [
                {
                    "id": e["user_id"],
                    "display_name": e["user"]["short_name"],
                    "avatar_image_url": d.users[e["user_id"]]["avatar_url"],
                    "html_url": f"{self.base_url}/courses/{c['id']}/users/{e['user_id']}",
                }
                for e in d.enrollments_of(c["id"], ("active", "invited", "completed"), ["TeacherEnrollment"])
            ]
        if "sections" in inc:
            s = d.sections[c["id"]]
            out["sections"] = [{"id": s["id"], "name": s["name"], "start_at": None, "end_at": None}]
        return out

    def _user_json(self, u: Record, inc: set[str], principal: Principal) -> Record:
        out = {
            k: u[k]
            for k in (
                "id",
                "name",
                "created_at",
                "sortable_name",
                "short_name",
                "sis_user_id",
                "integration_id",
            )
        }
        out["login_id"] = u["login_id"]
        if principal.limited:
            for k in LIMITED_HIDDEN:
                out.pop(k, None)
        if "email" in inc:
            out["email"] = u["email"]
        if "avatar_url" in inc:
            out["avatar_url"] = u["avatar_url"]
        return out

    def _enrollment_json(self, e: Record, principal: Principal, *, embed_user: bool = True) -> Record:
        out = dict(e)
        if embed_user:
            out["user"] = dict(e["user"])
        else:
            out.pop("user", None)
        if "grades" in e:
            out["grades"] = dict(e["grades"])
        if principal.limited:
            for k in LIMITED_HIDDEN:
                out.pop(k, None)
                if embed_user:
                    out["user"].pop(k, None)
        return out

    def _visible_course(self, course_id: int | None, principal: Principal) -> Record:
        d = self.data
        c = d.courses.get(course_id) if course_id is not None else None
        if c is None or c["workflow_state"] == "deleted":
            raise ApiError(404, NOT_FOUND)
        if course_id in d.forbidden_courses:
            raise ApiError(401, UNAUTHORIZED)
        return c

    def _course_states(self, req: Request) -> set[str]:
        wanted = req.values("state")
        bad = [s for s in wanted if s not in COURSE_LIST_STATES]
        if bad:
            raise bad_request(f"invalid state: {', '.join(bad)}")
        if not wanted:
            return {"unpublished", "available", "completed"}
        if "all" in wanted:
            return {"unpublished", "available", "completed", "deleted"}
        return {COURSE_STATE_ALIASES.get(s, s) for s in wanted}

    def _filter_courses(self, req: Request, courses: Iterable[Record]) -> list[Record]:
        states = self._course_states(req)
        term = req.integer("enrollment_term_id")
        published = req.flag("published")
        with_enrollments = req.flag("with_enrollments")
        search = (req.one("search_term") or "").lower()
        out = []
        for c in courses:
            if c["workflow_state"] not in states:
                continue
            if term is not None and c["enrollment_term_id"] != term:
                continue
            if published is not None and (c["workflow_state"] in ("available", "completed")) != published:
                continue
            if with_enrollments is not None and bool(self.data.enrollments_of(c["id"])) != with_enrollments:
                continue
            if search and search not in f"{c['name']} {c['course_code']} {c.get('sis_course_id')}".lower():
                continue
            out.append(c)
        out.sort(key=lambda c: c["id"])
        return out

    # ------------------------------------------------------------------ endpoints
    def _users_self(self, req: Request, _a: int | None, _b: int | None) -> Response:
        u = self.data.users[req.principal.user_id]
        out = self._user_json(u, {"avatar_url"}, req.principal)
        out.update(locale=None, effective_locale="en", permissions={"can_update_name": True})
        return json_response(200, out, records=1)

    def _courses(self, req: Request, _a: int | None, _b: int | None) -> Response:
        d = self.data
        uid = req.principal.user_id
        mine = {
            e["course_id"]
            for e in d.enrollments.values()
            if e["user_id"] == uid and e["enrollment_state"] != "deleted"
        }
        courses = self._filter_courses(req, (d.courses[c] for c in mine))
        inc = req.includes()
        return self._numbered(req, courses, lambda c: self._course_json(c, inc, req.principal))

    def _account_courses(self, req: Request, account_id: int | None, _b: int | None) -> Response:
        d = self.data
        if account_id not in d.accounts:
            raise ApiError(404, NOT_FOUND)
        if req.principal.limited:
            raise ApiError(401, UNAUTHORIZED)
        accounts = {
            a for a, acc in d.accounts.items() if a == account_id or acc["parent_account_id"] == account_id
        }
        courses = self._filter_courses(req, (c for c in d.courses.values() if c["account_id"] in accounts))
        inc = req.includes()
        return self._bookmarked(
            req, courses, lambda c: (c["id"],), lambda c: self._course_json(c, inc, req.principal)
        )

    def _course(self, req: Request, course_id: int | None, _b: int | None) -> Response:
        c = self._visible_course(course_id, req.principal)
        return json_response(200, self._course_json(c, req.includes(), req.principal), records=1)

    def _settings(self, req: Request, course_id: int | None, _b: int | None) -> Response:
        self._visible_course(course_id, req.principal)
        assert course_id is not None
        return json_response(200, self.data.settings[course_id], records=1)

    def _enrollment_states(self, req: Request, name: str, default: tuple[str, ...]) -> set[str]:
        wanted = req.values(name)
        if not wanted:
            return set(default)
        out: set[str] = set()
        for s in wanted:
            if s in ENROLLMENT_STATE_ALIASES:
                out.update(ENROLLMENT_STATE_ALIASES[s])
            elif s in ENROLLMENT_STATES:
                out.add(s)
            else:
                raise bad_request(f"invalid {name}: {s}")
        return out

    def _course_users(self, req: Request, course_id: int | None, _b: int | None) -> Response:
        d = self.data
        c = self._visible_course(course_id, req.principal)
        inc = req.includes()
        states = self._enrollment_states(req, "enrollment_state", ("active", "invited"))
        types: set[str] = set()
        for t in req.values("enrollment_type"):
            if t not in USER_ENROLLMENT_TYPES:
                raise bad_request(f"invalid enrollment_type: {t}")
            types.update(USER_ENROLLMENT_TYPES[t])
        if not types:
            types = set(ENROLLMENT_TYPES)
        if "test_student" not in inc and "student_view" not in req.values("enrollment_type"):
            types.discard("StudentViewEnrollment")
        wanted_ids = {int(u) for u in req.values("user_ids") if u.isdigit()}
        by_user: dict[int, list[Record]] = {}
        for e in d.enrollments_of(c["id"], states, types):
            if not wanted_ids or e["user_id"] in wanted_ids:
                by_user.setdefault(e["user_id"], []).append(e)
        users = sorted(map(d.users.__getitem__, by_user), key=_USER_ORDER)

        def render(u: Record) -> Record:
            out = self._user_json(u, inc, req.principal)
            if "enrollments" in inc:
                out["enrollments"] = [
                    self._enrollment_json(e, req.principal, embed_user=False) for e in by_user[u["id"]]
                ]
            return out

        return self._bookmarked(req, users, _USER_ORDER, render)

    def _enrollments(self, req: Request, course_id: int | None, _b: int | None) -> Response:
        c = self._visible_course(course_id, req.principal)
        # Canvas's default when state[] is absent: active and invited only.
        states = self._enrollment_states(req, "state", ("active", "invited"))
        types = req.values("type")
        bad = [t for t in types if t not in ENROLLMENT_TYPES]
        if bad:
            raise bad_request(f"invalid type: {', '.join(bad)}")
        user_id = req.integer("user_id")
        rows = [
            e
            for e in self.data.enrollments_of(c["id"], states, types or None)
            if user_id is None or e["user_id"] == user_id
        ]
        return self._bookmarked(
            req, rows, lambda e: (e["id"],), lambda e: self._enrollment_json(e, req.principal)
        )

    def _assignments(self, req: Request, course_id: int | None, _b: int | None) -> Response:
        c = self._visible_course(course_id, req.principal)
        rows = self.data.assignments_of(c["id"])
        order = req.one("order_by")
        if order == "name":
            rows.sort(key=lambda a: (a["name"], self.data._key_id(a)))
        elif order == "due_at":
            rows.sort(key=lambda a: (a["due_at"] is None, a["due_at"] or "", self.data._key_id(a)))
        inc = req.includes()

        def render(a: Record) -> Record:
            out = dict(a)
            out["submission_types"] = list(a["submission_types"])
            if "overrides" in inc:
                out["overrides"] = []
            if "all_dates" in inc:
                out["all_dates"] = [
                    {
                        "base": True,
                        "due_at": a["due_at"],
                        "unlock_at": a["unlock_at"],
                        "lock_at": a["lock_at"],
                    }
                ]
            return out

        return self._numbered(req, rows, render)

    def _modules(self, req: Request, course_id: int | None, _b: int | None) -> Response:
        c = self._visible_course(course_id, req.principal)
        inline = "items" in req.includes()

        def render(m: Record) -> Record:
            out = {k: v for k, v in m.items() if k != "items"}
            # Canvas inlines items only for modules with at most 100; otherwise follow items_url.
            if inline and len(m["items"]) <= MAX_INLINE_ITEMS:
                out["items"] = [dict(i) for i in m["items"]]
            return out

        return self._numbered(req, self.data.modules_of(c["id"]), render)

    def _module_items(self, req: Request, course_id: int | None, module_id: int | None) -> Response:
        c = self._visible_course(course_id, req.principal)
        m = next(
            (
                m
                for m in self.data.modules_of(c["id"])
                if m["items_url"].endswith(f"/modules/{module_id}/items")
            ),
            None,
        )
        if m is None:
            raise ApiError(404, NOT_FOUND)
        return self._numbered(req, m["items"], dict)

    def _summaries(self, req: Request, course_id: int | None, _b: int | None) -> Response:
        c = self._visible_course(course_id, req.principal)
        rows = self.data.summaries_of(c["id"])
        if rows is None:
            raise ApiError(404, NOT_FOUND)
        student = req.integer("student_id")
        if student is not None:
            rows = [r for r in rows if r["id"] == student]
        return self._numbered(
            req, rows, lambda r: {**r, "tardiness_breakdown": dict(r["tardiness_breakdown"])}
        )

    def _submissions(self, req: Request, course_id: int | None, _b: int | None) -> Response:
        c = self._visible_course(course_id, req.principal)
        ids = req.values("student_ids")
        if not ids:
            rows: list[Record] = []  # without student_ids[] Canvas returns the caller's own: none
        else:
            rows = self.data.submissions_of(c["id"])
            if "all" not in ids:
                wanted = set()
                for s in ids:
                    if not s.isdigit():
                        raise bad_request("student_ids must be integers or 'all'")
                    wanted.add(int(s))
                rows = [s for s in rows if s["user_id"] in wanted]
        assignment_ids = {int(a) for a in req.values("assignment_ids") if a.isdigit()}
        if assignment_ids:
            rows = [s for s in rows if s["assignment_id"] in assignment_ids]
        state = req.one("workflow_state")
        if state:
            rows = [s for s in rows if s["workflow_state"] == state]
        for name, field in (("submitted_since", "submitted_at"), ("graded_since", "graded_at")):
            since = _parse_time(req.one(name), name)
            if since is not None:
                rows = [s for s in rows if s[field] is not None and _parse_time(s[field], field) > since]  # type: ignore[operator]
        return self._numbered(req, rows, dict)


def serve_forever(
    config: SandboxConfig | None = None,
    host: str = "127.0.0.1",
    port: int = 0,
    *,
    echo: Callable[[str], None] = print,
) -> None:
    """Serve a sandbox until interrupted (Ctrl-C); prints its base URL and token first."""
    sb = CanvasSandbox(config, host=host, port=port).start()
    echo(f"Canvas sandbox serving at {sb.base_url} (API at {sb.api_url})")
    echo(f"CANVAS_BASE_URL={sb.base_url}")
    echo(f"CANVAS_API_TOKEN={sb.token}")
    echo(f"CANVAS_ACCOUNT_ID={sb.data.account_id}")
    previous = None
    if threading.current_thread() is threading.main_thread():  # SIGTERM stops as cleanly as Ctrl-C
        previous = signal.signal(signal.SIGTERM, lambda *_: sb._stopping.set())
    try:
        while not sb._stopping.wait(0.5):
            pass
    except KeyboardInterrupt:
        pass
    finally:
        sb.stop()
        if previous is not None:
            signal.signal(signal.SIGTERM, previous)
