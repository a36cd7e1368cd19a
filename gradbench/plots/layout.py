"""How a figure is laid out and written: one panel per facet on a grid, shared labels, the legend,
at most a few evenly chosen hue values, and the PNG and SVG files.

A figure has at most `MAX_PANELS` panels; a sweep with more facets is summarised by
`gradbench.plots.facet_maps`, one heatmap row per facet, so that every facet stays visible.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import matplotlib
import numpy as np
import pandas as pd
from matplotlib.figure import Figure

from gradbench.analysis.facets import facet_columns, facet_parts, group_by_facets
from gradbench.analysis.settings import ARCHITECTURE_SETTINGS, setting_words
from gradbench.notation import fmt, label

MAX_PANELS = 6  # more facets than this are drawn as rows of one heatmap (`facet_map`, `layer_map`)
TICKS = 5  # at most this many intervals between major ticks: each tick costs about a line of text


def panel_count(df: pd.DataFrame, facet: str | Sequence[str] | None) -> int:
    """How many panels a facet grid over `facet` draws."""
    cols = facet_columns(facet)
    return len(group_by_facets(df, cols)) if cols else 1


def facet_panels(
    df: pd.DataFrame, facet: str | Sequence[str] | None
) -> list[tuple[str, pd.DataFrame]]:
    """(title, part) per panel, one per combination of the facet columns ("" without a facet):
    "label = value" each, architecture settings as `analysis.settings.setting_words` writes them."""
    cols = facet_columns(facet)
    if not cols:
        return [("", df)]
    return [(panel_title(cols, key), part) for key, part in facet_parts(df, cols)]


def panel_title(columns: Sequence[str], key: Sequence) -> str:
    """ "activation = relu, resmlp, α = 0.5": the title of one facet's panel."""
    values = dict(zip(columns, key, strict=True))
    settings = setting_words({c: v for c, v in values.items() if c in ARCHITECTURE_SETTINGS})
    rest = [f"{label(c)} = {fmt(v)}" for c, v in values.items() if c not in ARCHITECTURE_SETTINGS]
    return ", ".join(rest + settings)


def thin(values: np.ndarray, n: int) -> np.ndarray:
    """At most n of the sorted `values`, evenly chosen, the first and the last always included."""
    if len(values) <= n:
        return values
    return values[np.unique(np.linspace(0, len(values) - 1, n).round().astype(int))]


def panel_grid(n: int, extra_w: float = 1.4) -> tuple[Figure, list]:
    """n panels on a grid of up to 3 columns sharing both axes; ticks shown on the outer panels."""
    ncols = min(n, 3)
    nrows = -(-n // ncols)
    fig = Figure(figsize=(4.2 * ncols + extra_w, 3.3 * nrows + 1.4), layout="constrained")
    axes = fig.subplots(nrows, ncols, squeeze=False, sharex=True, sharey=True).ravel()
    for ax in axes[n:]:
        fig.delaxes(ax)
    for i, ax in enumerate(axes[:n]):  # a panel with no panel below it keeps its x tick labels
        ax.tick_params(labelbottom=i + ncols >= n, labelleft=i % ncols == 0)
        ax.locator_params(nbins=TICKS)
    return fig, list(axes[:n])


def finish_grid(fig: Figure, axes, x: str, y: str, suptitle: str, handles, **legend) -> Figure:
    """Label the outer panels of a `panel_grid`, add the legend (when there are handles) and the
    title; `legend` goes to `Figure.legend`."""
    ncols = axes[0].get_subplotspec().get_gridspec().ncols
    for i, ax in enumerate(axes):
        ax.set_xlabel(label(x) if i + ncols >= len(axes) else "")
        ax.set_ylabel(label(y) if i % ncols == 0 else "")
    if handles:
        fig.legend(handles=handles, frameon=False, fontsize=8, **legend)
    fig.suptitle(suptitle, fontsize=11)
    return fig


def save(fig: Figure, directory: str | Path, stem: str, *, dpi: int = 130) -> list[Path]:
    """Write `fig` as `<stem>.png` and `<stem>.svg` into `directory`; returns both paths."""
    if not stem or Path(stem).name != stem or stem in (".", ".."):
        raise ValueError(f"`plots.save`: stem must be a plain file name, got {stem!r}")
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    png, svg = directory / f"{stem}.png", directory / f"{stem}.svg"
    if fig.get_layout_engine() is not None:
        # With a layout engine every savefig lays the figure out in a draw of its own: lay it out
        # once, at the PNG's resolution, and let both files share that layout.
        fig.set_dpi(dpi)
        fig.get_layout_engine().execute(fig)
        fig.set_layout_engine(None)
    fig.savefig(png, dpi=dpi)
    # A fixed salt makes the SVG's element ids, and so the file, the same on every render.
    with matplotlib.rc_context({"svg.hashsalt": stem}):
        fig.savefig(svg, metadata={"Date": None})
    return [png, svg]
