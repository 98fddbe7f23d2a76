"""Our own side fails, and the pipeline survives it: a run worker killed with SIGKILL in the extract and in a
Layer-1 load, the warehouse's PostgreSQL restarted in the middle of a sync, the Dagster instance's database
down when a schedule fires (docs/failures.md says what an operator sees and does in each case).

Everything here is a real process: `dagster-daemon` on the production instance configuration (run monitoring
shortened), run workers started by its code server, the Dagster instance and the warehouse each on a private
PostgreSQL server that the tests stop and restart (canvas_assets_tests/processes.py), the Canvas sandbox over
HTTP. A run is caught at the right moment by holding a Canvas answer (`CanvasGate`) or a warehouse row lock,
never by sleeping.
"""

import json
import time
from collections.abc import Iterator
from datetime import datetime, timezone
from typing import Any

import dagster as dg
import pytest
import sqlalchemy as sa
from click.testing import CliRunner
from dagster._core.scheduler.instigation import TickStatus

from canvas_assets.cli.main import main
from canvas_assets.defs.partitions import range_tags
from canvas_assets.entities import STUDENT_STATES
from canvas_assets.profiles import preset
from canvas_assets.sandbox import CanvasSandbox, SandboxConfig
from canvas_assets_tests.harness import failure_text
from canvas_assets_tests.processes import (
    MINUTELY_SCHEDULE,
    CanvasGate,
    Deployment,
    blocked_backend,
    claimed_slots,
    defs,
    deployment,
    kill,
    row_lock,
    tables_written_by,
    wait_until,
    warehouse_busy,
)

pytestmark = pytest.mark.slow

ENTITIES = ("courses", "students", "enrollments")  # LIGHTWEIGHT's
QUIET = {"loggers": {"console": {"config": {"log_level": "CRITICAL"}}}}
FAILURE, SUCCESS = dg.DagsterRunStatus.FAILURE, dg.DagsterRunStatus.SUCCESS


@pytest.fixture(scope="module")
def prod(tmp_path_factory) -> Iterator[Deployment]:
    """The deployment, its courses discovered and synced once (in this process, while the daemon starts)."""
    sandbox = CanvasSandbox(SandboxConfig(scale="small", throttle="hosted")).start()
    try:
        with deployment(sandbox, tmp_path_factory.mktemp("failures")) as d:
            d.start_daemon()
            found = defs.resolve_job_def("discover_courses").execute_in_process(
                instance=d.instance, run_config=QUIET, raise_on_error=False
            )
            assert found.success, failure_text(found)
            keys = d.course_keys()
            first = defs.resolve_job_def("sync_lightweight").execute_in_process(
                instance=d.instance,
                run_config={**preset("LIGHTWEIGHT").to_run_config(), **QUIET},
                tags=range_tags(keys[0], keys[-1]),
                raise_on_error=False,
            )
            assert first.success, failure_text(first)
            yield d
    finally:
        sandbox.stop()


# --- what the warehouse holds ----------------------------------------------------------------------------------
def staging(d: Deployment) -> dict[tuple[str, int], tuple[str, str]]:
    """(entity, course) -> (run that fetched it, the digest of its records as stored)."""
    return {
        (r.entity, int(r.course_id)): (r.run_id, str(r.records_digest))
        for r in d.rows("SELECT entity, course_id, run_id, records_digest FROM canvas_staging")
    }


def enrollment_tables(d: Deployment) -> dict[str, list[tuple]]:
    """Everything a Layer-1 enrollments load writes, row by row."""
    return {
        "canvas_enrollments": sorted(tuple(r) for r in d.rows("SELECT * FROM canvas_enrollments")),
        "canvas_score_history": sorted(tuple(r) for r in d.rows("SELECT * FROM canvas_score_history")),
        "canvas_course_sync": sorted(
            tuple(r) for r in d.rows("SELECT * FROM canvas_course_sync WHERE entity = 'enrollments'")
        ),
    }


def history_rows(d: Deployment) -> dict[int, int]:
    return {
        int(r[0]): int(r[1])
        for r in d.rows("SELECT enrollment_id, COUNT(*) FROM canvas_score_history GROUP BY 1")
    }


def assert_mirrors_canvas(d: Deployment) -> None:
    """The LIGHTWEIGHT Layer-1 tables equal the sandbox's ground truth."""
    data = d.sandbox.data
    cids = data.course_ids(states=("available", "completed"))
    live = {
        r.id: r
        for r in d.rows(
            "SELECT id, course_id, user_id, type, enrollment_state, current_score, final_score, current_grade, "
            "final_grade FROM canvas_enrollments WHERE deleted_at IS NULL"
        )
    }
    expected = {e["id"]: e for c in cids for e in data.enrollments_of(c)}
    assert set(live) == set(expected)
    for eid, e in expected.items():
        row, grades = live[eid], e.get("grades") or {}
        assert (row.course_id, row.user_id, row.type, row.enrollment_state) == (
            e["course_id"],
            e["user_id"],
            e["type"],
            e["enrollment_state"],
        )
        for column in ("current_score", "final_score", "current_grade", "final_grade"):
            assert getattr(row, column) == grades.get(column), (eid, column)
    students = {r.id: r.name for r in d.rows("SELECT id, name FROM canvas_students")}
    for c in cids:
        for u in data.students_of(c, STUDENT_STATES):
            assert students[u["id"]] == u["name"]
    courses = {r.id: r.name for r in d.rows("SELECT id, name FROM canvas_courses WHERE deleted_at IS NULL")}
    assert courses == {c: data.courses[c]["name"] for c in cids}


def change_scores(sandbox: CanvasSandbox, keys: list[str], n: int) -> set[int]:
    """Change one score in each of `n` courses that have a scored active student; the enrollments changed."""
    changed: set[int] = set()
    for key in keys:
        try:
            changed.add(sandbox.change_score(int(key)))
        except KeyError:  # no scored active student in that course
            continue
        if len(changed) == n:
            return changed
    raise AssertionError(f"fewer than {n} courses with a scored student")


# --- what Dagster recorded ----------------------------------------------------------------------------------
def events(d: Deployment, run_id: str, kind: dg.DagsterEventType) -> list[dg.EventLogEntry]:
    return [r.event_log_entry for r in d.instance.get_records_for_run(run_id, of_type=kind).records]


def step_failures(d: Deployment, run_id: str) -> dict[str, str]:
    """step key -> the errors of its (last) failure, outermost first, one `Class: message` per line."""
    out = {}
    for entry in events(d, run_id, dg.DagsterEventType.STEP_FAILURE):
        error, chain = entry.get_dagster_event().step_failure_data.error, []
        while error is not None:
            chain.append(f"{error.cls_name}: {error.message.strip()}")
            error = error.cause
        out[entry.step_key or ""] = "\n".join(chain)
    return out


def reported(d: Deployment, run_id: str) -> set[int]:
    """Courses that sync_failure_reporter (in the daemon) recorded as failed for the run."""

    def rows() -> set[int]:
        return {
            int(r[0])
            for r in d.rows(
                "SELECT course_id FROM canvas_sync_log WHERE run_id = :r AND entity = '*' AND status = 'failed'",
                r=run_id,
            )
        }

    return set(wait_until(f"the failure reporter to record run {run_id}", rows, 90))


def status_json() -> dict[str, Any]:
    """`canvas-assets status --json`, run in this process (its environment points at the deployment)."""
    result = CliRunner().invoke(main, ["status", "--json"])
    assert result.exit_code == 0, result.output
    return dict(json.loads(result.output))


def wait_for_a_quiet_extract(d: Deployment, gate: CanvasGate, run_id: str, courses: int) -> set[int]:
    """Once the run's extract has everything but the held answer: every other request answered, every full
    batch of finished courses committed, no warehouse transaction open. Returns the courses it has staged."""
    wait_until("the run to ask for the held Canvas answer", gate.reached.is_set, 120)
    # Finished courses are committed in batches of `processing.batch_size`; fewer wait in memory.
    at_least = max(0, courses - 1 - (preset("LIGHTWEIGHT").batch_size - 1))
    seen: list[set[int]] = []

    def settled() -> set[int] | None:
        staged = {c for (_, c), (r, _) in staging(d).items() if r == run_id}
        quiet = d.sandbox.stats()["in_flight"] == gate.held and not warehouse_busy(d)
        seen.append(staged if quiet and len(staged) >= at_least else {-1})
        return staged if len(seen) > 1 and seen[-1] == seen[-2] != {-1} else None

    staged = set(wait_until("the extract to settle around the held answer", settled, 120, every=0.5))
    assert staged or not at_least
    return staged


# --- 1. a run worker killed --------------------------------------------------------------------------------------
def test_a_worker_killed_in_the_extract_fails_the_run_and_the_next_sync_recovers(prod):
    d, sandbox = prod, prod.sandbox
    keys = d.course_keys()
    (changed,) = change_scores(sandbox, keys, 1)
    dropped = sandbox.drop_enrollment(int(keys[-1]))
    before_staging, before_layer1 = staging(d), enrollment_tables(d)
    held = int(keys[len(keys) // 2])

    gate = CanvasGate(sandbox, f"/courses/{held}/enrollments")
    try:
        run_id = d.launch("sync_lightweight", keys)
        worker = d.worker_pid(run_id)
        staged = wait_for_a_quiet_extract(d, gate, run_id, len(keys))
        kill(worker)
        run = d.wait_for_run(run_id, timeout=120)
    finally:
        gate.release()

    # The code server that started the worker saw it die: the run is failed, not left STARTED.
    assert run.status == FAILURE
    assert any("SIGKILL" in m for m in d.messages(run_id)), d.messages(run_id)
    # Staging holds whole courses: each one either as this run fetched it (every entity) or as before.
    after = staging(d)
    assert set(after) == set(before_staging)
    for entity in ENTITIES:
        assert {c for (e, c), (r, _) in after.items() if e == entity and r == run_id} == staged
    assert held not in staged
    assert {k: v for k, v in after.items() if v[0] != run_id} == {
        k: v for k, v in before_staging.items() if k[1] not in staged
    }
    assert enrollment_tables(d) == before_layer1  # no load ran
    # The dead run's slot of the canvas_api pool is given back (run_monitoring.free_slots_after_run_end_seconds);
    # without it every later run would wait for that slot forever.
    wait_until("the dead run's canvas_api slot to be freed", lambda: run_id not in claimed_slots(d), 60)

    # What an operator sees: every course of the run failed, the run failed and why.
    assert reported(d, run_id) == {int(k) for k in keys}
    report = status_json()
    (listed,) = [r for r in report["recent_runs"] if r["run_id"] == run_id]
    assert listed["status"] == "FAILURE"
    assert listed["range"] == f"{keys[0]}..{keys[-1]}"
    assert listed["failed_courses"] == keys
    assert "SIGKILL" in listed["failure"]
    assert {c["course_id"]: c["last_status"] for c in report["courses"]} == {int(k): "failed" for k in keys}
    text = CliRunner().invoke(main, ["status"]).output
    (line,) = [line for line in text.splitlines() if line.strip().startswith(run_id[:8])]
    assert "FAILURE" in line and f"{keys[0]}..{keys[-1]}" in line

    # The next sync completes and mirrors Canvas.
    again = d.launch("sync_lightweight", keys)
    assert d.wait_for_run(again).status == SUCCESS, step_failures(d, again)
    assert_mirrors_canvas(d)
    assert changed in {r[0] for r in d.rows("SELECT enrollment_id FROM canvas_score_history")}
    assert d.rows("SELECT deleted_at FROM canvas_enrollments WHERE id = :e", e=dropped)[0][0] is not None
    assert {c["course_id"]: c["last_status"] for c in status_json()["courses"]} == {
        int(k): "success" for k in keys
    }


def test_a_worker_killed_in_a_layer1_load_leaves_the_tables_as_they_were(prod):
    d, sandbox = prod, prod.sandbox
    keys = d.course_keys()
    changed = change_scores(sandbox, keys, 3)
    dropped = sandbox.drop_enrollment(int(keys[3]))
    before, history_before = enrollment_tables(d), history_rows(d)
    locked = int(keys[-1])

    # The load's last statement records the courses it confirmed: hold one of those rows, and the load waits
    # there with everything else of its transaction written.
    with row_lock(
        d,
        "SELECT 1 FROM canvas_course_sync WHERE entity = 'enrollments' AND course_id = :c FOR UPDATE",
        c=locked,
    ) as lock:
        me = lock.execute(sa.text("SELECT pg_backend_pid()")).scalar_one()
        run_id = d.launch("sync_lightweight", keys)
        worker = d.worker_pid(run_id)
        load = wait_until(
            "the enrollments load to wait for the held row", lambda: blocked_backend(d, me), 120
        )
        assert {"canvas_enrollments", "canvas_score_history"} <= tables_written_by(d, load)
        kill(worker)
        run = d.wait_for_run(run_id, timeout=120)
    # Released, the orphaned transaction finds its client gone and is rolled back by the server.
    wait_until(
        "the dead worker's connection to end",
        lambda: not d.rows("SELECT 1 FROM pg_stat_activity WHERE pid = :p", p=load),
        60,
    )

    assert run.status == FAILURE
    assert any("SIGKILL" in m for m in d.messages(run_id))
    assert enrollment_tables(d) == before  # the load is one transaction: nothing of it stayed
    # Staging holds every course whole, as this run fetched it (its extract had finished).
    after = staging(d)
    assert {c for (_, c), (r, _) in after.items() if r == run_id} == {int(k) for k in keys}
    assert {e for (e, _), (r, _) in after.items() if r == run_id} == set(ENTITIES)
    assert reported(d, run_id) == {int(k) for k in keys}
    (listed,) = [r for r in status_json()["recent_runs"] if r["run_id"] == run_id]
    assert listed["status"] == "FAILURE" and "SIGKILL" in listed["failure"]
    # The enrollments of every course were left unloaded; courses were loaded before the kill.
    assert listed["failed_courses"] == keys

    again = d.launch("sync_lightweight", keys)
    assert d.wait_for_run(again).status == SUCCESS, step_failures(d, again)
    assert_mirrors_canvas(d)
    assert d.rows("SELECT deleted_at FROM canvas_enrollments WHERE id = :e", e=dropped)[0][0] is not None
    history = history_rows(d)
    assert {
        e: history[e] - history_before.get(e, 0) for e in history if history[e] != history_before.get(e)
    } == {e: 1 for e in changed}


# --- 2. the warehouse restarted ----------------------------------------------------------------------------------
def test_a_warehouse_restart_mid_sync_is_survived_by_the_extract_and_a_load_runs_again(prod):
    d, sandbox = prod, prod.sandbox
    keys = d.course_keys()
    changed = change_scores(sandbox, keys[::-1], 2)
    history_before = history_rows(d)
    held = int(keys[len(keys) // 2])

    gate = CanvasGate(sandbox, f"/courses/{held}/enrollments")
    try:
        run_id = d.launch("sync_lightweight", keys)
        d.worker_pid(run_id)
        wait_for_a_quiet_extract(d, gate, run_id, len(keys))
        # A restart while the extract waits for Canvas: its pooled warehouse connections are now dead.
        d.warehouse_pg.restart()
        with row_lock(
            d,
            "SELECT 1 FROM canvas_course_sync WHERE entity = 'enrollments' AND course_id = :c FOR UPDATE",
            c=held,
        ) as lock:
            me = lock.execute(sa.text("SELECT pg_backend_pid()")).scalar_one()
            gate.release()
            wait_until("the enrollments load to wait for the held row", lambda: blocked_backend(d, me), 120)
            # A restart in the middle of the load's transaction.
            d.warehouse_pg.restart()
        run = d.wait_for_run(run_id, timeout=180)
    finally:
        gate.release()

    failures = step_failures(d, run_id)
    # The extract went on after the restart (pre-ping replaced its dead connections): no failure, no retry.
    assert "canvas_extract" not in failures
    assert not [
        e for e in events(d, run_id, dg.DagsterEventType.STEP_UP_FOR_RETRY) if e.step_key == "canvas_extract"
    ]
    assert {c for (_, c), (r, _) in staging(d).items() if r == run_id} == {int(k) for k in keys}
    # The load's transaction died with its connection (rolled back: nothing half-written). The step asked
    # Dagster to run it again, and the second attempt loaded everything: the run succeeds.
    load_step = "layer1__enrollments.load_enrollments"
    assert run.status == SUCCESS, failures
    assert [e for e in events(d, run_id, dg.DagsterEventType.STEP_UP_FOR_RETRY) if e.step_key == load_step]
    assert_mirrors_canvas(d)
    history = history_rows(d)
    assert {
        e: history[e] - history_before.get(e, 0) for e in history if history[e] != history_before.get(e)
    } == {e: 1 for e in changed}


# --- 3. the instance database down when a schedule fires ----------------------------------------------------------
def test_a_tick_while_the_instance_database_is_down_runs_late_and_is_not_lost(prod):
    d, sandbox = prod, prod.sandbox
    keys = d.course_keys()
    (changed,) = change_scores(sandbox, keys[1:], 1)
    location = d._workspace().create_request_context().get_code_location("canvas_assets_failures")
    schedule = next(iter(location.get_repositories().values())).get_schedule(MINUTELY_SCHEDULE)
    d.instance.start_schedule(schedule)
    try:
        now = time.time()
        tick_at = (int(now) // 60 + 1) * 60
        if tick_at - now < 10:
            tick_at += 60
        time.sleep(max(0.0, tick_at - 5 - time.time()))
        d.instance_pg.stop("fast")
        time.sleep(max(0.0, tick_at + 5 - time.time()))
        back = time.time()  # no run can be created before the database is back
        d.instance_pg.start()

        def the_tick() -> Any:
            for tick in d.instance.get_ticks(schedule.get_remote_origin_id(), schedule.selector_id):
                if int(tick.timestamp) == tick_at and tick.status == TickStatus.SUCCESS:
                    return tick
            return None

        tick = wait_until("the missed tick to be evaluated", the_tick, 120)
    finally:
        d.instance.stop_schedule(schedule.get_remote_origin_id(), schedule.selector_id, schedule)
    # The tick keeps its scheduled time; its run was created once the database was back: late, not lost.
    (run_id,) = tick.run_ids
    record = d.instance.get_run_record_by_id(run_id)
    assert record is not None and record.create_timestamp.timestamp() >= back
    assert record.dagster_run.tags.get("dagster/schedule_name") == MINUTELY_SCHEDULE
    assert d.daemon is not None and d.daemon.poll() is None  # the daemon rode it out
    assert d.wait_for_run(run_id).status == SUCCESS, step_failures(d, run_id)
    assert_mirrors_canvas(d)
    assert changed in history_rows(d)
    assert datetime.fromtimestamp(tick_at, timezone.utc) < record.create_timestamp
