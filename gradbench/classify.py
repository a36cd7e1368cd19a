"""Per-config summary and regime from the per-layer table (pure pandas; no JAX).

r = log10(||delta_1|| / ||delta_L||): vanishing if r < -t, exploding if r > t, stable otherwise,
nonfinite if a NaN/Inf appeared. Growth rates are least-squares slopes of a log10 statistic against the
distance from the output, L - l, so they are positive when the gradient grows on its way to the input.
"""

from __future__ import annotations

from enum import StrEnum

import numpy as np
import pandas as pd


class Regime(StrEnum):
    VANISHING = "vanishing"
    STABLE = "stable"
    EXPLODING = "exploding"
    NONFINITE = "nonfinite"


REGIMES = [r.value for r in Regime]
# Smallest positive normal number per dtype: a plain-arithmetic backward signal below it is lost.
_TINY = {"float32": float(np.finfo(np.float32).tiny), "float64": float(np.finfo(np.float64).tiny)}


def growth_rates(layers: pd.DataFrame, column: str) -> pd.Series:
    """Least-squares slope of `column` against L - l per config (NaN if a value is missing or L = 1)."""
    frame = layers[["config_id", "layer", column]].copy()
    frame["distance"] = -frame["layer"].astype(float)  # L - l up to a per-config constant
    grouped = frame.groupby("config_id", sort=False)
    centred_x = frame["distance"] - grouped["distance"].transform("mean")
    centred_y = frame[column] - grouped[column].transform("mean")
    sxy = (centred_x * centred_y).groupby(frame["config_id"], sort=False).sum(min_count=1)
    sxx = (centred_x**2).groupby(frame["config_id"], sort=False).sum()
    has_nan = frame[column].isna().groupby(frame["config_id"], sort=False).any()
    slope = sxy / sxx.where(sxx > 0)
    return slope.where(~has_nan)


def summarise(configs: pd.DataFrame, layers: pd.DataFrame, threshold: float) -> pd.DataFrame:
    """One row per config: every config column plus ratios, growth rates, flags and regime."""
    ordered = layers.sort_values(["config_id", "layer"], kind="stable")
    # The first and last *layers* are wanted, NaN included (groupby.first() would skip NaN).
    first = ordered.drop_duplicates("config_id", keep="first").set_index("config_id")
    last = ordered.drop_duplicates("config_id", keep="last").set_index("config_id")

    stats = pd.DataFrame(index=first.index)
    for name in ("delta", "grad_w", "grad_b"):
        column = f"log10_{name}"
        stats[f"{column}_ratio"] = first[column] - last[column]
    stats["delta_growth"] = growth_rates(ordered, "log10_delta")
    stats["grad_w_growth"] = growth_rates(ordered, "log10_grad_w")
    stats["log10_delta_first"] = first["log10_delta"]
    stats["log10_delta_last"] = last["log10_delta"]
    stats["log10_grad_w_first"] = first["log10_grad_w"]
    stats["log10_grad_w_last"] = last["log10_grad_w"]
    stats["log10_q_last"] = last["log10_q"]
    by_config = ordered["config_id"]
    stats["nonfinite"] = ordered["flag"].eq("nonfinite").groupby(by_config, sort=False).any()
    lost = ordered["flag"].isin(["underflow", "zero"])
    stats["underflow"] = lost.groupby(by_config, sort=False).any()

    summary = configs.merge(
        stats, left_on="config_id", right_index=True, how="left", validate="1:1"
    )
    summary["threshold"] = float(threshold)
    summary["regime"] = classify(summary, threshold)
    return summary


def classify(summary: pd.DataFrame, threshold: float) -> pd.Series:
    """The regime of each config (see the module docstring).

    A config whose backward signal was lost to underflow (or is exactly zero) has no r; it is vanishing
    when even the largest value the lost signal could have had, sqrt(batch x width) x tiny, puts r below
    -t, and nonfinite (not measurable in that arithmetic) otherwise.
    """
    r = summary["log10_delta_ratio"]
    regime = np.select(
        [r < -threshold, r > threshold, r.notna()],
        [Regime.VANISHING.value, Regime.EXPLODING.value, Regime.STABLE.value],
        Regime.NONFINITE.value,
    )
    tiny = summary["dtype"].map(_TINY)
    bound = (
        np.log10(tiny * np.sqrt(summary["batch"] * summary["width"])) - summary["log10_delta_last"]
    )
    lost = summary["underflow"] & r.isna() & ~summary["nonfinite"]
    regime = np.where(lost & (bound < -threshold), Regime.VANISHING.value, regime)
    regime = np.where(summary["nonfinite"], Regime.NONFINITE.value, regime)
    return pd.Series(regime, index=summary.index, dtype=object)
