"""The input-output Jacobian's spectrum in a figure: its spread against depth on the edge of chaos.

One panel per activation; per init and fixed point q*, the measured spread of the squared singular
values (mean over replicates, solid) and the free-probability prediction (dashed), on log axes.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
from matplotlib.figure import Figure
from matplotlib.lines import Line2D

from gradbench.analysis.facets import group_by_facets
from gradbench.notation import fmt
from gradbench.plots.layout import facet_panels, finish_grid, panel_grid
from gradbench.plots.scales import set_log_scale
from gradbench.plots.style import categorical

FLOOR = 1e-4  # spreads below this (orthogonal linear nets: rounding) are drawn at it


def spectrum_growth(edge: pd.DataFrame) -> Figure:
    """Spread of the squared singular values against depth; `edge` holds the configs to draw
    (`gradbench.report.spectrum.on_edge`), with the summary's jacobian and theory columns."""
    panels = facet_panels(edge, "activation")
    fig, axes = panel_grid(len(panels))
    lines = list(group_by_facets(edge, ["init", "q_star"]).groups)
    colours = dict(zip(lines, categorical(len(lines)), strict=True))
    for ax, (title, part) in zip(axes, panels, strict=False):
        for (init, q), curve in group_by_facets(part, ["init", "q_star"]):
            by_depth = curve.groupby("depth")
            depth = np.asarray(sorted(curve["depth"].unique()), float)
            measured = np.maximum(by_depth["jacobian_sv2_spread"].mean().to_numpy(), FLOOR)
            colour = colours[(init, q)]
            ax.plot(depth, measured, marker="o", ms=3, color=colour)
            if "predicted_jacobian_sv2_spread" in curve:
                predicted = by_depth["predicted_jacobian_sv2_spread"].mean().to_numpy()
                ax.plot(depth, np.maximum(predicted, FLOOR), ls="--", lw=1, color=colour)
        ax.axhline(1.0, color="0.5", lw=0.8, ls=":")
        set_log_scale(ax, "x")
        set_log_scale(ax, "y")
        ax.set_title(title, fontsize=9)
    handles = [
        Line2D([], [], color=colours[key], marker="o", ms=3, label=f"{key[0]}, q* = {fmt(key[1])}")
        for key in lines
    ]
    handles += [
        Line2D([], [], color="0.3", ls="--", lw=1, label="free probability"),
        Line2D([], [], color="0.5", ls=":", lw=0.8, label="spread 1"),
    ]
    title = "Spread (variance / mean²) of J's squared singular values on the edge of chaos"
    return finish_grid(fig, axes, "depth", "jacobian_sv2_spread", title, handles,
                       loc="outside right center")  # fmt: skip
