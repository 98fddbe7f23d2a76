"""Production operation: a PostgreSQL-backed Dagster instance with the webserver and the daemon, a
GraphQL-launched backfill of every course, scheduled and sensor-driven syncs, two concurrent syncs."""

import subprocess
import time
from collections.abc import Iterator

import pytest
import requests
import sqlalchemy as sa

from canvas_assets.instance import PRODUCTION_CONFIG, write_instance_config
from canvas_assets.profiles import preset
from canvas_assets_tests.conftest import PG_ADMIN_URL
from canvas_assets_tests.harness import (
    BIN,
    MATERIALIZE,
    ROOT,
    clean_env,
    create_database,
    drop_database,
    free_port,
    stop_process_group,
)

LIGHT_KEYS = [["staging", e] for e in ("courses", "students", "enrollments")] + [
    ["layer1", e] for e in ("courses", "students", "enrollments")
]


@pytest.fixture
def production(tmp_path, sandbox) -> Iterator[dict]:
    """DAGSTER_HOME with the production instance configuration on a temporary PostgreSQL database, plus a
    PG warehouse."""
    instance_db, warehouse_db = create_database(), create_database()
    home = tmp_path / "home"
    write_instance_config(home, PRODUCTION_CONFIG)
    host_url = PG_ADMIN_URL.rsplit("/", 1)[0]
    env = clean_env(
        DAGSTER_HOME=str(home),
        DAGSTER_PG_HOST="127.0.0.1",
        DAGSTER_PG_PORT="5432",
        DAGSTER_PG_USER="postgres",
        DAGSTER_PG_PASSWORD="",
        DAGSTER_PG_DB=instance_db,
        CANVAS_BASE_URL=sandbox.base_url,
        CANVAS_API_TOKEN=sandbox.token,
        CANVAS_ASSETS_DATABASE_URL=f"{host_url}/{warehouse_db}",
    )
    try:
        yield {
            "env": env,
            "home": home,
            "warehouse_url": env["CANVAS_ASSETS_DATABASE_URL"],
            "sandbox": sandbox,
        }
    finally:
        drop_database(instance_db)
        drop_database(warehouse_db)


def graphql(url: str, query: str, variables: dict | None = None) -> dict:
    response = requests.post(
        f"{url}/graphql", json={"query": query, "variables": variables or {}}, timeout=60
    )
    response.raise_for_status()
    body = response.json()
    assert "errors" not in body, body["errors"]
    return body["data"]


@pytest.mark.slow
def test_a_graphql_backfill_on_a_postgres_instance_syncs_every_course_in_one_run(production, tmp_path):
    env, sandbox = production["env"], production["sandbox"]
    found = subprocess.run(
        [
            *MATERIALIZE,
            "--select",
            "canvas_course_catalog",
        ],
        env=env,
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert found.returncode == 0, found.stderr[-3000:]

    port = free_port()
    log = open(tmp_path / "dagster-dev.log", "w")  # noqa: SIM115 - closed in finally
    proc = subprocess.Popen(
        [str(BIN / "dagster"), "dev", "-w", "workspace.yaml", "-h", "127.0.0.1", "-p", str(port)],
        env=env,
        cwd=ROOT,
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 180
        while True:
            try:
                if requests.get(f"{url}/server_info", timeout=2).ok:
                    break
            except requests.ConnectionError:
                pass
            assert proc.poll() is None, (tmp_path / "dagster-dev.log").read_text()[-3000:]
            assert time.monotonic() < deadline, "dagster dev did not come up"
            time.sleep(1)

        listing = graphql(
            url,
            """{
          assetNodes { assetKey { path } partitionDefinition { name } backfillPolicy { policyType } }
          repositoriesOrError { ... on RepositoryConnection { nodes {
            jobs { name } schedules { name scheduleState { status } } sensors { name sensorState { status } }
          } } }
          assetCheckNames: assetNodes { assetChecksOrError { ... on AssetChecks { checks { name } } } }
        }""",
        )
        keys = {"/".join(n["assetKey"]["path"]) for n in listing["assetNodes"]}
        assert {
            "canvas_course_catalog",
            "staging/enrollments",
            "layer1/modules",
            "layer1/student_summaries",
        } <= keys
        for node in listing["assetNodes"]:
            if node["assetKey"]["path"][0] in ("staging", "layer1"):
                assert node["partitionDefinition"]["name"] == "canvas_course"
                assert node["backfillPolicy"]["policyType"] == "SINGLE_RUN"
        (repo,) = listing["repositoriesOrError"]["nodes"]
        assert {"sync_lightweight", "sync_analytics", "sync_full", "discover_courses"} <= {
            j["name"] for j in repo["jobs"]
        }
        schedules = {s["name"]: s["scheduleState"]["status"] for s in repo["schedules"]}
        assert schedules == {
            "course_discovery": "RUNNING",
            "nightly_lightweight_sync": "RUNNING",
            "weekly_full_sync": "RUNNING",
        }
        sensors = {s["name"]: s["sensorState"]["status"] for s in repo["sensors"]}
        assert sensors == {"new_courses_sensor": "RUNNING", "sync_failure_reporter": "RUNNING"}
        checks = {
            c["name"]
            for n in listing["assetCheckNames"]
            for c in (n["assetChecksOrError"].get("checks") or [])
        }
        assert {
            "student_enrollments_have_students",
            "students_match_total_students",
            "scores_non_negative",
        } <= checks

        launched = graphql(
            url,
            """mutation($p: LaunchBackfillParams!) { launchPartitionBackfill(backfillParams: $p) {
              __typename ... on LaunchBackfillSuccess { backfillId } ... on PythonError { message } } }""",
            {
                "p": {
                    "assetSelection": [{"path": k} for k in LIGHT_KEYS],
                    "allPartitions": True,
                    "runConfigData": preset("LIGHTWEIGHT").to_run_config(),
                    "tags": [{"key": "canvas/trigger", "value": "test"}],
                    "title": "every course",
                }
            },
        )["launchPartitionBackfill"]
        assert launched["__typename"] == "LaunchBackfillSuccess", launched
        backfill_id = launched["backfillId"]
        deadline = time.monotonic() + 300
        while True:
            status = graphql(
                url,
                """query($id: String!) { partitionBackfillOrError(backfillId: $id) {
                  ... on PartitionBackfill { status runs { runId status tags { key value } } } } }""",
                {"id": backfill_id},
            )["partitionBackfillOrError"]
            if status["status"] in (
                "COMPLETED",
                "COMPLETED_SUCCESS",
                "FAILED",
                "CANCELED",
                "COMPLETED_FAILED",
            ):
                break
            assert time.monotonic() < deadline, f"backfill still {status['status']}"
            time.sleep(2)
        assert status["status"] in ("COMPLETED", "COMPLETED_SUCCESS"), status
        assert len(status["runs"]) == 1  # every course in one ranged run
        assert all(r["status"] == "SUCCESS" for r in status["runs"])
    finally:
        stop_process_group(proc)
        log.close()

    engine = sa.create_engine(production["warehouse_url"])
    with engine.connect() as conn:
        loaded = {
            r[0] for r in conn.execute(sa.text("SELECT id FROM canvas_enrollments WHERE deleted_at IS NULL"))
        }
    engine.dispose()
    truth = {
        e["id"]
        for c in sandbox.data.course_ids(states=("available", "completed"))
        for e in sandbox.data.enrollments_of(c)
    }
    assert loaded == truth
    assert sandbox.stats()["throttled"] == 0


@pytest.mark.slow
def test_two_syncs_started_together_on_one_token_see_no_throttling_and_agree(make_sandbox, pg_url, tmp_path):
    sandbox = make_sandbox(scale="small", throttle="hosted", latency_ms=20.0)
    procs = []
    for i in range(2):
        home = tmp_path / f"home{i}"
        home.mkdir()
        (home / "dagster.yaml").write_text("telemetry:\n  enabled: false\n")
        env = clean_env(
            DAGSTER_HOME=str(home),
            CANVAS_BASE_URL=sandbox.base_url,
            CANVAS_API_TOKEN=sandbox.token,
            CANVAS_ASSETS_DATABASE_URL=pg_url,
        )
        procs.append(
            subprocess.Popen(
                [str(BIN / "canvas-assets"), "sync", "--profile", "FULL_PROCESSING"],
                env=env,
                cwd=tmp_path,
                stdout=subprocess.PIPE,
                stderr=subprocess.STDOUT,
                text=True,
            )
        )
    outputs = [p.communicate(timeout=600)[0] for p in procs]
    assert [p.returncode for p in procs] == [0, 0], outputs
    stats = sandbox.stats()
    assert stats["throttled"] == 0
    engine = sa.create_engine(pg_url)
    with engine.connect() as conn:
        loaded = {
            r[0] for r in conn.execute(sa.text("SELECT id FROM canvas_enrollments WHERE deleted_at IS NULL"))
        }
        items = conn.execute(
            sa.text("SELECT COUNT(*) FROM canvas_module_items WHERE deleted_at IS NULL")
        ).scalar_one()
        history = conn.execute(sa.text("SELECT COUNT(*) FROM canvas_score_history")).scalar_one()
        distinct_history = conn.execute(
            sa.text(
                "SELECT COUNT(*) FROM (SELECT DISTINCT enrollment_id, current_score, final_score, current_grade, "
                "final_grade FROM canvas_score_history) AS d"
            )
        ).scalar_one()
    engine.dispose()
    cids = sandbox.data.course_ids(states=("available", "completed"))
    assert loaded == {e["id"] for c in cids for e in sandbox.data.enrollments_of(c)}
    assert items == sum(len(m["items"]) for c in cids for m in sandbox.data.modules_of(c))
    assert history == distinct_history > 0  # each score recorded once, though both syncs loaded it
