"""Stopping: Ctrl-C and SIGTERM end a sync cleanly, a killed sync's run does not block the next one, the
sandbox command stops when asked and the local store stops when its last user goes (issue 21).

Real `canvas-assets` subprocesses against a sandbox whose requests hang, a Dagster instance on the test
PostgreSQL server with the local instance's pool limits (one `canvas_api` slot), a PostgreSQL warehouse.
The bounds are hang detectors ("stopped, not hung"), generous for a noisy 2-core machine.
"""

import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import dagster as dg
import pytest
import sqlalchemy as sa
import yaml

from canvas_assets_tests.harness import BIN, ROOT, canvas_storage, clean_env, create_database, drop_database
from canvas_assets_tests.processes import wait_until

pytestmark = pytest.mark.postgres

STOP_BOUND_S = 30  # "within a few seconds", as a hang detector


def pg_url(name: str) -> str:
    return f"postgresql+psycopg2://postgres@127.0.0.1:5432/{name}"


@pytest.fixture
def home(tmp_path, sandbox) -> Iterator[dict[str, str]]:
    """The environment of a `canvas-assets sync`: a DAGSTER_HOME on its own database (the local instance's
    pools: one `canvas_api` slot), a warehouse database of its own, the sandbox."""
    instance_db, warehouse_db = create_database(), create_database()
    config = {
        **canvas_storage(pg_url(instance_db)),
        "concurrency": {"pools": {"default_limit": 1, "granularity": "op"}},
        "telemetry": {"enabled": False},
    }
    (tmp_path / "home").mkdir()
    (tmp_path / "home" / "dagster.yaml").write_text(yaml.safe_dump(config), encoding="utf-8")
    yield clean_env(
        DAGSTER_HOME=str(tmp_path / "home"),
        CANVAS_BASE_URL=sandbox.base_url,
        CANVAS_API_TOKEN=sandbox.token,
        CANVAS_ASSETS_DATABASE_URL=pg_url(warehouse_db),
    )
    from canvas_assets.warehouse.engine import dispose_engines

    dispose_engines()
    drop_database(instance_db)
    drop_database(warehouse_db)


class Sync:
    """A `canvas-assets sync` in its own session, its output in files (no pipe to fill)."""

    def __init__(self, env: dict[str, str], cwd: Path, *args: str) -> None:
        self.out, self.err = (cwd / "sync.out").open("w+"), (cwd / "sync.err").open("w+")
        self.proc = subprocess.Popen(
            [str(BIN / "canvas-assets"), "sync", *args],
            env=env,
            cwd=cwd,
            stdout=self.out,
            stderr=self.err,
            start_new_session=True,
        )

    def signal(self, signum: int) -> float:
        self.proc.send_signal(signum)
        return time.monotonic()

    def wait(self, timeout: float) -> int:
        return self.proc.wait(timeout=timeout)

    @property
    def stderr(self) -> str:
        self.err.seek(0)
        return self.err.read()

    @property
    def stdout(self) -> str:
        self.out.seek(0)
        return self.out.read()

    def close(self) -> None:
        if self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait(timeout=30)
        self.out.close()
        self.err.close()


def sync_again(env: dict[str, str], cwd: Path, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [str(BIN / "canvas-assets"), "sync", *args],
        env=env,
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=300,
    )


def instance_of(env: dict[str, str]) -> dg.DagsterInstance:
    return dg.DagsterInstance.from_config(env["DAGSTER_HOME"])


def unfinished_runs(instance: dg.DagsterInstance) -> list[dg.DagsterRun]:
    return [r for r in instance.get_runs() if not r.is_finished]


def a_request_hangs(sandbox) -> bool:
    return sandbox.stats()["in_flight"] >= 1


def test_ctrl_c_stops_a_sync_whose_requests_hang_within_seconds_and_the_next_sync_works(
    home, tmp_path, sandbox
):
    sandbox.misbehave(count=0, hang=True)
    sync = Sync(home, tmp_path)
    try:
        wait_until("the sync's first request", lambda: a_request_hangs(sandbox), timeout=120)
        sent = sync.signal(signal.SIGINT)
        code = sync.wait(timeout=STOP_BOUND_S)
        took = time.monotonic() - sent
        stderr = sync.stderr
    finally:
        sync.close()
    assert code == 130, stderr
    assert took < STOP_BOUND_S
    assert "sync interrupted by SIGINT" in stderr
    assert "marked canceled" in stderr
    assert "nothing was synced" in stderr
    with instance_of(home) as instance:
        assert unfinished_runs(instance) == []
        (run,) = instance.get_runs()
        assert run.status == dg.DagsterRunStatus.CANCELED
    sandbox.clear_faults()
    again = sync_again(home, tmp_path)
    assert again.returncode == 0, again.stdout + again.stderr
    assert "courses failed   0" in again.stdout


def test_sigterm_stops_a_sync_in_its_fetch_and_says_what_it_kept(home, tmp_path, sandbox):
    courses = sandbox.data.course_ids(states=("available", "completed"))
    victim = courses[len(courses) // 2]
    sandbox.misbehave(path_contains=f"/courses/{victim}/", count=0, hang=True)
    sync = Sync(home, tmp_path, "--profile", "LIGHTWEIGHT")
    try:
        wait_until("the extract's hung request", lambda: a_request_hangs(sandbox), timeout=180)
        time.sleep(1.0)  # let the other courses' fetches get on
        sent = sync.signal(signal.SIGTERM)
        code = sync.wait(timeout=STOP_BOUND_S)
        took = time.monotonic() - sent
        stderr = sync.stderr
    finally:
        sync.close()
    assert code == 128 + signal.SIGTERM, stderr
    assert took < STOP_BOUND_S
    assert "sync interrupted by SIGTERM" in stderr
    kept_line = next(line for line in stderr.splitlines() if line.strip().startswith("kept:"))
    kept = int(kept_line.split()[1])
    with instance_of(home) as instance:
        assert unfinished_runs(instance) == []
        extract = next(r for r in instance.get_runs() if r.job_name != "discover_courses")
        assert extract.status == dg.DagsterRunStatus.CANCELED
        assert extract.run_id in stderr
    # What it says it kept is what the warehouse has from that run: whole courses, the hung one not among them.
    engine = sa.create_engine(home["CANVAS_ASSETS_DATABASE_URL"], poolclass=sa.pool.NullPool)
    with engine.connect() as conn:
        staged = {
            r[0]
            for r in conn.execute(
                sa.text(
                    "SELECT DISTINCT course_id FROM canvas_sync_log WHERE run_id = :r AND status = 'success'"
                ),
                {"r": extract.run_id},
            )
        }
    engine.dispose()
    assert len(staged) == kept
    assert victim not in staged
    sandbox.clear_faults()
    again = sync_again(home, tmp_path, "--profile", "LIGHTWEIGHT")
    assert again.returncode == 0, again.stdout + again.stderr
    assert f"courses ok       {len(courses)}" in again.stdout


def test_a_run_left_started_by_a_killed_sync_does_not_block_the_next_sync(home, tmp_path, sandbox):
    victim = sandbox.data.course_ids(states=("available",))[0]
    sandbox.misbehave(path_contains=f"/courses/{victim}/", count=0, hang=True)
    sync = Sync(home, tmp_path, "--profile", "LIGHTWEIGHT")
    try:
        wait_until("the extract's hung request", lambda: a_request_hangs(sandbox), timeout=180)
        with instance_of(home) as instance:
            (held,) = wait_until(
                "the extract's claim on the canvas_api slot",
                lambda: [
                    s.run_id
                    for s in instance.event_log_storage.get_concurrency_info("canvas_api").claimed_slots
                ],
                timeout=60,
            )
        os.killpg(sync.proc.pid, signal.SIGKILL)  # kill -9: no handler, no exit code of its own
        sync.wait(timeout=30)
    finally:
        sync.close()
    sandbox.clear_faults()
    again = sync_again(home, tmp_path, "--profile", "LIGHTWEIGHT")
    assert again.returncode == 0, again.stdout + again.stderr
    assert f"run {held}" in again.stderr
    assert "no longer exists: marked failed" in again.stderr
    with instance_of(home) as instance:
        dead = instance.get_run_by_id(held)
        assert dead is not None and dead.status == dg.DagsterRunStatus.FAILURE
        assert unfinished_runs(instance) == []
        assert instance.event_log_storage.get_concurrency_info("canvas_api").claimed_slots == []


def test_a_second_signal_ends_a_stopping_sync_at_once(tmp_path):
    # The first signal raises SyncInterrupted; the process then takes its time to clean up (here: forever).
    script = (
        "import sys, time\n"
        "from canvas_assets.cli.stopping import SyncInterrupted, stop_on_signals\n"
        "with stop_on_signals('stopping'):\n"
        "    try:\n"
        "        print('ready', flush=True)\n"
        "        time.sleep(600)\n"
        "    except SyncInterrupted:\n"
        "        print('cleaning up', flush=True)\n"
        "        time.sleep(600)\n"
    )
    proc = subprocess.Popen(
        [sys.executable, "-c", script],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )
    try:
        assert proc.stdout.readline().strip() == "ready"
        proc.send_signal(signal.SIGINT)
        assert proc.stdout.readline().strip() == "cleaning up"
        sent = time.monotonic()
        proc.send_signal(signal.SIGINT)
        code = proc.wait(timeout=STOP_BOUND_S)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert code == -signal.SIGINT
    assert time.monotonic() - sent < STOP_BOUND_S
    assert "SIGINT: stopping" in proc.stderr.read()


def _ignore_stop_signals() -> None:
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)


@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM], ids=["SIGINT", "SIGTERM"])
def test_the_sandbox_command_stops_on_a_signal_even_when_started_with_it_ignored(tmp_path, signum):
    # A shell's background job or a test harness may hand the process SIGINT/SIGTERM ignored (issue 21).
    proc = subprocess.Popen(
        [str(BIN / "canvas-assets"), "sandbox", "--port", "0", "--courses", "3"],
        env=clean_env(),
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        preexec_fn=_ignore_stop_signals,
    )
    try:
        lines = [proc.stdout.readline() for _ in range(4)]
        assert lines[-1].startswith("Ctrl-C to stop"), lines
        sent = time.monotonic()
        proc.send_signal(signum)
        code = proc.wait(timeout=STOP_BOUND_S)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert code == 0
    assert time.monotonic() - sent < STOP_BOUND_S
    assert "stopped" in proc.stdout.read()


def _postmaster(data_dir: Path) -> int | None:
    pid_file = data_dir / "postmaster.pid"
    if not pid_file.exists():
        return None
    pid = int(pid_file.read_text().split()[0])
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return None
    return pid


def test_the_local_store_stops_when_its_last_user_is_killed(tmp_path):
    data_dir = tmp_path / "pgdata"
    script = (
        "import sys, time\n"
        "from pathlib import Path\n"
        "from canvas_assets.instance.local_store import embedded_server\n"
        f"embedded_server(Path({str(data_dir)!r}))\n"
        "print('up', flush=True)\n"
        "time.sleep(600)\n"
    )
    user = subprocess.Popen(
        [sys.executable, "-c", script], cwd=ROOT, stdout=subprocess.PIPE, text=True, start_new_session=True
    )
    try:
        assert user.stdout.readline().strip() == "up"
        postmaster = _postmaster(data_dir)
        assert postmaster is not None
        user.kill()  # SIGKILL: its exit handler, which would stop the store, never runs
        user.wait(timeout=30)
        wait_until("the orphaned local store to stop", lambda: _postmaster(data_dir) is None, timeout=60)
    finally:
        if user.poll() is None:
            user.kill()
            user.wait()
        leftover = _postmaster(data_dir)
        if leftover is not None:
            os.kill(leftover, signal.SIGTERM)
