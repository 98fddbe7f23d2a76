"""Signing the sandbox's Live Events: an RS256 key ring with a JWKS served over HTTP on loopback.

With "Sign Payload" on, Data Services posts each event as a JWT signed with RS256 whose header names the
key (`kid`); receivers verify it against Instructure's published JWKS. That JWKS holds three keys, the
current one in the middle, and rotates monthly (Canvas Guides, "How do I configure and test Canvas Live
Events using HTTPS delivery?"). `KeyRing` keeps the same three (previous, current, next), signs with the
current one and `rotate()`s like a month passing: the previous key leaves the set, so a token signed two
rotations ago no longer verifies. `forge()` signs with a key that is not published under a published
`kid`, which a receiver must refuse (401).

The JWT's claims are the event itself (`metadata` and `body`), plus `iat`.
"""

from __future__ import annotations

import itertools
import json
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import jwt
from cryptography.hazmat.primitives.asymmetric import rsa
from jwt.algorithms import RSAAlgorithm

JWKS_PATH = "/api/live_events/jwks"


def _new_key(bits: int) -> rsa.RSAPrivateKey:
    return rsa.generate_private_key(public_exponent=65537, key_size=bits)


class KeyRing:
    """Three RSA keys (previous, current, next); signs with the current one."""

    def __init__(self, *, bits: int = 2048, prefix: str = "sandbox") -> None:
        if bits < 2048:
            raise ValueError("RS256 keys must have at least 2048 bits")
        self.bits = bits
        self.prefix = prefix
        self._serial = itertools.count(1)
        self._lock = threading.Lock()
        self._keys: list[tuple[str, rsa.RSAPrivateKey]] = [self._make() for _ in range(3)]
        self._outsider = _new_key(bits)  # never published: what forge() signs with

    def _make(self) -> tuple[str, rsa.RSAPrivateKey]:
        return f"{self.prefix}-{next(self._serial):04d}", _new_key(self.bits)

    @property
    def current_kid(self) -> str:
        with self._lock:
            return self._keys[1][0]

    @property
    def kids(self) -> list[str]:
        with self._lock:
            return [kid for kid, _ in self._keys]

    def rotate(self) -> str:
        """A month passes: the previous key is withdrawn, next becomes current, a new next appears."""
        with self._lock:
            self._keys = [*self._keys[1:], self._make()]
            return self._keys[1][0]

    def jwks(self) -> dict[str, Any]:
        with self._lock:
            keys = list(self._keys)
        out = []
        for kid, key in keys:
            jwk = json.loads(RSAAlgorithm.to_jwk(key.public_key()))
            jwk.update(kid=kid, use="sig", alg="RS256")
            out.append(jwk)
        return {"keys": out}

    def sign(self, event: dict[str, Any]) -> str:
        with self._lock:
            kid, key = self._keys[1]
        return jwt.encode({**event, "iat": int(time.time())}, key, algorithm="RS256", headers={"kid": kid})

    def forge(self, event: dict[str, Any], kid: str | None = None) -> str:
        """A token under a published kid (the current one by default) signed by an unpublished key."""
        claimed = kid or self.current_kid
        return jwt.encode(
            {**event, "iat": int(time.time())}, self._outsider, algorithm="RS256", headers={"kid": claimed}
        )


class _JwksHandler(BaseHTTPRequestHandler):
    server: JwksServer

    def do_GET(self) -> None:
        if self.path.split("?", 1)[0] != JWKS_PATH:
            self._answer(404, b'{"errors":[{"message":"The specified resource does not exist."}]}')
            return
        with self.server.lock:
            self.server.requests += 1
        self._answer(200, json.dumps(self.server.ring.jwks()).encode())

    def _answer(self, status: int, body: bytes) -> None:
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: Any) -> None:  # the test output stays quiet
        pass


class JwksServer(ThreadingHTTPServer):
    """Serves a `KeyRing`'s JWKS at `url` (loopback); `requests` counts the fetches (a receiver's refetch
    on an unknown kid must stay bounded)."""

    daemon_threads = True

    def __init__(self, ring: KeyRing, host: str = "127.0.0.1", port: int = 0) -> None:
        super().__init__((host, port), _JwksHandler)
        self.ring = ring
        self.requests = 0
        self.lock = threading.Lock()
        self._thread: threading.Thread | None = None
        self.url = f"http://{host}:{self.server_address[1]}{JWKS_PATH}"

    def start(self) -> JwksServer:
        if self._thread is None:
            self._thread = threading.Thread(
                target=self.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
            )
            self._thread.start()
        return self

    def stop(self) -> None:
        if self._thread is not None:
            self.shutdown()
            self._thread.join(timeout=5)
            self._thread = None
        self.server_close()

    def __enter__(self) -> JwksServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
