"""The Dagster pipeline end to end: sandbox over HTTP → extract → staging → transform → Layer-1."""

from collections.abc import Iterator
from datetime import datetime

import dagster as dg
import pytest
import sqlalchemy as sa

from canvas_assets.entities import STUDENT_STATES
from canvas_assets_tests.harness import Harness, failure_text, pipeline_harness, utc

BIG = 1000  # the small sandbox's large course: 3 pages of users and of enrollments
SECRET = "not-the-real-token-5f0c2e"


@pytest.fixture
def harness(make_sandbox, db_url, monkeypatch) -> Iterator[Harness]:
    """The pipeline on SQLite and on PostgreSQL."""
    with pipeline_harness(make_sandbox(scale="small", throttle="hosted"), db_url, monkeypatch) as h:
        yield h


@pytest.fixture
def sqlite_harness(make_sandbox, sqlite_url, monkeypatch) -> Iterator[Harness]:
    with pipeline_harness(make_sandbox(scale="small", throttle="hosted"), sqlite_url, monkeypatch) as h:
        yield h


def instant(value: str | None) -> datetime | None:
    return None if value is None else utc(datetime.fromisoformat(value))


def live_course_ids(h: Harness) -> list[int]:
    return h.sandbox.data.course_ids(states=("available", "completed"))


# --- discovery and extract -------------------------------------------------------------------------------
def test_discovery_registers_every_listed_course_as_a_partition(harness):
    result = harness.discover()
    assert result.success
    assert harness.course_keys() == [str(c) for c in live_course_ids(harness)]
    (mat,) = result.asset_materializations_for_node("canvas_course_catalog")
    assert mat.metadata["new_partitions"].value == len(harness.course_keys())
    again = harness.discover()
    (mat,) = again.asset_materializations_for_node("canvas_course_catalog")
    assert mat.metadata["new_partitions"].value == 0


def test_extracting_one_course_stages_exactly_what_canvas_serves(sqlite_harness):
    h = sqlite_harness
    assert h.discover().success
    h.sandbox.reset_stats()
    result = h.sync("LIGHTWEIGHT", [str(BIG)])
    assert result.success, failure_text(result)
    data = h.sandbox.data
    assert {e["id"] for e in h.staging("enrollments", BIG)} == {e["id"] for e in data.enrollments_of(BIG)}
    assert {u["id"] for u in h.staging("students", BIG)} == {
        u["id"] for u in data.students_of(BIG, STUDENT_STATES)
    }
    assert [c["id"] for c in h.staging("courses", BIG)] == [BIG]
    assert h.staging("assignments", BIG) is None
    # LIGHTWEIGHT switches assignments, modules and analytics off: they are never requested.
    assert h.requests_to("/assignments") == h.requests_to("/modules") == h.requests_to("/analytics") == 0
    assert h.sandbox.stats()["throttled"] == 0


def test_field_groups_decide_which_requests_are_made(sqlite_harness):
    h = sqlite_harness
    assert h.discover().success
    courses = len(h.course_keys())
    h.sandbox.reset_stats()
    assert h.sync("LIGHTWEIGHT").success
    assert h.requests_to("/settings") == 0
    assert h.requests_to("/analytics") == 0
    h.sandbox.reset_stats()
    assert h.sync("ANALYTICS_FOCUSED").success
    assert h.requests_to("/settings") == courses
    assert h.requests_to("/analytics/student_summaries") >= courses  # big courses take several pages
    assert h.requests_to("/assignments") >= courses
    assert h.requests_to("/modules") == 0
    course = h.staging("courses", BIG)[0]
    assert "settings" in course and "syllabus_body" in course


def test_an_invalid_profile_fails_the_run_before_any_canvas_call(sqlite_harness):
    h = sqlite_harness
    assert h.discover().success
    h.sandbox.reset_stats()
    contradiction = {
        "resources": {"sync_profile": {"config": {"name": "LIGHTWEIGHT", "entities": {"enrollments": False}}}}
    }
    result = h.sync(contradiction, h.course_keys())
    assert not result.success
    assert "fields.students.scores" in failure_text(result)
    with pytest.raises(dg.DagsterInvalidConfigError, match="modulez"):
        h.sync({"resources": {"sync_profile": {"config": {"entities": {"modulez": True}}}}}, h.course_keys())
    assert h.sandbox.stats()["requests"] == 0


def test_a_course_canvas_no_longer_has_is_recorded_as_gone_not_failed(sqlite_harness):
    h = sqlite_harness
    assert h.discover().success
    victim = live_course_ids(h)[2]
    assert h.sync("LIGHTWEIGHT").success
    h.sandbox.remove_course(victim)
    result = h.sync("LIGHTWEIGHT")
    assert result.success, failure_text(result)
    statuses = {
        r.status
        for r in h.rows(
            "SELECT status FROM canvas_sync_log WHERE course_id = :c AND run_id = :r",
            c=victim,
            r=result.run_id,
        )
    }
    assert statuses == {"gone"}
    (gone_at,) = h.rows("SELECT gone_at FROM canvas_course_catalog WHERE course_id = :c", c=victim)[0]
    assert gone_at is not None
    (deleted_at,) = h.rows("SELECT deleted_at FROM canvas_courses WHERE id = :c", c=victim)[0]
    assert deleted_at is not None


def test_a_bad_token_fails_fast_with_a_message_that_names_the_cause_not_the_token(
    sqlite_harness, monkeypatch
):
    h = sqlite_harness
    assert h.discover().success
    monkeypatch.setenv("CANVAS_API_TOKEN", SECRET)
    h.sandbox.reset_stats()
    result = h.sync("LIGHTWEIGHT")
    assert not result.success
    text = failure_text(result)
    assert "Invalid access token" in text and "CANVAS_API_TOKEN" in text
    assert SECRET not in text
    starts = [
        e for e in result.all_events if e.event_type_value == "STEP_START" and e.step_key == "canvas_extract"
    ]
    assert len(starts) == 1  # not retried: a bad token does not get better
    # Only what was already in flight when the first 401 came back: the terms asset's one request and the
    # extract's first few (6 on a quiet machine; 9 seen under CI load, when more 401s come back before the
    # first one cancels the rest). The LIGHTWEIGHT sync of these 9 courses is over 27 requests.
    assert h.sandbox.stats()["requests"] <= 12
    for event in result.all_events:
        assert SECRET not in str(event)


def test_staging_is_replaced_not_appended_on_a_rerun(sqlite_harness):
    h = sqlite_harness
    assert h.discover().success
    assert h.sync("LIGHTWEIGHT", [str(BIG)]).success
    before = len(h.staging("enrollments", BIG))
    h.sandbox.drop_enrollment(BIG)
    assert h.sync("LIGHTWEIGHT", [str(BIG)]).success
    assert len(h.staging("enrollments", BIG)) == before - 1
    (n,) = h.rows(
        "SELECT COUNT(*) FROM canvas_staging WHERE entity = 'enrollments' AND course_id = :c", c=BIG
    )[0]
    assert n == 1


# --- Layer-1 --------------------------------------------------------------------------------------------------
def test_a_ranged_full_sync_mirrors_canvas_value_by_value(harness):
    h = harness
    assert h.discover().success
    result = h.sync("FULL_PROCESSING")
    assert result.success, failure_text(result)
    data = h.sandbox.data
    cids = live_course_ids(h)
    # One run covered every course, and every course partition got its own materialization.
    mats = result.asset_materializations_for_node("canvas_extract")
    assert {m.partition for m in mats if m.asset_key == dg.AssetKey(["staging", "courses"])} == set(
        h.course_keys()
    )

    courses = h.table("canvas_courses")
    for cid in cids:
        c, row = data.courses[cid], courses[cid]
        assert (row["name"], row["course_code"], row["workflow_state"]) == (
            c["name"],
            c["course_code"],
            c["workflow_state"],
        )
        assert row["total_students"] == data.total_students(cid)
        assert utc(row["start_at"]) == instant(c.get("start_at"))
        assert utc(row["created_at"]) == instant(c["created_at"])
        assert row["deleted_at"] is None

    enrollments = h.table("canvas_enrollments")
    expected = {e["id"]: e for cid in cids for e in data.enrollments_of(cid)}
    assert set(enrollments) == set(expected)
    assert any(eid > 2**31 for eid in enrollments)
    for eid, e in expected.items():
        row = enrollments[eid]
        assert (row["course_id"], row["user_id"], row["type"], row["enrollment_state"]) == (
            e["course_id"],
            e["user_id"],
            e["type"],
            e["enrollment_state"],
        )
        grades = e.get("grades") or {}
        for col in ("current_score", "final_score", "current_grade", "final_grade", "unposted_current_score"):
            assert row[col] == grades.get(col), (eid, col)
        assert utc(row["created_at"]) == instant(e["created_at"])
        assert utc(row["last_activity_at"]) == instant(e.get("last_activity_at"))

    students = h.table("canvas_students")
    for cid in cids:
        for u in data.students_of(cid, STUDENT_STATES):
            row = students[u["id"]]
            assert (row["name"], row["sortable_name"], row["short_name"]) == (
                u["name"],
                u["sortable_name"],
                u["short_name"],
            )
            assert row["email"] == u.get("email")
            assert row["sis_user_id"] == u.get("sis_user_id")

    assignments = h.table("canvas_assignments")
    expected_a = {a["id"]: a for cid in cids for a in data.assignments_of(cid)}
    assert set(assignments) == set(expected_a)
    for aid, a in expected_a.items():
        assert assignments[aid]["name"] == a["name"]
        assert assignments[aid]["points_possible"] == a.get("points_possible")
        assert utc(assignments[aid]["due_at"]) == instant(a.get("due_at"))

    modules = h.table("canvas_modules")
    items = h.table("canvas_module_items")
    expected_m = [m for cid in cids for m in data.modules_of(cid)]
    assert set(modules) == {m["id"] for m in expected_m}
    assert set(items) == {i["id"] for m in expected_m for i in m["items"]}
    assert max(m["items_count"] for m in expected_m) > 100  # the module whose items are fetched separately

    summaries = h.rows("SELECT course_id, user_id, page_views FROM canvas_student_summaries")
    expected_s = {(cid, s["id"]): s["page_views"] for cid in cids for s in (data.summaries_of(cid) or [])}
    assert {(r.course_id, r.user_id): r.page_views for r in summaries} == expected_s

    checks = {e.check_name: e for e in result.get_asset_check_evaluations()}
    assert checks["student_enrollments_have_students"].passed
    assert checks["students_match_total_students"].passed
    assert checks["scores_non_negative"].passed
    assert h.sandbox.stats()["throttled"] == 0


def test_a_second_sync_after_canvas_changes_soft_deletes_renames_and_tracks_scores(harness):
    h = harness
    assert h.discover().success
    assert h.sync("FULL_PROCESSING").success
    dropped = h.sandbox.drop_enrollment(BIG)
    removed = h.sandbox.delete_assignment(BIG)
    changed = h.sandbox.change_score(BIG)
    student = h.sandbox.data.enrollments[changed]["user_id"]
    h.sandbox.rename_user(student, "Zoë Ångström-Renamed")
    history_before = h.rows("SELECT COUNT(*) FROM canvas_score_history WHERE enrollment_id = :e", e=changed)[
        0
    ][0]

    result = h.sync("FULL_PROCESSING")
    assert result.success, failure_text(result)
    assert h.table("canvas_enrollments")[dropped]["deleted_at"] is not None
    assert h.table("canvas_assignments")[removed]["deleted_at"] is not None
    assert h.table("canvas_students")[student]["name"] == "Zoë Ångström-Renamed"
    history = h.rows(
        "SELECT current_score FROM canvas_score_history WHERE enrollment_id = :e ORDER BY recorded_at, id",
        e=changed,
    )
    assert len(history) == history_before + 1
    assert history[-1].current_score == h.sandbox.data.enrollments[changed]["grades"]["current_score"]

    # The dropped enrollment comes back: its soft delete is cleared.
    h.sandbox.data.enrollments[dropped]["enrollment_state"] = "active"
    assert h.sync("FULL_PROCESSING").success
    assert h.table("canvas_enrollments")[dropped]["deleted_at"] is None


def test_an_immediate_resync_changes_nothing(sqlite_harness):
    h = sqlite_harness
    assert h.discover().success
    assert h.sync("FULL_PROCESSING").success

    def snapshot() -> dict:
        out = {}
        for table in (
            "canvas_courses",
            "canvas_students",
            "canvas_enrollments",
            "canvas_assignments",
            "canvas_modules",
            "canvas_module_items",
            "canvas_score_history",
        ):
            rows = h.rows(f"SELECT * FROM {table}")
            out[table] = sorted(
                tuple((k, v) for k, v in r._mapping.items() if k not in ("synced_at",)) for r in rows
            )
        return out

    before = snapshot()
    assert h.sync("FULL_PROCESSING").success
    assert snapshot() == before


def test_malformed_records_are_quarantined_and_the_rest_of_the_course_loads(sqlite_harness):
    h = sqlite_harness
    assert h.discover().success
    bad = h.sandbox.corrupt_record("enrollments", BIG)
    result = h.sync("LIGHTWEIGHT")
    assert result.success, failure_text(result)
    rejected = h.rows("SELECT entity, course_id, canvas_id, reason FROM canvas_rejected_records")
    assert [(r.entity, r.course_id, r.canvas_id) for r in rejected] == [("enrollments", BIG, bad["id"])]
    assert "created_at" in rejected[0].reason
    loaded = h.rows("SELECT COUNT(*) FROM canvas_enrollments WHERE course_id = :c", c=BIG)[0][0]
    assert loaded == len(h.sandbox.data.enrollments_of(BIG)) - 1
    checks = {e.check_name: e for e in result.get_asset_check_evaluations()}
    assert not checks["no_rejected_enrollments"].passed
    assert checks["no_rejected_enrollments"].severity == dg.AssetCheckSeverity.WARN


def test_ids_canvas_repeated_are_noted_by_the_extract_and_warned_by_the_check(sqlite_harness):
    """Pages that shift while being read repeat records. The extract notes the repeated ids in the sync log
    while it has the records; the check reports them from there, or from staging in a run without extract."""
    h = sqlite_harness
    assert h.discover().success
    data = h.sandbox.data
    with data.lock:
        twice = data.assignments_of(BIG)[0]["id"]
        data._assignments_by_course[BIG].append(twice)  # the list now serves that assignment twice
    result = h.sync("FULL_PROCESSING")
    assert result.success, failure_text(result)
    noted = h.rows(
        "SELECT course_id, repeated_ids FROM canvas_sync_log WHERE run_id = :r AND repeated_ids IS NOT NULL",
        r=result.run_id,
    )
    assert [(r.course_id, r.repeated_ids) for r in noted] == [(BIG, f"[{twice}]")]
    checks = {e.check_name: e for e in result.get_asset_check_evaluations()}
    check = checks["no_duplicate_assignments_ids"]
    assert not check.passed and check.severity == dg.AssetCheckSeverity.WARN
    assert check.metadata["examples"].value == [f"course {BIG}: id {twice} repeated"]
    assert all(checks[f"no_duplicate_{e}_ids"].passed for e in ("students", "enrollments", "modules"))
    # A Layer-1-only run has no extract of its own: the check reads the staged records.
    layer1_only = h.sync("FULL_PROCESSING", selection=[dg.AssetKey(["layer1", "assignments"])])
    assert layer1_only.success, failure_text(layer1_only)
    again = {e.check_name: e for e in layer1_only.get_asset_check_evaluations()}
    assert again["no_duplicate_assignments_ids"].metadata["examples"].value == [
        f"course {BIG}: id {twice} repeated"
    ]
    assert h.rows("SELECT COUNT(*) FROM canvas_assignments WHERE id = :a", a=twice)[0][0] == 1


def test_a_failure_in_the_middle_of_a_load_leaves_the_previous_layer1_state(sqlite_harness, monkeypatch):
    h = sqlite_harness
    assert h.discover().success
    assert h.sync("LIGHTWEIGHT").success
    before = h.rows("SELECT id, current_score, deleted_at FROM canvas_enrollments ORDER BY id")
    history = h.rows("SELECT COUNT(*) FROM canvas_score_history")[0][0]
    h.sandbox.change_score(BIG)
    h.sandbox.drop_enrollment(BIG)

    import canvas_assets.warehouse.load as load_module

    batches = []

    def crash_after_the_first_batch(table: str, index: int, rows: int) -> None:
        batches.append((table, index))
        if index >= 1:
            raise RuntimeError("disk full (injected)")

    # Small batches, so the crash comes in the middle of the enrollments upsert.
    monkeypatch.setattr(load_module, "BATCH_ROWS", 50)
    monkeypatch.setattr(load_module, "COPY_BATCH_ROWS", 50)
    monkeypatch.setattr(load_module, "_after_batch", crash_after_the_first_batch)
    result = h.sync(
        "LIGHTWEIGHT",
        selection=[dg.AssetKey(["staging", "enrollments"]), dg.AssetKey(["layer1", "enrollments"])],
    )
    assert not result.success, batches
    assert "disk full" in failure_text(result)
    assert ("canvas_enrollments", 0) in batches  # one batch had been written when the crash came
    assert h.rows("SELECT id, current_score, deleted_at FROM canvas_enrollments ORDER BY id") == before
    assert h.rows("SELECT COUNT(*) FROM canvas_score_history")[0][0] == history


def test_layer1_is_rebuilt_from_staging_with_zero_canvas_calls(sqlite_harness):
    h = sqlite_harness
    assert h.discover().success
    assert h.sync("LIGHTWEIGHT").success
    tables = ("canvas_courses", "canvas_students", "canvas_enrollments")
    before = {t: h.rows(f"SELECT COUNT(*) FROM {t}")[0][0] for t in tables}
    with h.engine.begin() as conn:
        for table in tables:
            conn.execute(sa.text(f"DELETE FROM {table}"))
    h.sandbox.reset_stats()
    layer1 = [dg.AssetKey(["layer1", e]) for e in ("courses", "students", "enrollments")]
    result = h.sync("LIGHTWEIGHT", selection=layer1)
    assert result.success, failure_text(result)
    assert h.sandbox.stats()["requests"] == 0
    assert {t: h.rows(f"SELECT COUNT(*) FROM {t}")[0][0] for t in tables} == before
    assert all(v > 0 for v in before.values())


def test_a_course_that_fails_keeps_its_rows_and_fails_the_fetch_check(sqlite_harness):
    h = sqlite_harness
    assert h.discover().success
    assert h.sync("LIGHTWEIGHT").success
    rows_sql = "SELECT id, current_score, deleted_at FROM canvas_enrollments WHERE course_id = :c ORDER BY id"
    confirmed_sql = "SELECT course_id, confirmed_at FROM canvas_course_sync WHERE entity = 'enrollments' ORDER BY course_id"
    before = h.rows(rows_sql, c=BIG)
    confirmed_before = dict(h.rows(confirmed_sql))
    h.sandbox.change_score(BIG)
    h.sandbox.forbid_course(BIG)  # every request about the course now answers 401 unauthorized
    result = h.sync("LIGHTWEIGHT")
    assert result.success, failure_text(result)  # the other courses went on
    assert h.rows(rows_sql, c=BIG) == before  # neither the changed score nor an old staging copy as fresh
    checks = {e.check_name: e for e in result.get_asset_check_evaluations()}
    assert not checks["all_courses_fetched_enrollments"].passed
    assert checks["all_courses_fetched_enrollments"].severity == dg.AssetCheckSeverity.ERROR
    # Canvas last confirmed the failed course's enrollments at the first sync; every other course now.
    confirmed_after = dict(h.rows(confirmed_sql))
    assert utc(confirmed_after[BIG]) == utc(confirmed_before[BIG])
    others = [c for c in confirmed_after if c != BIG]
    assert others and all(utc(confirmed_after[c]) > utc(confirmed_before[c]) for c in others)
