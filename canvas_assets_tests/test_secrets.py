"""Secrets stay secret: the Canvas token and the database passwords appear nowhere that is written.

A production-shaped setup (the packaged production instance configuration, the warehouse on
PostgreSQL) runs a sync with a failed course and a failed run; the failure reporter posts its
webhook. Then everything written is searched for each secret: the CLI's output, every row of every
table of the Dagster database and of the warehouse, every file under the Dagster home and the local
store, and the webhook payloads. (The server trusts local connections, so the passwords are accepted
without being checked, which lets the test use passwords it can recognise.)
"""

import http.server
import json
import logging
import subprocess
import threading
import uuid
from pathlib import Path

import dagster as dg
import pytest
import sqlalchemy as sa

from canvas_assets.canvas.client import CanvasClient
from canvas_assets.defs.automation import sync_failure_reporter
from canvas_assets.defs.resources import WarehouseResource
from canvas_assets.errors import CanvasBadRequest
from canvas_assets.instance import PRODUCTION_CONFIG, write_instance_config
from canvas_assets_tests.conftest import PG_ADMIN_URL
from canvas_assets_tests.harness import BIN, clean_env, create_database, drop_database

PG_PASSWORD = f"pg-secret-{uuid.uuid4().hex[:10]}"
WAREHOUSE_PASSWORD = f"wh-secret-{uuid.uuid4().hex[:10]}"


def _database_text(url: str) -> str:
    """Every row of every table of a database, as text."""
    engine = sa.create_engine(url, poolclass=sa.pool.NullPool)
    parts = []
    with engine.connect() as conn:
        tables = conn.execute(
            sa.text("SELECT tablename FROM pg_tables WHERE schemaname = 'public' ORDER BY tablename")
        ).scalars()
        for name in list(tables):
            rows = conn.execute(sa.text(f'SELECT t::text FROM "{name}" t')).scalars()
            parts.append(f"== {name}\n" + "\n".join(rows))
    return "\n".join(parts)


def _files_text(*roots: Path) -> str:
    parts = []
    for root in roots:
        for path in root.rglob("*"):
            if path.is_file() and "pgdata" not in path.parts:
                parts.append(path.read_bytes().decode("utf-8", errors="replace"))
    return "\n".join(parts)


class _Webhook(http.server.BaseHTTPRequestHandler):
    bodies: list[str] = []

    def do_POST(self) -> None:
        length = int(self.headers.get("Content-Length", 0))
        _Webhook.bodies.append(self.rfile.read(length).decode())
        self.send_response(204)
        self.end_headers()

    def log_message(self, *args: object) -> None:
        pass


@pytest.mark.slow
def test_no_secret_is_written_anywhere(make_sandbox, tmp_path, monkeypatch):
    sandbox = make_sandbox(scale="small", throttle="hosted")
    dagster_db, warehouse_db = create_database(), create_database()
    host = PG_ADMIN_URL.rsplit("/", 1)[0]  # postgresql+psycopg2://postgres@127.0.0.1:5432
    warehouse_url = host.replace("postgres@", f"postgres:{WAREHOUSE_PASSWORD}@") + f"/{warehouse_db}"
    home, store = tmp_path / "home", tmp_path / "store"
    write_instance_config(home, PRODUCTION_CONFIG)
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Webhook)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    settings = {
        "DAGSTER_HOME": str(home),
        "CANVAS_ASSETS_HOME": str(store),
        "DAGSTER_PG_HOST": "127.0.0.1",
        "DAGSTER_PG_PORT": "5432",
        "DAGSTER_PG_USER": "postgres",
        "DAGSTER_PG_PASSWORD": PG_PASSWORD,
        "DAGSTER_PG_DB": dagster_db,
        "CANVAS_BASE_URL": sandbox.base_url,
        "CANVAS_API_TOKEN": sandbox.token,
        "CANVAS_ASSETS_DATABASE_URL": warehouse_url,
        "CANVAS_ASSETS_FAILURE_WEBHOOK": f"http://127.0.0.1:{server.server_address[1]}/hook",
    }
    env = clean_env(**settings)
    outputs = []
    try:
        # A sync in which one course fails, then one in which every course fails (a failed run).
        sandbox.forbid_course(sandbox.data.course_ids(states=("available",))[0])
        first = subprocess.run(
            [str(BIN / "canvas-assets"), "sync", "--profile", "lightweight"],
            env=env, cwd=tmp_path, capture_output=True, text=True, timeout=600,
        )  # fmt: skip
        assert first.returncode == 1, first.stdout + first.stderr
        for course_id in sandbox.data.course_ids():
            sandbox.forbid_course(course_id)
        second = subprocess.run(
            [str(BIN / "canvas-assets"), "sync", "--profile", "lightweight", "--json"],
            env=env, cwd=tmp_path, capture_output=True, text=True, timeout=600,
        )  # fmt: skip
        assert second.returncode == 1, second.stdout + second.stderr
        assert json.loads(second.stdout)["runs"][0]["success"] is False
        outputs += [first.stdout, first.stderr, second.stdout, second.stderr]

        # The failure reporter, as the daemon would run it for the failed run.
        for key, value in settings.items():
            monkeypatch.setenv(key, value)
        with dg.DagsterInstance.get() as instance:
            (failed,) = instance.get_runs(filters=dg.RunsFilter(statuses=[dg.DagsterRunStatus.FAILURE]))
            (failure,) = [
                r.event_log_entry.dagster_event
                for r in instance.get_records_for_run(
                    failed.run_id, of_type=dg.DagsterEventType.RUN_FAILURE
                ).records
            ]
            with dg.build_run_status_sensor_context(
                sensor_name="sync_failure_reporter",
                dagster_event=failure,
                dagster_instance=instance,
                dagster_run=failed,
                resources={"warehouse": WarehouseResource()},
            ) as context:
                sync_failure_reporter(context.for_run_failure())
        assert _Webhook.bodies and json.loads(_Webhook.bodies[-1])["run_id"] == failed.run_id

        written = "\n".join(
            [
                *outputs,
                _database_text(f"{host}/{dagster_db}"),
                _database_text(f"{host}/{warehouse_db}"),
                _files_text(home, store),
                *_Webhook.bodies,
            ]
        )
        # The search saw the tables and the error messages (which name the Canvas host, never the token).
        assert "canvas_sync_log" in written and "event_logs" in written
        assert "CanvasPermissionError" in written and sandbox.base_url.split("//")[1] in written
        for secret in (sandbox.token, PG_PASSWORD, WAREHOUSE_PASSWORD):
            assert secret not in written
    finally:
        server.shutdown()
        from canvas_assets.warehouse.engine import dispose_engines

        dispose_engines()
        drop_database(dagster_db)
        drop_database(warehouse_db)


# --- a token Canvas echoes back inside an error body, JSON-escaped (issue 21) --------------------------------
def _escaped(text: str) -> str:
    """Every character of `text` as a JSON \\u escape: valid JSON, and no substring of the token."""
    return "".join(f"\\u{ord(c):04x}" for c in text)


def _echoing_body(token: str) -> bytes:
    return (
        '{"errors":[{"message":"the parameter access_token=' + _escaped(token) + ' is not valid"}]}'
    ).encode()


def test_a_400_echoing_the_escaped_token_gives_an_error_without_it(sandbox):
    course_id = sandbox.data.course_ids()[0]
    sandbox.misbehave("/enrollments", status=400, body=_echoing_body(sandbox.token))
    assert sandbox.token not in _echoing_body(sandbox.token).decode()
    with (
        CanvasClient(sandbox.base_url, sandbox.token, max_retries=0) as client,
        pytest.raises(CanvasBadRequest) as info,
    ):
        client.list_enrollments(course_id)
    err = info.value
    assert "access_token=[REDACTED] is not valid" in err.message
    for shown in (err.message, str(err), json.dumps(err.to_metadata())):
        assert sandbox.token not in shown and sandbox.token[2:] not in shown


def test_urllib3_warnings_pass_through_the_redacting_filter(sandbox, caplog):
    # A client registers its token; urllib3's module loggers (whose warnings quote URLs and exception
    # texts) are then filtered as the client's own logger is.
    CanvasClient(sandbox.base_url, sandbox.token).close()
    with caplog.at_level(logging.WARNING):
        for name in ("urllib3.connectionpool", "urllib3.util.retry", "urllib3.response"):
            logging.getLogger(name).warning("Retrying after %s", f"connection broken by {sandbox.token}")
    assert len(caplog.records) == 3
    assert all(sandbox.token not in r.getMessage() and "[REDACTED]" in r.getMessage() for r in caplog.records)


@pytest.mark.slow
def test_a_sync_whose_errors_echo_the_escaped_token_writes_it_nowhere(sandbox, tmp_path):
    home, warehouse = tmp_path / "home", tmp_path / "warehouse.db"
    home.mkdir()
    (home / "dagster.yaml").write_text("telemetry:\n  enabled: false\n")
    env = clean_env(
        DAGSTER_HOME=str(home),
        CANVAS_BASE_URL=sandbox.base_url,
        CANVAS_API_TOKEN=sandbox.token,
        CANVAS_ASSETS_DATABASE_URL=f"sqlite:///{warehouse}",
    )
    victim = sandbox.data.course_ids(states=("available",))[0]
    sandbox.misbehave(
        f"/courses/{victim}/enrollments", count=0, status=400, body=_echoing_body(sandbox.token)
    )
    result = subprocess.run(
        [str(BIN / "canvas-assets"), "sync", "--profile", "lightweight", "--course", str(victim)],
        env=env, cwd=tmp_path, capture_output=True, text=True, timeout=600,
    )  # fmt: skip
    assert result.returncode == 1, result.stdout + result.stderr
    assert f"course {victim}: failed: CanvasBadRequest" in result.stdout
    engine = sa.create_engine(f"sqlite:///{warehouse}", poolclass=sa.pool.NullPool)
    with engine.connect() as conn:
        logged = conn.execute(
            sa.text("SELECT message FROM canvas_sync_log WHERE course_id = :c AND status = 'failed'"), {"c": victim}
        ).scalars().all()  # fmt: skip
    assert logged and all("access_token=[REDACTED] is not valid" in m for m in logged)
    written = "\n".join([result.stdout, result.stderr, *logged, _files_text(tmp_path)])
    assert "[REDACTED]" in written
    assert sandbox.token not in written and sandbox.token[2:] not in written
