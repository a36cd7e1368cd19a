"""Measurement against mean-field theory at width 512 with 8 replicates (tanh, sigma_b^2 = 0.05).

Layers past the forward transient (l > 10, where q_l has settled at q*) are fitted; the per-layer factor of
squared backward signals must equal theory's chi_1 within 3 %, and the measured zero crossing of the
growth rate must lie within 0.05 of theory's critical sigma_w^2.
"""

import numpy as np
import pytest

from gradbench import theory
from gradbench.pipeline import run
from gradbench.sweep import spec as spec_module

SIGMA_W2 = [1.0, 1.5, 1.7, 1.8, 2.5, 4.0]
SWEEP = f"""
name = "theory-check"
seed = 5
[model]
width = 512
batch = 16
[axes]
activation = "tanh"
sigma_w2 = {SIGMA_W2}
sigma_b2 = 0.05
depth = 40
replicate = {{ count = 8 }}
"""


@pytest.fixture(scope="module")
def factors(tmp_path_factory):
    result = run(
        spec_module.parse(SWEEP), tmp_path_factory.mktemp("t") / "run", progress=False, report=False
    )
    layers = result.layers.merge(result.configs[["config_id", "sigma_w2"]], on="config_id")
    settled = layers[layers["layer"] > 10]
    slopes = settled.groupby(["sigma_w2", "config_id"]).apply(
        lambda g: np.polyfit(-g["layer"].to_numpy(float), g["log10_delta"].to_numpy(), 1)[0]
    )
    return 10 ** (2 * slopes.groupby(level=0).mean())


@pytest.mark.slow
@pytest.mark.parametrize("sigma_w2", [1.0, 1.5, 2.5, 4.0])
def test_measured_factor_is_chi1(factors, sigma_w2):
    chi1 = float(theory.chi1(activation="tanh", sigma_w2=sigma_w2, sigma_b2=0.05))
    assert factors[sigma_w2] == pytest.approx(chi1, rel=0.03)


@pytest.mark.slow
def test_measured_edge_of_chaos_is_theorys(factors):
    log_factor = np.log(factors.to_numpy())
    crossing = np.interp(
        0.0, log_factor, factors.index.to_numpy()
    )  # log factor increases with sigma_w2
    (critical,) = [p.sigma_w2 for p in theory.critical_sigma_w2(activation="tanh", sigma_b2=0.05)]
    assert crossing == pytest.approx(critical, abs=0.05)
