"""A real SQS endpoint on loopback: moto's server in a child process, for the live-event tests, demo and benchmark.

Canvas delivers Live Events to a *standard* SQS queue whose name starts with `canvas-live-events` (Data
Services refuses FIFO queues). Production points the consumer at AWS with the queue URL, the region and the
credentials from the usual AWS environment (AWS_ACCESS_KEY_ID / AWS_PROFILE / an instance role); here the
same boto3 calls go to `endpoint_url`, a moto server started as its own process (never moto's in-process
mock: the queue must be a separate program reached over HTTP, as AWS is).

    with SqsServer() as sqs:
        url = sqs.create_queue()            # canvas-live-events-<random>
        sqs.client().send_message(QueueUrl=url, MessageBody="{}")

Moto keeps its queues in memory: stopping the server loses them (a test that needs the messages to outlive
the consumer keeps the server running and restarts the consumer instead). Moto is slower the more the queue
holds (docs/operations.md, "Scale"): a benchmark on moto measures moto first.
"""

from __future__ import annotations

import contextlib
import os
import secrets
import socket
import subprocess
import sys
import time
from typing import Any

import boto3
import botocore.config
import requests

QUEUE_PREFIX = "canvas-live-events"
# Moto accepts any credentials; these keep boto3 from looking for real ones (and never reach AWS).
LOCAL_CREDENTIALS = {"aws_access_key_id": "sandbox", "aws_secret_access_key": "sandbox"}
DEFAULT_REGION = "us-east-1"
START_TIMEOUT_S = 60.0


def free_loopback_port() -> int:
    """A port nothing listens on right now (the server binds it a moment later; `start` retries a clash)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def sqs_client(endpoint_url: str | None, region: str = DEFAULT_REGION, **kwargs: Any) -> Any:
    """A boto3 SQS client: against `endpoint_url` (loopback, placeholder credentials) or, with None,
    against AWS with the credentials and region boto3 finds in the environment."""
    config = botocore.config.Config(
        retries={"max_attempts": 3, "mode": "standard"}, connect_timeout=5, read_timeout=30,
        max_pool_connections=kwargs.pop("max_pool_connections", 10),
    )  # fmt: skip
    if endpoint_url is None:
        return boto3.client("sqs", region_name=region, config=config, **kwargs)
    return boto3.client(
        "sqs", endpoint_url=endpoint_url, region_name=region, config=config, **LOCAL_CREDENTIALS, **kwargs
    )


class SqsServer:
    """moto's server (`python -m moto.server`) on a free loopback port, started and stopped by its owner.

    `start()` waits until the server answers (bounded by `START_TIMEOUT_S`); `stop()` ends only this
    child (terminate, then kill after 5 s). `endpoint_url` is `http://127.0.0.1:PORT`.
    """

    def __init__(
        self, *, host: str = "127.0.0.1", port: int | None = None, region: str = DEFAULT_REGION
    ) -> None:
        if host not in ("127.0.0.1", "localhost", "::1"):
            raise ValueError(f"SqsServer listens on loopback only, not {host!r}")
        self.host = host
        self.port = port
        self.region = region
        self.proc: subprocess.Popen[bytes] | None = None
        self._log: Any = None

    @property
    def endpoint_url(self) -> str:
        if self.port is None:
            raise RuntimeError("the SQS server is not started")
        return f"http://{self.host}:{self.port}"

    @property
    def pid(self) -> int | None:
        return None if self.proc is None else self.proc.pid

    # ------------------------------------------------------------------ lifecycle
    def start(self, timeout_s: float = START_TIMEOUT_S) -> SqsServer:
        if self.proc is not None:
            return self
        fixed = self.port is not None
        for _ in range(1 if fixed else 3):
            if not fixed:
                self.port = free_loopback_port()
            self._spawn()
            if self._wait_ready(timeout_s):
                return self
            self.stop()
        raise RuntimeError(
            f"moto's SQS server did not answer on {self.host}:{self.port} within {timeout_s:.0f} s; "
            "check that `moto[server]` is installed (pip install -e '.[dev]') and the port is free"
        )

    def _spawn(self) -> None:
        env = dict(os.environ)
        env.setdefault("AWS_DEFAULT_REGION", self.region)
        # The server's own access log would fill a pipe nobody reads: it goes to /dev/null.
        self._log = open(os.devnull, "wb")  # noqa: SIM115 - closed in stop
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "moto.server", "-H", self.host, "-p", str(self.port)],
            stdout=self._log, stderr=self._log, stdin=subprocess.DEVNULL, env=env,
        )  # fmt: skip

    def _wait_ready(self, timeout_s: float) -> bool:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self.proc is None or self.proc.poll() is not None:
                return False  # it exited (a port clash, a missing extra)
            with contextlib.suppress(requests.RequestException):
                if requests.get(self.endpoint_url + "/moto-api/", timeout=2).status_code < 500:
                    return True
            time.sleep(0.1)
        return False

    def stop(self) -> None:
        proc, self.proc = self.proc, None
        if proc is not None and proc.poll() is None:
            proc.terminate()
            try:
                proc.wait(timeout=5)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(timeout=5)
        if self._log is not None:
            self._log.close()
            self._log = None

    def __enter__(self) -> SqsServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # ------------------------------------------------------------------ queues
    def client(self, **kwargs: Any) -> Any:
        return sqs_client(self.endpoint_url, self.region, **kwargs)

    def create_queue(self, suffix: str | None = None, *, visibility_timeout_s: int = 30) -> str:
        """A standard queue `canvas-live-events-<suffix>` (random suffix by default); its URL."""
        name = f"{QUEUE_PREFIX}-{suffix or secrets.token_hex(4)}"
        check_queue_name(name)
        attrs = {"VisibilityTimeout": str(visibility_timeout_s)}
        return str(self.client().create_queue(QueueName=name, Attributes=attrs)["QueueUrl"])

    def depth(self, queue_url: str) -> tuple[int, int]:
        """(messages waiting, messages in flight) as SQS approximates them."""
        attrs = self.client().get_queue_attributes(
            QueueUrl=queue_url,
            AttributeNames=["ApproximateNumberOfMessages", "ApproximateNumberOfMessagesNotVisible"],
        )["Attributes"]
        return int(attrs["ApproximateNumberOfMessages"]), int(attrs["ApproximateNumberOfMessagesNotVisible"])


def check_queue_name(name: str) -> None:
    """Data Services delivers only to standard queues named `canvas-live-events...`."""
    if not name.startswith(QUEUE_PREFIX):
        raise ValueError(f"queue name {name!r} must start with {QUEUE_PREFIX!r} (Canvas Data Services' rule)")
    if name.endswith(".fifo"):
        raise ValueError(f"queue {name!r} is FIFO; Canvas delivers live events to standard queues only")
