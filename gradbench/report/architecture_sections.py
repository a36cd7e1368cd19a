"""The report sections of runs with residual or recurrent networks: growth with depth (findings, a
figure of r against depth, every series' law) and measured r against theory's.

Assembles the text of `gradbench.report.depth_laws` and `gradbench.report.predictions` with the
figure of `gradbench.plots.depth`. A run of MLPs only gets none of these sections: its report is
what it was before residual and recurrent networks existed.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from gradbench import plots
from gradbench.analysis.agreement import TOLERANCE
from gradbench.analysis.depth_law import MIN_DEPTHS
from gradbench.notation import fmt, label
from gradbench.report.architectures import has_new_architectures, placement
from gradbench.report.depth_laws import criterion_text, growth_findings, growth_table
from gradbench.report.predictions import pascanu_findings, prediction_findings

MAX_TABLE_ROWS = 40  # the table of every series is folded away beyond this many rows


def architecture_blocks(
    summary: pd.DataFrame, facets: list[str], scale: str | None, threshold: float, figures: Path
) -> list[tuple]:
    """The blocks of both sections; draws the depth figure into `figures`. Empty for MLP runs."""
    if not has_new_architectures(summary):
        return []
    return [
        *_growth_blocks(summary, facets, scale, threshold, figures),
        *_prediction_blocks(summary, facets, scale, threshold),
    ]


def _growth_blocks(summary, facets, scale, threshold, figures: Path) -> list[tuple]:
    found = growth_findings(summary, facets, scale)
    if not found:
        return []
    hue, panels, drawn, note = depth_figure_axes(summary, facets, scale)
    fig = plots.depth_curves(
        drawn, threshold=threshold, hue=hue, facet=panels, note=f"; {note}" if note else ""
    )
    plots.save(fig, figures, "depth_growth")
    header, rows = growth_table(summary, facets, scale)
    caption = (
        f"r against depth (log scale), one line per {', '.join(label(c) for c in hue) or 'series'}"
        ": the mean over the replicates, the band spanning them; dashed: theory's predicted r, "
        f"marked in its line's colour. Grey: the stable band |r| < {fmt(threshold)}."
    )
    table = ("table", header, rows)
    return [
        ("h2", "Growth with depth"),
        ("p", criterion_text()),
        ("ul", [f.text for f in found]),
        ("figure", "figures/depth_growth", "r against depth"),
        ("p", f"{caption} Only {note}." if note else caption),
        table
        if len(rows) <= MAX_TABLE_ROWS
        else ("details", f"{len(rows)} series and their laws: show the table", [table]),
    ]


def depth_figure_axes(
    summary: pd.DataFrame, facets: list[str], scale: str | None
) -> tuple[list[str], list[str], pd.DataFrame, str]:
    """(hue, panel columns, the configs to draw, a note) of the depth figure.

    Lines compare network placements (no norm, pre-, post-norm; a branch scale) where the run varies
    one, else the weight scale, else the last facet; panels are the other facets and the scale.
    Beyond `plots.MAX_PANELS` panels the scale's values are thinned, and the note says which
    remain (the table lists every series).
    """
    hue = placement(facets) or ([scale] if scale else facets[-1:])
    panels = [c for c in [*facets, *([scale] if scale else [])] if c not in hue]
    drawn, note = summary, ""
    if scale in panels and plots.panel_count(summary, panels) > plots.MAX_PANELS:
        others = [c for c in panels if c != scale]
        room = max(1, plots.MAX_PANELS // max(plots.panel_count(summary, others), 1))
        values = plots.thin(np.sort(summary[scale].unique()), room)
        drawn = summary[summary[scale].isin(values)]
        shown = ", ".join(fmt(v) for v in values.tolist())
        note = f"{label(scale)} = {shown} drawn (the table has every value)"
    return hue, panels, drawn, note


def _prediction_blocks(summary, facets, scale, threshold) -> list[tuple]:
    found = [
        *prediction_findings(summary, facets, scale),
        *pascanu_findings(summary, facets, scale, threshold),
    ]
    if not found:
        return []
    text = (
        "Theory's finite-depth r (predicted_log10_delta_ratio) against the measured one, cell by "
        "cell (replicates averaged). A cell agrees when |r − r_pred| ≤ (L − 1)/2 · log10(1 + "
        f"{fmt(TOLERANCE)}), the r that a per-layer factor off by ±{fmt(100 * TOLERANCE)}% makes "
        "over L − 1 layers (the tolerance of the χ₁ comparison)."
    )
    if summary["depth"].nunique() < MIN_DEPTHS:
        text += " The run has fewer than 3 depths, so no growth law is fitted."
    return [("h2", "Measured r against theory"), ("p", text), ("ul", [f.text for f in found])]
