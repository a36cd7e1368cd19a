"""Which swept axes a run's figures put on x, on y and in facets, and which are drawn on a log scale.

Decided from the run's manifest and summary alone, before anything is drawn, so that every figure
of a report (and the report's tables of cells) uses the same axes.
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np
import pandas as pd

from gradbench.analysis.settings import fixed_by_architecture
from gradbench.schema import ID_COLUMNS, axis_scale, config_axes


def is_log_axis(manifest: Mapping, summary: pd.DataFrame, name: str | None) -> bool:
    """Whether to draw axis `name` on a log scale.

    Log when the sweep declared the axis "log" in the manifest (a logspace, or a list spanning a
    factor of 100), otherwise when `gradbench.schema.axis_scale` of the summary's values says so (a
    depth list such as 8, 16, 32, 64). A "linear" in the manifest only says the sweep did not ask
    for a log axis, so the values decide. Never log for an axis with a value <= 0 or no numbers.
    """
    if name is None or name not in summary:
        return False
    v = np.unique(pd.to_numeric(summary[name], errors="coerce").dropna().to_numpy(dtype=float))
    if v.size == 0 or np.any(v <= 0):
        return False
    if ((manifest.get("axes") or {}).get(name) or {}).get("scale") == "log":
        return True
    return axis_scale(v.tolist()) == "log"


def usable_log(values, log: bool) -> bool:
    """Whether a log scale was asked for and every one of `values` can sit on it (all > 0)."""
    return bool(log) and bool(np.all(np.asarray(values, dtype=float) > 0))


def infer_axes(
    summary: pd.DataFrame, manifest: Mapping | None = None
) -> tuple[str | None, str | None, list[str] | None]:
    """Choose (x, y, facet) for the diagrams from the swept axes.

    x prefers the weight scale (in the units the sweep used), y prefers depth, then the bias scale;
    every other axis with more than one value becomes a facet column (several are combined into one
    facet label), but for an architecture setting that the architecture decides. x or y is None
    when fewer numeric axes were swept.
    """
    declared = (manifest or {}).get("axes") or {}
    swept = [
        a
        for a, spec in declared.items()
        if a in summary and a not in ID_COLUMNS and len((spec or {}).get("values", [])) > 1
    ]
    if not swept:  # no manifest: what varies in the table, one of each sigma pair
        swept = [c for c in config_axes(summary.columns) if c != "init_family"]
        swept = [c for c in swept if summary[c].nunique(dropna=False) > 1]
        swept = [c for c in swept if not (c in ("sigma_w", "sigma_b") and f"{c}2" in swept)]
    fixed = fixed_by_architecture(summary, swept)  # branch_layers 0 for mlp, 1 for resmlp
    swept = [a for a in swept if a not in fixed]
    numeric = [a for a in swept if pd.api.types.is_numeric_dtype(summary[a])]
    x = next((a for a in ("sigma_w2", "sigma_w", "sigma_b2", "sigma_b") if a in numeric), None)
    x = x or (numeric[0] if numeric else None)
    rest = [a for a in numeric if a != x]
    order_y = ("depth", "sigma_b2", "sigma_b", "width")
    y = next((a for a in order_y if a in rest), rest[0] if rest else None)
    facet = [a for a in swept if a not in (x, y)]
    return x, y, facet or None
