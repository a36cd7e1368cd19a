"""Line plots of the gradient: the ratio against one swept axis (`ratio_curves`) and per-layer
statistics against the layer index (`layer_profiles`).

Both draw, per hue value, the mean over replicates as a line and the range of the replicates as a
band, one panel per facet; swept axes that are neither x, hue nor facet are held at one value.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pandas as pd
from matplotlib.collections import PolyCollection
from matplotlib.figure import Figure
from matplotlib.lines import Line2D
from matplotlib.ticker import NullLocator

from gradbench.analysis.crossings import true_runs
from gradbench.analysis.facets import facet_columns
from gradbench.notation import fmt, label
from gradbench.plots.axes import usable_log
from gradbench.plots.layout import facet_panels, finish_grid, panel_grid, thin
from gradbench.plots.scales import set_log_scale, symlog_ticks
from gradbench.plots.selection import chosen_layers, representative
from gradbench.plots.style import ramp
from gradbench.schema import config_axes


def layer_profiles(
    layers: pd.DataFrame,
    configs: pd.DataFrame,
    *,
    hue: str | None = "sigma_w2",
    facet: str | Sequence[str] | None = None,
    value: str = "log10_delta",
    max_lines: int = 8,
) -> Figure:
    """`value` (log10 ||delta_l||, log10_grad_w, log10_q ...) against the layer index.

    One line per value of `hue` (at most `max_lines`, evenly chosen), a band from the smallest to
    the largest replicate, one panel per facet. Axes that are neither hue nor facet are held at one
    value (depth at its largest), which the title states.
    """
    df, notes = chosen_layers(layers, configs, [hue, *facet_columns(facet)])
    n_rep = df["replicate"].nunique() if "replicate" in df else 1
    fixed = f"; {', '.join(notes)}" if notes else ""
    title = f"{label(value)} by layer; band: min to max over {n_rep} replicates{fixed}"
    return _lines(df, "layer", value, hue, facet, max_lines, title)


def ratio_curves(
    summary: pd.DataFrame,
    x: str,
    *,
    threshold: float,
    hue: str | None = None,
    facet: str | Sequence[str] | None = None,
    value: str = "log10_delta_ratio",
    log_x: bool = False,
    max_lines: int = 8,
) -> Figure:
    """`value` against one swept axis, a line per `hue` value, the stable band |value| < t shaded.

    x positions where a replicate produced NaN/Inf are marked with a cross at the top of the panel.
    Axes that are neither x, hue nor facet are held at one value (depth at its largest).
    """
    keep = [x, hue, *facet_columns(facet)]
    df, notes = representative(summary, keep, config_axes(summary.columns))
    n_rep = df["replicate"].nunique() if "replicate" in df else 1
    fixed = f"; {', '.join(notes)}" if notes else ""
    title = f"{label(value)} against {label(x)}; band: min to max over {n_rep} replicates{fixed}"
    log_x = usable_log(df[x], log_x)
    return _lines(df, x, value, hue, facet, max_lines, title, float(threshold), log_x)


def _hue_palette(df: pd.DataFrame, hue: str | None, max_lines: int) -> dict:
    """hue value -> colour for at most `max_lines` evenly chosen values; empty without a hue."""
    if hue is None or hue not in df:
        return {}
    values = thin(np.sort(df[hue].unique()), max_lines)
    return dict(zip(values.tolist(), ramp(len(values)), strict=True))


def band_polygons(x: np.ndarray, low: np.ndarray, high: np.ndarray) -> list[np.ndarray]:
    """Polygons between `low` and `high` over each run of x where both are finite."""
    return [
        np.column_stack([np.concatenate([x[a:b], x[a:b][::-1]]),
                         np.concatenate([low[a:b], high[a:b][::-1]])])
        for a, b in true_runs(np.isfinite(low) & np.isfinite(high))
    ]  # fmt: skip


def _lines(df, x, value, hue, facet, max_lines, title, threshold=None, log_x=False) -> Figure:
    """Panels of `value` against `x`: per (thinned) hue value the mean over replicates as a line and
    a band from the smallest to the largest replicate (NaN skipped)."""
    colours = _hue_palette(df, hue, max_lines)
    if colours:
        df = df[df[hue].isin(list(colours))]
    parts = facet_panels(df, facet)
    fig, axes = panel_grid(len(parts), extra_w=1.8)
    marker = "o" if df[x].nunique() <= 20 else ""
    crosses = False
    for ax, (name, part) in zip(axes, parts, strict=True):
        if threshold is not None:
            ax.axhspan(-threshold, threshold, color="0.92", zorder=0)
            for lv in (-threshold, threshold):
                ax.axhline(lv, color="black", lw=1, ls="--" if lv < 0 else "-")
        keys = [hue, x] if colours else [x]
        stats = part.groupby(keys, sort=True)[value].agg(["mean", "min", "max"])
        lines = stats.groupby(level=0, sort=True) if colours else [(None, stats)]
        bands, band_colours = [], []
        for key, line in lines:
            at = line.index.get_level_values(x).to_numpy(float)
            colour = colours[key] if colours else "C0"
            found = band_polygons(at, line["min"].to_numpy(float), line["max"].to_numpy(float))
            bands += found
            band_colours += [colour] * len(found)
            ax.plot(at, line["mean"], color=colour, marker=marker, markersize=3, lw=1.5)
        # one collection for every band of the panel: fill_between per line costs ten times more
        ax.add_collection(PolyCollection(bands, facecolors=band_colours, alpha=0.2, linewidths=0))
        if threshold is not None and "regime" in part:
            bad = np.sort(part.loc[part["regime"].eq("nonfinite"), x].unique())
            if bad.size:
                crosses = True
                ax.plot(
                    bad,
                    np.full(bad.size, 0.97),
                    "x",
                    color="black",
                    gid="nonfinite",
                    transform=ax.get_xaxis_transform(),
                )
        if log_x:
            set_log_scale(ax, "x")  # no minor ticks: the markers sit at the swept values
        if threshold is not None:  # linear within the stable band, logarithmic beyond
            ticks = symlog_ticks(threshold, float(np.nanmax(np.abs(df[value]), initial=0.0)))
            ax.set_yscale("symlog", linthresh=threshold)
            ax.set_yticks(ticks, labels=[f"{v:g}" for v in ticks])
            ax.yaxis.set_minor_locator(NullLocator())
        ax.set_title(name, fontsize=9)
    legend = [
        Line2D([], [], color=c, marker=marker, markersize=3, label=fmt(k))
        for k, c in colours.items()
    ]
    if threshold is not None:
        legend.append(Line2D([], [], color="black", label=f"±t = ±{threshold:g}"))
        if crosses:
            legend.append(Line2D([], [], ls="", marker="x", color="black", label="NaN/Inf"))
    return finish_grid(
        fig,
        axes,
        x,
        value,
        title,
        legend,
        loc="outside right center",
        title=label(hue) if colours else None,
    )
