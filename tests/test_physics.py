"""Measurements at width 256 against mean-field closed forms (default probe loss).

The per-layer factor of squared backward signals, 10^(2 x delta_growth), is chi_1 = sigma_w^2 E[phi'(z)^2]:
sigma_w^2 / 2 for ReLU at every q, and for tanh at sigma_b^2 = 0.05 the values 0.759 (sigma_w^2 = 1) and
1.134 (sigma_w^2 = 2.5) of the fixed point q* (Schoenholz et al. 2017; computed independently by
gradbench.theory's tests).
"""

import numpy as np
import pytest

from gradbench.pipeline import run
from gradbench.sweep import spec as spec_module

SWEEP = """
name = "physics"
seed = 11
[model]
width = 256
batch = 32
[axes]
activation = ["relu", "tanh"]
sigma_w2 = [1.0, 2.0, 2.5, 3.0]
sigma_b2 = [0.0, 0.05]
depth = [48]
replicate = { count = 4 }
"""


@pytest.fixture(scope="module")
def measured(tmp_path_factory):
    result = run(
        spec_module.parse(SWEEP),
        tmp_path_factory.mktemp("physics") / "run",
        progress=False,
        report=False,
    )
    summary = result.summary
    summary["factor"] = 10 ** (2 * summary["delta_growth"])
    return summary.groupby(["activation", "sigma_b2", "sigma_w2"])[
        ["factor", "grad_w_growth", "log10_grad_w_ratio", "log10_delta_ratio"]
    ].mean()


@pytest.mark.slow
@pytest.mark.parametrize("sigma_w2", [1.0, 2.0, 3.0])
def test_relu_factor_is_half_sigma_w2(measured, sigma_w2):
    factor = measured.loc[("relu", 0.0, sigma_w2), "factor"]
    assert factor == pytest.approx(sigma_w2 / 2, rel=0.03)


@pytest.mark.slow
@pytest.mark.parametrize("sigma_w2,chi1", [(1.0, 0.759), (2.5, 1.134)])
def test_tanh_factor_is_chi1(measured, sigma_w2, chi1):
    factor = measured.loc[("tanh", 0.05, sigma_w2), "factor"]
    assert factor == pytest.approx(chi1, rel=0.03)


@pytest.mark.slow
def test_bias_free_relu_weight_gradients_stay_level_while_deltas_follow_chi1(measured):
    relu = measured.loc[("relu", 0.0)]
    depth = 48
    # Forward shrinkage cancels backward shrinkage: dJ/dW ratios stay near 1 (|log10| < 0.3) at every scale...
    assert np.all(np.abs(relu["log10_grad_w_ratio"]) < 0.3)
    assert np.all(np.abs(relu["grad_w_growth"]) < 0.01)
    # ...while the delta ratio carries the chain-rule product (sigma_w^2 / 2)^((L - 1) / 2).
    predicted = (depth - 1) * np.log10(relu.index.to_numpy() / 2) / 2
    np.testing.assert_allclose(relu["log10_delta_ratio"], predicted, atol=0.3)
    assert relu.loc[1.0, "log10_delta_ratio"] < -6  # vanishing at sigma_w^2 = 1
