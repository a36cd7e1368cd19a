"""Figures of training runs (sweeps with a [train] section): whether each network trained, what
clipping did, and the loss and update curves.

Each network's outcome (trained, diverged) comes from the summary columns gradbench.training
wrote; the curves from its per-step table. The theory's depth scale is drawn in the same green as
every other mean-field prediction.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np
import pandas as pd
from matplotlib import patheffects
from matplotlib.collections import LineCollection
from matplotlib.figure import Figure
from matplotlib.lines import Line2D
from matplotlib.patches import Patch

from gradbench.analysis.crossings import true_runs
from gradbench.analysis.facets import facet_columns
from gradbench.notation import clip_setting, fmt, label
from gradbench.plots.axes import usable_log
from gradbench.plots.cells import mark_cells
from gradbench.plots.layout import facet_panels, finish_grid, panel_grid, thin
from gradbench.plots.scales import cell_edges, set_log_scale, style_axis
from gradbench.plots.style import THEORY, categorical, ramp, rasterized
from gradbench.plots.theory import overlay
from gradbench.schema import REGIMES

DEPTH_SCALE_MULTIPLE = 6.0  # Schoenholz et al. (2017): networks train up to depth ~6 xi_c
TRAINED_MARK = {"marker": "o", "s": 14, "color": "white", "edgecolors": "0.2", "linewidths": 0.6}
DIVERGED_STYLE = {"facecolor": "#1a1a1a", "linewidth": 0}


def _trained_cells(part: pd.DataFrame, x: str, y: str):
    """Per (y, x): mean log10 final/initial loss (finite replicates), trained and diverged shares."""
    tmp = part.assign(
        _v=np.log10(part["loss_ratio"].where(part["loss_ratio"] > 0)),
        _t=part["trained"].astype(float),
        _d=part["diverged"].astype(float),
    )
    agg = tmp.groupby([y, x], sort=True).agg(mean=("_v", "mean"), trained=("_t", "mean"),
                                             diverged=("_d", "mean"))  # fmt: skip
    xs = np.sort(part[x].unique()).astype(float)
    ys = np.sort(part[y].unique()).astype(float)
    return xs, ys, agg.unstack(x).reindex(index=ys)


def trainability_diagram(
    summary: pd.DataFrame,
    x: str,
    y: str,
    *,
    facet: str | Sequence[str] | None = None,
    log_x: bool = False,
    log_y: bool = False,
    multiple: float = DEPTH_SCALE_MULTIPLE,
) -> Figure:
    """Trainability phase diagram: colour = log10(final loss / initial loss), mean over replicates.

    White dots mark cells where most replicates trained (the summary's `trained`: final loss below
    `trained_below` times the task's baseline loss); black cells diverged in a replicate. Green:
    the theory's depth scale, depth = `multiple` x xi_c at each x (Schoenholz et al. 2017 found
    networks trainable up to about 6 xi_c), drawn when the summary carries `xi_c` and y is depth.
    """
    log_x, log_y = usable_log(summary[x], log_x), usable_log(summary[y], log_y)
    ratio = np.log10(summary["loss_ratio"].where(summary["loss_ratio"] > 0)).to_numpy(float)
    ratio = ratio[np.isfinite(ratio)]
    vmin = min(-1.0, float(np.percentile(ratio, 2))) if ratio.size else -3.0
    vmax = max(0.0, float(np.percentile(ratio, 98))) if ratio.size else 0.0
    parts = facet_panels(summary, facet)
    fig, axes = panel_grid(len(parts))
    mesh, handles = None, {}
    for ax, (title, part) in zip(axes, parts, strict=True):
        xs, ys, grid = _trained_cells(part, x, y)
        xe, ye = cell_edges(xs, log_x), cell_edges(ys, log_y)
        z = grid["mean"].reindex(columns=xs).to_numpy(float)
        mesh = ax.pcolormesh(
            xe, ye, np.ma.masked_invalid(z), cmap="viridis", vmin=vmin, vmax=vmax,
            rasterized=rasterized(z.size),
        )  # fmt: skip
        diverged = grid["diverged"].reindex(columns=xs).to_numpy(float) > 0
        if mark_cells(ax, xe, ye, diverged, "diverged", DIVERGED_STYLE):
            handles["diverged"] = Patch(**DIVERGED_STYLE, label="diverged in a replicate")
        trained = grid["trained"].reindex(columns=xs).to_numpy(float) > 0.5
        rows, cols = np.nonzero(trained)
        if rows.size:
            ax.scatter(xs[cols], ys[rows], zorder=3, gid="trained", **TRAINED_MARK)
            handles["trained"] = Line2D([], [], ls="", label="trained (most replicates)",
                                        markerfacecolor="white", markeredgecolor="0.2",
                                        marker="o")  # fmt: skip
        if "xi_c" in part and y == "depth":
            xi = part.groupby(x)["xi_c"].mean().reindex(xs).to_numpy(float)
            scale = multiple * xi
            ok = np.isfinite(scale) & (scale > 0)
            if ok.any():
                top = np.where(ok, np.minimum(scale, ye[-1] * 10), np.nan)
                halo = [patheffects.withStroke(linewidth=4.5, foreground="white")]
                ax.plot(xs, top, ls="-", marker="o", ms=3, gid="depth_scale", path_effects=halo,
                        **THEORY)  # fmt: skip
                handles["theory"] = Line2D(
                    [], [], ls="-", label=f"theory: depth = {multiple:g} ξ_c", **THEORY
                )
        handles.update((h.get_label(), h) for h in overlay(ax, part, x, y, xs, ys, None))
        ax.set_xlim(xe[0], xe[-1])
        ax.set_ylim(ye[0], ye[-1])
        style_axis(ax, "x", xs, log_x)
        style_axis(ax, "y", ys, log_y)
        ax.set_title(title, fontsize=9)
    cbar = fig.colorbar(mesh, ax=axes, shrink=0.9)
    cbar.set_label("log₁₀(final loss / initial loss), mean over replicates", fontsize=8)
    n_rep = summary["replicate"].nunique() if "replicate" in summary else 1
    title = f"Trainability over {label(x)} and {label(y)} ({n_rep} replicates per cell)"
    legend = list(handles.values())
    return finish_grid(
        fig, axes, x, y, title, legend, loc="outside lower center", ncols=max(1, len(legend))
    )


def clipping_map(
    summary: pd.DataFrame,
    x: str,
    *,
    value: str = "fit_ratio",
    facet: str | Sequence[str] | None = None,
) -> Figure:
    """Clipping effect map: one row per clipping setting, one column per x value, per facet.

    `value` is drawn as log10 of its mean over replicates ("fit_ratio": final loss / baseline;
    "update": the largest parameter update of the run, 10^log10_update_norm_max). Each cell states
    what happened: "T" = every replicate trained, "t" = some did, "·" = none, "D" = every replicate
    diverged, "d" = some did.
    """
    df = summary.assign(setting=clip_setting(summary["clip"], summary["clip_threshold"]))
    if value == "update":
        df = df.assign(_v=df["log10_update_norm_max"])
        bar = "log₁₀ largest update norm max_t ‖Δθ_t‖ (mean over replicates)"
        cmap = "magma"
    else:
        df = df.assign(_v=np.log10(df[value].where(df[value] > 0)))
        bar = f"log₁₀ {value} (final loss / baseline loss; mean over finite replicates)"
        cmap = "viridis"
    settings = list(dict.fromkeys(df.sort_values(["clip", "clip_threshold"])["setting"]))
    settings = sorted(settings, key=lambda s: (s != "none", s))
    v = df["_v"].to_numpy(float)
    v = v[np.isfinite(v)]
    lo, hi = (float(v.min()), float(v.max())) if v.size else (0.0, 1.0)
    parts = facet_panels(df, facet)
    ncols = min(len(parts), 2)
    nrows = -(-len(parts) // ncols)
    xs = np.sort(df[x].unique())
    fig = Figure(
        figsize=(0.75 * len(xs) * ncols + 3.2, 0.42 * len(settings) * nrows + 2.2),
        layout="constrained",
    )
    axes = fig.subplots(nrows, ncols, squeeze=False).ravel()
    for ax in axes[len(parts) :]:
        fig.delaxes(ax)
    axes = axes[: len(parts)]  # an odd number of facets leaves the last grid cell empty
    mesh = None
    for ax, (title, part) in zip(axes, parts, strict=True):
        agg = part.groupby(["setting", x]).agg(
            v=("_v", "mean"), t=("trained", "mean"), d=("diverged", "mean")
        )
        grid = agg.unstack(x).reindex(index=settings)
        z = grid["v"].reindex(columns=xs).to_numpy(float)
        mesh = ax.pcolormesh(np.ma.masked_invalid(z), cmap=cmap, vmin=lo, vmax=hi)
        t = grid["t"].reindex(columns=xs).to_numpy(float)
        d = grid["d"].reindex(columns=xs).to_numpy(float)
        for i in range(len(settings)):
            for j in range(len(xs)):
                mark = _outcome_mark(t[i, j], d[i, j])
                if mark:
                    ax.text(j + 0.5, i + 0.5, mark, ha="center", va="center", fontsize=9,
                            color="white" if not np.isfinite(z[i, j]) or z[i, j] < (lo + hi) / 2
                            else "black", gid="outcome")  # fmt: skip
        ax.set_facecolor("0.2")  # all replicates diverged: no finite value
        ax.set_xticks(np.arange(len(xs)) + 0.5, labels=[fmt(float(v)) for v in xs])
        ax.set_yticks(np.arange(len(settings)) + 0.5, labels=settings, fontsize=8)
        ax.set_xlabel(label(x))
        ax.set_title(title, fontsize=9)
    cbar = fig.colorbar(mesh, ax=list(axes[: len(parts)]), shrink=0.9)
    cbar.set_label(bar, fontsize=8)
    what = "updates" if value == "update" else "final loss"
    fig.suptitle(
        f"Clipping effect on the {what}: T/t = all/some replicates trained, D/d = all/some "
        "diverged, · = none trained (dark cells: no finite value)",
        fontsize=10,
    )
    return fig


def _outcome_mark(trained: float, diverged: float) -> str:
    if not np.isfinite(trained):
        return ""
    if diverged >= 1:
        return "D"
    if diverged > 0:
        return "d"
    if trained >= 1:
        return "T"
    return "t" if trained > 0 else "·"


def _config_lines(ax, part: pd.DataFrame, value: str, hue_col, palette, log_y: bool) -> None:
    """One line per config of `part` (sorted by config and step) in a single LineCollection; for
    a config that diverged, a dot at its last value before and a cross (gid "diverged") at the
    top of the panel at its step."""
    ids = part["config_id"].to_numpy()
    starts = np.flatnonzero(np.concatenate([[True], ids[1:] != ids[:-1]]))
    steps, ys = part["step"].to_numpy(float), part[value].to_numpy(float)
    gone = part["diverged"].to_numpy(bool)
    keys = part[hue_col].to_numpy() if hue_col else None
    diverged_at = part["diverged_step"].to_numpy(float) if "diverged_step" in part else None
    segments, colours, dots, dot_colours, crosses = [], [], [], [], []
    for a, b in zip(starts, [*starts[1:], len(ids)], strict=True):
        colour = palette[keys[a]] if palette else "0.3"
        x, y = steps[a:b], ys[a:b]
        drawn = np.isfinite(y) & ((y > 0) if log_y else True)
        runs = [np.column_stack([x[i:j], y[i:j]]) for i, j in true_runs(drawn)]
        segments += runs
        colours += [colour] * len(runs)
        if gone[a:b].any():  # the last value before divergence, and a cross at its step
            ok = np.flatnonzero(np.isfinite(y) & ~gone[a:b])
            if ok.size:
                dots.append((x[ok[-1]], y[ok[-1]]))
                dot_colours.append(colour)
            step = x[gone[a:b]][0]
            if diverged_at is not None and np.isfinite(diverged_at[a]):
                step = diverged_at[a]
            crosses.append(step)
    ax.add_collection(LineCollection(segments, colors=colours, linewidths=0.9, alpha=0.8))
    if dots:
        ax.scatter(*zip(*dots, strict=True), s=16, color=dot_colours, zorder=3)
    if crosses:
        ax.plot(crosses, np.ones(len(crosses)), "x", color="black", ls="",
                transform=ax.get_xaxis_transform(), gid="diverged")  # fmt: skip


def training_curves(
    steps: pd.DataFrame,
    summary: pd.DataFrame,
    *,
    value: str = "fit",
    hue: str | None = "sigma_w2",
    facet: str | Sequence[str] | None = "regime",
    fixed: Mapping[str, object] | None = None,
    max_lines: int = 12,
) -> Figure:
    """`value` against the training step, one thin line per config, coloured by `hue`.

    "fit" is the loss over the task's baseline loss (1 = no better than an input-independent
    prediction); any column of training.parquet works too. Facets by `regime` (of the gradient at
    initialisation) by default. `fixed` holds other axes at one value (e.g. {"depth": 32}).
    """
    keep = ["config_id", "replicate", "loss_baseline", "regime", "diverged_step"]
    keep += facet_columns(facet)
    keep += [hue] if hue else []
    keep += list(fixed or {})
    summary = summary[list(dict.fromkeys(c for c in keep if c in summary))]
    for col, v in (fixed or {}).items():
        summary = summary[summary[col] == v]
    df = steps.merge(summary, on="config_id", how="inner")
    if value == "fit":
        df = df.assign(fit=df["loss"] / df["loss_baseline"])
    log_y = value in ("fit", "loss")
    if "regime" in df:
        order = [r for r in REGIMES if r in set(df["regime"])]
        df = df.assign(regime=pd.Categorical(df["regime"], categories=order, ordered=True))
    hue_col = palette = None
    if hue is not None and hue in df:
        values = thin(np.sort(df[hue].unique()), max_lines)
        df = df[df[hue].isin(values)].assign(_hue=lambda d: d[hue].map(fmt))
        hue_col = "_hue"
        order = [fmt(v) for v in values]
        colours = ramp(len(order)) if len(order) > 4 else categorical(len(order))
        palette = dict(zip(order, colours, strict=True))
    parts = facet_panels(df.sort_values(["config_id", "step"], kind="stable"), facet)
    fig, axes = panel_grid(len(parts), extra_w=1.8)
    for ax, (name, part) in zip(axes, parts, strict=True):
        _config_lines(ax, part, value, hue_col, palette, log_y)
        if log_y:
            set_log_scale(ax, "y")
            ax.axhline(1.0, color="0.5", lw=0.8, ls="--")
        ax.set_title(name, fontsize=9)
    legend = [Line2D([], [], color=c, label=k) for k, c in (palette or {}).items()]
    if df["diverged"].any():
        legend.append(Line2D([], [], ls="", marker="x", color="black", label="diverged (step)"))
        legend.append(Line2D([], [], ls="", marker="o", color="0.3", label="last value before it"))
    notes = ", ".join(f"{label(k)} = {fmt(v)}" for k, v in (fixed or {}).items())
    title = f"{label(value)} during training, one line per config" + (f"; {notes}" if notes else "")
    return finish_grid(
        fig, axes, "step", value, title, legend, loc="outside right center",
        title=label(hue) if hue_col else None,
    )  # fmt: skip
