"""Measurement against mean-field theory, cell by cell (pure pandas; no JAX).

The measured per-layer factor of squared backward signals, 10^(2 x delta_growth), is compared with
chi_1 = sigma_w^2 E[phi'(z)^2] at the fixed point q*. Theory describes infinitely wide networks whose
forward signal already sits at q*, so a cell can disagree for reasons the data itself shows; each
disagreeing cell is given the reasons that apply to it.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

TOLERANCE = 0.05  # relative, on the per-layer factor
BOUNDED = ("tanh", "sigmoid", "erf", "hard_tanh", "softsign", "relu6")
CELL = ["activation", "init", "width", "sigma_w2", "sigma_b2", "depth"]

REASONS = {
    "short": "depth < 16: the fit includes the forward transient toward q*",
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
    frame = summary.assign(measured=10 ** (2 * summary["delta_growth"]))
    if "q_star" not in frame:
        frame["q_star"] = np.nan
    keys = [c for c in CELL if c in frame]
    grouped = frame.groupby(keys, sort=True, dropna=False)
    out = grouped.agg(
        measured=("measured", "mean"),
        chi1=("chi1", "first"),
        q_star=("q_star", "first"),
        replicates=("measured", "size"),
        unmeasured=("measured", lambda m: bool(m.isna().any())),
    ).reset_index()
    out["ratio"] = out["measured"] / out["chi1"]
    out["agrees"] = (out["ratio"] - 1).abs() <= TOLERANCE
    out["reasons"] = [", ".join(_reasons(row)) for row in out.to_dict("records")]
    return out


def _reasons(row: dict) -> list[str]:
    found = []
    if row.get("depth", 99) < 16:
        found.append("short")
    if row["q_star"] == 0:
        found.append("collapsing")
    if np.isinf(row["q_star"]) and row.get("activation") not in ("relu", "leaky_relu", "linear"):
        found.append("unbounded")
    if row.get("activation") in BOUNDED and row["q_star"] > 50:
        found.append("saturated")
    if row.get("width", 1024) < 128:
        found.append("narrow")
    if row["unmeasured"]:
        found.append("unmeasured")
    return found


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
