"""Scheduling decisions: ranged run requests, newly discovered courses, failure reports; the schedules and
the sensor evaluated against a test instance (no processes)."""

from datetime import datetime, timezone

import dagster as dg

from canvas_assets.defs.automation import (
    failure_report,
    never_synced,
    new_courses_sensor,
    nightly_sync,
    plan_ranged_runs,
    stage_of,
    weekly_full_sync,
)
from canvas_assets.defs.partitions import COURSES, RANGE_END_TAG, RANGE_START_TAG, plan_course_runs
from canvas_assets.defs.resources import WarehouseResource
from canvas_assets.profiles import preset

KEYS = [str(k) for k in range(101, 111)]


def test_course_runs_split_on_gaps_only_as_a_single_run_backfill_does():
    assert plan_course_runs(KEYS, KEYS) == [KEYS]
    assert plan_course_runs(KEYS, ["101", "102", "105", "110"]) == [["101", "102"], ["105"], ["110"]]
    assert plan_course_runs(KEYS, []) == []


def test_contiguous_runs_follow_partition_order_not_numeric_order():
    # Dynamic partition keys are ordered by insertion: a course added later sorts last.
    keys = ["300", "100", "200"]
    assert plan_course_runs(keys, ["100", "300"]) == [["300", "100"]]


def test_a_nightly_plan_covers_every_course_in_ranged_runs_with_the_profile():
    wanted = [k for k in KEYS if k not in ("105", "108")]  # two gone courses split the range
    requests = plan_ranged_runs(KEYS, wanted, profile_name="LIGHTWEIGHT", run_key_prefix="n:20261126")
    assert len(requests) == 3
    covered = []
    for req in requests:
        first, last = req.tags[RANGE_START_TAG], req.tags[RANGE_END_TAG]
        covered += KEYS[KEYS.index(first) : KEYS.index(last) + 1]
        assert req.run_config == preset("LIGHTWEIGHT").to_run_config()
        assert req.tags["canvas/profile"] == "LIGHTWEIGHT"
    assert covered == wanted
    assert len({r.run_key for r in requests}) == 3


def test_a_weekly_plan_carries_the_full_profile():
    (req,) = plan_ranged_runs(KEYS, KEYS, profile_name="full", run_key_prefix="w")
    assert req.run_config["resources"]["sync_profile"]["config"]["name"] == "FULL_PROCESSING"
    assert req.run_config["resources"]["sync_profile"]["config"]["entities"]["modules"] is True


def test_courses_to_sync_after_discovery_are_the_never_materialised_live_ones():
    assert never_synced(KEYS, materialized=set(KEYS[:8]), gone={"110"}) == ["109"]


def test_failure_steps_map_to_pipeline_stages():
    assert stage_of("canvas_extract") == "extract"
    assert stage_of("layer1__enrollments.transform_enrollments") == "transform"
    assert stage_of("layer1__enrollments.load_enrollments") == "load"
    assert stage_of("canvas_course_catalog") == "catalog"


def test_a_failure_report_names_run_courses_and_errors():
    report = failure_report(
        "r1",
        "sync_full",
        {"canvas/profile": "FULL_PROCESSING"},
        [{"step": "canvas_extract", "stage": "extract", "error_type": "CanvasAuthError"}],
        ["101", "102"],
    )
    assert report["courses"] == ["101", "102"]
    assert report["profile"] == "FULL_PROCESSING"
    assert report["failures"][0]["error_type"] == "CanvasAuthError"


# --- the schedules and the sensor, evaluated against a test instance ------------------------------------
def _instance_with_courses(instance: dg.DagsterInstance, keys: list[str]) -> None:
    instance.add_dynamic_partitions(COURSES.name, keys)


def test_the_nightly_schedule_requests_ranged_runs_covering_every_course_with_its_profile(tmp_path):
    keys = [str(k) for k in range(1000, 1012)]
    warehouse = WarehouseResource(url=f"sqlite:///{tmp_path / 'w.db'}")
    with dg.instance_for_test() as instance:
        _instance_with_courses(instance, keys)
        for schedule, profile in ((nightly_sync, "LIGHTWEIGHT"), (weekly_full_sync, "FULL_PROCESSING")):
            with dg.build_schedule_context(
                instance=instance,
                scheduled_execution_time=datetime(2026, 11, 29, 2, 30, tzinfo=timezone.utc),
                resources={"warehouse": warehouse},
            ) as context:
                requests_ = list(schedule(context))
            assert requests_, schedule.name
            covered = []
            for req in requests_:
                first, last = req.tags[RANGE_START_TAG], req.tags[RANGE_END_TAG]
                covered += keys[keys.index(first) : keys.index(last) + 1]
                assert req.run_config["resources"]["sync_profile"]["config"]["name"] == profile
            assert covered == keys
            assert len(requests_) == 1  # 12 courses fit one run: batched, never one run per course


def test_new_courses_are_requested_once_in_ranged_runs(tmp_path, monkeypatch):
    monkeypatch.setenv("CANVAS_SYNC_PROFILE", "ANALYTICS_FOCUSED")
    warehouse = WarehouseResource(url=f"sqlite:///{tmp_path / 'w.db'}")
    with dg.instance_for_test() as instance:
        _instance_with_courses(instance, ["1000", "1001", "1002"])
        with dg.build_sensor_context(instance=instance, resources={"warehouse": warehouse}) as context:
            result = new_courses_sensor(context)
        (req,) = result
        assert (req.tags[RANGE_START_TAG], req.tags[RANGE_END_TAG]) == ("1000", "1002")
        assert req.run_config["resources"]["sync_profile"]["config"]["name"] == "ANALYTICS_FOCUSED"
        # The run materialises the profile's assets, assignments, summaries and the grading structure included,
        # and the account's terms (unpartitioned: once in the ranged run).
        entities = ("courses", "students", "enrollments", "assignments", "submissions", "student_summaries")
        structure = ("sections", "assignment_groups", "grading_periods", "period_scores")
        assert {k.to_user_string() for k in req.asset_selection} == {
            f"{layer}/{e}" for e in (*entities, *structure) for layer in ("staging", "layer1")
        } | {"account/terms"}
        assert new_courses_sensor.job_name == "sync_full"
        with dg.build_sensor_context(
            instance=instance, resources={"warehouse": warehouse}, cursor=context.cursor
        ) as later:
            again = new_courses_sensor(later)
        assert isinstance(again, dg.SkipReason)
