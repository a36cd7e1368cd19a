"""Where a quantity sampled along one swept axis changes side.

Findings and figures read the same curves (the growth rate or chi_1 against the weight scale, a
regime per grid value) for the same boundaries: the x at which a curve crosses a level, and the
stretches of consecutive grid points over which a condition holds. Pure NumPy.
"""

from __future__ import annotations

import numpy as np


def crossing(xs: np.ndarray, f: np.ndarray, level: float) -> float | None:
    """The first x where f crosses `level` (linear interpolation between samples), or None.

    Non-finite samples are skipped; a sample exactly at `level` is a crossing.
    """
    ok = np.isfinite(f)
    xs, g = np.asarray(xs, dtype=float)[ok], f[ok] - level
    for i in range(len(g)):
        if g[i] == 0:
            return float(xs[i])
        if i + 1 < len(g) and g[i] * g[i + 1] < 0:
            return float(xs[i] - g[i] * (xs[i + 1] - xs[i]) / (g[i + 1] - g[i]))
    return None


def true_runs(mask: np.ndarray) -> list[tuple[int, int]]:
    """(start, stop) of each maximal run of True in `mask`, as slice bounds."""
    ok = np.asarray(mask, dtype=bool)
    edges = np.flatnonzero(np.diff(np.concatenate([[0], ok.astype(np.int8), [0]])))
    return list(zip(edges[::2].tolist(), edges[1::2].tolist(), strict=True))


def grid_runs(values: np.ndarray, chosen: np.ndarray) -> list[tuple[float, float]]:
    """Maximal runs of consecutive grid `values` for which `chosen` holds, as (first, last)."""
    return [(float(values[a]), float(values[b - 1])) for a, b in true_runs(chosen)]
