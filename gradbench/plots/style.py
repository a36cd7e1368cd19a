"""What every figure shares in looks: regime colours, the styles of marked cells and theory lines,
colour sequences for lines, and when an artist is embedded as a bitmap.

Kept apart so that a regime, a NaN/Inf cell or a mean-field prediction looks the same in every
figure, whichever module draws it.
"""

from __future__ import annotations

import matplotlib
import numpy as np

REGIME_COLOURS = {
    "vanishing": "#2c7bb6",
    "stable": "#a6d96a",
    "exploding": "#d7191c",
    "nonfinite": "#1a1a1a",
    "unmeasured": "#bdbdbd",
}
NONFINITE_STYLE = {"facecolor": REGIME_COLOURS["nonfinite"], "linewidth": 0}
UNMEASURED_STYLE = {"facecolor": "0.85", "edgecolor": "0.45", "hatch": "///", "linewidth": 0}
THEORY = {"color": "#00a050", "lw": 2}  # every mean-field prediction is drawn in this green
RASTER_CELLS = 2_000  # heatmaps with more cells, and scatters with more points, are bitmaps in SVG


def rasterized(cells: int) -> bool:
    """Whether an artist of this many cells or points is embedded as a bitmap in SVG files."""
    return cells > RASTER_CELLS


def ramp(n: int, cmap: str = "viridis") -> list[tuple]:
    """n colours evenly inside `cmap`, leaving out its two ends (as seaborn's color_palette does)."""
    colours = matplotlib.colormaps[cmap](np.linspace(0, 1, n + 2)[1:-1])
    return [tuple(c) for c in colours]


def categorical(n: int) -> list:
    """n distinguishable colours: matplotlib's ten, its twenty, or evenly from viridis."""
    if n <= 10:
        return [f"C{i}" for i in range(n)]
    if n <= 20:
        return list(matplotlib.colormaps["tab20"].colors[:n])
    return ramp(n)
