"""Per-config summary and regime from the per-layer table (pure pandas and numpy).

r = log10(||delta_1|| / ||delta_L||): vanishing if r < -t, exploding if r > t, stable otherwise,
nonfinite if a NaN/Inf appeared. Growth rates are least-squares slopes of a log10 statistic against the
distance from the output, L - l, so they are positive when the gradient grows on its way to the input.

A backward signal lost to underflow (`gradbench.schema.lost_below`: its largest entry was below
tiny / eps, about 1e-31 in float32; plain mode, or an exact zero in log mode) has no value, so r has
none either. The same definition bounds it: a lost (batch, width) signal has a norm below
sqrt(batch x width) x tiny / eps. A config whose first-layer signal was lost while its last layer was
measured is vanishing when that bound puts r below -t. Any other config without an r is unmeasured:
the arithmetic lost the signal and nothing proves a regime (plain mode loses ReLU nets whose forward
pass underflowed to zero: every slope phi'(0) = 0, so every gradient reads zero). Unmeasured is never
nonfinite, which means a NaN or Inf appeared; `measure = "log"` measures such configs.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from gradbench.schema import Regime, layer_rows, lost_below


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
    """One row per config: every config column plus ratios, growth rates, flags and regime.

    r and the growth rates are read from the layer, block or step rows (`schema.layer_rows`); the
    flags from every row, a residual branch's dense layers included."""
    every = layers
    ordered = layer_rows(layers).sort_values(["config_id", "layer"], kind="stable")
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
    # The RNN's shared W: its sum over the steps from the first one up is the whole gradient.
    stats["log10_grad_w_total"] = (
        first["log10_grad_w_sum"] if "log10_grad_w_sum" in first else np.nan
    )
    stats["log10_q_last"] = last["log10_q"]
    by_config = every["config_id"]
    stats["nonfinite"] = every["flag"].eq("nonfinite").groupby(by_config, sort=False).any()
    lost = every["flag"].isin(["underflow", "zero"])
    stats["underflow"] = lost.groupby(by_config, sort=False).any()

    summary = configs.merge(
        stats, left_on="config_id", right_index=True, how="left", validate="1:1"
    )
    summary["threshold"] = float(threshold)
    summary["regime"] = classify(summary, threshold)
    return summary


def lost_signal_bound(summary: pd.DataFrame) -> pd.Series:
    """log10 of the largest norm a backward signal lost to underflow can have, per config.

    A lost (batch, width) signal has every entry below `lost_below(dtype)`, so its norm is below
    sqrt(batch x width) x lost_below(dtype).
    """
    threshold = {d: lost_below(d) for d in summary["dtype"].unique()}
    size = summary["batch"].astype(float) * summary["width"].astype(float)
    return np.log10(summary["dtype"].map(threshold).astype(float)) + 0.5 * np.log10(size)


def classify(summary: pd.DataFrame, threshold: float) -> pd.Series:
    """The regime of each config (the rule and the treatment of lost signals: the module docstring).

    Args:
        summary: one row per config with `log10_delta_ratio`, `log10_delta_first`,
            `log10_delta_last`, `nonfinite`, `dtype`, `batch` and `width`.
        threshold: t, in log10.

    Returns:
        A `Regime` value per config.
    """
    r = summary["log10_delta_ratio"]
    regime = np.select(
        [r < -threshold, r > threshold, r.notna()],
        [Regime.VANISHING.value, Regime.EXPLODING.value, Regime.STABLE.value],
        Regime.UNMEASURED.value,
    )
    # r < (largest lost norm) - log10 ||delta_L||; NaN (no verdict) when delta_L was lost too.
    r_below = lost_signal_bound(summary) - summary["log10_delta_last"]
    first_lost = r.isna() & summary["log10_delta_first"].isna()
    regime = np.where(first_lost & (r_below < -threshold), Regime.VANISHING.value, regime)
    regime = np.where(summary["nonfinite"].astype(bool), Regime.NONFINITE.value, regime)
    return pd.Series(regime, index=summary.index, dtype=object)
