"""One definition of "lost to underflow": the kernel's flag, the regime bound, and plain vs log mode."""

import math

import jax
import jax.numpy as jnp
import numpy as np
import pandas as pd
import pytest

from gradbench import cli
from gradbench.analysis.classify import classify, lost_signal_bound
from gradbench.engine.layerstats import is_tiny
from gradbench.schema import lost_below

T = 2.0
# relu and tanh from small to large weights, as in the bug report, at the depths where plain float32
# loses the backward signal (depth 32) and where it loses the forward pass of relu (depth 64).
REPRO = """
name = "underflow-{measure}"
[model]
width = 16
batch = 4
[axes]
activation = ["relu", "tanh"]
sigma_w2 = {{ logspace = [-2, 3, 6] }}
depth = [32, 64]
[run]
measure = "{measure}"
depth_bucket_ratio = 4.0
"""


@pytest.mark.parametrize("dtype,exponent", [("float32", -103), ("float64", -970)])
def test_lost_below_is_tiny_over_eps(dtype, exponent):
    # tiny = 2^-126, eps = 2^-23 (float32); tiny = 2^-1022, eps = 2^-52 (float64)
    assert lost_below(dtype) == 2.0**exponent


@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_flag_and_bound_share_the_definition(dtype):
    """The kernel flags a vector exactly when its largest entry is below lost_below, and the
    regime bound is the largest norm such a vector can have (reached by a constant vector)."""
    batch, width = 4, 8
    limit = np.asarray(2.0 ** (-103 if dtype == "float32" else -970), dtype)
    below = np.nextafter(limit, np.asarray(0, dtype))
    with jax.enable_x64(dtype == "float64"):
        assert jnp.asarray(below).dtype == dtype
        assert float(is_tiny(jnp.asarray(below))) == 1.0
        assert float(is_tiny(jnp.asarray(limit))) == 0.0
        assert float(is_tiny(jnp.asarray(np.zeros((), dtype)))) == 1.0  # zero counts as lost

    largest_lost = np.full((batch, width), below, np.float64)  # the largest flagged signal
    scale = np.abs(largest_lost).max()  # its square would underflow even in float64
    norm = math.log10(scale) + math.log10(np.linalg.norm(largest_lost / scale))
    summary = pd.DataFrame({"dtype": [dtype], "batch": [batch], "width": [width]})
    bound = float(lost_signal_bound(summary).iloc[0])
    assert 0 <= bound - norm < 1e-6  # tight: nothing smaller bounds every flagged signal
    assert bound == pytest.approx(math.log10(float(limit)) + 0.5 * math.log10(batch * width))


def lost_first_layer(last, dtype="float32", batch=4, width=8, nonfinite=False):
    """Summary rows whose first-layer signal was lost and whose last layer reads `last`."""
    return pd.DataFrame(
        {
            "log10_delta_ratio": np.nan,
            "log10_delta_first": np.nan,
            "log10_delta_last": last,
            "underflow": True,
            "nonfinite": nonfinite,
            "dtype": dtype,
            "batch": batch,
            "width": width,
        }
    )


def test_lost_signal_is_vanishing_exactly_when_the_bound_proves_r_below_minus_t():
    # float32, 4 x 8 entries: a lost signal has a norm below 2^-103 sqrt(32) = 10^-30.253.
    ceiling = -103 * math.log10(2) + 0.5 * math.log10(32)
    last = [ceiling + T + 0.01, ceiling + T - 0.01, -29.0, np.nan]
    regimes = list(classify(lost_first_layer(last), T))
    # r < ceiling - last: -2.01 proves vanishing; -1.99 does not, nor -1.25 (the old bound,
    # tiny x sqrt(B W) instead of tiny / eps x sqrt(B W), called it -8.2 and vanishing).
    assert regimes == ["vanishing", "unmeasured", "unmeasured", "unmeasured"]
    assert list(classify(lost_first_layer([-29.0]), 1.0)) == ["vanishing"]
    # float64 loses a signal only below 2^-970: there the same last layer proves r < -262.
    assert list(classify(lost_first_layer([-29.0], dtype="float64"), T)) == ["vanishing"]
    assert list(classify(lost_first_layer([-290.0], dtype="float64"), T)) == ["unmeasured"]


def test_nonfinite_means_a_nan_or_inf_appeared_not_underflow():
    rows = pd.concat([lost_first_layer([np.nan]), lost_first_layer([0.0], nonfinite=True)])
    assert list(classify(rows.reset_index(drop=True), T)) == ["unmeasured", "nonfinite"]


def run_through_cli(tmp_path, measure: str) -> tuple[pd.DataFrame, pd.DataFrame]:
    path = tmp_path / f"{measure}.toml"
    path.write_text(REPRO.format(measure=measure))
    out = tmp_path / measure
    assert cli.main(["run", str(path), "--out", str(out), "--quiet", "--no-report"]) == 0
    return pd.read_parquet(out / "data" / "summary.parquet"), pd.read_parquet(
        out / "data" / "layers.parquet"
    )


@pytest.fixture(scope="module")
def both_modes(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("underflow")
    (plain, plain_layers), (log, _) = (run_through_cli(tmp, m) for m in ("plain", "log"))
    return plain, plain_layers, log


def test_plain_mode_underflow_is_never_nonfinite_and_agrees_with_log_mode(both_modes):
    plain, plain_layers, log = both_modes
    both = plain.merge(log, on="config_id", suffixes=("", "_log"), validate="1:1")
    assert len(both) == len(plain) == 2 * 6 * 2
    lost = both[both["underflow"] & ~both["nonfinite"]]  # underflow, and no NaN/Inf appeared
    assert set(lost["activation"]) == {"relu", "tanh"}
    assert not lost["regime"].eq("nonfinite").any()
    # Every verdict plain mode gives is log mode's, which measures r exactly.
    decided = lost[lost["regime"] != "unmeasured"]
    assert (decided["regime"] == decided["regime_log"]).all()
    assert decided["regime"].eq("vanishing").sum() >= 4
    # Where the verdict came from the bound, the exact r is below the bound.
    bounded = decided[decided["log10_delta_ratio"].isna()]
    r_below = lost_signal_bound(bounded) - bounded["log10_delta_last"]
    assert (bounded["log10_delta_ratio_log"] < r_below).all()
    assert set(bounded["activation"]) == {"relu", "tanh"}
    # Unmeasured only where plain arithmetic measured no backward signal at all: relu nets whose
    # forward pass underflowed to 0, so that phi'(0) = 0 zeroed every gradient. Log mode measures
    # them, vanishing.
    unmeasured = lost[lost["regime"] == "unmeasured"]
    assert len(unmeasured) >= 2 and set(unmeasured["activation"]) == {"relu"}
    deltas = plain_layers[plain_layers["config_id"].isin(unmeasured["config_id"])]
    assert deltas["log10_delta"].isna().all()
    assert (unmeasured["log10_delta_ratio_log"] < -T).all()
    # A NaN or Inf that really appeared (relu's forward pass overflowing) stays nonfinite.
    overflowed = both[both["nonfinite"]]
    assert (overflowed["regime"] == "nonfinite").all()
    assert (overflowed["regime_log"] == "exploding").all()
