"""Log-domain measurement in float32 against plain float64, far beyond float32's range.

The float64 side is the kernel in plain float64 (no frames, no renormalisation), which
tests/test_kernel.py checks against an independent per-config loop with plain jax.grad; both sides use
the same draws (drawn in float32, then cast).
"""

import numpy as np
import pytest
from reference import reference_layers

from gradbench.pipeline import run
from gradbench.sweep import spec as spec_module

STATS = ["log10_delta", "log10_grad_w", "log10_grad_b", "log10_q"]


def sweep(activations, sigma_w2, depth, dtype, measure, sigma_b2=(0.0,)):
    return spec_module.parse(
        f"""
name = "logdomain"
seed = 2
[model]
width = 32
batch = 8
[axes]
activation = {activations}
sigma_w2 = {sigma_w2}
sigma_b2 = {list(sigma_b2)}
depth = [{depth}]
[run]
dtype = "{dtype}"
measure = "{measure}"
"""
    )


def layers_by(result):
    columns = ["config_id", "activation", "sigma_w2", "sigma_b2"]
    table = result.layers.merge(result.configs[columns], on="config_id")
    return table.set_index(["activation", "sigma_w2", "sigma_b2", "layer"]).sort_index()


@pytest.fixture(scope="module")
def deep(tmp_path_factory):
    """Depth 300: sigmoid and ReLU at sigma_w^2 = 1 vanish past 1e-90, ReLU at 33 explodes past 1e+90."""
    out = tmp_path_factory.mktemp("deep")

    def measured(activations, dtype, measure):
        spec = sweep(activations, [1.0, 33.0], 300, dtype, measure, sigma_b2=(0.0, 0.05))
        return layers_by(run(spec, out / f"{dtype}-{measure}", progress=False, report=False))

    every = ["sigmoid", "relu", "tanh", "gelu"]
    return {
        ("float32", "log"): measured(every, "float32", "log"),
        ("float64", "plain"): measured(every, "float64", "plain"),
        ("float32", "plain"): measured(["sigmoid", "relu"], "float32", "plain"),
    }


CASES = [
    ("sigmoid", 1.0, 0.0),
    ("relu", 1.0, 0.0),
    ("relu", 33.0, 0.0),
    ("tanh", 1.0, 0.0),
    ("tanh", 1.0, 0.05),
    ("gelu", 1.0, 0.05),  # chi_1 ~ 1/4: the backward signal leaves float32's range by layer ~150
]


@pytest.mark.slow
@pytest.mark.parametrize("activation,sigma_w2,sigma_b2", CASES)
def test_log_mode_float32_matches_float64_on_every_layer(deep, activation, sigma_w2, sigma_b2):
    log32 = deep[("float32", "log")].loc[(activation, sigma_w2, sigma_b2)]
    exact = deep[("float64", "plain")].loc[(activation, sigma_w2, sigma_b2)]
    assert (log32["flag"] == "ok").all()
    assert np.isfinite(log32[STATS].to_numpy()).all()
    representable = exact["flag"] == "ok"
    assert representable.sum() >= 100
    for stat in STATS:
        both = representable & exact[stat].notna()
        diff = np.abs(log32.loc[both, stat] - exact.loc[both, stat])
        assert diff.max() <= 1e-3, (stat, diff.max())


@pytest.mark.slow
def test_the_cases_really_leave_float32_range(deep):
    """Plain float32 loses these signals, so the agreement above is not trivially inside float32's range."""
    plain32 = deep[("float32", "plain")]
    log32 = deep[("float32", "log")]
    for activation, sigma_w2 in [("sigmoid", 1.0), ("relu", 1.0), ("relu", 33.0)]:
        flags = plain32.loc[(activation, sigma_w2, 0.0), "flag"]
        assert (flags != "ok").any(), (activation, sigma_w2)
    assert log32.loc[("sigmoid", 1.0, 0.0, 1), "log10_delta"] < -60
    assert log32.loc[("relu", 33.0, 0.0, 1), "log10_delta"] > 60
    assert log32.loc[("gelu", 1.0, 0.05, 1), "log10_delta"] < -60


@pytest.mark.slow
def test_a_collapsing_forward_pass_is_flagged_not_reported(deep):
    """gelu without bias shrinks q_l toward 0 (not homogeneous, so no forward frame): honest flags."""
    log32 = deep[("float32", "log")].loc[("gelu", 1.0, 0.0)]
    exact = deep[("float64", "plain")].loc[("gelu", 1.0, 0.0)]
    lost = log32["flag"] == "underflow"
    assert lost.any()
    assert log32.loc[lost, "log10_q"].isna().all()
    assert (exact.loc[lost, "log10_q"] < -2 * 29.7).all()  # float64: z near float32's subnormals
    # Whatever is still reported is right (the weight gradient of layer l needs only h_{l-1}).
    for stat in STATS:
        reported = log32[stat].notna() & exact[stat].notna()
        assert np.abs(log32.loc[reported, stat] - exact.loc[reported, stat]).max() <= 1e-3
    assert log32.loc[lost, "log10_grad_w"].isna().sum() >= lost.sum() - 1


@pytest.mark.slow
def test_sigmoid_at_depth_800_stays_on_its_slope(tmp_path):
    """Beyond float64 too: no NaN/inf/0, and the log-mode slope continues the representable one."""
    log32 = layers_by(
        run(
            sweep(["sigmoid"], [1.0], 800, "float32", "log"),
            tmp_path / "a",
            progress=False,
            report=False,
        )
    )
    exact = layers_by(
        run(
            sweep(["sigmoid"], [1.0], 800, "float64", "plain"),
            tmp_path / "b",
            progress=False,
            report=False,
        )
    )
    log32, exact = log32.loc[("sigmoid", 1.0, 0.0)], exact.loc[("sigmoid", 1.0, 0.0)]
    assert (log32["flag"] == "ok").all() and np.isfinite(log32["log10_delta"]).all()
    assert log32.loc[1, "log10_delta"] < -400  # below float64's smallest subnormal, 10^-323.6
    lost = exact["flag"] != "ok"
    assert lost.any() and exact.loc[lost, STATS[:3]].isna().all().all()
    ok = exact.index[~lost]
    slope_exact = np.polyfit(-ok.to_numpy(), exact.loc[ok, "log10_delta"], 1)[0]
    slope_log = np.polyfit(-log32.index.to_numpy(), log32["log10_delta"], 1)[0]
    assert slope_log == pytest.approx(slope_exact, rel=0.02)


@pytest.mark.slow
def test_plain_float32_flags_underflow_at_depth_100(tmp_path):
    plain = layers_by(
        run(
            sweep(["sigmoid"], [1.0], 100, "float32", "plain"),
            tmp_path / "p",
            progress=False,
            report=False,
        )
    )
    plain = plain.loc[("sigmoid", 1.0, 0.0)]
    exact = reference_layers(
        activation="sigmoid",
        init_family="gaussian",
        width=32,
        batch=8,
        depth=100,
        sigma_w2=1.0,
        sigma_b2=0.0,
        seed=2,
    )
    lost = plain["flag"] == "underflow"
    assert lost.any()
    assert plain.loc[lost, ["log10_delta", "log10_grad_w", "log10_grad_b"]].isna().all().all()
    # Flagged where float64 puts the signal near float32's smallest normal numbers (max entry below
    # tiny / eps = 1e-31, so the norm is below 16 x 1e-31), and reported correctly everywhere else.
    assert (exact["log10_delta"][lost.to_numpy()] < -29.7).all()
    kept = ~lost.to_numpy()
    np.testing.assert_allclose(
        plain["log10_delta"].to_numpy()[kept], exact["log10_delta"][kept], atol=1e-3
    )
