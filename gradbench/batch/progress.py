"""Progress of a sweep: a one-line bar (configs/s, ETA) on a terminal, plain log lines otherwise.

The rate and the ETA count computed work only: chunks read back from an interrupted run take
milliseconds, and counting them would promise a rate the rest of the run cannot keep.
"""

from __future__ import annotations

import contextlib
import sys
import time


class Progress:
    def __init__(self, total: int, *, stream=None, enabled: bool = True):
        self.total = total
        self.done = 0
        self.computed = 0
        self.stream = stream if stream is not None else sys.stderr
        self.enabled = enabled
        self.tty = enabled and hasattr(self.stream, "isatty") and self.stream.isatty()
        self.last_update = time.perf_counter()
        self.computing_seconds = 0.0
        self.last_line = 0.0

    def note(self, text: str) -> None:
        """Writes one line of its own (e.g. what a resumed run reuses)."""
        if self.enabled:
            self.stream.write(text + "\n")
            self.stream.flush()

    def update(self, configs: int, note: str = "", *, computed: bool = True) -> None:
        """Counts `configs` more as done; `computed=False` for configs read back, not computed."""
        now = time.perf_counter()
        self.done += configs
        if computed:
            self.computed += configs
            self.computing_seconds += now - self.last_update
        self.last_update = now
        if not self.enabled:
            return
        rate = self.computed / self.computing_seconds if self.computing_seconds > 0 else 0.0
        eta = (self.total - self.done) / rate if rate > 0 else float("inf")
        shown_rate = f"{rate:.1f} configs/s" if self.computed else "-- configs/s"
        line = f"{self.done}/{self.total} configs  {shown_rate}  ETA {_clock(eta)}  {note}"
        if self.tty:
            width = 30
            filled = int(width * self.done / max(self.total, 1))
            self.stream.write(f"\r[{'#' * filled}{'.' * (width - filled)}] {line}\x1b[K")
            if self.done >= self.total:
                self.stream.write("\n")
        elif self.done >= self.total or now - self.last_line > 5.0:
            self.stream.write(line + "\n")
            self.last_line = now
        self.stream.flush()


def _clock(seconds: float) -> str:
    if seconds == float("inf"):
        return "--:--"
    minutes, secs = divmod(int(round(seconds)), 60)
    return f"{minutes}:{secs:02d}"


class PhaseClock:
    """Wall seconds of the host-side phases of a run (tables, theory, report), added up per phase."""

    def __init__(self):
        self.seconds: dict[str, float] = {}

    @contextlib.contextmanager
    def __call__(self, phase: str):
        t0 = time.perf_counter()
        try:
            yield
        finally:
            self.seconds[phase] = self.seconds.get(phase, 0.0) + time.perf_counter() - t0

    def phases(self, manifest: dict) -> dict[str, float]:
        """Compile and kernel seconds of every group (training included), then the host phases."""
        groups = [*manifest["groups"], *manifest.get("training", {}).get("groups", [])]
        measured = {
            "compile": sum(g["compile_seconds"] for g in groups),
            "kernel": sum(g["run_seconds"] for g in manifest["groups"]),
            "training": sum(
                g["run_seconds"] for g in manifest.get("training", {}).get("groups", [])
            ),
            **self.seconds,
        }
        return {phase: round(seconds, 3) for phase, seconds in measured.items()}
