"""The command line, run as a user runs it: real subprocesses, a temporary DAGSTER_HOME, a sandbox on loopback."""

import json
import subprocess
from pathlib import Path

import pytest
import sqlalchemy as sa

from canvas_assets.profiles import PROFILES_DIR
from canvas_assets_tests.harness import BIN, MATERIALIZE, ROOT, clean_env

SECRET = "cli-secret-token-9d3a"


def run(args: list[str], env: dict[str, str], cwd: Path, timeout: float = 300) -> subprocess.CompletedProcess:
    return subprocess.run(args, env=env, cwd=cwd, capture_output=True, text=True, timeout=timeout)


@pytest.fixture
def cli_env(tmp_path, sandbox) -> dict[str, str]:
    env = clean_env(
        DAGSTER_HOME=str(tmp_path / "home"),
        CANVAS_BASE_URL=sandbox.base_url,
        CANVAS_API_TOKEN=sandbox.token,
        CANVAS_ASSETS_DATABASE_URL=f"sqlite:///{tmp_path / 'warehouse.db'}",
    )
    (tmp_path / "home").mkdir()
    (tmp_path / "home" / "dagster.yaml").write_text("telemetry:\n  enabled: false\n")
    return env


def canvas_assets(*args: str, env: dict[str, str], cwd: Path) -> subprocess.CompletedProcess:
    return run([str(BIN / "canvas-assets"), *args], env, cwd)


@pytest.mark.slow
def test_demo_exits_0_in_a_fresh_folder_on_the_local_store(tmp_path):
    result = canvas_assets("demo", env=clean_env(), cwd=tmp_path)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "courses failed   0" in result.stdout
    assert "canvas-assets ui" in result.stdout
    # Progress on a pipe: plain lines per phase, no Dagster banners.
    for phase in ("discovering courses...", "fetching from Canvas...", "transforming and loading..."):
        assert phase in result.stderr
    assert "Welcome to Dagster" not in result.stdout + result.stderr
    assert "telemetry" not in (result.stdout + result.stderr).lower()
    store = tmp_path / ".canvas_assets"
    assert (store / "dagster_home" / "dagster.yaml").exists()
    from canvas_assets.instance.local_store import WAREHOUSE_DB, embedded_server

    db = sa.create_engine(embedded_server(store / "pgdata").url(WAREHOUSE_DB), poolclass=sa.pool.NullPool)
    with db.connect() as conn:
        assert conn.execute(sa.text("SELECT COUNT(*) FROM canvas_enrollments")).scalar_one() > 0
        assert conn.execute(sa.text("SELECT COUNT(*) FROM canvas_module_items")).scalar_one() > 0
    status = canvas_assets("status", "--json", env=clean_env(), cwd=tmp_path)
    assert status.returncode == 0, status.stderr
    assert json.loads(status.stdout)["courses_synced"] > 0


@pytest.mark.slow
def test_sync_then_status_report_the_pipeline(cli_env, tmp_path, sandbox):
    result = canvas_assets("sync", "--profile", "lightweight", env=cli_env, cwd=tmp_path)
    assert result.returncode == 0, result.stdout + result.stderr
    courses = len(sandbox.data.course_ids(states=("available", "completed")))
    assert f"courses ok       {courses}" in result.stdout
    assert "throttled 0" in result.stdout
    again = canvas_assets("sync", "--profile", "lightweight", "--json", env=cli_env, cwd=tmp_path)
    assert again.returncode == 0, again.stdout + again.stderr
    summary = json.loads(again.stdout)  # stdout is the JSON alone; progress went to stderr
    assert summary["ok"] is True and summary["courses_by_status"] == {"success": courses}
    assert summary["throttled"] == 0 and summary["api_calls"] > courses
    assert summary["rows"]["canvas_enrollments"] > 0
    assert summary["rows"]["canvas_courses"] == courses  # one row per course, not per student
    assert 0 < summary["rows"]["canvas_students"] < summary["rows"]["canvas_enrollments"]
    status = canvas_assets("status", "--json", env=cli_env, cwd=tmp_path)
    assert status.returncode == 0, status.stderr
    report = json.loads(status.stdout)
    assert report["courses_known"] == courses
    assert report["courses_synced"] == courses
    assert report["success_rate"] == 1.0
    assert report["api_calls"] > courses
    assert report["mean_course_seconds"] > 0
    assert report["last_sync_age_seconds"] >= 0
    assert [r["status"] for r in report["recent_runs"]][:2] == ["SUCCESS", "SUCCESS"]
    assert sandbox.token not in status.stdout + result.stdout + result.stderr + again.stdout + again.stderr


@pytest.mark.slow
def test_sync_exits_non_zero_and_names_the_course_when_one_course_fails(cli_env, tmp_path, sandbox):
    victim = sandbox.data.course_ids(states=("available",))[1]
    sandbox.forbid_course(victim)
    result = canvas_assets("sync", "--profile", "LIGHTWEIGHT", env=cli_env, cwd=tmp_path)
    assert result.returncode == 1, result.stdout + result.stderr
    assert "courses failed   1" in result.stdout
    assert f"course {victim}: failed: CanvasPermissionError" in result.stdout
    # The other courses were synced all the same.
    db = sa.create_engine(cli_env["CANVAS_ASSETS_DATABASE_URL"])
    with db.connect() as conn:
        synced = conn.execute(
            sa.text("SELECT COUNT(DISTINCT course_id) FROM canvas_enrollments")
        ).scalar_one()
    assert synced >= len(sandbox.data.course_ids(states=("available", "completed"))) - 2


def test_sync_with_an_invalid_profile_file_names_the_field_and_calls_nobody(cli_env, tmp_path, sandbox):
    bad = tmp_path / "bad.yaml"
    bad.write_text(
        "resources:\n  sync_profile:\n    config:\n      name: LIGHTWEIGHT\n      processing: {batch_size: 0}\n"
    )
    sandbox.reset_stats()
    result = canvas_assets("sync", "--config", str(bad), env=cli_env, cwd=tmp_path)
    assert result.returncode == 2
    assert "processing.batch_size" in result.stderr and "between 1 and 1000" in result.stderr
    assert sandbox.stats()["requests"] == 0


def test_a_config_file_with_a_canvas_section_is_refused_by_sync_and_validate(cli_env, tmp_path, sandbox):
    run_config = tmp_path / "run.yaml"
    run_config.write_text(
        "resources:\n  sync_profile:\n    config: {name: LIGHTWEIGHT}\n"
        "  canvas:\n    config: {base_url: https://other.example.com}\n"
    )
    sandbox.reset_stats()
    for args in (("sync", "--config", str(run_config)), ("profile", "validate", str(run_config))):
        result = canvas_assets(*args, env=cli_env, cwd=tmp_path)
        assert result.returncode == 2, result.stdout + result.stderr
        assert "(field: resources.canvas)" in result.stderr
        assert "set by the environment variables CANVAS_BASE_URL and CANVAS_API_TOKEN" in result.stderr
    assert sandbox.stats()["requests"] == 0


def test_sync_with_an_unknown_profile_or_course_is_a_clear_error(cli_env, tmp_path):
    result = canvas_assets("sync", "--profile", "NIGHTLY", env=cli_env, cwd=tmp_path)
    assert result.returncode == 2
    assert "unknown profile 'NIGHTLY'" in result.stderr and "LIGHTWEIGHT" in result.stderr
    result = canvas_assets("sync", "--course", "424242", env=cli_env, cwd=tmp_path)
    assert result.returncode == 2
    assert "unknown course id(s) 424242" in result.stderr


def test_sync_without_canvas_settings_says_what_to_set(cli_env, tmp_path):
    env = {k: v for k, v in cli_env.items() if k != "CANVAS_BASE_URL"}
    result = canvas_assets("sync", env=env, cwd=tmp_path)
    assert result.returncode == 2
    assert "CANVAS_BASE_URL" in result.stderr and "canvas-assets demo" in result.stderr


def test_a_bad_token_fails_the_sync_without_printing_the_token(cli_env, tmp_path):
    env = {**cli_env, "CANVAS_API_TOKEN": SECRET}
    result = canvas_assets("sync", env=env, cwd=tmp_path)
    assert result.returncode == 1
    assert "Invalid access token" in result.stderr
    assert SECRET not in result.stdout + result.stderr


def test_profile_show_and_validate(cli_env, tmp_path):
    shown = canvas_assets("profile", "show", "analytics_focused", env=cli_env, cwd=tmp_path)
    assert shown.returncode == 0
    assert "name: ANALYTICS_FOCUSED" in shown.stdout
    ok = canvas_assets(
        "profile", "validate", str(PROFILES_DIR / "full_processing.yaml"), env=cli_env, cwd=tmp_path
    )
    assert ok.returncode == 0 and "valid profile FULL_PROCESSING" in ok.stdout
    bad = tmp_path / "bad.yaml"
    bad.write_text("name: LIGHTWEIGHT\nentities: {courses: yes-please}\n")
    refused = canvas_assets("profile", "validate", str(bad), env=cli_env, cwd=tmp_path)
    assert refused.returncode == 2
    assert "entities.courses" in refused.stderr


@pytest.mark.slow
def test_dagster_asset_materialize_works_per_partition_and_per_range_after_discovery(
    cli_env, tmp_path, sandbox
):
    found = run(
        [
            *MATERIALIZE,
            "--select",
            "canvas_course_catalog",
        ],
        cli_env,
        ROOT,
    )
    assert found.returncode == 0, found.stderr[-3000:]
    courses = [str(c) for c in sandbox.data.course_ids(states=("available", "completed"))]
    select = 'key:"staging/*" or key:"layer1/*"'
    one = run(
        [
            *MATERIALIZE,
            "--select",
            select,
            "--partition",
            courses[0],
            "-c",
            str(PROFILES_DIR / "lightweight.yaml"),
        ],
        cli_env,
        ROOT,
    )
    assert one.returncode == 0, one.stderr[-3000:]
    ranged = run(
        [
            *MATERIALIZE,
            "--select",
            select,
            "--partition-range",
            f"{courses[1]}...{courses[3]}",
            "-c",
            str(PROFILES_DIR / "full_processing.yaml"),
        ],
        cli_env,
        ROOT,
    )
    assert ranged.returncode == 0, ranged.stderr[-3000:]
    db = sa.create_engine(cli_env["CANVAS_ASSETS_DATABASE_URL"])
    with db.connect() as conn:
        enrolled = {r[0] for r in conn.execute(sa.text("SELECT DISTINCT course_id FROM canvas_enrollments"))}
        assigned = {r[0] for r in conn.execute(sa.text("SELECT DISTINCT course_id FROM canvas_assignments"))}
    expected = {int(c) for c in courses[:4] if sandbox.data.enrollments_of(int(c))}
    assert enrolled == expected
    # LIGHTWEIGHT did not fetch the first course's assignments; FULL_PROCESSING fetched the range's.
    assert assigned == {int(c) for c in courses[1:4] if sandbox.data.assignments_of(int(c))}
    assert assigned
    assert sandbox.token not in one.stdout + one.stderr + ranged.stdout + ranged.stderr


def test_db_upgrade_creates_the_schema_on_an_empty_database(cli_env, tmp_path):
    url = f"sqlite:///{tmp_path / 'fresh.db'}"
    result = canvas_assets("db", "upgrade", "--url", url, env=cli_env, cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert "empty ->" in result.stdout
    tables = set(sa.inspect(sa.create_engine(url)).get_table_names())
    assert {"canvas_courses", "canvas_staging", "canvas_sync_log", "canvas_rejected_records"} <= tables


def test_a_token_pasted_with_a_line_break_is_refused_without_echoing_it(cli_env, tmp_path):
    env = {**cli_env, "CANVAS_API_TOKEN": "SEKRETpart1\nSEKRETpart2"}
    result = canvas_assets("sync", env=env, cwd=tmp_path)
    assert result.returncode == 2, result.stdout + result.stderr
    assert "CANVAS_API_TOKEN contains spaces, line breaks" in result.stderr
    assert "SEKRET" not in result.stdout + result.stderr
    for path in tmp_path.rglob("*"):
        if path.is_file() and path.stat().st_size < 50_000_000:
            assert b"SEKRET" not in path.read_bytes(), path
