"""Figures for sweeps with more facets than panels a reader can compare: one heatmap row per facet.

`facet_map` is `ratio_curves` with every facet a row, `layer_map` is `layer_profiles` with every
facet a row; a report draws them instead of the per-facet panels beyond `layout.MAX_PANELS` facets.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pandas as pd
from matplotlib.colors import Normalize
from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator
from matplotlib.transforms import blended_transform_factory

from gradbench.analysis.facets import facet_columns, group_by_facets
from gradbench.analysis.settings import ARCHITECTURE_SETTINGS, setting_words
from gradbench.notation import fmt, label, symbol
from gradbench.plots.cells import cell_means, flag_handles, mark_flags
from gradbench.plots.layout import TICKS, thin
from gradbench.plots.scales import ratio_colourbar, ratio_norm
from gradbench.plots.selection import chosen_layers, representative
from gradbench.plots.style import rasterized
from gradbench.schema import config_axes

RELATIVE_LABELS = {
    "log10_delta": "log₁₀(‖δ_l‖ / ‖δ_L‖)",
    "log10_grad_w": "log₁₀(‖∂J/∂W_l‖ / ‖∂J/∂W_L‖)",
    "log10_grad_b": "log₁₀(‖∂J/∂b_l‖ / ‖∂J/∂b_L‖)",
}
CELL_TEXT_LIMIT = 600  # heatmap cells labelled with their value up to this many per panel


def facet_label(columns: Sequence[str], key: object) -> str:
    """ "relu/he, σ_b² = 0.05": the names of categorical values, then the architecture
    settings as `analysis.settings.setting_words` writes them ("resmlp, α = 0.5", those that do
    not apply left out), then numeric values by symbol."""
    values = key if isinstance(key, tuple) else (key,)
    pairs = [(c, v) for c, v in zip(columns, values, strict=True) if c not in ARCHITECTURE_SETTINGS]
    words = [str(v) for _, v in pairs if isinstance(v, str)]
    settings = setting_words(
        {c: v for c, v in zip(columns, values, strict=True) if c in ARCHITECTURE_SETTINGS}
    )
    rest = [f"{symbol(c)} = {fmt(v)}" for c, v in pairs if not isinstance(v, str)]
    return ", ".join(["/".join(words)] * bool(words) + settings + rest)


def _facet_rows(df: pd.DataFrame, cols: list[str]) -> tuple[pd.DataFrame, list[str]]:
    """`df` with a `_row` column numbering the facets in sorted order, and the facets' labels."""
    if not cols:
        return df.assign(_row=0), ["all configs"]
    grouped = group_by_facets(df, cols)
    names = [facet_label(cols, key) for key in grouped.size().index]
    return df.assign(_row=grouped.ngroup()), names


def _row_axes(fig: Figure, n_panels: int, names: list[str], width_ratios=None) -> list:
    """Side-by-side heatmap panels with one row per facet, the first facet at the top.

    The facets' names are texts left of the first panel rather than tick labels: a tick is
    five artists, and a map can have dozens of rows.
    """
    axes = fig.subplots(1, n_panels, squeeze=False, sharey=True, width_ratios=width_ratios)
    axes = list(axes.ravel())
    axes[0].set_ylim(len(names) - 0.5, -0.5)
    axes[0].set_yticks([])
    left = blended_transform_factory(axes[0].transAxes, axes[0].transData)
    for i, name in enumerate(names):
        axes[0].text(-0.02, i, name, transform=left, ha="right", va="center", fontsize=7)
    return axes


def _label_cells(ax, z: np.ndarray, norm, columns) -> None:
    """Write each finite value into its cell (white on dark colours) when the panel has room."""
    if z.size > CELL_TEXT_LIMIT or z.shape[1] > 16:
        return
    shade = np.abs(norm(np.ma.masked_invalid(z)).filled(0.5) - 0.5)
    for i, j in zip(*np.nonzero(np.isfinite(z)), strict=True):
        ax.text(columns[j], i, fmt(float(z[i, j])), ha="center", va="center", fontsize=6.5,
                color="white" if shade[i, j] > 0.3 else "black", gid="cell_value")  # fmt: skip


def _flag_legend(fig: Figure, seen) -> None:
    if legend := flag_handles(seen):
        fig.legend(handles=legend, frameon=False, fontsize=8, loc="outside lower center",
                   ncols=len(legend))  # fmt: skip


def facet_map(
    summary: pd.DataFrame,
    x: str,
    facet: str | Sequence[str] | None,
    *,
    threshold: float,
    values: Sequence[str] = ("log10_delta_ratio", "log10_grad_w_ratio"),
) -> Figure:
    """The gradient ratios of every facet at once: a heatmap row per facet, a column per x value.

    What `ratio_curves` draws in one panel per facet, for sweeps with more facets than a reader
    can compare side by side; one panel per column of `values` that the summary has. Colour: the
    mean over replicates on `phase_diagram`'s scale (linear within ±t, logarithmic beyond; one
    scale for every panel); black cells had NaN/Inf in a replicate, hatched cells could not be
    measured; cells carry their value when there is room. Axes that are neither x nor a facet are
    held at one value (depth at its largest), which the title states.
    """
    t = float(threshold)
    cols = facet_columns(facet)
    df, notes = representative(summary, [x, *cols], config_axes(summary.columns))
    df, names = _facet_rows(df, cols)
    values = [v for v in values if v in df]
    norm, why = ratio_norm(df[values].to_numpy(float).ravel(), t, "|value|")
    n_x = df[x].nunique()
    panel_w = min(max(1.4, 0.42 * n_x), 7.0)
    fig = Figure(
        figsize=(len(values) * panel_w + 3.6, 0.2 * len(names) + 2.2), layout="constrained"
    )
    axes = _row_axes(fig, len(values), names)
    seen, mesh = {"nonfinite": 0, "unmeasured": 0}, None
    for ax, value in zip(axes, values, strict=True):
        xs, _, grid = cell_means(df, x, "_row", value)
        z = grid["mean"].reindex(columns=xs).to_numpy(float)
        xe, ye = np.arange(len(xs) + 1) - 0.5, np.arange(len(names) + 1) - 0.5
        mesh = ax.pcolormesh(
            xe, ye, np.ma.masked_invalid(z), cmap="RdBu_r", norm=norm, rasterized=rasterized(z.size)
        )
        for kind, n in mark_flags(ax, xe, ye, grid, xs).items():
            seen[kind] += n
        _label_cells(ax, z, norm, range(len(xs)))
        shown = thin(np.arange(len(xs)), 12)
        ax.set_xticks(shown, labels=[fmt(xs[i].item()) for i in shown], fontsize=8)
        ax.set_xlabel(label(x))
        ax.set_title(label(value), fontsize=9)
    ratio_colourbar(fig, mesh, axes, "mean over replicates", why)
    _flag_legend(fig, seen)
    n_rep = df["replicate"].nunique() if "replicate" in df else 1
    fixed = f"; {', '.join(notes)}" if notes else ""
    fig.suptitle(
        f"Ratio of the first to the last layer's gradient per facet, threshold t = {t:g} "
        f"(mean over {n_rep} replicates{fixed})",
        fontsize=10,
    )
    return fig


def layer_map(
    layers: pd.DataFrame,
    configs: pd.DataFrame,
    *,
    facet: str | Sequence[str] | None,
    hue: str | None = "sigma_w2",
    value: str = "log10_delta",
    threshold: float = 2.0,
    max_panels: int = 4,
) -> Figure:
    """`layer_profiles` for many facets: a heatmap row per facet, a column per layer.

    For gradient norms the colour is the norm relative to the last layer's, log10(‖·_l‖ / ‖·_L‖),
    which at layer 1 is the ratio r, on `facet_map`'s scale; for log10_q it is the value itself.
    Mean over replicates; black cells had NaN/Inf in a replicate, hatched ones could not be
    measured. One panel per value of `hue` (at most `max_panels`, evenly chosen); axes that are
    neither hue nor facet are held at one value (depth at its largest), which the title states.
    """
    cols = facet_columns(facet)
    df, notes = chosen_layers(layers, configs, [hue, *cols])
    v = df[value].astype(float)
    relative = value in RELATIVE_LABELS
    if relative:
        last = v.where(df["layer"] == df.groupby("config_id")["layer"].transform("max"))
        v = v - last.groupby(df["config_id"]).transform("max")
    bad = df["flag"].eq("nonfinite") if "flag" in df else pd.Series(False, df.index)
    df, names = _facet_rows(df.assign(_v=v, _bad=bad), cols)
    if relative:
        norm, why = ratio_norm(df["_v"].to_numpy(float), float(threshold), "|value|")
        cmap = "RdBu_r"
    else:
        finite = df["_v"].to_numpy(float)
        finite = finite[np.isfinite(finite)]
        low, high = np.percentile(finite, [2, 98]) if finite.size else (0.0, 1.0)
        norm, cmap = Normalize(float(low), float(max(high, low + 1e-9))), "viridis"
    keys = thin(np.sort(df[hue].unique()), max_panels).tolist() if hue in df else [None]
    parts = [df if key is None else df[df[hue] == key] for key in keys]
    depths = [int(part["layer"].max()) for part in parts]
    fig = Figure(
        figsize=(min(max(0.09 * sum(depths), 4.0), 11.0) + 3.6, 0.2 * len(names) + 2.2),
        layout="constrained",
    )
    axes = _row_axes(fig, len(parts), names, width_ratios=[max(d, 12) for d in depths])
    seen, mesh = {"nonfinite": 0, "unmeasured": 0}, None
    for ax, key, part in zip(axes, keys, parts, strict=True):
        xs, _, grid = cell_means(part, "layer", "_row", "_v", bad=part["_bad"])
        z = grid["mean"].reindex(columns=xs).to_numpy(float)
        xe, ye = np.append(xs, xs[-1] + 1) - 0.5, np.arange(len(names) + 1) - 0.5
        mesh = ax.pcolormesh(
            xe, ye, np.ma.masked_invalid(z), cmap=cmap, norm=norm, rasterized=rasterized(z.size)
        )
        for kind, n in mark_flags(ax, xe, ye, grid, xs).items():
            seen[kind] += n
        ax.xaxis.set_major_locator(MaxNLocator(nbins=TICKS, integer=True))
        ax.set_xlabel("layer l")
        ax.set_title(f"{label(hue)} = {fmt(key)}" if key is not None else "", fontsize=9)
    text = RELATIVE_LABELS.get(value, label(value)) + ", mean over replicates"
    if relative:
        ratio_colourbar(fig, mesh, axes, text, why)
    else:
        fig.colorbar(mesh, ax=axes, shrink=0.9, extend="both").set_label(
            f"{text}\n(colours clipped at the 2nd and 98th percentiles)", fontsize=8
        )
    _flag_legend(fig, seen)
    n_rep = df["replicate"].nunique() if "replicate" in df else 1
    fixed = f"; {', '.join(notes)}" if notes else ""
    what = RELATIVE_LABELS.get(value, label(value))
    fig.suptitle(f"{what} by layer, per facet (mean over {n_rep} replicates{fixed})", fontsize=10)
    return fig
