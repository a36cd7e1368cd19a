"""What a report says about replicates: how far independent draws of one config land from each other.

Mean-field theory describes the infinitely wide network; at finite width every draw of weights,
inputs and probe is a different network, and near the threshold the draws of one config can fall in
different regimes. These findings say how often that happens, how wide the spread of r is, and,
where the exact finite-width law applies (ReLU, Gaussian weights, sigma_b^2 = 0, batch 1: the
summary's `predicted_log10_delta_ratio_sd`), how the measured spread compares with it.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from gradbench.analysis.facets import group_by_facets
from gradbench.analysis.settings import fixed_by_architecture
from gradbench.notation import fmt
from gradbench.report.findings import Finding, facet_name
from gradbench.schema import SEVERITY, config_axes

PREDICTED_SD = "predicted_log10_delta_ratio_sd"


def replicate_findings(summary: pd.DataFrame) -> list[Finding]:
    """Findings about the spread of r over replicates; none for a run with one replicate per config."""
    if "replicate" not in summary or summary["replicate"].nunique() < 2:
        return []
    keys = _cell_axes(summary)
    grouped = group_by_facets(summary, keys)
    cells = pd.DataFrame(
        {
            "replicates": grouped.size(),
            "regimes": grouped["regime"].nunique(),
            "spread": grouped["log10_delta_ratio"].max() - grouped["log10_delta_ratio"].min(),
            "sd": grouped["log10_delta_ratio"].std(ddof=1),
        }
    )
    cells = cells[cells["replicates"] > 1]
    if cells.empty:
        return []
    found = [_spread(cells, summary, keys), _disagreement(cells, summary, keys, grouped)]
    if PREDICTED_SD in summary and summary[PREDICTED_SD].notna().any():
        found.append(_against_law(cells, grouped))
    return [f for f in found if f is not None]


def _spread(cells: pd.DataFrame, summary: pd.DataFrame, keys: list[str]) -> Finding:
    spread = cells["spread"].dropna()
    widest = spread.idxmax() if len(spread) else None
    numbers = {
        "cells": len(cells),
        "median_spread": float(spread.median()) if len(spread) else np.nan,
        "largest_spread": float(spread.max()) if len(spread) else np.nan,
    }
    text = (
        f"Replicates: across {numbers['cells']} cells of several replicates, r spans a median "
        f"{fmt(numbers['median_spread'])} from its smallest to its largest replicate"
    )
    if widest is not None:
        key = widest if isinstance(widest, tuple) else (widest,)
        text += f", at most {fmt(numbers['largest_spread'])} ({facet_name(summary, keys, key)})"
    return Finding(text + ".", numbers, kind="replicates")


def _disagreement(cells, summary, keys, grouped) -> Finding:
    split = cells[cells["regimes"] > 1]
    numbers = {"cells": len(cells), "disagreeing": len(split), "share": len(split) / len(cells)}
    if split.empty:
        text = f"The replicates of every one of the {len(cells)} cells agree on the regime."
        return Finding(text, numbers, kind="replicates")
    counts = grouped["regime"].value_counts().unstack(fill_value=0).loc[split.index]
    # The example: the most evenly split cell (the smallest gap between its commonest and rarest
    # regime), the first of those in table order.
    gap = counts.max(axis=1) - counts.where(counts > 0).min(axis=1)
    example = gap.idxmin()
    shown = counts.loc[example]
    order = [r for r in SEVERITY if shown.get(r, 0) > 0]
    key = example if isinstance(example, tuple) else (example,)
    parts = ", ".join(f"{int(shown[r])} {r}" for r in order)
    text = (
        f"Replicates disagree on the regime in {numbers['disagreeing']} of {numbers['cells']} "
        f"cells ({fmt(100 * numbers['share'])}%): finite width makes each draw a different "
        f"network, so a cell near the threshold can fall either way; e.g. "
        f"{facet_name(summary, keys, key)}: {parts}."
    )
    return Finding(text, numbers, kind="replicates")


def _against_law(cells: pd.DataFrame, grouped) -> Finding:
    predicted = grouped[PREDICTED_SD].mean().loc[cells.index]
    both = pd.DataFrame({"measured": cells["sd"], "predicted": predicted}).dropna()
    both = both[both["predicted"] > 0]
    ratio = both["measured"] / both["predicted"]
    numbers = {
        "cells": len(both),
        "median_ratio": float(ratio.median()) if len(ratio) else np.nan,
        "replicates": int(cells.loc[both.index, "replicates"].median()) if len(both) else 0,
    }
    text = (
        f"Where the exact finite-width law applies (ReLU, Gaussian weights, σ_b² = 0, batch 1; "
        f"{numbers['cells']} cells), the replicates' standard deviation of r is a median "
        f"{fmt(numbers['median_ratio'])} times the predicted one (a median of "
        f"{numbers['replicates']} replicates per cell)."
    )
    return Finding(text, numbers, kind="replicates")


def _cell_axes(summary: pd.DataFrame) -> list[str]:
    """The swept axes that tell cells apart, each once: sigma_w and sigma_b go with their squares,
    the init family with the init that names it, a setting that the architecture decides with it."""
    twins = {"sigma_w", "sigma_b", "init_family"}
    axes = [c for c in config_axes(summary.columns) if c not in twins and summary[c].nunique() > 1]
    fixed = fixed_by_architecture(summary, axes)
    return [c for c in axes if c not in fixed]
