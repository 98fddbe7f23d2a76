"""The sandbox's HTTP side: a threaded loopback server speaking the Canvas REST API.

Request life cycle (mirrors Canvas): authenticate (401 bodies of docs/canvas-api.md §5), charge the
token's bucket the up-front cost or refuse (429 hosted / 403 text legacy), sleep the simulated
latency, maybe fail (injected or random fault), serve the page, then replace the up-front cost by
the real one and report it in `X-Request-Cost` / `X-Rate-Limit-Remaining`.

Cost model: `cost_base + cost_per_record * records serialised` (defaults 0.005 + 0.0003 per
record; a 100-record page costs 0.035, an inlined module counts its items as records). Faults and
errors cost `cost_base`. Latency does not add to the cost (Canvas charges CPU and DB time).

The HTTP plumbing is in `httpd`, requests and responses in `protocol`, pagination in `pagination`, the
endpoints in `endpoints`, the dataset and its mutations in `data`, `generate` and `mutations`.
"""

from __future__ import annotations

import contextlib
import signal
import socket
import threading
from collections import Counter
from collections.abc import Callable
from email.utils import formatdate
from typing import Any
from urllib.parse import parse_qsl, urlsplit

from canvas_assets.sandbox.config import SandboxConfig
from canvas_assets.sandbox.data import SandboxData, stable_int
from canvas_assets.sandbox.endpoints import Endpoints
from canvas_assets.sandbox.faults import FaultPlan
from canvas_assets.sandbox.hostile import Hostility, Misbehaviour, padded_gzip
from canvas_assets.sandbox.httpd import RequestHandler, SandboxHTTPServer, write_response
from canvas_assets.sandbox.pagination import Pages
from canvas_assets.sandbox.protocol import (
    FORBIDDEN,
    INVALID_TOKEN,
    NOT_FOUND,
    UNAUTHENTICATED,
    WWW_AUTH,
    ApiError,
    Principal,
    Request,
    Response,
    json_response,
)
from canvas_assets.sandbox.throttle import LeakyBucket, fit_at_once


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
        self._server = SandboxHTTPServer((host, port), RequestHandler, bind_and_activate=True)
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
        self.hostility = Hostility()
        self._buckets: dict[str, LeakyBucket] = {}
        self._lock = threading.Lock()
        self._stopping = threading.Event()
        self._connections: set[socket.socket] = set()
        self._thread: threading.Thread | None = None
        self._seq = 0
        self._in_flight = 0
        self.reset_stats()
        self.endpoints = Endpoints(self.data, self.base_url, Pages(self.config, self.base_url))

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
        self.hostility.clear()

    def misbehave(self, path_contains: str | None = None, count: int = 1, **how: Any) -> None:
        """Answer the next `count` matching requests (0: every one from now on) as a broken or hostile
        Canvas would: `status`, `body`, `headers`, `endless_next`, `gzip_to`, `trickle_s`, `hang`
        (see `sandbox.hostile`). `clear_faults` ends them."""
        self.hostility.add(Misbehaviour(path_contains=path_contains, remaining=count, **how))

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

    def submit_work(
        self, course_id: int, assignment_id: int | None = None, user_id: int | None = None
    ) -> int:
        return self.data.submit_work(course_id, assignment_id, user_id)

    def grade_submission(
        self, course_id: int, submission_id: int | None = None, score: float | None = None
    ) -> int:
        return self.data.grade_submission(course_id, submission_id, score)

    def excuse_submission(self, course_id: int, submission_id: int | None = None) -> int:
        return self.data.excuse_submission(course_id, submission_id)

    def pass_due_date(self, course_id: int, assignment_id: int | None = None) -> int:
        return self.data.pass_due_date(course_id, assignment_id)

    def advance_clock(self, seconds: int = 60) -> str:
        return self.data.advance_clock(seconds)

    # ------------------------------------------------------------------ statistics
    def derive_all(self) -> int:
        """Derive now what the sandbox otherwise derives on first use (every course's grade change log, a
        real Canvas's stored data): a benchmark's clock then times serving, not deriving. Returns the events."""
        from canvas_assets.sandbox.audit import derive_logs

        return derive_logs(self.data, self.data.course_ids(None))

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
        """The lower bound (README, Benchmarks): the fastest any client could have fetched what was served since reset.

        max of (a) total cost / leak rate, (b) total latency / the requests that fit under the mark at
        once (ceil(hwm / up-front cost) - 1: Canvas counts a request's own hold, `throttle.fit_at_once`),
        (c) the longest chain of pages of one list.
        With the throttle off, (a) does not apply and (b) assumes 16 requests at once.
        """
        s = self.stats()
        chain = s["longest_chain_s"]
        if self.config.throttle == "off":
            return max(chain, s["total_latency_s"] / 16)
        fit = fit_at_once(self.config.hwm, self.config.upfront_cost)
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
    def _serve(self, handler: RequestHandler) -> None:
        with self._lock:
            self._seq += 1
            seq = self._seq
            self._requests += 1
            self._in_flight += 1
            self._peak = max(self._peak, self._in_flight)
        try:
            resp = self._process(handler, seq)
            hostile = self.hostility.pick(handler.path) if resp is not None else None
            if hostile is not None and resp is not None:
                resp = self._misbehave(hostile, resp, handler.path)
        except Exception:  # a sandbox bug must still answer like Canvas would
            resp = json_response(
                500, {"errors": [{"message": "An error occurred.", "error_code": "sandbox_bug"}]}
            )
        finally:
            with self._lock:
                self._in_flight -= 1
        with self._lock:
            self._statuses["dropped" if resp is None else str(resp.status)] += 1
        write_response(handler, resp)

    def _process(self, handler: RequestHandler, seq: int) -> Response | None:
        cfg = self.config
        split = urlsplit(handler.path)
        route = self.endpoints.route(split.path)
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
                # Date: the sandbox's clock (the simulated now submissions are stamped with), not wall time
                resp.headers.append(("Date", formatdate(self.data.now_ts, usegmt=True)))
                resp.headers.append(("X-Request-Cost", f"{cost:.6f}"))
                resp.headers.append(("X-Rate-Limit-Remaining", f"{remaining:.6f}"))

    def _misbehave(self, m: Misbehaviour, resp: Response, target: str) -> Response | None:
        if m.hang:  # hold the connection, answer nothing, until the sandbox stops
            self._stopping.wait()
            return None
        if m.status is not None:
            resp.status = m.status
        if m.body is not None:
            resp.body = m.body
        if m.gzip_to:
            resp.body = padded_gzip(m.gzip_to)
            resp.headers.append(("Content-Encoding", "gzip"))
        names = {k.lower() for k in m.headers}
        if m.endless_next:
            names.add("link")
        resp.headers = [(k, v) for k, v in resp.headers if k.lower() not in names]
        resp.headers.extend(m.headers.items())
        if m.endless_next:
            resp.headers.append(("Link", self.hostility.endless_link(self.base_url, target)))
        resp.trickle_s = m.trickle_s
        return resp

    def _latency(self, seq: int) -> float:
        cfg = self.config
        if cfg.latency_ms <= 0:
            return 0.0
        u = (stable_int(cfg.seed, "latency", seq) % 2_000_001) / 1_000_000 - 1.0  # in [-1, 1]
        return max(0.0, cfg.latency_ms * (1 + cfg.latency_jitter * u) / 1000)


def serve_forever(
    config: SandboxConfig | None = None,
    host: str = "127.0.0.1",
    port: int = 0,
    *,
    echo: Callable[[str], None] = print,
    announce: Callable[[CanvasSandbox], None] | None = None,
) -> None:
    """Serve a sandbox until Ctrl-C or SIGTERM; prints its base URL and token first (or calls `announce`).

    Both signals are set here, not inherited: a process started in the background by a shell or a test
    harness can inherit SIGINT and SIGTERM *ignored*, and Python then installs no Ctrl-C handler; such a
    `canvas-assets sandbox` outlived SIGINT and SIGTERM for 20 minutes (issue 21). After the first signal
    the defaults are back: a second one ends the process at once, should stopping ever hang.
    """
    sb = CanvasSandbox(config, host=host, port=port).start()
    stops = (signal.SIGINT, signal.SIGTERM)
    previous: dict[signal.Signals, Any] = {}

    def stop(signum: int, frame: object) -> None:
        for sig in stops:
            signal.signal(sig, signal.SIG_DFL)
        sb._stopping.set()

    if threading.current_thread() is threading.main_thread():
        previous = {sig: signal.getsignal(sig) for sig in stops}
        for sig in stops:
            signal.signal(sig, stop)
    try:  # announced once the signals are set: whoever reads this may send one at once
        if announce is not None:
            announce(sb)
        else:
            echo(f"Canvas sandbox serving at {sb.base_url} (API at {sb.api_url})")
            echo(f"CANVAS_BASE_URL={sb.base_url}")
            echo(f"CANVAS_API_TOKEN={sb.token}")
            echo(f"CANVAS_ACCOUNT_ID={sb.data.account_id}")
        while not sb._stopping.wait(0.5):
            pass
    except KeyboardInterrupt:
        pass
    finally:
        sb.stop()
        for sig, handler in previous.items():
            signal.signal(sig, handler if handler is not None else signal.SIG_DFL)
