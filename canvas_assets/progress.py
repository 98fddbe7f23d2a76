"""Progress of a sync, phase by phase, for whoever is watching in this process (the CLI).

Assets and the instance storage call `report(phase, done, total)`; when nothing listens (a run
worker launched by the daemon, the webserver) that is a no-op. The CLI listens with `ProgressDisplay`:
one live line per phase on a terminal, plain lines otherwise.
"""

import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TextIO

PHASES = {
    "discovery": "discovering courses",
    "runs": "creating runs",
    "fetch": "fetching from Canvas",
    "layer1": "transforming and loading",
    "events": "recording in Dagster",
}

Listener = Callable[[str, int, int, str], None]
_listeners: list[Listener] = []
_lock = threading.Lock()


def report(phase: str, done: int, total: int, detail: str = "") -> None:
    """Tell listeners that `phase` has `done` of `total` units (courses, entities, events) finished."""
    with _lock:
        listeners = list(_listeners)
    for listener in listeners:
        listener(phase, done, total, detail)


def listen(listener: Listener) -> Callable[[], None]:
    """Register a listener; returns the function that unregisters it."""
    with _lock:
        _listeners.append(listener)

    def stop() -> None:
        with _lock:
            if listener in _listeners:
                _listeners.remove(listener)

    return stop


@dataclass
class _PhaseState:
    started: float
    done: int = 0
    total: int = 0
    detail: str = ""
    last_plain: float = field(default=0.0)


class ProgressDisplay:
    """Renders reported progress: a live line per phase on a terminal (rate and ETA for the fetch),
    and on a pipe or file a line when a phase starts, every few seconds while it runs, and when it ends."""

    def __init__(self, stream: TextIO | None = None, *, live: bool | None = None, interval: float = 5.0):
        self.stream = stream or sys.stderr
        self.live = self.stream.isatty() if live is None else live
        self.interval = interval
        self._phase: str | None = None
        self._states: dict[str, _PhaseState] = {}
        self._lock = threading.Lock()

    def __call__(self, phase: str, done: int, total: int, detail: str = "") -> None:
        with self._lock:
            now = time.monotonic()
            state = self._states.get(phase)
            if state is None:  # a new phase: its own line from now on
                self._finish_line()
                state = self._states[phase] = _PhaseState(started=now)
                if not self.live:
                    self._write(f"{PHASES.get(phase, phase)}...\n")
                    state.last_plain = now
            elif phase != self._phase:  # back to a phase seen before (steps alternate with event writes)
                self._finish_line()
            self._phase = phase
            finished = done >= total > 0 and state.done < total
            state.done, state.total, state.detail = done, total, detail
            text = self._line(phase, state, now)
            if self.live:
                self._write(f"\r\033[K{text}")
            elif finished or now - state.last_plain >= self.interval:
                state.last_plain = now
                self._write(text + "\n")

    def close(self) -> None:
        with self._lock:
            self._finish_line()
            self._phase = None

    def _finish_line(self) -> None:
        if self.live and self._phase is not None:
            self._write("\n")
            self._phase = None

    def _line(self, phase: str, state: _PhaseState, now: float) -> str:
        elapsed = now - state.started
        label = PHASES.get(phase, phase)
        if state.total <= 0:
            return f"  {label} {state.detail}".rstrip() + f"  {elapsed:.0f}s"
        pct = 100.0 * state.done / state.total
        width = 24
        filled = int(width * state.done / state.total)
        bar = "#" * filled + "." * (width - filled)
        text = f"  {label:<25} [{bar}] {state.done}/{state.total} ({pct:3.0f}%)  {elapsed:.0f}s"
        if phase == "fetch" and state.done and elapsed > 0:
            rate = state.done / elapsed
            eta = (state.total - state.done) / rate if rate > 0 else 0.0
            text += f"  {rate:.1f} courses/s" + (f"  ETA {eta:.0f}s" if state.done < state.total else "")
        if state.detail:
            text += f"  {state.detail}"
        return text

    def _write(self, text: str) -> None:
        self.stream.write(text)
        self.stream.flush()
