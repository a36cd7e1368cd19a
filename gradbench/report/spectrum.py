"""What a report says about the input-output Jacobian's spectrum (runs with `[run] jacobian = true`).

Gaussian and orthogonal weights give the same gradient norms, since the mean squared singular value of
J = dh_L/dx is prod_l chi_l either way; what differs is the spread (variance / mean^2) of the squared
singular values, which free probability predicts layer by layer. These findings state, on the edge of
chaos (chi_1 = 1, where the mean neither vanishes nor explodes), how wide the spectrum is at the
largest depth, against that prediction, and which networks keep it narrow (dynamical isometry).
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from gradbench.analysis.facets import group_by_facets
from gradbench.notation import fmt
from gradbench.report.findings import Finding, at_largest_depth, facet_name

MEASURED, PREDICTED = "jacobian_sv2_spread", "predicted_jacobian_sv2_spread"
NARROW = 1.0  # a spread below 1: the squared singular values vary by less than their mean
ON_EDGE = 1e-3  # |chi_1 - 1| below this counts as the edge of chaos


def on_edge(summary: pd.DataFrame) -> pd.DataFrame:
    """The configs on the edge of chaos whose spectrum was measured."""
    measured = summary[MEASURED].notna() if MEASURED in summary else summary["depth"] < 0
    return summary[measured & ((summary["chi1"] - 1).abs() < ON_EDGE)]


def spectrum_findings(summary: pd.DataFrame) -> list[Finding]:
    """Per activation and init on the edge of chaos: the spread at the largest depth, measured and
    predicted, per fixed point q*; then which of them stay narrow. None without measured spectra."""
    edge = on_edge(summary) if "chi1" in summary else summary.iloc[:0]
    if edge.empty:
        return []
    facets = [c for c in ("activation", "init") if c in edge]
    deep = at_largest_depth(edge, facets)
    cells = group_by_facets(deep, [*facets, "q_star"])
    cells = pd.DataFrame(
        {
            "measured": cells[MEASURED].mean(),
            "predicted": cells[PREDICTED].mean() if PREDICTED in deep else np.nan,
            "depth": cells["depth"].max(),
        }
    ).reset_index()
    found = []
    narrow = []
    for key, part in group_by_facets(cells, facets):
        key = key if isinstance(key, tuple) else (key,)
        depth = int(part["depth"].max())
        points = "; ".join(
            f"q* = {fmt(float(r.q_star))}: {fmt(r.measured)} (free probability {fmt(r.predicted)})"
            for r in part.itertuples()
        )
        name = facet_name(summary, facets, key)
        numbers = {
            "depth": depth,
            **{f"spread_q{i}": float(r.measured) for i, r in enumerate(part.itertuples())},
            **{f"predicted_q{i}": float(r.predicted) for i, r in enumerate(part.itertuples())},
        }
        text = (
            f"{name}, on the edge of chaos at depth {depth}: the spread of J's squared singular "
            f"values (variance / mean²) is {points}."
        )
        found.append(Finding(text, numbers, dict(zip(facets, key, strict=True)), "spectrum"))
        if (part["measured"] < NARROW).any():
            narrow.append(f"{name} ({int((part['measured'] < NARROW).sum())} of {len(part)} q*)")
    total = len(cells)
    count = int((cells["measured"] < NARROW).sum())
    text = (
        f"Dynamical isometry: the spectrum stays narrow (spread < {fmt(NARROW)}) at the largest "
        f"depth in {count} of {total} edge-of-chaos cells"
        + (f": {', '.join(narrow)}." if narrow else ".")
    )
    found.append(Finding(text, {"narrow": count, "cells": total}, kind="spectrum"))
    return found
