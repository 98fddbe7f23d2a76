"""Refresh the pictures in docs/images/ (the README shows them).

    .venv/bin/python docs/pictures.py            # all four pictures
    .venv/bin/python docs/pictures.py --chart    # only the benchmark chart (no sync, no UI)

What it does, all inside a temporary folder that is deleted afterwards:

1. starts the Canvas sandbox in this process (small scale) and runs `canvas-assets sync --profile
   FULL_PROCESSING` against it, with a local store of its own (`CANVAS_ASSETS_HOME` and `DAGSTER_HOME` in
   the temporary folder), so the pictures never show or touch your own instance;
2. starts `dagster dev -m canvas_assets.definitions` on that same instance, on a free loopback port;
3. drives Chromium with Playwright and saves:
   - `asset-graph.png`: the global asset lineage (catalog -> canvas_extract -> staging -> layer1),
   - `course-partitions.png`: the partitions page of `layer1/enrollments` (one partition per course),
   - `sync-run.png`: the page of the sync run (one ranged run over every course);
4. draws `benchmarks.png` from the figures in `docs/benchmarks.json` (an SVG written here, rendered by
   the same Chromium): edit that file when a benchmark is re-run, then run this script again.

Needs Playwright's Python package and a Chromium binary. Neither is a project dependency:

    .venv/bin/pip install playwright     # the Python package only; it drives the system Chromium
    sudo apt-get install chromium        # Debian/Ubuntu: /usr/bin/chromium

(`playwright install chromium` also works; then pass `--chromium` the path it prints, or leave the
option out and set `CHROMIUM` to it.) Every process this script starts runs in its own session and is
killed by process group when the script ends, also on errors and Ctrl-C.
"""

import argparse
import contextlib
import html
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import textwrap
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

DOCS = Path(__file__).resolve().parent
ROOT = DOCS.parent
IMAGES = DOCS / "images"
FIGURES = DOCS / "benchmarks.json"
VENV_BIN = Path(sys.executable).parent

CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]
VIEWPORT = {"width": 1600, "height": 1000}
GRAPH_VIEWPORT = {"width": 1400, "height": 1250}
PLACEHOLDER_PREFIX = "FILL_IN"


# --- prerequisites ---------------------------------------------------------------------------------------
def require_playwright() -> Any:
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        sys.exit(
            "docs/pictures.py needs Playwright's Python package (not a project dependency):\n"
            f"    {VENV_BIN / 'pip'} install playwright\n"
            "It drives the system Chromium (Debian: apt-get install chromium), so `playwright install` is "
            "not needed."
        )
    return sync_playwright


def chromium_path(given: str | None) -> str:
    path = given or os.environ.get("CHROMIUM") or "/usr/bin/chromium"
    if not Path(path).exists():
        sys.exit(f"no Chromium at {path}: install it (Debian: apt-get install chromium) or pass --chromium")
    return path


# --- processes -------------------------------------------------------------------------------------------
@contextlib.contextmanager
def process_group(command: list[str], *, env: dict[str, str], cwd: Path, log: Path) -> Iterator[int]:
    """Run `command` in a new session; on exit kill its whole process group (dagster dev has children)."""
    with log.open("wb") as out:
        proc = subprocess.Popen(
            command, env=env, cwd=cwd, stdout=out, stderr=subprocess.STDOUT, start_new_session=True
        )
        try:
            yield proc.pid
        finally:
            for sig, wait in ((signal.SIGTERM, 15), (signal.SIGKILL, 5)):
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(proc.pid, sig)
                try:
                    proc.wait(timeout=wait)
                    break
                except subprocess.TimeoutExpired:
                    continue
            # Children that outlive the leader (the webserver, the daemon) are still in the group.
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_for_http(url: str, timeout: float, log: Path) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            with urllib.request.urlopen(url, timeout=5) as response:
                if response.status == 200:
                    return
        except OSError:
            pass
        time.sleep(1)
    tail = log.read_text(errors="replace")[-3000:] if log.exists() else ""
    sys.exit(f"{url} did not answer within {timeout:.0f} s; the server's log ends with:\n{tail}")


def graphql(base: str, query: str, variables: dict[str, Any] | None = None) -> Any:
    body = json.dumps({"query": query, "variables": variables or {}}).encode()
    request = urllib.request.Request(
        f"{base}/graphql", data=body, headers={"Content-Type": "application/json"}, method="POST"
    )
    with urllib.request.urlopen(request, timeout=60) as response:
        payload = json.loads(response.read())
    if payload.get("errors"):
        raise RuntimeError(f"GraphQL error: {payload['errors']}")
    return payload["data"]


def sync_run_id(base: str) -> str:
    """The newest run of a sync job (the ranged run `canvas-assets sync` made)."""
    data = graphql(
        base,
        """{ runsOrError(limit: 20) { __typename ... on Runs { results {
             runId jobName status tags { key value } } } } }""",
    )
    for run in data["runsOrError"]["results"]:
        if run["jobName"].startswith("sync_"):
            return str(run["runId"])
    raise RuntimeError("no sync run found in the instance")


# --- screenshots -----------------------------------------------------------------------------------------
def settle(page: Any, text: str | None, seconds: float) -> None:
    """Wait for the page to show `text` (when given) and for the UI to finish drawing."""
    if text:
        page.get_by_text(text, exact=False).first.wait_for(timeout=90_000)
    page.wait_for_timeout(int(seconds * 1000))


def hide_navigation(page: Any) -> None:
    with contextlib.suppress(Exception):
        page.get_by_role("button", name="Hide navigation").click(timeout=3000)
        page.wait_for_timeout(500)


def asset_graph_picture(page: Any, base: str) -> None:
    """The global lineage with every group expanded, zoomed out until the whole graph fits, cropped to it."""
    page.goto(f"{base}/asset-groups", wait_until="domcontentloaded")
    settle(page, "Global asset lineage", 6)
    page.mouse.click(900, 300)  # focus the graph: its keyboard shortcuts work from here
    page.keyboard.press("Alt+e")  # "Expand all groups" (the graph's settings menu)
    page.wait_for_timeout(3000)
    hide_navigation(page)
    jump = page.get_by_placeholder("Jump to")
    if jump.count():  # fold the asset tree beside the graph (its toggle sits right of the search box)
        box = jump.bounding_box()
        page.mouse.click(box["x"] + box["width"] + 22, box["y"] + box["height"] / 2)
        page.wait_for_timeout(1500)
    page.mouse.move(500, 700)
    for step in (100, 100, 40):  # ctrl + wheel zooms around the pointer
        page.keyboard.down("Control")
        page.mouse.wheel(0, step)
        page.keyboard.up("Control")
        page.wait_for_timeout(800)
    page.wait_for_timeout(2000)
    boxes = []
    for name in ("catalog", "staging", "layer1", "student_summaries"):
        found = page.get_by_text(name, exact=True)
        for i in range(found.count()):
            box = found.nth(i).bounding_box()
            if box and 95 < box["y"] < GRAPH_VIEWPORT["height"] and box["x"] > 60:
                boxes.append(box)
    if not boxes:
        raise RuntimeError("the asset graph showed none of its groups")
    # Group titles sit at the groups' top left, the longest asset name fills most of its node's width.
    x0 = max(0, min(b["x"] for b in boxes) - 40)
    y0 = max(0, min(b["y"] for b in boxes) - 40)
    x1 = min(GRAPH_VIEWPORT["width"], max(b["x"] + b["width"] for b in boxes) + 60)
    y1 = min(GRAPH_VIEWPORT["height"], max(b["y"] + b["height"] for b in boxes) + 190)
    clip = {"x": x0, "y": y0, "width": x1 - x0, "height": y1 - y0}
    page.screenshot(path=str(IMAGES / "asset-graph.png"), clip=clip)
    print("  asset-graph.png")


def ui_pictures(browser: Any, base: str, run_id: str) -> None:
    page = browser.new_page(viewport=GRAPH_VIEWPORT, device_scale_factor=1)
    asset_graph_picture(page, base)
    page.close()

    page = browser.new_page(viewport=VIEWPORT, device_scale_factor=1)
    page.goto(f"{base}/assets/layer1/enrollments?view=partitions", wait_until="domcontentloaded")
    settle(page, "Materialized", 5)
    hide_navigation(page)
    with contextlib.suppress(Exception):  # open the first course: its latest materialization and metadata
        page.get_by_text(re.compile(r"^\d+$")).first.click(timeout=5000)
    page.wait_for_timeout(3000)
    page.screenshot(path=str(IMAGES / "course-partitions.png"))
    print("  course-partitions.png")

    page.goto(f"{base}/runs/{run_id}", wait_until="domcontentloaded")
    settle(page, "RUN_SUCCESS", 3)
    hide_navigation(page)
    page.wait_for_timeout(3000)
    page.screenshot(path=str(IMAGES / "sync-run.png"))
    print("  sync-run.png")
    page.close()


def refresh_ui_pictures(browser: Any, courses: int) -> None:
    from canvas_assets.sandbox import CanvasSandbox, SandboxConfig

    work = Path(tempfile.mkdtemp(prefix="canvas-assets-pictures-"))
    try:
        env = {k: v for k, v in os.environ.items() if not k.startswith(("CANVAS_", "DAGSTER_"))}
        env["CANVAS_ASSETS_HOME"] = str(work / "home")
        env["DAGSTER_HOME"] = str(work / "home" / "dagster_home")
        env["CANVAS_ASSETS_TIMEZONE"] = "UTC"
        with CanvasSandbox(SandboxConfig(scale="small", courses=courses, latency_ms=5.0)) as sandbox:
            env["CANVAS_BASE_URL"] = sandbox.base_url
            env["CANVAS_API_TOKEN"] = sandbox.token
            print(f"syncing {courses} sandbox courses into a temporary instance ({work}) ...")
            sync_log = work / "sync.log"
            with process_group(
                [str(VENV_BIN / "canvas-assets"), "sync", "--profile", "FULL_PROCESSING"],
                env=env,
                cwd=work,
                log=sync_log,
            ) as pid:
                # The group is killed on exit; wait for the leader here.
                while True:
                    try:
                        done, status = os.waitpid(pid, os.WNOHANG)
                    except ChildProcessError:
                        break
                    if done:
                        if os.waitstatus_to_exitcode(status) != 0:
                            sys.exit(f"the sync failed:\n{sync_log.read_text(errors='replace')[-3000:]}")
                        break
                    time.sleep(0.5)
            summary = [
                line for line in sync_log.read_text(errors="replace").splitlines() if "Sync summary" in line
            ]
            print(summary[-1].strip() if summary else "sync done")

            port = free_port()
            base = f"http://127.0.0.1:{port}"
            ui_log = work / "dagster-dev.log"
            print(f"starting dagster dev on {base} ...")
            dagster = [str(VENV_BIN / "dagster"), "dev", "-m", "canvas_assets.definitions"]
            with process_group([*dagster, "-h", "127.0.0.1", "-p", str(port)], env=env, cwd=work, log=ui_log):
                wait_for_http(f"{base}/server_info", 240, ui_log)
                run_id = sync_run_id(base)
                ui_pictures(browser, base, run_id)
    finally:
        shutil.rmtree(work, ignore_errors=True)


# --- the benchmark chart ---------------------------------------------------------------------------------
def _measured(value: Any) -> tuple[float, float] | None:
    """(low, high) of a figure: a number, a [low, high] range, or None for a placeholder."""
    if isinstance(value, bool) or value is None:
        return None
    if isinstance(value, int | float):
        return float(value), float(value)
    if isinstance(value, list) and len(value) == 2 and all(isinstance(v, int | float) for v in value):
        return float(min(value)), float(max(value))
    if isinstance(value, str) and value.startswith(PLACEHOLDER_PREFIX):
        return None
    raise ValueError(f"{FIGURES.name}: {value!r} is neither a number, a [low, high] pair nor a placeholder")


def _fmt(value: float) -> str:
    return f"{value:.0f}" if value >= 100 else f"{value:.2f}".rstrip("0").rstrip(".")


def chart_svg(figures: dict[str, Any]) -> str:
    """One panel per metric, a horizontal bar per series (a range is drawn as a bar with a lighter tail)."""
    width, left, right = 1000, 150, 130
    plot = width - left - right
    panel_gap, bar_h, bar_gap = 40, 34, 14
    colours = ["#6b7a8f", "#2f7d4f", "#2b6cb0", "#b7791f"]
    parts: list[str] = []
    y = 84
    title = html.escape(figures.get("title", "Benchmarks"))
    parts.append(f'<text x="20" y="40" class="title">{title}</text>')
    for metric in figures["metrics"]:
        series = metric["series"]
        values = {name: _measured(v) for name, v in series.items()}
        known = [hi for v in values.values() if v is not None for hi in v]
        reference = metric.get("reference")
        top = max([*known, float(reference or 0)]) * 1.15 or 1.0
        unit = html.escape(metric.get("unit", ""))
        parts.append(f'<text x="20" y="{y}" class="metric">{html.escape(metric["name"])}</text>')
        parts.append(f'<text x="20" y="{y + 20}" class="meaning">{html.escape(metric["meaning"])}</text>')
        y += 36
        height = len(series) * (bar_h + bar_gap)
        for i, (name, measured) in enumerate(values.items()):
            by = y + i * (bar_h + bar_gap)
            colour = colours[i % len(colours)]
            parts.append(
                f'<text x="{left - 12}" y="{by + bar_h / 2 + 5}" class="series">{html.escape(name)}</text>'
            )
            if measured is None:
                parts.append(
                    f'<rect x="{left}" y="{by}" width="{plot * 0.5}" height="{bar_h}" class="todo"/>'
                    f'<text x="{left + 10}" y="{by + bar_h / 2 + 5}" class="todotext">'
                    f"not measured yet: {html.escape(str(series[name]))}</text>"
                )
                continue
            low, high = measured
            parts.append(
                f'<rect x="{left}" y="{by}" width="{plot * low / top:.1f}" height="{bar_h}" fill="{colour}"/>'
            )
            if high > low:
                parts.append(
                    f'<rect x="{left + plot * low / top:.1f}" y="{by}" width="{plot * (high - low) / top:.1f}" '
                    f'height="{bar_h}" fill="{colour}" fill-opacity="0.45"/>'
                )
            text = f"{_fmt(low)}–{_fmt(high)} {unit}" if high > low else f"{_fmt(low)} {unit}"
            parts.append(
                f'<text x="{left + plot * high / top + 8:.1f}" y="{by + bar_h / 2 + 5}" class="value">'
                f"{html.escape(text.strip())}</text>"
            )
        if reference is not None:  # drawn over the bars
            rx = left + plot * float(reference) / top
            parts.append(f'<line x1="{rx}" y1="{y - 4}" x2="{rx}" y2="{y + height}" class="ref"/>')
            label = html.escape(metric.get("reference_label", f"{reference}"))
            parts.append(f'<text x="{rx + 4}" y="{y + height + 14}" class="reflabel">{label}</text>')
        y += height + 30
        parts.append(f'<text x="20" y="{y}" class="source">{html.escape(metric.get("source", ""))}</text>')
        y += panel_gap
    for line in textwrap.wrap(figures.get("note", ""), 130):
        parts.append(f'<text x="20" y="{y}" class="source">{html.escape(line)}</text>')
        y += 18
    style = """
      text { font-family: 'DejaVu Sans', Arial, sans-serif; fill: #1a202c; }
      .title { font-size: 19px; font-weight: bold; }
      .metric { font-size: 17px; font-weight: bold; }
      .meaning, .source, .reflabel { font-size: 13px; fill: #4a5568; }
      .series { font-size: 15px; text-anchor: end; }
      .value { font-size: 15px; font-weight: bold; }
      .ref { stroke: #c53030; stroke-width: 2; stroke-dasharray: 6 4; }
      .reflabel { fill: #c53030; }
      .todo { fill: none; stroke: #a0aec0; stroke-width: 2; stroke-dasharray: 6 4; }
      .todotext { font-size: 13px; fill: #718096; font-style: italic; }
    """
    return (
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{y}" viewBox="0 0 {width} {y}">'
        f'<rect width="100%" height="100%" fill="white"/><style>{style}</style>{"".join(parts)}</svg>'
    )


def chart_picture(browser: Any) -> None:
    figures = json.loads(FIGURES.read_text(encoding="utf-8"))
    svg = chart_svg(figures)
    page = browser.new_page(viewport={"width": 1000, "height": 400}, device_scale_factor=1)
    page.set_content(f'<html><body style="margin:0">{svg}</body></html>')
    page.locator("svg").first.screenshot(path=str(IMAGES / "benchmarks.png"))
    page.close()
    print("  benchmarks.png")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--chart", action="store_true", help="only redraw the benchmark chart")
    parser.add_argument("--courses", type=int, default=12, help="sandbox courses to sync (default 12)")
    parser.add_argument("--chromium", help="the Chromium binary (default: $CHROMIUM or /usr/bin/chromium)")
    args = parser.parse_args()
    sync_playwright = require_playwright()
    executable = chromium_path(args.chromium)
    IMAGES.mkdir(parents=True, exist_ok=True)
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=executable, args=CHROMIUM_ARGS)
        try:
            chart_picture(browser)
            if not args.chart:
                refresh_ui_pictures(browser, args.courses)
        finally:
            browser.close()
    print(f"pictures written to {IMAGES.relative_to(ROOT)}/")


if __name__ == "__main__":
    main()
