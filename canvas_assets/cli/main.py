"""`canvas-assets`: sandbox, sync, demo, status, profiles and database migrations."""

from __future__ import annotations

import json
import os
import sys
import time
from collections.abc import Sequence
from typing import Any, NoReturn

import click

from canvas_assets.errors import CanvasAssetsError, ProfileError
from canvas_assets.instance.local_store import describe_url
from canvas_assets.profiles import Profile, environment_profile_name, load_profile_file, preset

EXIT_FAILED_COURSES = 1
EXIT_BAD_INPUT = 2


def _fail(exc: CanvasAssetsError) -> NoReturn:
    label = {"configuration": "configuration error", "canvas_api": "Canvas error", "timeout": "timeout"}.get(
        exc.category.value, f"{exc.category.value} error"
    )
    where = f" (field: {exc.field})" if isinstance(exc, ProfileError) and exc.field else ""
    click.secho(f"{label}{where}: {exc.message}", fg="red", err=True)
    sys.exit(EXIT_BAD_INPUT if exc.category.value == "configuration" else EXIT_FAILED_COURSES)


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
def main() -> None:
    """Mirror Canvas LMS courses, students, enrollments, assignments and modules into SQL with Dagster."""


# --- sandbox ----------------------------------------------------------------------------------------------
@main.command()
@click.option("--host", default="127.0.0.1", show_default=True)
@click.option("--port", default=8765, show_default=True, type=int, help="0 picks a free port.")
@click.option("--courses", type=int, default=None, help="Number of courses (default: the scale's).")
@click.option("--scale", type=click.Choice(["small", "medium", "large"]), default="small", show_default=True)
@click.option("--seed", type=int, default=7, show_default=True)
@click.option(
    "--throttle", type=click.Choice(["hosted", "legacy", "off"]), default="hosted", show_default=True
)
@click.option("--latency-ms", type=float, default=0.0, show_default=True)
@click.option("--fault-rate", type=float, default=0.0, show_default=True)
def sandbox(
    host: str,
    port: int,
    courses: int | None,
    scale: str,
    seed: int,
    throttle: str,
    latency_ms: float,
    fault_rate: float,
) -> None:
    """Serve the simulated Canvas until interrupted; prints its base URL and token."""
    from canvas_assets.sandbox import CanvasSandbox, SandboxConfig, serve_forever

    if not 0 <= fault_rate <= 1:
        raise click.BadParameter("must be between 0 and 1", param_hint="--fault-rate")
    cfg = SandboxConfig(
        courses=courses,
        scale=scale,
        seed=seed,
        throttle=throttle,
        latency_ms=latency_ms,
        fault_rate=fault_rate,
    )

    def announce(sb: CanvasSandbox) -> None:
        click.echo(f"Canvas sandbox: {len(sb.data.courses)} courses, throttle {throttle}, seed {seed}")
        click.echo(f"export CANVAS_BASE_URL={sb.base_url}")
        click.echo(f"export CANVAS_API_TOKEN={sb.token}")
        click.echo("Ctrl-C to stop.")

    serve_forever(cfg, host=host, port=port, announce=announce)
    click.echo("stopped")


# --- sync ---------------------------------------------------------------------------------------------------
def _sync(
    profile: Profile,
    courses: Sequence[int],
    max_courses: int | None,
    catalog_states: Sequence[str],
    *,
    as_json: bool = False,
) -> int:
    from canvas_assets.cli.stopping import SyncInterrupted, exit_now, report_interruption, stop_on_signals

    started = time.monotonic()
    with stop_on_signals(
        "stopping: requests in flight are abandoned, what is staged stays (press Ctrl-C again to quit at once)"
    ):
        try:
            return _sync_until_done(profile, courses, max_courses, catalog_states, as_json=as_json)
        except SyncInterrupted as stop:
            report_interruption(stop, time.monotonic() - started)
            exit_now(stop.exit_code)
    return EXIT_FAILED_COURSES  # not reached: exit_now ends the process


def _sync_until_done(
    profile: Profile,
    courses: Sequence[int],
    max_courses: int | None,
    catalog_states: Sequence[str],
    *,
    as_json: bool = False,
) -> int:
    import dagster as dg

    from canvas_assets.cli.stopping import SyncInterrupted, resolve_orphaned_runs
    from canvas_assets.cli.sync import (
        discover,
        ensure_dagster_home,
        require_canvas_env,
        run_sync,
        select_courses,
    )
    from canvas_assets.definitions import defs
    from canvas_assets.progress import ProgressDisplay, listen
    from canvas_assets.warehouse.db import Warehouse
    from canvas_assets.warehouse.engine import default_database_url

    require_canvas_env()
    home = ensure_dagster_home()
    warehouse = Warehouse(default_database_url())
    warehouse.ensure_schema()
    # With --json, stdout carries the summary alone; the header and progress go to stderr.
    say = (lambda text: click.echo(text, err=True)) if as_json else click.echo
    say(f"profile:   {profile.name} ({', '.join(profile.staging_entities)})")
    say(f"dagster:   {home}")
    say(f"warehouse: {describe_url(default_database_url())}")
    display = ProgressDisplay()
    stop = listen(display)
    try:
        with dg.DagsterInstance.get() as instance:
            for orphan in resolve_orphaned_runs(instance):
                click.secho(
                    f"run {orphan.run_id} ({orphan.job}) was left {orphan.status} by canvas-assets {orphan.owner}, "
                    "which no longer exists: marked failed, its pool slot freed",
                    fg="yellow",
                    err=True,
                )
            catalog_config: dict[str, Any] = {"states": list(catalog_states)}
            if max_courses is not None and not courses:
                catalog_config["max_courses"] = max_courses
            found = discover(defs, instance, catalog_config)
            if not found.success:
                display.close()
                click.secho(f"course discovery failed: {found.failure}", fg="red", err=True)
                return EXIT_BAD_INPUT if found.failure_category == "configuration" else EXIT_FAILED_COURSES
            chosen = select_courses(instance, warehouse.catalog_course_ids(), courses or None, max_courses)
            if not chosen:
                display.close()
                say("no courses to sync (the catalog is empty for these filters)")
                return 0
            summary = run_sync(defs, instance, warehouse, profile, chosen)
    except SyncInterrupted as interrupted:
        interrupted.warehouse = warehouse  # to say what was kept
        raise
    finally:
        stop()
        display.close()
    if as_json:
        click.echo(json.dumps(summary.to_json(), indent=2))
    else:
        _print_summary(summary)
    return 0 if summary.ok else EXIT_FAILED_COURSES


def _print_summary(summary: Any) -> None:
    counts = summary.status_counts
    click.echo("")
    click.echo(f"Sync summary ({summary.profile}, {summary.seconds:.1f} s, {len(summary.runs)} run(s))")
    click.echo(f"  courses ok       {counts.get('success', 0)}")
    click.echo(f"  courses failed   {counts.get('failed', 0)}")
    click.echo(f"  courses gone     {counts.get('gone', 0)}")
    if counts.get("not run"):
        click.echo(f"  courses not run  {counts['not run']}")
    click.echo(
        f"  API calls        {summary.api_calls}  (retries {summary.retries}, throttled {summary.throttled})"
    )
    width = max((len(t) for t in summary.rows), default=0)
    for table, n in summary.rows.items():
        click.echo(f"  {table:<{width}}  {n:>9,} rows")
    for cid, err in sorted(summary.course_errors.items())[:20]:
        click.secho(f"  course {cid}: {summary.course_status[cid]}: {err}", fg="yellow")
    for run in summary.runs:
        if not run.success:
            click.secho(f"  run {run.run_id} failed: {run.failure}", fg="red")


@main.command()
@click.option("--profile", "profile_name", help="Preset: LIGHTWEIGHT, ANALYTICS_FOCUSED, FULL_PROCESSING.")
@click.option("--config", "config_file", type=click.Path(dir_okay=False), help="A run-config YAML file.")
@click.option("--course", "courses", type=int, multiple=True, help="Sync only this course id (repeatable).")
@click.option("--max-courses", type=click.IntRange(min=1), default=None, help="Sync at most N courses.")
@click.option(
    "--state",
    "states",
    multiple=True,
    default=("available", "completed"),
    show_default=True,
    help="Course states to discover (repeatable).",
)
@click.option("--json", "as_json", is_flag=True, help="Print the summary as JSON on stdout.")
def sync(
    profile_name: str | None,
    config_file: str | None,
    courses: tuple[int, ...],
    max_courses: int | None,
    states: tuple[str, ...],
    as_json: bool,
) -> None:
    """Discover courses and materialise the profile's assets through Dagster ($DAGSTER_HOME)."""
    try:
        if profile_name and config_file:
            raise ProfileError("give either --profile or --config, not both", field="")
        profile = (
            load_profile_file(config_file)
            if config_file
            else preset(profile_name or environment_profile_name())
        )
        sys.exit(_sync(profile, courses, max_courses, states, as_json=as_json))
    except CanvasAssetsError as exc:
        _fail(exc)


@main.command()
@click.option("--profile", "profile_name", default="FULL_PROCESSING", show_default=True)
@click.option("--courses", type=int, default=None, help="Sandbox courses (default: the small scale's).")
@click.option("--seed", type=int, default=7, show_default=True)
@click.option(
    "--live", "live_too", is_flag=True, help="Then grade in the sandbox and show the row change live."
)
def demo(profile_name: str, courses: int | None, seed: int, live_too: bool) -> None:
    """Start a local Canvas sandbox and sync it into the default database, then show how to browse it."""
    from canvas_assets.cli.sync import ensure_dagster_home
    from canvas_assets.sandbox import CanvasSandbox, SandboxConfig
    from canvas_assets.warehouse.engine import default_database_url

    try:
        profile = preset(profile_name)
        home = ensure_dagster_home()
        with CanvasSandbox(
            SandboxConfig(courses=courses, seed=seed, throttle="hosted", latency_ms=5.0)
        ) as sb:
            os.environ["CANVAS_BASE_URL"] = sb.base_url
            os.environ["CANVAS_API_TOKEN"] = sb.token
            click.echo(f"sandbox:   {sb.base_url} ({len(sb.data.courses)} simulated courses)")
            code = _sync(profile, (), None, ("available", "completed"))
            db_url = default_database_url()
            if live_too and code == 0:
                from canvas_assets.cli.live import run_live_demo

                run_live_demo(db_url, sb)
    except CanvasAssetsError as exc:
        _fail(exc)
    click.echo("")
    click.echo("Browse the runs, assets, partitions and checks in the Dagster UI (same instance):")
    click.echo("  canvas-assets ui")
    click.echo("To launch runs from the UI, serve a sandbox in another terminal (`canvas-assets sandbox`)")
    click.echo("and export the CANVAS_BASE_URL and CANVAS_API_TOKEN it prints before `canvas-assets ui`.")
    click.echo(f"Dagster instance: {home}")
    click.echo(f"Tables: {describe_url(db_url)}")
    sys.exit(code)


# --- status -------------------------------------------------------------------------------------------------
@main.command()
@click.option("--json", "as_json", is_flag=True, help="Print machine-readable JSON.")
@click.option("--courses/--no-courses", "show_courses", default=True, help="List the courses.")
def status(as_json: bool, show_courses: bool) -> None:
    """Pipeline status: courses known, synced, failed, success rate, mean duration, API calls."""
    import dagster as dg

    from canvas_assets.cli.status import pipeline_status, recent_runs
    from canvas_assets.cli.sync import ensure_dagster_home
    from canvas_assets.warehouse.db import Warehouse
    from canvas_assets.warehouse.engine import default_database_url

    try:
        home = ensure_dagster_home()
        warehouse = Warehouse(default_database_url())
        warehouse.ensure_schema()
        st = pipeline_status(warehouse.engine)
        with dg.DagsterInstance.get() as instance:
            runs = recent_runs(instance)
    except CanvasAssetsError as exc:
        _fail(exc)
    if as_json:
        click.echo(json.dumps({**st.to_dict(), "recent_runs": runs}, indent=2))
        return
    age = st.last_sync_age_seconds
    click.echo(f"dagster home      {home}")
    click.echo(f"warehouse         {describe_url(warehouse.url)}")
    click.echo(f"courses known     {st.courses_known} (+{st.courses_gone} gone)")
    click.echo(f"courses synced    {st.courses_synced}")
    click.echo(f"courses failed    {st.courses_failed}")
    click.echo(
        f"last sync         {st.last_sync.isoformat() if st.last_sync else 'never'}"
        + (f" ({_age(age)} ago)" if age is not None else "")
    )
    rate = f"{st.success_rate * 100:.1f}%" if st.success_rate is not None else "n/a"
    click.echo(f"success rate      {rate} of {st.course_syncs} course syncs")
    mean = f"{st.mean_course_seconds:.2f} s" if st.mean_course_seconds is not None else "n/a"
    click.echo(f"mean course sync  {mean}")
    click.echo(f"API calls         {st.api_calls}")
    for entity, figures in sorted(st.confirmed.items()):
        oldest, newest = figures.get("oldest"), figures.get("newest")
        if oldest is not None:
            click.echo(
                f"confirmed {entity:<17} {figures.get('courses', 0)} course(s), oldest "
                f"{oldest:%Y-%m-%d %H:%M:%S}, newest {newest:%Y-%m-%d %H:%M:%S}"
            )
    if runs:
        click.echo("recent runs:")
        for r in runs:
            secs = f"{r['seconds']} s" if r["seconds"] is not None else ""
            click.echo(f"  {r['run_id'][:8]}  {r['job']:<18} {r['status']:<10} {r['range']:<20} {secs}")
            if r.get("failure"):
                courses = r.get("failed_courses") or []
                unsynced = f" ({len(courses)} course(s) left unsynced)" if courses else ""
                click.secho(f"            {r['failure']}{unsynced}", fg="red")
    if show_courses and st.courses:
        click.echo(
            "courses:           (id, last result, last sync, Canvas last confirmed every entity, name)"
        )
        for c in st.courses[:200]:
            last = c.last_sync.strftime("%Y-%m-%d %H:%M:%S") if c.last_sync else "never"
            confirmed = c.last_confirmed.strftime("%Y-%m-%d %H:%M:%S") if c.last_confirmed else "never"
            line = (
                f"  {c.course_id:<12} {(c.last_status or 'never'):<8} {last:<20} {confirmed:<20} "
                f"{(c.name or '')[:40]}"
            )
            click.echo(line + (f"  {c.error}" if c.error and c.last_status != "success" else ""))


def _age(seconds: float) -> str:
    if seconds < 120:
        return f"{seconds:.0f} s"
    if seconds < 7200:
        return f"{seconds / 60:.0f} min"
    if seconds < 172800:
        return f"{seconds / 3600:.1f} h"
    return f"{seconds / 86400:.1f} days"


# --- profiles ----------------------------------------------------------------------------------------------
@main.group()
def profile() -> None:
    """Show or validate sync profiles."""


@profile.command("show")
@click.argument("name")
def profile_show(name: str) -> None:
    """Print a preset as run config (LIGHTWEIGHT, ANALYTICS_FOCUSED, FULL_PROCESSING)."""
    import yaml

    try:
        p = preset(name)
    except ProfileError as exc:
        _fail(exc)
    click.echo(yaml.safe_dump(p.to_run_config(), sort_keys=False).rstrip())
    click.echo(f"# fetches: {', '.join(p.staging_entities)}")


@profile.command("validate")
@click.argument("path", type=click.Path(dir_okay=False))
def profile_validate(path: str) -> None:
    """Check a run-config file; names the field that is wrong."""
    try:
        p = load_profile_file(path)
    except ProfileError as exc:
        _fail(exc)
    click.echo(f"{path}: valid profile {p.name} (fetches {', '.join(p.staging_entities)})")


# --- database ---------------------------------------------------------------------------------------------
@main.group()
def db() -> None:
    """Warehouse schema migrations."""


@db.command("upgrade")
@click.option(
    "--url", default=None, help="SQLAlchemy URL (default: CANVAS_ASSETS_DATABASE_URL or the local store)."
)
def db_upgrade(url: str | None) -> None:
    """Bring the warehouse schema up to date (Alembic)."""
    from canvas_assets.warehouse.engine import default_database_url
    from canvas_assets.warehouse.migrate import current_revision, head_revision, upgrade

    target = url or default_database_url()
    try:
        before = current_revision(target)
        upgrade(target)
    except CanvasAssetsError as exc:
        _fail(exc)
    click.echo(f"warehouse schema: {before or 'empty'} -> {head_revision()}")


# --- the Dagster UI and instance ---------------------------------------------------------------------------
@main.command()
@click.option("--port", default=3000, show_default=True, type=int)
@click.option("--host", default="127.0.0.1", show_default=True)
def ui(port: int, host: str) -> None:
    """Open the Dagster UI (webserver and daemon) on the instance `sync` and `demo` use."""
    import subprocess

    from canvas_assets.cli.sync import ensure_dagster_home

    home = ensure_dagster_home()
    click.echo(f"Dagster instance: {home}")
    click.echo(f"Dagster UI: http://{host}:{port}  (Ctrl-C to stop)")
    dagster = os.path.join(os.path.dirname(sys.executable), "dagster")
    command = [dagster, "dev", "-m", "canvas_assets.definitions", "-h", host, "-p", str(port)]
    try:
        sys.exit(subprocess.call(command, env=os.environ.copy()))
    except KeyboardInterrupt:
        sys.exit(0)


@main.group()
def instance() -> None:
    """The Dagster instance configuration (dagster.yaml)."""


@instance.command("init")
@click.option("--production", is_flag=True, help="PostgreSQL server settings from DAGSTER_PG_* variables.")
@click.option("--force", is_flag=True, help="Replace an existing dagster.yaml.")
@click.argument("home", required=False, type=click.Path(file_okay=False))
def instance_init(production: bool, force: bool, home: str | None) -> None:
    """Write the local (default) or production dagster.yaml into HOME (default: $DAGSTER_HOME)."""
    from pathlib import Path

    from canvas_assets.instance import LOCAL_CONFIG, PRODUCTION_CONFIG, write_instance_config

    target = Path(home or os.environ.get("DAGSTER_HOME") or "").expanduser()
    if not str(target) or str(target) == ".":
        raise click.UsageError("give HOME or set DAGSTER_HOME (an absolute path)")
    if (target / "dagster.yaml").exists() and not force:
        raise click.UsageError(f"{target / 'dagster.yaml'} exists: pass --force to replace it")
    written = write_instance_config(target.resolve(), PRODUCTION_CONFIG if production else LOCAL_CONFIG)
    click.echo(f"wrote {written}")
    if production:
        click.echo(
            "set DAGSTER_PG_HOST, DAGSTER_PG_PORT, DAGSTER_PG_USER, DAGSTER_PG_PASSWORD, DAGSTER_PG_DB"
        )


if __name__ == "__main__":
    main()


from canvas_assets.cli.live import live  # noqa: E402 (the command lives in its own module)

main.add_command(live)
