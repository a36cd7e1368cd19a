"""What a report says about theory's r for residual and recurrent networks: measured r against the
finite-depth prediction, and, for RNNs, Pascanu, Mikolov & Bengio's bound.

`predicted_log10_delta_ratio` predicts r itself, whatever the architecture (`gradbench.theory`), so
it is compared cell by cell (a facet, scale value and depth; replicates averaged), per network
placement (`architectures.PLACEMENT`). A cell agrees when |r - r_pred| is at most the r that a
per-layer factor off by `agreement.TOLERANCE` makes over its L - 1 layers, (L - 1)/2 log10(1 + 5%):
the rule of the MLP's chi_1 comparison, read on r. `pascanu_log10_bound` is a bound on every draw,
so it is checked config by config. `chi1_cells` is that comparison split by architecture, so that
cells of different networks are never averaged together. Pure pandas.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from gradbench.analysis import agreement
from gradbench.analysis.crossings import grid_runs
from gradbench.analysis.facets import facet_parts, group_by_facets
from gradbench.analysis.settings import ARCHITECTURE_SETTINGS
from gradbench.notation import fmt, symbol
from gradbench.report.architectures import placement, placement_name
from gradbench.report.findings import Finding, facet_name, span_text

PREDICTED, BOUND = "predicted_log10_delta_ratio", "pascanu_log10_bound"
# r and the bound are both log10 norms of float32 arithmetic at best: an r this far above its bound
# is rounding, not a violation (orthogonal linear RNNs sit exactly on the bound).
ROUNDING = 1e-3


def tolerance(depth) -> np.ndarray:
    """The largest |r - r_pred| that counts as agreement at these depths (module docstring)."""
    return (np.asarray(depth, dtype=float) - 1) / 2 * np.log10(1 + agreement.TOLERANCE)


def prediction_cells(summary: pd.DataFrame, keys: list[str]) -> pd.DataFrame:
    """Per value of `keys` (the facets, the scale and depth): the mean finite r over the
    replicates, the prediction, |r - r_pred|, and whether that is within `tolerance`."""
    r = summary["log10_delta_ratio"].where(np.isfinite(summary["log10_delta_ratio"]))
    grouped = group_by_facets(summary.assign(_r=r), keys)
    cells = pd.DataFrame({"measured": grouped["_r"].mean(), "predicted": grouped[PREDICTED].mean()})
    cells = cells.reset_index()
    cells["off"] = (cells["measured"] - cells["predicted"]).abs()
    cells["agrees"] = cells["off"] <= tolerance(cells["depth"])
    return cells


def prediction_findings(
    summary: pd.DataFrame, facets: list[str], scale: str | None
) -> list[Finding]:
    """Per network placement (the whole run where it varies none): median |r - r_pred|, the share
    of cells within tolerance and the cell furthest off. Empty without predictions."""
    if PREDICTED not in summary or summary[PREDICTED].isna().all():
        return []
    keys = [*facets, *([scale] if scale else []), "depth"]
    cells = prediction_cells(summary, keys)
    groups = placement(facets)
    out = []
    for key, part in facet_parts(cells, groups):
        compared = part.dropna(subset=["off"])
        name = placement_name(summary, groups, key)
        missing = len(part) - len(compared)
        numbers = {"cells": len(compared), "without": missing}
        if compared.empty:
            text = f"{name}: no cell has both a measured r and a prediction."
            out.append(Finding(text, numbers, dict(zip(groups, key, strict=True)), "prediction"))
            continue
        worst = compared.loc[compared["off"].idxmax()]
        where = [c for c in keys if c != "depth" and c not in groups]
        worst_name = facet_name(summary, where, tuple(worst[c] for c in where))
        numbers |= {
            "median_off": float(compared["off"].median()),
            "agreeing": int(compared["agrees"].sum()),
            "share": float(compared["agrees"].mean()),
            "worst_measured": float(worst["measured"]),
            "worst_predicted": float(worst["predicted"]),
            "worst_depth": int(worst["depth"]),
        }
        text = (
            f"{name}: measured r against theory's predicted r in {len(compared)} cells: median "
            f"|r − r_pred| = {fmt(numbers['median_off'])}; {numbers['agreeing']} of "
            f"{len(compared)} ({fmt(100 * numbers['share'])}%) within tolerance; furthest off: "
            f"{worst_name}, depth {numbers['worst_depth']} (r = {fmt(numbers['worst_measured'])}, "
            f"predicted {fmt(numbers['worst_predicted'])})"
        )
        if missing:
            text += f"; {missing} cells without a measured r or a prediction"
        out.append(Finding(text + ".", numbers, dict(zip(groups, key, strict=True)), "prediction"))
    return out


def pascanu_findings(
    summary: pd.DataFrame, facets: list[str], scale: str | None, threshold: float
) -> list[Finding]:
    """RNN configs against the Pascanu bound r <= (T - 1) log10(gamma s_max(W)): how many satisfy
    it (all must; violations named), how far below it the median config lies, and where the bound
    alone proves vanishing (bound < -t). Empty without the bound's column or RNN configs."""
    if BOUND not in summary or "architecture" not in summary:
        return []
    rnn = summary[(summary["architecture"] == "rnn") & np.isfinite(summary[BOUND])]
    if rnn.empty:
        return []
    r = rnn["log10_delta_ratio"]
    measured = rnn[np.isfinite(r)]
    margin = measured[BOUND] - measured["log10_delta_ratio"]
    violations = measured[margin < -ROUNDING]
    tight = measured[margin.abs() <= ROUNDING]
    numbers = {
        "configs": len(measured),
        "satisfied": len(measured) - len(violations),
        "median_margin": float(margin.median()) if len(margin) else np.nan,
        "tight": len(tight),
        "without_r": len(rnn) - len(measured),
    }
    text = (
        f"Pascanu bound r ≤ (T − 1) log10(γ s_max(W)): {numbers['satisfied']} of "
        f"{numbers['configs']} rnn configs with a finite r satisfy it, to within {fmt(ROUNDING)} "
        f"(a bound: every one must); the median config lies {fmt(numbers['median_margin'])} "
        "below it"
    )
    keys = [*facets, *([scale] if scale else [])]
    if len(tight):
        names = sorted(
            {facet_name(summary, facets, tuple(r[c] for c in facets)) for _, r in tight.iterrows()}
        )
        text += f"; {len(tight)} sit on it (within {fmt(ROUNDING)}): {', '.join(names)}"
    if len(violations):
        names = [_config_name(summary, keys, row) for _, row in violations.head(5).iterrows()]
        text += f"; violated by {'; '.join(names)}"
        text += "" if len(violations) <= 5 else f" and {len(violations) - 5} more"
    if numbers["without_r"]:
        text += f"; {numbers['without_r']} configs without a finite r are not compared"
    found = [Finding(text + ".", numbers, kind="pascanu")]
    found.append(_proved_vanishing(summary, rnn, facets, scale, float(threshold)))
    return found


def _config_name(summary, keys, row) -> str:
    name = facet_name(summary, keys, tuple(row[c] for c in keys))
    return (
        f"{name}, T = {int(row['depth'])} (r = {fmt(float(row['log10_delta_ratio']))}, bound "
        f"{fmt(float(row[BOUND]))})"
    )


def _proved_vanishing(summary, rnn, facets, scale, t: float) -> Finding:
    """Where the bound alone proves vanishing (bound < -t), per facet, and what was measured
    there."""
    proved = rnn[rnn[BOUND] < -t]
    vanishing = rnn["regime"] == "vanishing"
    numbers = {
        "proved": len(proved),
        "configs": len(rnn),
        "proved_vanishing": int((proved["regime"] == "vanishing").sum()),
        "vanishing": int(vanishing.sum()),
        "threshold": t,
    }
    if proved.empty:
        text = (
            f"The Pascanu bound alone proves vanishing (bound < −{fmt(t)}) in none of the "
            f"{len(rnn)} rnn configs"
        )
        return Finding(text + ".", numbers, kind="pascanu_vanishing")
    where = []
    for key, part in facet_parts(rnn, facets):
        chosen = part[part[BOUND] < -t]
        if chosen.empty:
            continue
        name = facet_name(summary, facets, key) if facets else "rnn"
        depth = f"T ≥ {int(chosen['depth'].min())}"
        if scale:
            grid = np.sort(part[scale].unique().astype(float))
            runs = grid_runs(grid, np.isin(grid, chosen[scale].unique().astype(float)))
            where.append(f"{name} at {span_text(symbol(scale), runs)} ({depth})")
        else:
            where.append(f"{name} ({depth})")
    text = (
        f"The Pascanu bound alone proves vanishing (bound < −{fmt(t)}) in {len(proved)} of "
        f"{len(rnn)} rnn configs: {'; '.join(where)}; {numbers['proved_vanishing']} of them were "
        f"measured vanishing (the bound requires all). Of the {numbers['vanishing']} configs "
        f"measured vanishing, the bound proves {numbers['proved_vanishing']}"
    )
    return Finding(text + ".", numbers, kind="pascanu_vanishing")


def chi1_cells(summary: pd.DataFrame) -> pd.DataFrame:
    """`agreement.cells` (measured per-layer factor against chi_1) per architecture and setting
    that varies, those columns added: cells of different networks are never averaged together.
    A run of one network family gets exactly `agreement.cells(summary)`."""
    settings = [c for c in ARCHITECTURE_SETTINGS if c in summary and summary[c].nunique() > 1]
    if not settings:
        return agreement.cells(summary)
    parts = [
        agreement.cells(part).assign(**dict(zip(settings, key, strict=True)))
        for key, part in facet_parts(summary, settings)
    ]
    table = pd.concat(parts, ignore_index=True)
    return table[[*settings, *(c for c in table.columns if c not in settings)]]
