"""The sandbox's Live Events over HTTPS: one POST per event, signed RS256 JWTs verified against the sandbox's
JWKS (which rotates), real TLS, retries and the switch-off of a failing endpoint, and both destinations at once.
Canvas's rules are cited in docs/canvas-api.md §7 "Live events"."""

from __future__ import annotations

import ipaddress
import json
import ssl
import threading
from collections.abc import Iterator
from datetime import datetime, timedelta, timezone
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import jwt
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.x509.oid import NameOID

from canvas_assets.live.sqs_server import SqsServer
from canvas_assets.sandbox import CanvasSandbox, SandboxConfig
from canvas_assets.sandbox.live_delivery import Fanout, HttpsSink, Pipeline, SqsSink, attach_https
from canvas_assets.sandbox.live_events import LiveEmitter, attach
from canvas_assets.sandbox.live_keys import JwksServer, KeyRing
from canvas_assets_tests.test_live_emitter import drain


@pytest.fixture
def sb() -> Iterator[CanvasSandbox]:
    with CanvasSandbox(SandboxConfig(scale="small")) as sandbox:
        yield sandbox


@pytest.fixture
def sqs() -> Iterator[SqsServer]:
    with SqsServer() as server:
        yield server


class _Receiver(ThreadingHTTPServer):
    """A test endpoint: records each POST body; answers the statuses in `script` first, then 200.
    With `tls` (an ssl.SSLContext) it speaks HTTPS."""

    daemon_threads = True

    def __init__(self, script: list[int], tls: ssl.SSLContext | None = None) -> None:
        super().__init__(("127.0.0.1", 0), _ReceiverHandler)
        if tls is not None:
            self.socket = tls.wrap_socket(self.socket, server_side=True)
        self.script, self.bodies, self.lock = list(script), [], threading.Lock()
        scheme = "https" if tls is not None else "http"
        self.url = f"{scheme}://127.0.0.1:{self.server_address[1]}/live"
        threading.Thread(target=self.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True).start()


def self_signed_tls(tmp_path: Path) -> tuple[ssl.SSLContext, str]:
    """A server TLS context for 127.0.0.1 and the path of its certificate (the client's trust anchor)."""
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "127.0.0.1")])
    now = datetime.now(timezone.utc)
    cert = (
        x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
        .serial_number(x509.random_serial_number()).not_valid_before(now - timedelta(minutes=5))
        .not_valid_after(now + timedelta(days=1))
        .add_extension(x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]), False)
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), True)
        .sign(key, hashes.SHA256())
    )  # fmt: skip
    cert_path, key_path = tmp_path / "cert.pem", tmp_path / "key.pem"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        )
    )
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.load_cert_chain(cert_path, key_path)
    return ctx, str(cert_path)


class _ReceiverHandler(BaseHTTPRequestHandler):
    server: _Receiver

    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers["Content-Length"]))
        with self.server.lock:
            status = self.server.script.pop(0) if self.server.script else 200
            if status == 200:
                self.server.bodies.append((self.headers["Content-Type"], body))
        self.send_response(status)
        self.send_header("Content-Length", "0")
        self.end_headers()

    def log_message(self, format: str, *args: Any) -> None:
        pass


@pytest.fixture
def keys() -> Iterator[tuple[KeyRing, JwksServer]]:
    ring = KeyRing()
    with JwksServer(ring) as server:
        yield ring, server


def test_https_events_are_jwts_that_verify_against_the_jwks(sb: CanvasSandbox, keys) -> None:
    ring, jwks = keys
    receiver = _Receiver(script=[500, 503])
    try:
        em = attach_https(sb.data, receiver.url, signer=ring, retry_delays_s=(0.05, 0.1, 0.2))
        cid = sb.data.course_ids(("available",))[0]
        sb.change_score(cid)
        sb.data.enroll_student(cid)
        assert em.flush(30)
        stats = em.delivery_stats()
        em.close()
    finally:
        receiver.shutdown()
        receiver.server_close()
    assert stats["retries"] == 2 and stats["lost"] == 0 and stats["sent"] == 2
    client = jwt.PyJWKClient(jwks.url)
    got = []
    for ctype, token in receiver.bodies:
        assert ctype == "application/jwt"
        assert jwt.get_unverified_header(token.decode())["kid"] == ring.current_kid
        key = client.get_signing_key_from_jwt(token.decode())
        claims = jwt.decode(token.decode(), key.key, algorithms=["RS256"])
        got.append({"metadata": claims["metadata"], "body": claims["body"]})
    assert sorted(got, key=str) == sorted((e.event for e in em.ledger), key=str)


def test_signed_events_travel_over_real_tls(sb: CanvasSandbox, keys, tmp_path: Path) -> None:
    ring, _ = keys
    tls, cert = self_signed_tls(tmp_path)
    receiver = _Receiver(script=[], tls=tls)
    try:
        untrusted = attach_https(sb.data, receiver.url, signer=ring, retry_delays_s=())
        sb.change_score(sb.data.course_ids(("available",))[0])
        assert untrusted.flush(30)
        refused = untrusted.delivery_stats()
        untrusted.close()
        trusted = attach_https(sb.data, receiver.url, signer=ring, verify=cert)
        sb.change_score(sb.data.course_ids(("available",))[0])
        assert trusted.flush(30)
        accepted = trusted.delivery_stats()
        trusted.close()
    finally:
        receiver.shutdown()
        receiver.server_close()
    assert refused["lost"] == 1 and refused["sent"] == 0  # an endpoint whose certificate does not verify
    assert accepted["sent"] == 1 and len(receiver.bodies) == 1
    assert receiver.url.startswith("https://") and receiver.bodies[0][0] == "application/jwt"


def test_rotation_retires_keys_and_a_forged_signature_fails(keys) -> None:
    ring, jwks = keys
    event = {"metadata": {"event_name": "grade_change"}, "body": {"score": 1}}
    old = ring.sign(event)
    assert len(ring.jwks()["keys"]) == 3 and ring.kids[1] == ring.current_kid

    def verify(token: str) -> dict[str, Any]:
        key = jwt.PyJWKClient(jwks.url, cache_keys=False).get_signing_key_from_jwt(token)
        return jwt.decode(token, key.key, algorithms=["RS256"])

    ring.rotate()  # a month: the old current key is now the previous one, still published
    assert verify(old)["body"] == {"score": 1}
    assert verify(ring.sign(event))["metadata"]["event_name"] == "grade_change"
    ring.rotate()  # two months: withdrawn
    with pytest.raises(jwt.PyJWKClientError):
        verify(old)
    with pytest.raises(jwt.InvalidSignatureError):
        verify(ring.forge(event))
    assert jwks.requests >= 4


def test_a_failing_endpoint_loses_events_after_the_retries_and_is_switched_off(
    sb: CanvasSandbox, keys
) -> None:
    ring, _ = keys
    receiver = _Receiver(script=[500] * 100)
    try:
        em = attach_https(sb.data, receiver.url, signer=ring, retry_delays_s=(0.02, 0.02))
        em.delivery.sink.disable_after = 4  # type: ignore[union-attr]
        cid = sb.data.course_ids(("available",))[0]
        for _ in range(3):
            sb.change_score(cid)
        assert em.flush(30)
        stats = em.delivery_stats()
        sink = em.delivery.sink  # type: ignore[union-attr]
        em.close()
    finally:
        receiver.shutdown()
        receiver.server_close()
    assert stats["lost"] == 3 and stats["sent"] == 0 and receiver.bodies == []
    assert sink.disabled and sink.statuses == {"500": 4}  # nothing posted once switched off


def test_an_sqs_queue_and_an_https_endpoint_both_get_every_event(sqs: SqsServer, sb: CanvasSandbox) -> None:
    url = sqs.create_queue()
    receiver = _Receiver(script=[])
    try:
        both = Fanout(
            Pipeline(SqsSink(url, endpoint_url=sqs.endpoint_url)), Pipeline(HttpsSink(receiver.url))
        )
        em = attach(sb.data, LiveEmitter(sb.data, both, subscribed=["enrollment_created"]))
        cid = sb.data.course_ids(("available",))[0]
        sb.data.enroll_student(cid)
        sb.data.enroll_student(cid)
        assert em.flush(30)
        em.close()
    finally:
        receiver.shutdown()
        receiver.server_close()
    from_queue = sorted(e["metadata"]["request_id"] for e in drain(sqs, url, expect=2))
    from_https = sorted(json.loads(body)["metadata"]["request_id"] for _, body in receiver.bodies)
    assert from_queue == from_https == sorted(e.event["metadata"]["request_id"] for e in em.ledger)
    assert [e.copies for e in em.ledger] == [2, 2]
    assert {ctype for ctype, _ in receiver.bodies} == {"application/json"}  # unsigned without a KeyRing
