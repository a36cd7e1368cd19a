"""The cells of a heatmap: replicates aggregated per (y, x) cell, and the marks on cells that could
not be measured or produced NaN/Inf, with their legend entries.

Shared by the phase diagrams, the per-facet maps and the trainability diagram, so that a missing or
broken cell looks the same, and is counted the same way, in all of them.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np
import pandas as pd
from matplotlib.collections import PatchCollection
from matplotlib.patches import Patch, Rectangle

from gradbench.plots.style import NONFINITE_STYLE, UNMEASURED_STYLE


def cell_means(part: pd.DataFrame, x: str, y: str, value: str, bad: pd.Series | None = None):
    """Per (y, x) cell: the mean over replicates (NaN unless every replicate is finite) and flags.

    `bad` marks the rows that produced NaN/Inf (by default the nonfinite regime). Returns (xs, ys,
    grid) with grid columns (quantity, x value) and rows y values.
    """
    v = part[value].astype(float)
    if bad is None:
        bad = part["regime"].eq("nonfinite") if "regime" in part else np.isinf(v)
    tmp = pd.DataFrame({y: part[y], x: part[x], "v": v.where(np.isfinite(v)), "bad": bad})
    agg = tmp.groupby([y, x], sort=True).agg(
        mean=("v", "mean"), finite=("v", "count"), n=("v", "size"), nonfinite=("bad", "any")
    )
    agg["mean"] = agg["mean"].where(agg["finite"] == agg["n"])
    agg["unmeasured"] = agg["mean"].isna() & ~agg["nonfinite"]
    xs = np.sort(part[x].unique()).astype(float)
    ys = np.sort(part[y].unique()).astype(float)
    return xs, ys, agg.unstack(x).reindex(index=ys)


def mark_cells(ax, xe, ye, mask: np.ndarray, gid: str, style: Mapping) -> int:
    """Cover the masked cells with one PatchCollection tagged `gid`; returns the number marked."""
    rows, cols = np.nonzero(mask)
    rects = [
        Rectangle((xe[j], ye[i]), xe[j + 1] - xe[j], ye[i + 1] - ye[i])
        for i, j in zip(rows, cols, strict=True)
    ]
    if rects:
        coll = PatchCollection(rects, **style)
        coll.set_gid(gid)
        ax.add_collection(coll)
    return len(rects)


def mark_flags(ax, xe, ye, grid: pd.DataFrame, xs) -> dict[str, int]:
    """Black cells where a replicate had NaN/Inf, hatched ones where one could not be measured;
    returns how many cells of each kind were marked."""
    seen = {}
    for kind, style in (("nonfinite", NONFINITE_STYLE), ("unmeasured", UNMEASURED_STYLE)):
        mask = grid[kind].reindex(columns=xs).eq(True).to_numpy()
        seen[kind] = mark_cells(ax, xe, ye, mask, kind, style)
    return seen


def flag_handles(seen: Mapping[str, int]) -> list[Patch]:
    """Legend entries for the kinds of marked cells a figure has (the counts of `mark_flags`)."""
    handles = []
    if seen.get("nonfinite"):
        handles.append(Patch(**NONFINITE_STYLE, label="NaN/Inf in a replicate"))
    if seen.get("unmeasured"):
        handles.append(Patch(**UNMEASURED_STYLE, label="not measurable (underflow or zero)"))
    return handles


def levels_inside(z: np.ndarray, levels: Sequence[float]) -> list[float]:
    """The contour `levels` strictly inside the range of z's finite values (those z crosses)."""
    z = z[np.isfinite(z)]
    return [lv for lv in levels if z.size and z.min() < lv < z.max()]
