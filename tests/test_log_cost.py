"""The log-vs-plain cost benchmark runs (quick sizes; no timing assertion)."""

import math

from benchmarks.log_cost import measure


def test_log_cost_benchmark_runs():
    result = measure(width=16, configs=4, repeats=1)
    assert result["log_s"] > 0 and result["plain_s"] > 0
    assert math.isfinite(result["ratio"])
