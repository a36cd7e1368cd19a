"""Closed forms the residual MLP and the RNN must obey, measured through the whole pipeline.

(a) A ReLU residual stream h_l = h_{l-1} + alpha W_l relu(h_{l-1}) (no norm, one-layer branches,
    sigma_b = 0) backpropagates dJ/dh_{l-1} = (1 + alpha D W_l^T) dJ/dh_l with D = diag(relu'),
    and in the mean-field limit (W_l independent of the gradient above it, half the units on)
    E||dJ/dh_{l-1}||^2 = (1 + alpha^2 sigma_w^2 / 2) ||dJ/dh_l||^2 per block.
(b) A linear RNN with orthogonal W = sigma_w Q backpropagates dJ/dz_t = W^T dJ/dz_{t+1}, so
    ||dJ/dz_t|| = sigma_w ||dJ/dz_{t+1}|| exactly, at every width and for every draw.
"""

import math

import numpy as np
import pandas as pd

from gradbench.pipeline import run
from gradbench.sweep import spec as spec_module

RESIDUAL = """
name = "residual-physics"
seed = 1
[model]
architecture = "resmlp"
width = 512
batch = 1
[axes]
branch_scale = [0.5, 1.0, "1/sqrt(depth)"]
activation = "relu"
sigma_w2 = [2.0]
depth = [16]
replicate = { count = 8 }
"""


def test_relu_residual_stream_grows_by_the_mean_field_factor_per_block(tmp_path):
    """r = log10(||dJ/dh_0|| / ||dJ/dh_{L-1}||) spans L - 1 blocks, so its mean-field value is
    (L - 1)/2 log10(1 + alpha^2 sigma_w^2 / 2): 0.197, 0.727 and 2.258 for alpha = 1/4, 1/2, 1
    at L = 16, sigma_w^2 = 2.

    The tolerance is 4 standard errors of the replicate mean, from the replicates' own spread (sd
    0.021, 0.043 and 0.071 across 8 replicates at width 512, so 0.03 to 0.10). The finite-width
    bias of a mean of logs is O((L - 1) / width), about 0.005 here, inside it; a wrong branch
    scale (alpha^2 -> alpha) or a missing relu' factor (sigma_w^2 / 2 -> sigma_w^2) moves the
    prediction by 0.2 to 1.6, well outside it. Measured: within 1.5 standard errors.
    """
    result = run(spec_module.parse(RESIDUAL), tmp_path / "out", progress=False, report=False)
    summary = result.summary
    assert set(summary["alpha"]) == {0.25, 0.5, 1.0}  # "1/sqrt(depth)" at depth 16 is 1/4
    for alpha, cell in summary.groupby("alpha"):
        depth = int(cell["depth"].iloc[0])
        sigma_w2 = float(cell["sigma_w2"].iloc[0])
        predicted = (depth - 1) / 2 * math.log10(1 + alpha**2 * sigma_w2 / 2)
        r = cell["log10_delta_ratio"].to_numpy()
        assert len(r) == 8 and np.isfinite(r).all()
        standard_error = r.std(ddof=1) / math.sqrt(len(r))
        assert abs(r.mean() - predicted) <= 4 * standard_error, (alpha, r.mean(), predicted)


def recurrent_sweep(measure: str, sigma_w: list[float], depths: list[int]) -> str:
    return f"""
name = "recurrent-physics"
seed = 2
[model]
architecture = "rnn"
width = 32
batch = 4
[axes]
activation = "linear"
init = "orthogonal"
sigma_w = {sigma_w}
sigma_b2 = [0.1]
depth = {depths}
[run]
dtype = "float32"
measure = "{measure}"
"""


def steps_of(result) -> pd.DataFrame:
    """The layers table with each row's sigma_w and depth, in step order."""
    configs = result.configs[["config_id", "sigma_w", "depth"]]
    layers = result.layers.merge(configs, on="config_id")
    return layers.sort_values(["config_id", "layer"], ignore_index=True)


def test_linear_orthogonal_rnn_scales_the_gradient_by_sigma_w_per_step_in_the_log_domain(tmp_path):
    """log10 ||dJ/dz_t|| - log10 ||dJ/dz_{t+1}|| = log10 sigma_w to float32 precision (1e-5; measured
    8e-7 at most) for sigma_w = 1/2, 1, 2 over 150 and 200 steps: at T = 200 the gradient spans
    2^+-199 ~ 10^+-60, beyond float32's range, which the log domain holds without a flag."""
    spec = spec_module.parse(recurrent_sweep("log", [0.5, 1.0, 2.0], [150, 200]))
    result = run(spec, tmp_path / "out", progress=False, report=False)
    layers = steps_of(result)
    assert (layers["flag"] == "ok").all()
    for (sigma_w, depth), steps in layers.groupby(["sigma_w", "depth"]):
        delta = steps["log10_delta"].to_numpy()
        assert len(delta) == depth and np.isfinite(delta).all()
        np.testing.assert_allclose(-np.diff(delta), math.log10(sigma_w), rtol=0, atol=1e-5)
    summary = result.summary
    np.testing.assert_allclose(
        summary["log10_delta_ratio"],
        (summary["depth"] - 1) * np.log10(summary["sigma_w"]),
        rtol=0,
        atol=200 * 1e-6,
    )
    at_200 = summary[summary["depth"] == 200].set_index("sigma_w")["regime"]
    assert at_200.to_dict() == {0.5: "vanishing", 1.0: "stable", 2.0: "exploding"}


def test_plain_float32_flags_what_it_cannot_hold_and_keeps_every_other_step_exact(tmp_path):
    """Without the log domain, T = 200 leaves float32's range: at sigma_w = 2 the state overflows
    going forward (q ~ 4^t) and the gradient going backward (2^(200 - t)); at sigma_w = 1/2 the
    gradient underflows (2^-199 at step 1). The run finishes; every step it cannot hold is flagged
    (nonfinite or underflow, its statistics NaN) and every step it reports is exact.

    Measured (width 32, batch 4): sigma_w = 2 keeps steps 74..125 (the gradient overflows below 74,
    the state above 125) and is classed nonfinite; sigma_w = 1/2 flags steps 1..97 underflow."""
    spec = spec_module.parse(recurrent_sweep("plain", [0.5, 2.0], [200]))
    result = run(spec, tmp_path / "out", progress=False, report=False)
    layers = steps_of(result)
    regimes = result.summary.set_index("sigma_w")["regime"].to_dict()
    assert regimes[2.0] == "nonfinite"
    lost = {0.5: "underflow", 2.0: "nonfinite"}
    for sigma_w, steps in layers.groupby("sigma_w"):
        steps = steps.set_index("layer")
        flagged = steps["flag"] != "ok"
        # 2^199 and 2^-199 are beyond float32: step 1's gradient cannot be held either way.
        assert steps.loc[1, "flag"] == lost[sigma_w]
        assert set(steps.loc[flagged, "flag"]) == {lost[sigma_w]}
        assert steps.loc[flagged, "log10_delta"].isna().all()
        kept = steps.loc[~flagged, "log10_delta"]
        assert len(kept) > 1 and np.isfinite(kept).all()
        consecutive = np.diff(kept.index.to_numpy()) == 1
        slopes = -np.diff(kept.to_numpy())[consecutive]
        np.testing.assert_allclose(slopes, math.log10(sigma_w), rtol=0, atol=1e-5)
        # The top step's gradient is the readout's, 10^0.49 here: far from either limit.
        if sigma_w == 0.5:
            assert steps.loc[200, "flag"] == "ok"
