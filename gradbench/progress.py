"""Progress of a sweep: a one-line bar (configs/s, ETA) on a terminal, plain log lines otherwise."""

from __future__ import annotations

import sys
import time


class Progress:
    def __init__(self, total: int, *, stream=None, enabled: bool = True):
        self.total = total
        self.done = 0
        self.stream = stream if stream is not None else sys.stderr
        self.enabled = enabled
        self.tty = enabled and hasattr(self.stream, "isatty") and self.stream.isatty()
        self.start = time.perf_counter()
        self.last_line = 0.0

    def update(self, configs: int, note: str = "") -> None:
        self.done += configs
        if not self.enabled:
            return
        elapsed = time.perf_counter() - self.start
        rate = self.done / elapsed if elapsed > 0 else 0.0
        eta = (self.total - self.done) / rate if rate > 0 else float("inf")
        line = f"{self.done}/{self.total} configs  {rate:.1f} configs/s  ETA {_clock(eta)}  {note}"
        if self.tty:
            width = 30
            filled = int(width * self.done / max(self.total, 1))
            self.stream.write(f"\r[{'#' * filled}{'.' * (width - filled)}] {line}\x1b[K")
            if self.done >= self.total:
                self.stream.write("\n")
        elif self.done >= self.total or time.perf_counter() - self.last_line > 5.0:
            self.stream.write(line + "\n")
            self.last_line = time.perf_counter()
        self.stream.flush()


def _clock(seconds: float) -> str:
    if seconds == float("inf"):
        return "--:--"
    minutes, secs = divmod(int(round(seconds)), 60)
    return f"{minutes}:{secs:02d}"
