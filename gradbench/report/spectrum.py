"""What a report says about the input-output Jacobian's spectrum (runs with `[run] jacobian = true`).

Gaussian and orthogonal weights give the same gradient norms, since the mean squared singular value of
J = dh_L/dx is prod_l chi_l either way; what differs is the spread (variance / mean^2) of the squared
singular values, which free probability predicts layer by layer. These findings state, on the edge of
chaos (chi_1 = 1, where the mean neither vanishes nor explodes), how wide the spectrum is at the
largest depth, against that prediction, and which networks stop widening it with depth (dynamical
isometry).
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from gradbench.analysis.facets import group_by_facets
from gradbench.notation import fmt
from gradbench.report.findings import Finding, at_largest_depth, facet_name

MEASURED, PREDICTED = "jacobian_sv2_spread", "predicted_jacobian_sv2_spread"
# Isometric: less spread than this per layer, on average and between the two largest depths (the
# spectrum stays narrow and has stopped widening; finite width alone caps a wide one too).
ISOMETRIC = 0.05
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
    growth = _growth_at_depth(edge, facets)
    average = growth["spread"] / growth["depth"]
    kept = growth[(growth["per_layer"] < ISOMETRIC) & (average < ISOMETRIC)]
    numbers = {
        "cases": len(growth),
        "isometric": len(kept),
        "largest_per_layer": float(growth["per_layer"].max()),
    }
    names = [
        f"{facet_name(summary, facets, tuple(r[c] for c in facets))} at q* = "
        f"{fmt(float(r['q_star']))} (spread {fmt(r['spread'])} at depth {int(r['depth'])})"
        for r in kept.to_dict("records")
    ]
    text = (
        f"Dynamical isometry: on the edge of chaos the spectrum stays narrow (less than "
        f"{fmt(ISOMETRIC)} of spread per layer, on average and between the two largest depths) in "
        f"{numbers['isometric']} of {numbers['cases']} cases"
        + (f": {'; '.join(names)}" if names else "")
        + f"; elsewhere up to {fmt(numbers['largest_per_layer'])} a layer."
    )
    found.append(Finding(text, numbers, kind="spectrum"))
    return found


def _growth_at_depth(edge: pd.DataFrame, facets: list[str]) -> pd.DataFrame:
    """Per facet and q*: the spread added per layer between the two largest measured depths (free
    probability: mu_2/mu_1^2 - 1 - s_1 at q*), and the spread at the largest."""
    means = group_by_facets(edge, [*facets, "q_star", "depth"])[MEASURED].mean().reset_index()
    rows = []
    for key, part in group_by_facets(means, [*facets, "q_star"]):
        part = part.sort_values("depth")
        if len(part) < 2:
            continue
        (d0, s0), (d1, s1) = part[["depth", MEASURED]].to_numpy()[-2:]
        rows.append(
            {**dict(zip([*facets, "q_star"], key, strict=True)),
             "per_layer": (s1 - s0) / (d1 - d0), "spread": s1, "depth": d1}
        )  # fmt: skip
    return pd.DataFrame(rows)
