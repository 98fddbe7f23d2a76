"""The sandbox's HTTP plumbing: a threaded loopback server, a lean request parser, the response writer."""

from __future__ import annotations

import contextlib
import socket
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import TYPE_CHECKING, Any

from canvas_assets.sandbox.protocol import Response

if TYPE_CHECKING:
    from canvas_assets.sandbox.server import CanvasSandbox

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


class SandboxHTTPServer(ThreadingHTTPServer):
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


class RequestHandler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    disable_nagle_algorithm = True
    server: SandboxHTTPServer
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


def write_response(handler: RequestHandler, resp: Response | None) -> None:
    """Send `resp` on the handler's connection; None drops the connection without an answer."""
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
        if resp.trickle_s > 0:  # hostile mode: a body that arrives a byte at a time
            handler.wfile.write(("\r\n".join(head) + "\r\n\r\n").encode("latin-1"))
            stopping = handler.server.sandbox._stopping
            for i in range(len(resp.body)):
                handler.wfile.write(resp.body[i : i + 1])
                handler.wfile.flush()
                if stopping.wait(resp.trickle_s):
                    break
        else:
            handler.wfile.write(("\r\n".join(head) + "\r\n\r\n").encode("latin-1") + resp.body)
        handler.wfile.flush()
    except OSError:
        handler.close_connection = True
