"""Mean-field theory in figures: its predictions drawn over a diagram's measurements, and the
measured per-layer factor against the predicted one.

The predictions come as columns of the summary (chi1, predicted_log10_delta_ratio), so drawing them
needs no theory code and no JAX; every prediction is green (`style.THEORY`).
"""

from __future__ import annotations

import numpy as np
import pandas as pd
from matplotlib.figure import Figure
from matplotlib.lines import Line2D

from gradbench.analysis.agreement import TOLERANCE
from gradbench.analysis.crossings import crossing
from gradbench.plots.cells import levels_inside
from gradbench.plots.scales import set_log_scale
from gradbench.plots.style import THEORY, categorical, rasterized
from gradbench.schema import SCALE_AXES


def overlay(ax, part, x, y, xs, ys, threshold: float | None) -> list[Line2D]:
    """Overlay mean-field predictions when the summary carries them; returns legend handles.

    chi_1 = 1, interpolated along x for every y value; and, when `threshold` is given, the contour
    where the finite-depth prediction of r (`predicted_log10_delta_ratio`) reaches -t and +t (the
    depth where |predicted r| = t on a depth diagram).
    """
    handles = []
    if "chi1" in part and x in SCALE_AXES:
        chi = part.groupby([y, x])["chi1"].mean().unstack(x).reindex(index=ys, columns=xs)
        pts = [(c, yv) for yv in ys if (c := crossing(xs, chi.loc[yv].to_numpy(float), 1.0))]
        if pts:
            px, py = zip(*pts, strict=True)
            ax.plot(px, py, ls="-.", marker="o" if len(pts) == 1 else "", gid="chi1", **THEORY)
            handles.append(Line2D([], [], ls="-.", label="theory χ₁ = 1", **THEORY))
    pred = "predicted_log10_delta_ratio"
    if threshold is not None and pred in part and len(xs) > 1 and len(ys) > 1:
        p = part.groupby([y, x])[pred].mean().unstack(x).reindex(index=ys, columns=xs)
        p = np.ma.masked_invalid(p.to_numpy(float))
        if levels := levels_inside(p.filled(np.nan), (-threshold, threshold)):
            cs = ax.contour(
                xs,
                ys,
                p,
                levels=levels,
                colors=THEORY["color"],
                linestyles=":",
                linewidths=THEORY["lw"],
            )
            cs.set_gid("theory")
            handles.append(
                Line2D([], [], ls=":", label=f"theory (finite depth) |r| = {threshold:g}", **THEORY)
            )
    return handles


def theory_agreement(cells: pd.DataFrame, *, hue: str = "activation") -> Figure:
    """Measured per-layer factor 10^(2 x delta_growth) against mean-field chi_1, log-log, one point a cell.

    `cells` is `gradbench.analysis.agreement.cells(summary)`; the identity line is perfect agreement, the grey
    band the agreement tolerance.
    """
    data = cells.dropna(subset=["measured", "chi1"])
    data = data[(data["measured"] > 0) & (data["chi1"] > 0)]
    fig = Figure(figsize=(5.6, 4.8), layout="constrained")
    ax = fig.add_subplot()
    if not data.empty:
        lo = float(min(data["measured"].min(), data["chi1"].min())) / 1.5
        hi = float(max(data["measured"].max(), data["chi1"].max())) * 1.5
        line = np.geomspace(lo, hi, 50)
        ax.fill_between(line, line * (1 - TOLERANCE), line * (1 + TOLERANCE), color="0.88", lw=0)
        ax.plot(line, line, color="0.3", lw=1, label="measured = theory")
        groups = list(data.groupby(hue, sort=True)) if hue in data else [("", data)]
        colours = categorical(len(groups))
        handles = [Line2D([], [], color="0.3", lw=1, label="measured = theory")]
        for (name, part), colour in zip(groups, colours, strict=True):
            for agrees, marker in ((True, "o"), (False, "X")):
                points = part[part["agrees"] == agrees]
                if len(points):
                    ax.scatter(points["chi1"], points["measured"], s=28, marker=marker,
                               color=colour, edgecolors="white", linewidths=0.5,
                               rasterized=rasterized(len(data)))  # fmt: skip
            if name != "":
                handles.append(Line2D([], [], ls="", marker="o", color=colour, label=str(name)))
        for agrees, marker in ((True, "o"), (False, "X")):
            if data["agrees"].eq(agrees).any():
                what = "within tolerance" if agrees else "disagrees"
                handles.append(Line2D([], [], ls="", marker=marker, color="0.4", label=what))
        ax.legend(handles=handles, fontsize=7, frameon=False, ncols=1 + (len(handles) > 12))
        set_log_scale(ax, "x")
        set_log_scale(ax, "y")
    ax.set_xlabel("mean-field χ₁ = σ_w² E[φ′(z)²] at q*")
    ax.set_ylabel("measured 10^(2 delta_growth) (mean over replicates)")
    ax.set_title(f"Measured per-layer factor vs theory (band: ±{TOLERANCE:.0%})")
    return fig
