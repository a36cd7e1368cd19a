"""Summaries and regimes from synthetic per-layer tables, against numpy recomputation."""

import numpy as np
import pandas as pd
import pytest

from gradbench.analysis.classify import summarise


def synthetic(slopes, depth=10, flags=None, batch=4, width=8, dtype="float32"):
    """Configs whose log10 delta falls on a line of the given slope per layer toward the input."""
    rng = np.random.default_rng(0)
    configs, layers = [], []
    for i, slope in enumerate(slopes):
        cid = f"c{i}"
        configs.append(
            {"config_id": cid, "depth": depth, "batch": batch, "width": width, "dtype": dtype}
        )
        for layer in range(1, depth + 1):
            noise = rng.normal(0, 0.01)
            layers.append(
                {
                    "config_id": cid,
                    "layer": layer,
                    "log10_delta": -3 + slope * (depth - layer) + noise,
                    "log10_grad_w": -2 + 0.5 * slope * (depth - layer),
                    "log10_grad_b": -3.5 + slope * (depth - layer),
                    "log10_q": 0.1 * layer,
                    "flag": "ok",
                }
            )
    layers = pd.DataFrame(layers)
    for (cid, layer), flag in (flags or {}).items():
        row = (layers["config_id"] == cid) & (layers["layer"] == layer)
        layers.loc[row, "flag"] = flag
        if flag != "ok":
            layers.loc[row, ["log10_delta", "log10_grad_w", "log10_grad_b"]] = np.nan
    return pd.DataFrame(configs), layers


def test_growth_and_ratios_match_numpy():
    configs, layers = synthetic([0.5, -0.3, 0.0, 0.05])
    summary = summarise(configs, layers, threshold=2.0).set_index("config_id")
    for cid, group in layers.groupby("config_id"):
        distance = 10 - group["layer"]
        slope = np.polyfit(distance, group["log10_delta"], 1)[0]
        assert summary.loc[cid, "delta_growth"] == pytest.approx(slope, abs=1e-12)
        slope_w = np.polyfit(distance, group["log10_grad_w"], 1)[0]
        assert summary.loc[cid, "grad_w_growth"] == pytest.approx(slope_w, abs=1e-12)
        first, last = group.iloc[0], group.iloc[-1]
        assert summary.loc[cid, "log10_delta_ratio"] == pytest.approx(
            first.log10_delta - last.log10_delta
        )
        assert summary.loc[cid, "log10_grad_b_ratio"] == pytest.approx(
            first.log10_grad_b - last.log10_grad_b
        )
        assert summary.loc[cid, "log10_q_last"] == pytest.approx(1.0)
    assert list(summary["regime"]) == ["exploding", "vanishing", "stable", "stable"]
    assert (summary["threshold"] == 2.0).all()


def test_threshold_is_the_documented_rule():
    configs, layers = synthetic(
        [0.21, 0.23, -0.21, -0.23]
    )  # r = 9 x slope: 1.89, 2.07, -1.89, -2.07
    assert list(summarise(configs, layers, threshold=2.0)["regime"]) == [
        "stable",
        "exploding",
        "stable",
        "vanishing",
    ]
    assert list(summarise(configs, layers, threshold=1.0)["regime"]) == [
        "exploding",
        "exploding",
        "vanishing",
        "vanishing",
    ]


def test_flags_never_become_numbers():
    configs, layers = synthetic(
        [-0.1, 0.1, -0.1], flags={("c0", 1): "underflow", ("c1", 5): "nonfinite", ("c2", 1): "zero"}
    )
    summary = summarise(configs, layers, threshold=2.0).set_index("config_id")
    assert np.isnan(summary.loc["c0", "log10_delta_ratio"]) and np.isnan(
        summary.loc["c0", "delta_growth"]
    )
    assert summary.loc["c0", "underflow"] and not summary.loc["c0", "nonfinite"]
    # Lost below float32's smallest normal while the last layer reads 1e-3: r < -33, so vanishing.
    assert summary.loc["c0", "regime"] == "vanishing"
    assert summary.loc["c1", "regime"] == "nonfinite" and summary.loc["c1", "nonfinite"]
    assert summary.loc["c2", "regime"] == "vanishing"


def test_a_signal_lost_in_every_layer_is_unmeasured_never_nonfinite():
    """Plain mode loses every layer of a relu net whose forward pass underflowed (phi'(0) = 0)."""
    every_layer = {("c0", layer): "underflow" for layer in range(1, 11)}
    configs, layers = synthetic([-0.1, -0.1], flags=every_layer | {("c1", 4): "nonfinite"})
    summary = summarise(configs, layers, threshold=2.0).set_index("config_id")
    assert summary.loc["c0", "underflow"] and not summary.loc["c0", "nonfinite"]
    assert summary.loc["c0", "regime"] == "unmeasured"
    assert summary.loc["c1", "regime"] == "nonfinite"
