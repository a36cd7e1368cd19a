"""r against depth: how the gradient ratio of each network family grows as the network deepens.

One panel per facet, one line per `hue` value (a network placement such as pre- or post-norm, or
the weight scale): the mean of r over the replicates with a finite r at each depth, a band from the
smallest to the largest replicate, and theory's `predicted_log10_delta_ratio` dashed in the theory
colour (marked in the line's colour, so that each prediction is found beside its measurement). Depth
on a log axis, r on the stable band's symlog scale, as in `curves.ratio_curves`.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pandas as pd
from matplotlib.collections import PolyCollection
from matplotlib.figure import Figure
from matplotlib.lines import Line2D
from matplotlib.ticker import NullLocator

from gradbench.analysis.facets import facet_columns, group_by_facets
from gradbench.plots.curves import band_polygons
from gradbench.plots.facet_maps import facet_label
from gradbench.plots.layout import MAX_PANELS, facet_panels, finish_grid, panel_grid
from gradbench.plots.scales import style_axis, symlog_ticks
from gradbench.plots.style import THEORY, categorical, ramp

PREDICTED = "predicted_log10_delta_ratio"


def depth_curves(
    summary: pd.DataFrame,
    *,
    threshold: float,
    hue: str | Sequence[str] | None = None,
    facet: str | Sequence[str] | None = None,
    note: str = "",
) -> Figure:
    """r = log10(‖δ_1‖/‖δ_L‖) against depth, a line per `hue` value, a panel per `facet` value.

    `summary` holds the configs to draw (every other swept axis already fixed by the caller, who
    says so in `note`, added to the title). At most `layout.MAX_PANELS` panels: the first ones,
    which the title then counts.
    """
    hues = facet_columns(hue)
    r = summary["log10_delta_ratio"].where(np.isfinite(summary["log10_delta_ratio"]))
    df = summary.assign(_r=r, _hue=_hue_index(summary, hues))
    keys = list(group_by_facets(df, hues).groups) if hues else [()]  # in `_hue_index` order
    keys = [k if isinstance(k, tuple) else (k,) for k in keys]
    numeric = len(hues) == 1 and pd.api.types.is_numeric_dtype(summary[hues[0]])
    colours = _line_colours(len(keys), numeric)
    names = [facet_label(hues, k) if hues else "measured" for k in keys]
    parts = facet_panels(df, facet)
    shown, total = parts[:MAX_PANELS], len(parts)
    fig, axes = panel_grid(len(shown), extra_w=2.4)
    t = float(threshold)
    depths = np.sort(df["depth"].unique()).astype(float)
    drawn = df[["_r", *([PREDICTED] if PREDICTED in df else [])]].to_numpy(float)
    ticks = symlog_ticks(t, float(np.nanmax(np.abs(drawn), initial=t)))  # one y axis for all
    theory_drawn = False
    for ax, (title, part) in zip(axes, shown, strict=True):
        ax.axhspan(-t, t, color="0.92", zorder=0)
        bands, band_colours = [], []
        for i, colour in enumerate(colours):
            line = part[part["_hue"] == i]
            if line.empty:
                continue
            stats = line.groupby("depth", sort=True)["_r"].agg(["mean", "min", "max"])
            at = stats.index.to_numpy(float)
            found = band_polygons(at, stats["min"].to_numpy(float), stats["max"].to_numpy(float))
            bands += found
            band_colours += [colour] * len(found)
            ax.plot(at, stats["mean"], color=colour, marker="o", markersize=3, lw=1.5)
            if PREDICTED in line and line[PREDICTED].notna().any():
                predicted = line.groupby("depth", sort=True)[PREDICTED].mean()
                ax.plot(predicted.index.to_numpy(float), predicted.to_numpy(float), ls="--",
                        marker="o", markersize=3, markerfacecolor=colour,
                        markeredgecolor=colour, gid="theory", **THEORY)  # fmt: skip
                theory_drawn = True
        ax.add_collection(PolyCollection(bands, facecolors=band_colours, alpha=0.2, linewidths=0))
        style_axis(ax, "x", depths, log=bool(np.all(depths > 0)))
        ax.set_yscale("symlog", linthresh=t)
        ax.set_yticks(ticks, labels=[f"{v:g}" for v in ticks])
        ax.yaxis.set_minor_locator(NullLocator())
        ax.set_title(title, fontsize=9)
    handles = [
        Line2D([], [], color=c, marker="o", markersize=3, label=n)
        for c, n in zip(colours, names, strict=True)
    ]
    if theory_drawn:
        handles.append(Line2D([], [], ls="--", label="theory (predicted r)", **THEORY))
    handles.append(Line2D([], [], color="0.92", lw=6, label=f"stable |r| < {t:g}"))
    n_rep = summary["replicate"].nunique() if "replicate" in summary else 1
    what = f"r against depth; band: min to max over {n_rep} replicates"
    if total > len(shown):
        what += f"; the first {len(shown)} of {total} panels"
    return finish_grid(fig, axes, "depth", "log10_delta_ratio", what + note, handles,
                       loc="outside right center")  # fmt: skip


def _hue_index(summary: pd.DataFrame, hues: list[str]) -> np.ndarray:
    """The number of each row's hue value, in sorted order (0 for every row without a hue)."""
    if not hues:
        return np.zeros(len(summary), dtype=int)
    return group_by_facets(summary, hues).ngroup().to_numpy()


def _line_colours(n: int, numeric: bool) -> list:
    """n line colours, none of them green, which is the theory's: a plasma ramp for a numeric hue
    (viridis has greens), matplotlib's ten without C2 for categories."""
    if numeric or n > 9:
        return ramp(n, "plasma")
    return [c for c in categorical(n + 1) if c != "C2"][:n]
