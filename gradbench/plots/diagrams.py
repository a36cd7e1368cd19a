"""Phase diagrams and regime maps: heatmaps of the gradient over two swept axes, one panel per facet.

The figures that show where gradients vanish or explode: the gradient ratio with its threshold
contours (`phase_diagram`) and the regime it implies (`regime_map`), each with the mean-field
predictions drawn over it where the summary carries them.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pandas as pd
from matplotlib.colors import BoundaryNorm, ListedColormap
from matplotlib.figure import Figure
from matplotlib.lines import Line2D
from matplotlib.patches import Patch

from gradbench.notation import label
from gradbench.plots.axes import usable_log
from gradbench.plots.cells import cell_means, flag_handles, levels_inside, mark_flags
from gradbench.plots.layout import facet_panels, finish_grid, panel_grid
from gradbench.plots.scales import cell_edges, ratio_colourbar, ratio_norm, style_axis
from gradbench.plots.style import REGIME_COLOURS, rasterized
from gradbench.plots.theory import overlay
from gradbench.schema import REGIMES, SEVERITY


def phase_diagram(
    summary: pd.DataFrame,
    x: str,
    y: str,
    *,
    threshold: float,
    facet: str | Sequence[str] | None = None,
    value: str = "log10_delta_ratio",
    log_x: bool = False,
    log_y: bool = False,
) -> Figure:
    """Heatmap of the mean over replicates of `value` over two swept axes, one panel per facet.

    Colours: a diverging map centred at 0, linear within +-t and logarithmic beyond (so r = -2 and
    r = -60 both read), clipped symmetrically at the 98th percentile of |value| (at least 1.5 t).
    Black lines are the contours at -t (dashed, "vanishing") and +t (solid, "exploding"). Cells
    where a replicate produced NaN/Inf are black; cells with a replicate that could not be measured
    (underflow) are hatched.
    Mean-field predictions are overlaid in green where the summary carries them (theory predicts
    the delta, so the predicted-r contours appear only for `value="log10_delta_ratio"`).
    """
    t = float(threshold)
    short = "|r|" if value == "log10_delta_ratio" else "|value|"
    norm, why = ratio_norm(summary[value].to_numpy(float), t, short)
    log_x, log_y = usable_log(summary[x], log_x), usable_log(summary[y], log_y)
    parts = facet_panels(summary, facet)
    fig, axes = panel_grid(len(parts))
    seen, handles, mesh = {"nonfinite": 0, "unmeasured": 0, "contours": 0}, {}, None
    for ax, (title, part) in zip(axes, parts, strict=True):
        xs, ys, grid = cell_means(part, x, y, value)
        z = grid["mean"].reindex(columns=xs).to_numpy(float)
        xe, ye = cell_edges(xs, log_x), cell_edges(ys, log_y)
        mesh = ax.pcolormesh(
            xe, ye, np.ma.masked_invalid(z), cmap="RdBu_r", norm=norm, rasterized=rasterized(z.size)
        )
        for kind, n in mark_flags(ax, xe, ye, grid, xs).items():
            seen[kind] += n
        levels = levels_inside(z, (-t, t)) if len(xs) > 1 and len(ys) > 1 else []
        if levels:
            cs = ax.contour(
                xs,
                ys,
                np.ma.masked_invalid(z),
                levels=levels,
                colors="black",
                linestyles=["--" if lv < 0 else "-" for lv in levels],
                linewidths=1.3,
            )
            cs.set_gid("threshold")
            seen["contours"] += 1
            ax.clabel(cs, fmt={-t: "vanishing", t: "exploding"}, fontsize=8)
        on_delta = t if value == "log10_delta_ratio" else None
        handles.update((h.get_label(), h) for h in overlay(ax, part, x, y, xs, ys, on_delta))
        style_axis(ax, "x", xs, log_x)
        style_axis(ax, "y", ys, log_y)
        ax.set_title(title, fontsize=9)
    ratio_colourbar(fig, mesh, axes, f"{label(value)}, mean over replicates", why)
    legend = [
        Line2D([], [], color="black", ls="--", label=f"{-t:g}: vanishing below"),
        Line2D([], [], color="black", ls="-", label=f"+{t:g}: exploding above"),
    ][: 2 * bool(seen["contours"])] + list(handles.values())
    legend += flag_handles(seen)
    title = f"{label(value)} over {label(x)} and {label(y)}; threshold t = {t:g}"
    return finish_grid(
        fig, axes, x, y, title, legend, loc="outside lower center", ncols=min(len(legend), 3)
    )


def regime_map(
    summary: pd.DataFrame,
    x: str,
    y: str,
    *,
    facet: str | Sequence[str] | None = None,
    log_x: bool = False,
    log_y: bool = False,
) -> Figure:
    """Categorical map of the majority regime over replicates (ties go to the more severe regime).

    Cells where the replicates disagree carry a white dot.
    """
    cmap = ListedColormap([REGIME_COLOURS[r] for r in REGIMES])
    norm = BoundaryNorm(np.arange(len(REGIMES) + 1) - 0.5, len(REGIMES))
    log_x, log_y = usable_log(summary[x], log_x), usable_log(summary[y], log_y)
    parts = facet_panels(summary, facet)
    fig, axes = panel_grid(len(parts))
    shown = [r for r in REGIMES if r != "unmeasured" or summary["regime"].eq(r).any()]
    legend = [Patch(color=REGIME_COLOURS[r], label=r) for r in shown]
    extra: dict[str, Line2D] = {}
    for ax, (title, part) in zip(axes, parts, strict=True):
        counts = part.groupby([y, x])["regime"].value_counts().unstack(fill_value=0)
        counts = counts.reindex(columns=list(SEVERITY), fill_value=0)  # idxmax: the first maximum
        total = counts.sum(axis=1)
        code = counts.idxmax(axis=1).map(REGIMES.index).where(total > 0)
        xs = np.sort(part[x].unique()).astype(float)
        ys = np.sort(part[y].unique()).astype(float)
        z = code.unstack(x).reindex(index=ys, columns=xs).to_numpy(float)
        xe, ye = cell_edges(xs, log_x), cell_edges(ys, log_y)
        ax.pcolormesh(
            xe, ye, np.ma.masked_invalid(z), cmap=cmap, norm=norm, rasterized=rasterized(z.size)
        )
        mixed = counts[(counts.max(axis=1) < total) & (total > 0)].index
        if len(mixed):
            my, mx = zip(*mixed, strict=True)
            ax.scatter(
                mx, my, s=9, color="white", edgecolors="0.3", linewidths=0.5, zorder=3, gid="mixed"
            )
            extra["mixed"] = Line2D(
                [], [], ls="", marker="o", mfc="white", mec="0.3", label="replicates disagree"
            )
        extra.update((h.get_label(), h) for h in overlay(ax, part, x, y, xs, ys, None))
        style_axis(ax, "x", xs, log_x)
        style_axis(ax, "y", ys, log_y)
        ax.set_title(title, fontsize=9)
    n_rep = summary["replicate"].nunique() if "replicate" in summary else 1
    title = f"Regime of the backward signal (majority of {n_rep} replicates)"
    return finish_grid(
        fig,
        axes,
        x,
        y,
        title,
        legend + list(extra.values()),
        loc="outside right center",
        title="regime",
    )
