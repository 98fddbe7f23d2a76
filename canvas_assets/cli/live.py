"""`canvas-assets live`: the long-running Live Events consumer (SQS and/or HTTPS), and the live demo."""

from __future__ import annotations

import logging
import os
import signal
import sys
import threading
import time
from datetime import datetime, timezone
from typing import Any

import click

from canvas_assets.errors import CanvasAssetsError

QUEUE_URL_ENV = "CANVAS_LIVE_QUEUE_URL"
ENDPOINT_ENV = "CANVAS_LIVE_SQS_ENDPOINT"
JWKS_ENV = "CANVAS_LIVE_JWKS_URL"


def _summary(stats: Any) -> str:
    o = stats.outcomes
    parts = [
        f"{k} {o[k]}" for k in ("applied", "unchanged", "stale", "unmatched", "ignored", "bad") if o.get(k)
    ]
    newest = max(stats.last_event.values(), default=None)
    lag = (
        f", newest event {(datetime.now(timezone.utc) - newest).total_seconds():.1f} s ago" if newest else ""
    )
    return f"live: {stats.events} events ({', '.join(parts) or 'none'}){lag}"


def make_reporter(dagster: bool) -> Any:
    """The consumer's reporter: a line on stdout and, with `dagster`, the instance's live-feed events."""
    reporter = None
    if dagster:
        import dagster as dg

        from canvas_assets.cli.sync import ensure_dagster_home
        from canvas_assets.defs.live import DagsterReporter

        ensure_dagster_home()
        reporter = DagsterReporter(dg.DagsterInstance.get())

    def report(stats: Any) -> None:
        if stats.events:
            click.echo(_summary(stats))
        if reporter is not None:
            reporter(stats)

    return report


@click.command("live")
@click.option("--queue-url", envvar=QUEUE_URL_ENV, help=f"SQS queue URL (env {QUEUE_URL_ENV}).")
@click.option(
    "--endpoint-url",
    envvar=ENDPOINT_ENV,
    help=f"An SQS-compatible endpoint instead of AWS (env {ENDPOINT_ENV}); unset: AWS, with the region and "
    "credentials of the usual AWS environment.",
)
@click.option("--region", envvar="AWS_REGION", default="us-east-1", show_default=True)
@click.option(
    "--receivers", type=click.IntRange(1, 16), default=2, show_default=True, help="Concurrent receive loops."
)
@click.option(
    "--wait-seconds", type=click.IntRange(0, 20), default=10, show_default=True, help="SQS long poll."
)
@click.option("--visibility-timeout", type=click.IntRange(1, 43200), default=60, show_default=True)
@click.option("--report-every", type=click.FloatRange(1, 3600), default=15.0, show_default=True)
@click.option(
    "--https", "https_addr", help="Also receive HTTPS POSTs on HOST:PORT (plain HTTP on loopback only)."
)
@click.option("--jwks-url", envvar=JWKS_ENV, help=f"JWKS that signs HTTPS events (env {JWKS_ENV}).")
@click.option("--certfile", type=click.Path(dir_okay=False, exists=True))
@click.option("--keyfile", type=click.Path(dir_okay=False, exists=True))
@click.option(
    "--allow-unsigned", is_flag=True, help="Accept unsigned HTTPS events (tests, trusted networks)."
)
@click.option("--no-dagster", is_flag=True, help="Do not report the feed to the Dagster instance.")
def live(
    queue_url: str | None,
    endpoint_url: str | None,
    region: str,
    receivers: int,
    wait_seconds: int,
    visibility_timeout: int,
    report_every: float,
    https_addr: str | None,
    jwks_url: str | None,
    certfile: str | None,
    keyfile: str | None,
    allow_unsigned: bool,
    no_dagster: bool,
) -> None:
    """Apply Canvas Live Events to the warehouse as they arrive (runs until SIGTERM or Ctrl-C)."""
    from canvas_assets.live.consumer import ConsumerSettings, LiveConsumer
    from canvas_assets.live.https import LiveReceiver
    from canvas_assets.live.sqs_server import sqs_client
    from canvas_assets.warehouse.db import Warehouse
    from canvas_assets.warehouse.engine import default_database_url

    logging.basicConfig(level=logging.WARNING, format="%(asctime)s %(levelname)s %(message)s")
    if queue_url is None and https_addr is None:
        raise click.UsageError(
            f"nothing to receive from: give --queue-url (or {QUEUE_URL_ENV}) and/or --https HOST:PORT"
        )
    try:
        settings = ConsumerSettings(
            queue_url=queue_url,
            endpoint_url=endpoint_url,
            region=region,
            receivers=receivers,
            wait_seconds=wait_seconds,
            visibility_timeout=visibility_timeout,
            report_every_s=report_every,
        )
        warehouse = Warehouse(default_database_url())
        warehouse.ensure_schema()
        client = sqs_client(endpoint_url, region, max_pool_connections=receivers + 2) if queue_url else None
        consumer = LiveConsumer(settings, warehouse.engine, client, reporter=make_reporter(not no_dagster))
        receiver = None
        if https_addr:
            host, _, port = https_addr.rpartition(":")
            if not host or not port.isdigit() or not 0 <= int(port) <= 65535:
                raise click.BadParameter(f"{https_addr!r}: expected HOST:PORT, e.g. 127.0.0.1:8780")
            receiver = LiveReceiver(
                warehouse.engine,
                host,
                int(port),
                jwks_url=jwks_url,
                allow_unsigned=allow_unsigned,
                certfile=certfile,
                keyfile=keyfile,
                on_stored=consumer.wake,
            ).start()
    except (ValueError, OSError) as exc:
        raise click.UsageError(str(exc)) from None
    except CanvasAssetsError as exc:
        click.echo(f"error: {exc.message}", err=True)
        sys.exit(2)
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: consumer.stop.set())
    where = [f"queue {queue_url}"] if queue_url else []
    if receiver is not None:
        where.append(f"HTTP(S) {receiver.url}")
    click.echo(
        f"live: receiving from {' and '.join(where)} into {warehouse.url_for_display} (pid {os.getpid()})"
    )
    sys.stdout.flush()
    try:
        stats = consumer.run()
    finally:
        if receiver is not None:
            receiver.stop()
    click.echo(
        f"live: stopped; received {stats.received}, stored {stats.stored}, applied {stats.applied.events}, "
        f"errors {stats.errors}"
    )


def _row(row: Any) -> str:
    return "no row" if row is None else f"score {row[0]}, grade {row[1]}, {row[2]}"


def run_live_demo(db_url: str, sandbox: Any, wait_s: float = 15.0) -> None:
    """Grade a submission in the sandbox and print its warehouse row before and as it changes (the demo)."""
    import sqlalchemy as sa

    from canvas_assets.live.consumer import ConsumerSettings, LiveConsumer
    from canvas_assets.live.sqs_server import SqsServer
    from canvas_assets.sandbox.live_delivery import attach_sqs
    from canvas_assets.sandbox.live_load import grading_targets
    from canvas_assets.warehouse.db import Warehouse

    warehouse = Warehouse(db_url)
    with SqsServer() as sqs:
        queue = sqs.create_queue()
        emitter = attach_sqs(sandbox.data, queue, endpoint_url=sqs.endpoint_url)
        settings = ConsumerSettings(
            queue_url=queue, endpoint_url=sqs.endpoint_url, wait_seconds=1, report_every_s=5
        )
        consumer = LiveConsumer(settings, warehouse.engine, sqs.client(), reporter=make_reporter(True))
        thread = threading.Thread(target=consumer.run, daemon=True)
        thread.start()
        click.echo(
            f"\nlive:      `canvas-assets live` reading queue {queue.rsplit('/', 1)[-1]} on {sqs.endpoint_url} (moto)"
        )
        course, sid = grading_targets(sandbox.data, per_course=1)[0]
        query = sa.text("SELECT score, grade, workflow_state FROM canvas_submissions WHERE id = :id")
        with warehouse.engine.connect() as conn:
            before = conn.execute(query, {"id": sid}).first()
        click.echo(f"live:      submission {sid} of course {course} in the warehouse: {_row(before)}")
        sandbox.data.grade_submission(course, sid)
        graded = time.monotonic()
        click.echo("live:      a teacher grades it in the sandbox (Canvas); watching the row...")
        row = before
        while time.monotonic() - graded < wait_s:
            with warehouse.engine.connect() as conn:
                row = conn.execute(query, {"id": sid}).first()
            if row != before:
                break
            time.sleep(0.05)
        took = time.monotonic() - graded
        click.echo(f"live:      {took:.2f} s later: {_row(row)}")
        consumer.stop.set()
        thread.join(timeout=40)
        emitter.close()
