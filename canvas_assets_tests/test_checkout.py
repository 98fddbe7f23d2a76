"""The checkout as a new Dagster user meets it: `dagster dev` and friends in the project root, nothing set.

Without DAGSTER_HOME, Dagster builds a temporary instance from the dagster.yaml in the working
directory; ours is the local one (embedded PostgreSQL), so these commands need no environment at all.
"""

import os
import shutil
import subprocess
import time
from pathlib import Path

import pytest
import requests

from canvas_assets_tests.harness import BIN, ROOT, free_port, stop_process_group
from canvas_assets_tests.processes import wait_until

EMPTY_ENV = {"PATH": f"{BIN}{os.pathsep}/usr/bin:/bin", "HOME": os.environ.get("HOME", "/root")}


def clean_clone(target: Path) -> Path:
    """The committed project (a git clone when the checkout is a repository, else a copy of its files)."""
    if (ROOT / ".git").exists():
        subprocess.run(["git", "clone", "-q", str(ROOT), str(target)], check=True)
    else:
        shutil.copytree(ROOT, target, ignore=shutil.ignore_patterns(".venv", ".canvas_assets", "__pycache__"))
    return target


@pytest.mark.slow
def test_dagster_commands_work_in_a_clean_clone_with_nothing_set(tmp_path):
    root = clean_clone(tmp_path / "clone")
    validated = subprocess.run(
        [str(BIN / "dagster"), "definitions", "validate", "-m", "canvas_assets.definitions"],
        cwd=root,
        env=EMPTY_ENV,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert validated.returncode == 0, validated.stdout + validated.stderr
    assert "DAGSTER_PG" not in validated.stdout + validated.stderr

    port = free_port()
    log = (tmp_path / "dev.log").open("w")
    dev = subprocess.Popen(
        [str(BIN / "dagster"), "dev", "-p", str(port), "-h", "127.0.0.1"],
        cwd=root,
        env=EMPTY_ENV,
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    try:
        nodes = None
        deadline = time.monotonic() + 240
        while time.monotonic() < deadline and nodes is None:
            assert dev.poll() is None, (tmp_path / "dev.log").read_text()
            try:
                body = requests.post(
                    f"http://127.0.0.1:{port}/graphql",
                    json={"query": "{ assetNodes { assetKey { path } partitionDefinition { name } } }"},
                    timeout=10,
                ).json()
                nodes = body["data"]["assetNodes"]
            except (requests.RequestException, KeyError, TypeError, ValueError):
                time.sleep(1)
        assert nodes is not None, (tmp_path / "dev.log").read_text()
        keys = {"/".join(n["assetKey"]["path"]) for n in nodes}
        assert {"canvas_course_catalog", "staging/enrollments", "layer1/enrollments"} <= keys
        assert {n["partitionDefinition"]["name"] for n in nodes if n["partitionDefinition"]} == {
            "canvas_course"
        }
        # The instance lives in the clone's own local store, not in the temporary home.
        assert (root / ".canvas_assets" / "pgdata" / "PG_VERSION").exists()
    finally:
        stop_process_group(dev)
        log.close()
    assert "Welcome to Dagster" not in (tmp_path / "dev.log").read_text()
    # The clone's local store stops once its last user is gone, however `dagster dev`'s processes ended: it
    # was once found running 90 minutes after this test, its users long gone (issue 21).
    wait_until(
        "the clone's local store to stop", lambda: not store_running(root / ".canvas_assets"), timeout=90
    )


def store_running(store: Path) -> bool:
    """Whether the embedded PostgreSQL of a local store (its postmaster.pid's process) is running."""
    pid_file = store / "pgdata" / "postmaster.pid"
    if not pid_file.exists():
        return False
    try:
        os.kill(int(pid_file.read_text().split()[0]), 0)
    except (ProcessLookupError, ValueError, IndexError):
        return False
    return True
