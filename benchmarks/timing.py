"""The case protocol: `prepare(params) -> closure`; one warm-up call, then timed repeats (median).

A closure must return host data (numpy arrays, Python objects), so that the work it started has
finished when it returns; nothing else synchronises.

Cases that are compared with each other are timed interleaved (`measure_interleaved`): all are
prepared and warmed up, then each round calls every closure once. On a machine shared with other
work, the cases of a ratio then see the same conditions instead of different stretches of time.
"""

from __future__ import annotations

import statistics
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any


@dataclass
class Timing:
    """Wall times of one case.

    Attributes:
        first: the warm-up call, which includes compilation where there is any.
        times: the timed calls after it.
        results: what each call returned, warm-up first.
    """

    first: float
    times: list[float]
    results: list[Any] = field(default_factory=list)

    @property
    def timed(self) -> list[float]:
        """The timed calls, or the warm-up alone when a case asked for no repeats."""
        return self.times or [self.first]

    @property
    def median(self) -> float:
        return statistics.median(self.timed)


def measure(prepare: Callable[[Any], Callable[[], Any]], params: Any, *, repeats: int) -> Timing:
    """Prepares a case, warms it up once and times `repeats` further calls."""
    closure = prepare(params)
    start = time.perf_counter()
    results = [closure()]
    first = time.perf_counter() - start
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        results.append(closure())
        times.append(time.perf_counter() - start)
    return Timing(first, times, results)


def measure_interleaved(
    cases: list[tuple[str, Callable[[Any], Callable[[], Any]], Any]],
    *,
    repeats: int,
    log: Callable[[str], None] = lambda line: None,
) -> dict[str, Timing | Exception]:
    """Prepares and warms up each (name, prepare, params) in order, then times `repeats` rounds.

    A case that raises is reported as its exception; the others go on.
    """
    closures: dict[str, Callable[[], Any]] = {}
    out: dict[str, Timing | Exception] = {}
    for name, prepare, params in cases:
        try:
            closure = prepare(params)
            start = time.perf_counter()
            result = closure()
            out[name] = Timing(time.perf_counter() - start, [], [result])
            closures[name] = closure
            log(f"{name}: warm-up {out[name].first:.1f} s")
        except Exception as exc:  # a broken case must not hide the others
            out[name] = exc
            log(f"{name}: failed in warm-up ({exc!r})")
    for round_ in range(repeats):
        for name, closure in closures.items():
            timing = out[name]
            if not isinstance(timing, Timing):
                continue
            try:
                start = time.perf_counter()
                timing.results.append(closure())
                timing.times.append(time.perf_counter() - start)
            except Exception as exc:
                out[name] = exc
        log(f"round {round_ + 1}/{repeats} done")
    return out


def record(
    timing: Timing, *, configs: int | None = None, flops: float | None = None, **extra
) -> dict:
    """The JSON record of a timed case; per-config and FLOP rates when the work is known."""
    out = {
        "status": "ok",
        "seconds": timing.median,
        "min_seconds": min(timing.timed),
        "first_seconds": timing.first,
        "times": timing.timed,
    }
    if configs:
        out["configs"] = configs
        out["per_config_seconds"] = timing.median / configs
        out["first_per_config_seconds"] = timing.first / configs
    if flops:
        out["flops"] = flops
        out["gflops_per_s"] = flops / timing.median / 1e9
        out["best_gflops_per_s"] = flops / min(timing.timed) / 1e9
    out.update(extra)
    return out


def skipped(reason: str) -> dict:
    return {"status": "skipped", "reason": reason}


def failed(exc: BaseException) -> dict:
    """A case that raised: the run goes on, and the record says what happened."""
    lines = traceback.format_exception_only(type(exc), exc)
    return {"status": "failed", "reason": "".join(lines).strip()}
