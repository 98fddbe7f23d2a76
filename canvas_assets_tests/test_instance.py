"""The project's Dagster instance: what a ranged run stores, and what the UI can tell per course.

Runs here go through `canvas_assets.instance.storage.CanvasStorage` on a real PostgreSQL database,
exactly as with the local default (embedded PostgreSQL) and the production configuration.
"""

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import dagster as dg
import pytest
import yaml

from canvas_assets.defs.assets.common import run_figures
from canvas_assets.instance import LOCAL_CONFIG, PRODUCTION_CONFIG, instance_config
from canvas_assets_tests.harness import ROOT, Harness, canvas_storage, failure_text, pipeline_harness

BIG = 1000  # the small sandbox's large course
PLANNED = dg.DagsterEventType.ASSET_MATERIALIZATION_PLANNED
MATERIALIZED = dg.DagsterEventType.ASSET_MATERIALIZATION
FAILED = dg.DagsterEventType.ASSET_FAILED_TO_MATERIALIZE
RUN_WIDE = {"courses_failed", "courses", "records_by_entity", "fetch_seconds", "courses_ok", "profile"}


@pytest.fixture
def h(make_sandbox, sqlite_url, pg_url, monkeypatch) -> Iterator[Harness]:
    sandbox = make_sandbox(scale="small", throttle="hosted")
    with pipeline_harness(sandbox, sqlite_url, monkeypatch, canvas_storage(pg_url)) as harness:
        yield harness


def events(h: Harness, run_id: str, kind: dg.DagsterEventType) -> list[dg.EventLogEntry]:
    return [r.event_log_entry for r in h.instance.get_records_for_run(run_id, of_type=kind).records]


def partition_events(h: Harness, key: list[str], partition: str, kind: dg.DagsterEventType) -> list:
    records = (
        h.instance.fetch_failed_materializations if kind == FAILED else h.instance.fetch_materializations
    )
    return list(
        records(dg.AssetRecordsFilter(asset_key=dg.AssetKey(key), asset_partitions=[partition]), 100).records
    )


def test_a_ranged_run_plans_once_per_asset_and_gives_each_course_its_own_figures(h):
    assert h.discover().success
    keys = h.course_keys()
    result = h.sync("LIGHTWEIGHT", keys)
    assert result.success, failure_text(result)
    planned = events(h, result.run_id, PLANNED)
    # staging + layer1 for courses, students, enrollments (not 6 x courses), and the account's terms once
    assert len(planned) == 7
    every = events(h, result.run_id, MATERIALIZED)
    mats = [
        e for e in every if e.dagster_event.step_materialization_data.materialization.partition is not None
    ]
    assert len(mats) == 6 * len(keys) and len(every) == len(mats) + 1
    by_course = {}
    for entry in mats:
        m = entry.dagster_event.step_materialization_data.materialization
        meta = {k: getattr(v, "value", v) for k, v in m.metadata.items()}
        assert not RUN_WIDE & set(meta), meta  # nothing run-wide copied onto a course's event
        assert meta["canvas/course_status"] in ("success", "gone")
        by_course[(m.asset_key.to_user_string(), m.partition)] = meta["dagster/row_count"]
    staged = len(h.staging("enrollments", BIG) or [])
    assert by_course[("staging/enrollments", str(BIG))] == staged > 100
    small = next(k for k in keys if k != str(BIG))
    assert by_course[("staging/enrollments", small)] == len(h.staging("enrollments", int(small)) or [])
    # Run-wide figures live once, in the run's sync report.
    figures = run_figures(h.instance, result.run_id)
    assert figures["canvas/api_calls"] >= 3 * len(keys)
    assert figures["canvas/courses"] == len(keys)
    assert figures["canvas/rows.enrollments"] > 0


def test_a_course_that_fails_in_a_successful_run_is_a_failure_not_a_fresh_materialization(h):
    assert h.discover().success
    keys = h.course_keys()
    first = h.sync("LIGHTWEIGHT", keys)
    assert first.success, failure_text(first)
    before = {
        key: partition_events(h, ["layer1", key], str(BIG), MATERIALIZED)[0].storage_id
        for key in ("enrollments", "courses")
    }
    h.sandbox.forbid_course(BIG)  # every request about the course now answers 401 unauthorized
    second = h.sync("LIGHTWEIGHT", keys)
    assert second.success, failure_text(second)  # the other courses went on
    for layer in ("staging", "layer1"):
        for entity in ("courses", "students", "enrollments"):
            key = [layer, entity]
            latest = partition_events(h, key, str(BIG), MATERIALIZED)[0]
            assert latest.run_id == first.run_id, key  # the course's last good materialization stands
            failures = partition_events(h, key, str(BIG), FAILED)
            assert failures and failures[0].run_id == second.run_id, key
            failure = failures[0].event_log_entry.dagster_event.event_specific_data
            meta = failure.asset_materialization_failure.metadata
            assert meta["canvas/course_status"].value == "failed"
            assert "canvas/error" in meta
            # Every other course is freshly materialised by the second run.
            other = partition_events(h, key, keys[0] if keys[0] != str(BIG) else keys[1], MATERIALIZED)[0]
            assert other.run_id == second.run_id
    assert (
        partition_events(h, ["layer1", "enrollments"], str(BIG), MATERIALIZED)[0].storage_id
        == before["enrollments"]
    )
    text = "\n".join(
        str(e.event_log_entry.dagster_event.event_specific_data)
        for e in partition_events(h, ["staging", "enrollments"], str(BIG), FAILED)
    )
    assert h.sandbox.token not in text


def test_the_courses_of_a_failed_run_show_as_failed_partitions(h, monkeypatch):
    assert h.discover().success
    keys = h.course_keys()
    monkeypatch.setenv("CANVAS_API_TOKEN", "revoked-token-for-the-test")
    result = h.sync("LIGHTWEIGHT", keys)
    assert not result.success
    failures = events(h, result.run_id, FAILED)
    assert {e.dagster_event.partition for e in failures} == set(keys)
    from canvas_assets.defs.partitions import COURSES

    status = h.instance.get_status_by_partition(dg.AssetKey(["staging", "enrollments"]), keys, COURSES)
    assert status is not None
    assert {s.value for s in status.values()} == {"FAILED"}


def test_the_instance_configurations_load_and_the_root_one_is_the_packaged_local_one(tmp_path, monkeypatch):
    assert (ROOT / "dagster.yaml").read_text(encoding="utf-8") == instance_config(LOCAL_CONFIG)
    local = yaml.safe_load(instance_config(LOCAL_CONFIG))
    prod = yaml.safe_load(instance_config(PRODUCTION_CONFIG))
    assert local["storage"]["custom"]["class"] == prod["storage"]["custom"]["class"] == "CanvasStorage"
    assert local["telemetry"] == {"enabled": False} and local["nux"] == {"enabled": False}
    db = prod["storage"]["custom"]["config"]["postgres_db"]
    # Every secret and connection value of production comes from the environment.
    assert all(isinstance(v, dict) and "env" in v for k, v in db.items() if k != "scheme")
    assert local["concurrency"] == prod["concurrency"]
    assert Path(ROOT / "workspace.yaml").exists()


# --- the partition status the UI shows (GraphQL, as the webserver answers it) ---------------------------
PARTITION_STATUS = """
query PartitionStatus($key: AssetKeyInput!) {
  assetNodeOrError(assetKey: $key) {
    ... on AssetNode {
      partitionStats { numMaterialized numFailed numMaterializing }
      assetPartitionStatuses {
        ... on DefaultPartitionStatuses {
          materializedPartitions failedPartitions unmaterializedPartitions materializingPartitions
        }
      }
    }
  }
}
"""


def ui_partition_status(h: Harness, key: list[str]) -> dict[str, Any]:
    """What the UI's partitions page of `key` is told: `assetPartitionStatuses` and `partitionStats`,
    answered by dagster-graphql over a workspace that loads canvas_assets.definitions like the webserver."""
    from dagster._core.remote_origin import InProcessCodeLocationOrigin
    from dagster._core.types.loadable_target_origin import LoadableTargetOrigin
    from dagster._core.workspace.context import WorkspaceProcessContext
    from dagster._core.workspace.load_target import InProcessWorkspaceLoadTarget
    from dagster_graphql.test.utils import execute_dagster_graphql

    origin = InProcessCodeLocationOrigin(
        LoadableTargetOrigin(module_name="canvas_assets.definitions", attribute="defs"),
        location_name="canvas_assets",
    )
    with WorkspaceProcessContext(h.instance, InProcessWorkspaceLoadTarget(origin)) as workspace:
        result = execute_dagster_graphql(
            workspace.create_request_context(), PARTITION_STATUS, {"key": {"path": key}}
        )
    node = result.data["assetNodeOrError"]
    return {**node["assetPartitionStatuses"], **node["partitionStats"]}


def shown_as(status: dict[str, Any], course: int | str) -> str:
    """The one status the UI shows a course's partition in: failed, materializing, materialized, missing."""
    key = str(course)
    for name in ("failed", "materializing", "materialized"):
        if key in status[f"{name}Partitions"]:
            return name
    assert key in status["unmaterializedPartitions"]
    return "missing"


def test_a_never_materialized_course_whose_fetch_failed_in_a_successful_run_shows_as_failed(h):
    assert h.discover().success
    keys = h.course_keys()
    h.sandbox.forbid_course(BIG)
    result = h.sync("LIGHTWEIGHT", keys)
    assert result.success, failure_text(result)  # the other courses went on
    for key in (["staging", "enrollments"], ["layer1", "enrollments"]):
        status = ui_partition_status(h, key)
        assert shown_as(status, BIG) == "failed", (key, status)
        assert status["numFailed"] == 1, (key, status)
        assert status["numMaterialized"] == len(keys) - 1, (key, status)


def test_a_materialized_course_whose_fetch_failed_later_shows_as_failed_not_materialized(h):
    assert h.discover().success
    keys = h.course_keys()
    assert h.sync("LIGHTWEIGHT", keys).success
    assert shown_as(ui_partition_status(h, ["staging", "enrollments"]), BIG) == "materialized"
    h.sandbox.forbid_course(BIG)
    result = h.sync("LIGHTWEIGHT", keys)
    assert result.success, failure_text(result)
    for key in (["staging", "enrollments"], ["layer1", "enrollments"]):
        status = ui_partition_status(h, key)
        assert shown_as(status, BIG) == "failed", (key, status)
        assert (status["numFailed"], status["numMaterialized"]) == (1, len(keys) - 1), (key, status)


def test_the_courses_of_a_failed_run_show_as_failed_in_the_ui(h):
    assert h.discover().success
    keys = h.course_keys()
    assert h.sync("LIGHTWEIGHT", keys).success
    h.sandbox.forbid_course(BIG)
    result = h.sync("LIGHTWEIGHT", [str(BIG)])  # its only course failed: the extract step fails the run
    assert not result.success
    status = ui_partition_status(h, ["layer1", "enrollments"])
    assert shown_as(status, BIG) == "failed", status
    assert status["numFailed"] == 1, status


def test_a_failed_course_synced_again_shows_as_materialized(h):
    assert h.discover().success
    keys = h.course_keys()
    h.sandbox.forbid_course(BIG)
    assert h.sync("LIGHTWEIGHT", keys).success
    assert shown_as(ui_partition_status(h, ["staging", "enrollments"]), BIG) == "failed"
    h.sandbox.data.forbidden_courses.discard(BIG)  # Canvas lets the token see the course again
    assert h.sync("LIGHTWEIGHT", [str(BIG)]).success
    status = ui_partition_status(h, ["staging", "enrollments"])
    assert shown_as(status, BIG) == "materialized", status
    assert status["numFailed"] == 0, status
