"""`canvas-assets sync`: discover courses, then materialise a profile's assets in ranged Dagster runs,
through the instance at $DAGSTER_HOME and planned as a UI backfill is (docs/architecture.md, "Ranged runs").
"""

from __future__ import annotations

import os
import threading
import time
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import dagster as dg
from dagster import DagsterEvent

from canvas_assets.canvas.redact import redact_known
from canvas_assets.cli.status import account_live_rows, course_attempts, live_rows, step_failure_reason
from canvas_assets.cli.stopping import SyncInterrupted, abandon_run, owner_tags
from canvas_assets.defs.assets.common import run_figures
from canvas_assets.defs.jobs import JOB_FOR_PRESET, profile_asset_keys
from canvas_assets.defs.partitions import COURSE_PARTITIONS_NAME, plan_course_runs, range_tags
from canvas_assets.entities import ENTITIES
from canvas_assets.errors import ConfigurationError
from canvas_assets.extract.memory import release_free_heap
from canvas_assets.instance.inprocess import start_run
from canvas_assets.profiles import ACCOUNT_ENTITIES, Profile
from canvas_assets.progress import report as report_progress
from canvas_assets.transform import TRANSFORMERS

# Dagster's console logger at WARNING: the CLI prints its own progress and summary; the full logs are
# in the instance (the UI shows them).
QUIET_LOGGING: dict[str, Any] = {"loggers": {"console": {"config": {"log_level": "CRITICAL"}}}}


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
    figures: dict[str, float] = field(default_factory=dict)  # the run's sync report (common.run_figures)


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

    The run is the same (built by `instance.inprocess.start_run`); each event is looked at as it goes by
    and only the first step failure is kept (docs/architecture.md, "The in-process run").

    The run executes on a thread of its own while the calling thread waits for it. On the main thread
    Dagster would take over SIGINT/SIGTERM for the run and act on them only inside op code (a run waiting
    for its pool slot ignored both for minutes, issue 21), and an interrupted extract would still wait for
    its requests in flight. Here a SyncInterrupted (`stop_on_signals`) reaches the waiting thread at
    once: the run is marked canceled, its slots freed, its thread left parked (it stores no more events)
    and the exception goes on; the caller ends the process (`exit_now`), abandoning the requests in flight.
    What the extract had staged stays: it stages whole courses, each batch in one transaction.
    """
    run, events = start_run(
        job, instance, run_config=run_config, tags={**tags, **owner_tags()}, asset_selection=asset_selection
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
                if event.is_step_success or event.is_step_failure:
                    release_free_heap()
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
    return redact_known(step_failure_reason(event, with_class=False))


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
    return _outcome(result, [])


def _outcome(result: RunResult, courses: list[str], figures: dict[str, float] | None = None) -> RunOutcome:
    failure, category = run_failure_message(result), run_failure_category(result)
    return RunOutcome(result.run_id, courses, result.success, failure, category, figures or {})


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
    return chosen[:max_courses]  # max_courses None: every one


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
            outcomes.append(_outcome(result, keys, run_figures(instance, result.run_id)))
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
            for entity in ACCOUNT_ENTITIES:
                if profile.wants(entity):
                    name = TRANSFORMERS[entity].tables[0]
                    rows[name] = account_live_rows(conn, name)
    for run in runs:
        if not run.success:
            for key in run.courses:
                if status.get(int(key)) in ("not run", "success"):
                    status[int(key)] = "failed"
                    errors.setdefault(int(key), run.failure or "run failed")
    figures = [r.figures for r in runs]
    return SyncSummary(
        profile=profile.name,
        courses=courses,
        runs=runs,
        course_status=status,
        course_errors=errors,
        rows=rows,
        api_calls=sum(int(f.get("canvas/api_calls", 0)) for f in figures),
        throttled=sum(int(f.get("canvas/throttled", 0)) for f in figures),
        retries=sum(int(f.get("canvas/retries", 0)) for f in figures),
        seconds=seconds,
    )
