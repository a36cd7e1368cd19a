"""Measurement against mean-field theory, cell by cell (pure pandas; no JAX).

The measured per-layer factor of squared backward signals, 10^(2 x delta_growth), is compared with
chi_1 = sigma_w^2 E[phi'(z)^2] at the fixed point q*. Theory describes infinitely wide networks whose
forward signal already sits at q*, so a cell can disagree for reasons the data itself shows; each
disagreeing cell is given the reasons that apply to it. One of them is computed by the theory itself:
where the summary's finite-depth prediction of r (the orbit q_l from the input) and its fixed-point
one differ by more than the tolerance's worth, q_l stays far from q* over much of the network.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from gradbench import registry

TOLERANCE = 0.05  # relative, on the per-layer factor
CELL = ["activation", "init", "width", "sigma_w2", "sigma_b2", "depth"]
# The summary's predictions of r at finite depth and at the fixed point (`gradbench.theory`).
_PREDICTIONS = ("predicted_log10_delta_ratio", "fixed_point_log10_delta_ratio")

REASONS = {
    "short": "depth < 16: the fit includes the forward transient toward q*",
    "transient": "q_l far from q*: the finite-depth mean field of the orbit q_l from the input "
    f"predicts an r more than {TOLERANCE:.0%} a layer away from the fixed point's",
    "collapsing": "q* = 0: the forward signal decays toward 0 slowly (a power law, not at rate chi_1)",
    "unbounded": "no finite q*: the forward signal grows without bound",
    "narrow": "width < 128: finite-width corrections of order 1/width",
    "saturated": "saturated units (q* > 50 for a bounded activation): few units per layer pass gradient, "
    "so the per-layer factor fluctuates and the fitted growth (a geometric mean) falls below chi_1 "
    "(an arithmetic mean)",
    "unmeasured": "NaN, Inf or underflow in a replicate",
}


def cells(summary: pd.DataFrame) -> pd.DataFrame:
    """Replicate means of the measured factor and theory's chi_1, one row per cell (needs chi1)."""
    measured = 10 ** (2 * summary["delta_growth"])
    frame = summary.assign(measured=measured, missing=measured.isna())
    for column in ("q_star", *_PREDICTIONS):
        if column not in frame:
            frame[column] = np.nan
    keys = [c for c in CELL if c in frame]
    grouped = frame.groupby(keys, sort=True, dropna=False)
    out = grouped.agg(
        measured=("measured", "mean"),
        chi1=("chi1", "first"),
        q_star=("q_star", "first"),
        **{c: (c, "first") for c in _PREDICTIONS},
        replicates=("measured", "size"),
        unmeasured=("missing", "any"),
    ).reset_index()
    out["ratio"] = out["measured"] / out["chi1"]
    out["agrees"] = (out["ratio"] - 1).abs() <= TOLERANCE
    out["reasons"] = _reasons(out)
    return out


def _reasons(table: pd.DataFrame) -> pd.Series:
    """The keys of REASONS that apply to each cell, comma-separated (always in the same order)."""

    def column(name: str, default) -> pd.Series:
        return table[name] if name in table else pd.Series(default, index=table.index)

    activation, q_star = column("activation", ""), table["q_star"].astype(float)
    finite_depth, fixed_point = (table[c].astype(float) for c in _PREDICTIONS)
    # The tolerance's worth of r: a per-layer factor off by TOLERANCE, over the L - 1 layers of r.
    worth = (column("depth", 99) - 1) / 2 * np.log10(1 + TOLERANCE)
    applies = {
        "short": column("depth", 99) < 16,
        "transient": (finite_depth - fixed_point).abs() > worth,
        "collapsing": q_star == 0,
        "unbounded": np.isinf(q_star) & ~activation.isin(_names_where("homogeneous")),
        "saturated": activation.isin(_names_where("bounded")) & (q_star > 50),
        "narrow": column("width", 1024) < 128,
        "unmeasured": table["unmeasured"].astype(bool),
    }
    reasons = pd.Series("", index=table.index, dtype=object)
    for key, mask in applies.items():
        reasons = reasons.where(~mask, reasons + ", " + key)
    return reasons.str.removeprefix(", ")


def score(table: pd.DataFrame) -> dict:
    """Share of cells within TOLERANCE and the median |log10(measured / chi_1)| over measured cells."""
    measured = table.dropna(subset=["ratio"])
    return {
        "cells": int(len(measured)),
        "agreeing": int(measured["agrees"].sum()),
        "share": float(measured["agrees"].mean()) if len(measured) else float("nan"),
        "median_abs_log10_ratio": float(np.log10(measured["ratio"]).abs().median()),
        "tolerance": TOLERANCE,
    }


def _names_where(fact: str) -> list[str]:
    """The registered activations with `fact` (an `Activation` attribute) true."""
    return [name for name, a in registry.ACTIVATIONS.items() if getattr(a, fact)]
