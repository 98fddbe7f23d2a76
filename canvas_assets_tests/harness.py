"""Drive the real Dagster definitions against a sandbox and a warehouse, the way the CLI and the UI do."""

import json
import os
import sys
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import dagster as dg
import sqlalchemy as sa

from canvas_assets.definitions import defs
from canvas_assets.defs.jobs import JOB_FOR_PRESET
from canvas_assets.defs.partitions import COURSES, range_tags
from canvas_assets.profiles import Profile, preset
from canvas_assets.sandbox import CanvasSandbox
from canvas_assets.warehouse.engine import get_engine


@dataclass
class Harness:
    sandbox: CanvasSandbox
    instance: dg.DagsterInstance
    db_url: str

    @property
    def engine(self) -> sa.Engine:
        return get_engine(self.db_url)

    def discover(self, **catalog_config: Any) -> dg.ExecuteInProcessResult:
        job = defs.resolve_job_def("discover_courses")
        return job.execute_in_process(
            run_config={"ops": {"canvas_course_catalog": {"config": catalog_config}}},
            instance=self.instance,
            raise_on_error=False,
        )

    def course_keys(self) -> list[str]:
        return list(self.instance.get_dynamic_partitions(COURSES.name))

    def sync(
        self,
        profile: str | Profile | dict = "LIGHTWEIGHT",
        keys: Sequence[str] | None = None,
        *,
        selection: Sequence[dg.AssetKey] | None = None,
    ) -> dg.ExecuteInProcessResult:
        """One run over `keys` (a single partition, or a ranged run over a contiguous range)."""
        if isinstance(profile, str):
            profile = preset(profile)
        run_config = profile.to_run_config() if isinstance(profile, Profile) else profile
        name = profile.name if isinstance(profile, Profile) else "FULL_PROCESSING"
        job = defs.resolve_job_def(JOB_FOR_PRESET.get(name, "sync_full"))
        keys = list(keys) if keys is not None else self.course_keys()
        kwargs: dict[str, Any] = {}
        if len(keys) == 1:
            kwargs["partition_key"] = keys[0]
        else:
            kwargs["tags"] = range_tags(keys[0], keys[-1])
        if selection is not None:
            kwargs["asset_selection"] = list(selection)
        return job.execute_in_process(
            run_config=run_config, instance=self.instance, raise_on_error=False, **kwargs
        )

    def rows(self, sql: str, **params: Any) -> list[Any]:
        with self.engine.connect() as conn:
            return list(conn.execute(sa.text(sql), params))

    def table(self, name: str, key: str = "id") -> dict[Any, Any]:
        return {r._mapping[key]: r._mapping for r in self.rows(f"SELECT * FROM {name}")}

    def staging(self, entity: str, course_id: int) -> list[dict] | None:
        where = "WHERE entity = :e AND course_id = :c"
        if not self.rows(f"SELECT 1 FROM canvas_staging {where}", e=entity, c=course_id):
            return None
        texts = self.rows(
            f"SELECT record FROM canvas_staging_records {where} ORDER BY length(record_key), record_key",
            e=entity,
            c=course_id,
        )
        return [json.loads(text) for (text,) in texts]

    def requests_to(self, template_fragment: str) -> int:
        by_endpoint = self.sandbox.stats()["by_endpoint"]
        return sum(n for endpoint, n in by_endpoint.items() if template_fragment in endpoint)


def utc(value: Any) -> datetime | None:
    """A stored timestamp as an aware UTC instant (SQLite returns naive UTC, PostgreSQL aware)."""
    if value is None:
        return None
    if isinstance(value, str):
        value = datetime.fromisoformat(value.replace("Z", "+00:00"))
    return value.replace(tzinfo=timezone.utc) if value.tzinfo is None else value.astimezone(timezone.utc)


def failure_text(result: dg.ExecuteInProcessResult) -> str:
    """Every step failure's description and error message of a run, joined."""
    parts = []
    for event in result.all_events:
        if event.event_type_value == "STEP_FAILURE":
            data = event.event_specific_data
            user = getattr(data, "user_failure_data", None)
            if user is not None and user.description:
                parts.append(user.description)
            err = getattr(data, "error", None)
            while err is not None:
                parts.append(err.message)
                err = err.cause
    return "\n".join(parts)


# --- shared by the tests that run real processes ------------------------------------------------------
BIN = Path(sys.executable).parent
ROOT = Path(__file__).resolve().parent.parent
MATERIALIZE = [str(BIN / "dagster"), "asset", "materialize", "-m", "canvas_assets.definitions"]


def clean_env(**extra: str) -> dict[str, str]:
    """This process's environment without any CANVAS_/DAGSTER_ setting, plus `extra`, for a subprocess."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("CANVAS_", "DAGSTER_"))}
    env["PATH"] = f"{BIN}{os.pathsep}{env.get('PATH', '')}"
    env.update(extra)
    return env


def canvas_storage(postgres_url: str) -> dict[str, Any]:
    """Instance overrides: the project's own storage (canvas_assets.instance.storage) on `postgres_url`."""
    return {
        "storage": {
            "custom": {
                "module": "canvas_assets.instance.storage",
                "class": "CanvasStorage",
                "config": {"postgres_url": postgres_url},
            }
        }
    }


@contextmanager
def pipeline_harness(
    sandbox: CanvasSandbox, db_url: str, monkeypatch: Any, instance_overrides: dict[str, Any] | None = None
) -> Iterator[Harness]:
    """This process pointed at `sandbox` and `db_url`, with a throwaway Dagster instance (Dagster's
    SQLite test instance, or `instance_overrides` such as `canvas_storage(url)`)."""
    monkeypatch.setenv("CANVAS_BASE_URL", sandbox.base_url)
    monkeypatch.setenv("CANVAS_API_TOKEN", sandbox.token)
    monkeypatch.setenv("CANVAS_ASSETS_DATABASE_URL", db_url)
    monkeypatch.delenv("CANVAS_ACCOUNT_ID", raising=False)
    monkeypatch.delenv("CANVAS_SYNC_PROFILE", raising=False)
    with dg.instance_for_test(overrides=instance_overrides) as instance:
        yield Harness(sandbox, instance, db_url)


def free_port() -> int:
    """A TCP port on loopback that nothing listens on right now."""
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def create_database() -> str:
    """A fresh database on the test PostgreSQL server; returns its name (drop it with drop_database)."""
    import uuid

    from canvas_assets_tests.conftest import PG_ADMIN_URL

    name = f"canvas_assets_test_{uuid.uuid4().hex[:12]}"
    admin = sa.create_engine(PG_ADMIN_URL, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(sa.text(f'CREATE DATABASE "{name}"'))
    admin.dispose()
    return name


def drop_database(name: str) -> None:
    from canvas_assets_tests.conftest import PG_ADMIN_URL

    admin = sa.create_engine(PG_ADMIN_URL, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(sa.text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
    admin.dispose()


def stop_process_group(proc: Any) -> None:
    """Stop a process started with start_new_session=True and everything it started (dagster dev
    spawns a webserver, a daemon and code servers): SIGTERM, then SIGKILL if it lingers."""
    import signal
    import subprocess

    os.killpg(proc.pid, signal.SIGTERM)
    try:
        proc.wait(timeout=30)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(timeout=30)
