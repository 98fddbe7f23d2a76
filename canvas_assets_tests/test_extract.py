"""The extraction engine on its own: what a 404 means, and how retried attempts are counted."""

from datetime import datetime, timezone

import dagster as dg
import pytest

from canvas_assets.canvas import CanvasClient
from canvas_assets.cli.status import course_attempts
from canvas_assets.defs.resources import SyncProfileResource
from canvas_assets.errors import CanvasNotFound
from canvas_assets.extract.engine import Extractor, fetch_entity
from canvas_assets.profiles import preset
from canvas_assets.warehouse import Warehouse

BIG = 1000


def test_a_404_on_a_list_of_a_course_that_exists_fails_that_entity_and_does_not_make_the_course_gone(
    sandbox, sqlite_url
):
    wh = Warehouse(sqlite_url)
    wh.ensure_schema()

    def fetch(client, profile, entity, course_id, timeout, needs=None):
        if entity == "enrollments" and course_id == BIG:
            raise CanvasNotFound("The specified resource does not exist.", status=404)
        return fetch_entity(client, profile, entity, course_id, timeout, needs)

    with CanvasClient(sandbox.base_url, sandbox.token) as client:
        report = Extractor(
            client,
            wh,
            preset("LIGHTWEIGHT"),
            entities=["courses", "students", "enrollments"],
            run_id="r1",
            fetch=fetch,
        ).run([BIG, 1002])
    assert report.courses[BIG].status == "failed"
    assert report.courses[1002].status == "success"
    assert wh.catalog_course_ids(include_gone=True) == []  # nothing marked gone
    assert set(wh.read_staging("students", [BIG])) == {BIG}  # the entities that worked were staged


def test_a_course_that_404s_itself_is_gone(sandbox, sqlite_url):
    wh = Warehouse(sqlite_url)
    wh.ensure_schema()
    sandbox.remove_course(1002)
    with CanvasClient(sandbox.base_url, sandbox.token) as client:
        report = Extractor(client, wh, preset("LIGHTWEIGHT"), entities=["students"], run_id="r1").run([1002])
    assert report.courses[1002].status == "gone"


def test_the_latest_attempt_of_a_retried_step_decides_a_courses_outcome(sqlite_url):
    wh = Warehouse(sqlite_url)
    wh.ensure_schema()
    t = datetime(2026, 11, 26, tzinfo=timezone.utc)
    row = {
        "run_id": "r1",
        "course_id": 7,
        "entity": "enrollments",
        "stage": "extract",
        "records": 0,
        "api_calls": 1,
        "started_at": t,
        "finished_at": t,
    }
    wh.write_sync_log([{**row, "status": "failed", "error_type": "CanvasServerError", "message": "502"}])
    wh.write_sync_log([{**row, "status": "success", "records": 5}])
    with wh.engine.connect() as conn:
        (attempt,) = course_attempts(conn, ["r1"])
    assert (attempt.course_id, attempt.status, attempt.api_calls) == (7, "success", 2)


def _declared_entities() -> list[str]:
    from canvas_assets.entities import ENTITIES

    return list(ENTITIES)


@pytest.mark.parametrize("name", _declared_entities())
def test_an_entitys_declaration_yields_its_transformer_its_profile_switch_and_its_layer1_asset(name):
    """A declaration in entities.py is the whole entity (docs/maintaining.md, "Add an entity"): nothing else
    has to name it, so none of these can be forgotten."""
    from canvas_assets.definitions import defs
    from canvas_assets.entities import ENTITIES
    from canvas_assets.profiles import PRESET_FILES, SWITCHED_ENTITIES, preset
    from canvas_assets.transform import TRANSFORMERS
    from canvas_assets.warehouse.models import LAYER1_TABLES, table

    entity = ENTITIES[name]
    # its transformer, onto the Layer-1 tables it declares
    assert TRANSFORMERS[name].entity == name
    assert TRANSFORMERS[name].tables == entity.tables
    assert set(entity.tables) <= set(LAYER1_TABLES)
    assert all(table(t) is not None for t in entity.extra_tables)
    # its profile switch, or the field group that fetches it, in the profile and in Dagster's config schema
    full = preset("FULL_PROCESSING")
    assert full.wants(name)  # the full mirror fetches every entity
    assert set(entity.presets) <= set(PRESET_FILES)
    schema = SyncProfileResource.to_config_schema().as_field().config_type
    if entity.fetched_with is None:
        assert name in SWITCHED_ENTITIES
        assert name in schema.fields["entities"].config_type.inner_type.fields
        off = full.model_copy(update={"entities": full.entities.model_copy(update={name: False})})
    else:
        group_of, group = entity.fetched_with
        assert name not in SWITCHED_ENTITIES
        section = getattr(full.fields, group_of)
        off = full.model_copy(
            update={
                "fields": full.fields.model_copy(update={group_of: section.model_copy(update={group: False})})
            }
        )
    assert not off.wants(name)
    # its staging and Layer-1 assets, with the checks every entity has; an account-level entity is one
    # unpartitioned asset, selected by every sync job whose profile switches it on
    graph = defs.resolve_asset_graph()
    keys = {k.to_user_string() for k in graph.get_all_asset_keys()}
    if entity.account_level:
        assert f"account/{name}" in keys and f"staging/{name}" not in keys
        assert not graph.get(dg.AssetKey(["account", name])).is_partitioned
        job = defs.resolve_job_def("sync_full")
        assert dg.AssetKey(["account", name]) in job.asset_layer.selected_asset_keys
        return
    assert {f"staging/{name}", f"layer1/{name}"} <= keys
    checks = {k.name for k in graph.asset_check_keys}
    assert {f"all_courses_fetched_{name}", f"no_rejected_{name}"} <= checks


def test_an_incremental_merge_runs_before_courses_beyond_the_window_start(sandbox, sqlite_url, monkeypatch):
    """Courses start a window at a time: a course's merge, queued once its needs are in, is not behind every
    other course's fetches (whose records would all be held until their own merges ran)."""
    from canvas_assets.extract import schedule

    wh = Warehouse(sqlite_url)
    wh.ensure_schema()
    entities = ["assignments", "enrollments", "submissions"]
    profile = preset("ANALYTICS_FOCUSED")
    with CanvasClient(sandbox.base_url, sandbox.token) as client:
        courses = [c["id"] for c in client.list_courses()]
        Extractor(client, wh, profile, entities=entities, run_id="r1").run(courses)
        calls: list[tuple[str, int]] = []
        fetch_changes = Extractor._fetch_changes

        def recording_fetch(client, profile, entity, course_id, timeout, needs=None):
            calls.append(("fetch", course_id))
            return fetch_entity(client, profile, entity, course_id, timeout, needs)

        def recording_changes(self, course, outcome, since, timeout):
            calls.append(("merge", course.course_id))
            fetch_changes(self, course, outcome, since, timeout)

        monkeypatch.setattr(schedule, "COURSES_IN_FLIGHT_PER_WORKER", 1)
        monkeypatch.setattr(Extractor, "_fetch_changes", recording_changes)
        report = Extractor(
            client, wh, profile, entities=entities, run_id="r2", workers=2, fetch=recording_fetch
        ).run(courses)
    assert len(courses) > 4 and not report.course_ids("failed")
    first_merge = calls.index(next(c for c in calls if c[0] == "merge"))
    assert first_merge < calls.index(("fetch", courses[-1]))
    assert sum(kind == "merge" for kind, _ in calls) >= 2


def test_an_extract_reports_the_staging_rows_it_wrote_and_none_when_nothing_changed(sandbox, pg_url):
    from canvas_assets.defs.assets.extract import extract_figures

    wh = Warehouse(pg_url)
    wh.ensure_schema()
    entities = ["courses", "students", "enrollments", "assignments", "submissions"]

    def extract(run_id):
        with CanvasClient(sandbox.base_url, sandbox.token) as client:
            return Extractor(client, wh, preset("ANALYTICS_FOCUSED"), entities=entities, run_id=run_id).run(
                [BIG, 1002]
            )

    first = extract("r1")
    staged = sum(len(wh.read_staging(e, [BIG, 1002]).get(c, [])) for e in entities for c in (BIG, 1002))
    assert first.staging_rows_written == staged > 1000
    again = extract("r2")  # submissions incrementally, the rest in full: nothing changed in Canvas
    assert again.course_ids("success") == [BIG, 1002]
    assert again.courses[BIG].entities["submissions"].mode == "incremental"
    assert extract_figures(again)["canvas/staging_rows_written"] == again.staging_rows_written == 0
    sandbox.data.grade_submission(BIG)
    assert extract("r3").staging_rows_written == 1
