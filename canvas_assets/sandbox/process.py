"""A sandbox in a separate process, driven over a pipe: for benchmarks, where the sandbox and the
client must not share a GIL (a real Canvas does not share the client's CPU either)."""

import contextlib
import multiprocessing as mp
import time
from multiprocessing.connection import Connection
from typing import Any


def _sandbox_main(config: dict[str, Any], conn: Connection) -> None:
    from canvas_assets.sandbox import CanvasSandbox, SandboxConfig

    sb = CanvasSandbox(SandboxConfig(**config)).start()
    cpu_at_reset = time.process_time()
    conn.send({"base_url": sb.base_url, "token": sb.token, "account_id": sb.data.account_id})
    try:
        while True:
            command = conn.recv()
            if command == "stop":
                break
            if command == "reset_stats":
                sb.reset_stats()
                cpu_at_reset = time.process_time()
                conn.send(None)
            elif command == "stats":
                stats = sb.stats()
                stats.pop("lists", None)  # large, and the bound is computed over there
                stats["lower_bound_s"] = sb.lower_bound_seconds()
                stats["server_cpu_s"] = time.process_time() - cpu_at_reset
                conn.send(stats)
            elif command == "derive_all":
                conn.send(sb.derive_all())
            elif isinstance(command, tuple) and command[0] == "churn":
                conn.send(_churn(sb, float(command[1])))
    finally:
        sb.stop()
        conn.close()


def _churn(sb: Any, fraction: float) -> int:
    """A night's worth of submission activity in `fraction` of the courses: in each, one submission is
    handed in and one graded (or regraded). Returns how many submissions changed."""
    courses = sb.data.course_ids(("available", "completed"))
    step = max(1, round(1 / fraction)) if fraction > 0 else len(courses) + 1
    changed = 0
    for course_id in courses[::step]:
        for mutate in (sb.data.submit_work, sb.data.grade_submission):
            try:
                mutate(course_id)
                changed += 1
            except (KeyError, ValueError):  # a course without students or without gradable work
                pass
    return changed


class SandboxProcess:
    """A sandbox in a child process, driven over a pipe."""

    def __init__(self, config: dict[str, Any]) -> None:
        ctx = mp.get_context("spawn")
        self._conn, child = ctx.Pipe()
        self._proc = ctx.Process(target=_sandbox_main, args=(config, child), daemon=True)
        self._proc.start()
        child.close()
        if not self._conn.poll(300):
            raise RuntimeError("the sandbox process did not start")
        info = self._conn.recv()
        self.base_url: str = info["base_url"]
        self.token: str = info["token"]
        self.account_id: int = info["account_id"]

    @property
    def pid(self) -> int | None:
        """The sandbox process's id (benchmarks leave it out of the client's memory figures)."""
        return self._proc.pid

    def _ask(self, command: Any) -> Any:
        self._conn.send(command)
        return self._conn.recv()

    def reset_stats(self) -> None:
        self._ask("reset_stats")

    def stats(self) -> dict[str, Any]:
        stats: dict[str, Any] = self._ask("stats")
        return stats

    def derive_all(self) -> int:
        """Derive the sandbox's grade change logs now, before a benchmark's clock starts (`CanvasSandbox.derive_all`)."""
        events: int = self._ask("derive_all")
        return events

    def churn(self, fraction: float) -> int:
        """Submit and grade one submission in `fraction` of the courses (see `_churn`)."""
        changed: int = self._ask(("churn", fraction))
        return changed

    def stop(self) -> None:
        with contextlib.suppress(OSError):
            self._conn.send("stop")
        self._proc.join(timeout=10)
        if self._proc.is_alive():
            self._proc.terminate()
