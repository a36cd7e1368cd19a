"""The mean-field columns of a sweep: one compilation however many activations it has, the same
numbers as per-configuration theory calls, and a series solution that the 2-D quadrature confirms."""

import json
import os
import subprocess
import sys
import textwrap

import numpy as np
import pandas as pd
import pytest

from gradbench import cli, registry, results, theory
from gradbench.schema import THEORY_COLUMNS
from gradbench.theory import correlation_map, kernel

ACTIVATIONS = sorted(registry.ACTIVATIONS)
FINITE_WIDTH_COLUMNS = ("finite_width_log10_delta_ratio", "predicted_log10_delta_ratio_sd")
# The rnn-only bound is not a mean-field quantity of `theory.predict` (tests/test_theory_architectures.py).
MEAN_FIELD_COLUMNS = tuple(
    c for c in THEORY_COLUMNS if c not in (*FINITE_WIDTH_COLUMNS, "pascanu_log10_bound")
)


def summary_of(pairs: list[tuple], **others) -> pd.DataFrame:
    """The config columns `theory.with_theory` reads, one row per (activation, sigma_w2, sigma_b2,
    depth) and, unless given, a wide Gaussian network at batch 8 with the probe loss."""
    frame = pd.DataFrame(pairs, columns=["activation", "sigma_w2", "sigma_b2", "depth"])
    defaults = {"init_family": "gaussian", "width": 256, "batch": 8, "loss": "probe"}
    return frame.assign(**(defaults | others))


def random_pairs(seed: int, per_activation: int) -> list[tuple[str, float, float, int]]:
    """sigma_w^2 from the ordered phase through the edge of chaos into the chaotic one, with and
    without bias, at two depths."""
    rng = np.random.default_rng(seed)
    return [
        (name, float(w), float(b), int(d))
        for name in ACTIVATIONS
        for w, b, d in zip(
            rng.uniform(0.3, 6.0, per_activation),
            rng.choice([0.0, 0.01, 0.05, 0.3], per_activation),
            rng.choice([8, 64], per_activation),
            strict=True,
        )
    ]


def test_theory_columns_equal_per_pair_theory_on_every_activation():
    summary = summary_of(random_pairs(seed=13, per_activation=60))
    columns = theory.with_theory(summary)
    rng = np.random.default_rng(0)
    checked = set()
    for name, rows in columns.groupby("activation"):
        for row in rows.iloc[rng.choice(len(rows), 6, replace=False)].itertuples():
            one = theory.mean_field(row.activation, row.sigma_w2, row.sigma_b2)
            assert row.q_star == pytest.approx(
                float(theory.q_star(name, row.sigma_w2, row.sigma_b2)), rel=1e-12, abs=1e-300
            )
            assert row.chi1 == pytest.approx(
                float(theory.chi1(name, row.sigma_w2, row.sigma_b2)), rel=1e-12
            )
            assert row.xi_c == pytest.approx(float(one.xi_c), rel=1e-12)
            ratio = (row.depth - 1) * np.log10(float(one.chi1)) / 2
            assert row.fixed_point_log10_delta_ratio == pytest.approx(ratio, rel=1e-12, abs=1e-12)
            finite_depth = theory.finite_depth(name, row.sigma_w2, row.sigma_b2, row.depth)
            assert row.predicted_log10_delta_ratio == pytest.approx(
                float(finite_depth), rel=1e-12, abs=1e-12
            )
            checked.add(str(one.phase))
        assert len(rows) == 60
    assert checked >= {"ordered", "chaotic"}


def test_with_theory_is_per_pair_theory_and_nan_for_user_activations():
    """Row by row against `predict` on that config alone; an imported "package.module:function"
    activation has no theory here (NaN), and rows keep their order and other columns."""
    pairs = [
        ("tanh", 2.5, 0.05, 10),
        ("jax.numpy:tanh", 2.5, 0.05, 10),
        ("relu", 3.0, 0.0, 50),  # q* = inf
        ("erf", 1.2, 0.01, 8),
        ("tanh", 2.5, 0.05, 10),  # the first config again (a replicate)
        ("gelu", 0.5, 0.0, 3),  # q* = 0
        ("tanh", 1.0, 0.05, 64),
    ]
    summary = summary_of(pairs).assign(config_id=range(len(pairs)))
    columns = theory.with_theory(summary)
    assert list(columns.columns) == [*summary.columns, *THEORY_COLUMNS]
    pd.testing.assert_frame_equal(columns[summary.columns], summary)
    for row in columns.itertuples():
        if row.activation not in registry.ACTIVATIONS:
            assert all(np.isnan(getattr(row, c)) for c in THEORY_COLUMNS)
            continue
        one = theory.predict(row.activation, row.sigma_w2, row.sigma_b2, row.depth)
        for c in MEAN_FIELD_COLUMNS:
            assert getattr(row, c) == pytest.approx(float(one[c]), rel=1e-12, abs=1e-300)
    assert columns[list(FINITE_WIDTH_COLUMNS)].isna().all(axis=None)  # batch 8: no exact law
    assert columns["q_star"].iloc[2] == np.inf and columns["q_star"].iloc[5] == 0.0
    assert columns.iloc[4][list(THEORY_COLUMNS)].equals(columns.iloc[0][list(THEORY_COLUMNS)])
    only_user = theory.with_theory(summary_of([("jax.numpy:tanh", 2.5, 0.05, 10)]))
    assert list(only_user.columns[-len(THEORY_COLUMNS) :]) == list(THEORY_COLUMNS)
    assert only_user[list(THEORY_COLUMNS)].isna().all(axis=None)


def test_finite_width_columns_are_the_law_where_it_applies_and_nan_elsewhere():
    """Per config against `relu_finite_width`: ReLU, a Gaussian family (a preset such as he is
    one), sigma_b^2 = 0, batch 1 and the probe loss; every other config gets NaN."""
    law = {"activation": "relu", "init_family": "gaussian", "sigma_b2": 0.0, "batch": 1}
    rows = [
        {**law, "sigma_w2": 2.0, "depth": 40, "width": 32},
        {**law, "sigma_w2": 1.5, "depth": 12, "width": 512},
        {**law, "sigma_w2": 2.0, "depth": 40, "width": 64},
        {**law, "sigma_w2": 2.0, "depth": 1, "width": 64},
        {**law, "sigma_w2": 2.0, "depth": 40, "width": 32, "batch": 4},
        {**law, "sigma_w2": 2.0, "depth": 40, "width": 32, "sigma_b2": 0.1},
        {**law, "sigma_w2": 2.0, "depth": 40, "width": 32, "init_family": "orthogonal"},
        {**law, "sigma_w2": 2.0, "depth": 40, "width": 32, "loss": "mse"},
        {**law, "sigma_w2": 2.0, "depth": 40, "width": 32, "activation": "leaky_relu"},
        {**law, "sigma_w2": 2.0, "depth": 40, "width": 32, "activation": "gelu"},
    ]
    summary = pd.DataFrame([{"loss": "probe"} | row for row in rows])
    columns = theory.with_theory(summary)
    applies = columns.index < 4
    for row in columns[applies].itertuples():
        one = theory.relu_finite_width(row.sigma_w2, row.width, row.depth)
        assert row.finite_width_log10_delta_ratio == pytest.approx(float(one.mean), rel=1e-12)
        assert row.predicted_log10_delta_ratio_sd == pytest.approx(float(one.sd), rel=1e-12)
    assert columns.loc[~applies, list(FINITE_WIDTH_COLUMNS)].isna().all(axis=None)
    assert columns.loc[3, "predicted_log10_delta_ratio_sd"] == 0.0  # one layer: r = 0
    # Mean field: relu at sigma_w^2 = 2 has chi_1 = 1 whatever the width, batch, family or loss.
    relu_at_two = columns.loc[4:7, "predicted_log10_delta_ratio"].to_numpy()  # chi_1 = 1
    np.testing.assert_allclose(relu_at_two, 0.0, atol=1e-12)
    with pytest.raises(KeyError, match="batch"):
        theory.with_theory(summary.drop(columns="batch"))


def test_run_writes_the_per_pair_theory_columns(tmp_path):
    spec = tmp_path / "theory.toml"
    spec.write_text(
        textwrap.dedent(
            """
            name = "theory-columns"
            [model]
            width = 8
            batch = 4
            [axes]
            activation = ["tanh", "erf"]
            sigma_w2 = [0.5, 1.5, 2.5, 4.0]
            sigma_b2 = [0.0, 0.1]
            depth = [3]
            """
        )
    )
    out = tmp_path / "run"
    assert cli.main(["run", str(spec), "--out", str(out), "--quiet", "--no-report"]) == 0
    summary = results.load(out).summary
    assert set(summary["activation"]) == {"tanh", "erf"} and len(summary) == 16
    for row in summary.itertuples():
        one = theory.mean_field(row.activation, row.sigma_w2, row.sigma_b2)
        assert row.chi1 == pytest.approx(float(one.chi1), rel=1e-12)
        assert row.q_star == pytest.approx(float(one.q_star), rel=1e-12, abs=1e-300)
        assert row.xi_c == pytest.approx(float(one.xi_c), rel=1e-12)
    assert (summary["chi1"] > 1).any() and (summary["chi1"] < 1).any()


COUNT_COMPILES = """
import json, sys
import jax
import pandas as pd
from gradbench.theory import with_theory
jax.config.update("jax_enable_compilation_cache", False)  # cold: compile, never load
compiles = []

def listener(event, duration, **kwargs):
    if event == "/jax/core/compile/backend_compile_duration":
        compiles.append(duration)

jax.monitoring.register_event_duration_secs_listener(listener)
summary = pd.DataFrame(json.loads(sys.argv[1]), columns=["activation", "sigma_w2", "sigma_b2", "depth"])
summary = summary.assign(init_family="gaussian", width=64, batch=1, loss="probe")
columns = with_theory(summary)
print(json.dumps({"compiles": len(compiles), "finite_chi1": int(columns["chi1"].notna().sum())}))
"""


@pytest.mark.timeout(300)
def test_theory_columns_over_many_activations_compile_once():
    names = ["tanh", "relu", "gelu", "erf", "selu", "sigmoid", "softsign", "relu6"]
    pairs = [(n, w, b, 16) for n in names for w in (0.5, 1.0, 2.0, 3.5) for b in (0.0, 0.05)]
    env = {k: v for k, v in os.environ.items() if k != "JAX_COMPILATION_CACHE_DIR"}
    env["GRADBENCH_CACHE_DIR"] = "off"
    done = subprocess.run(
        [sys.executable, "-c", COUNT_COMPILES, json.dumps(pairs)],
        capture_output=True,
        text=True,
        timeout=280,
        env=env,
    )
    assert done.returncode == 0, done.stderr
    counted = json.loads(done.stdout.splitlines()[-1])
    assert counted["finite_chi1"] == len(pairs)
    # One elementwise kernel (phi and phi' of all eight activations behind a traced switch).
    assert counted["compiles"] == 1


@pytest.mark.parametrize("name", ["erf", "hard_tanh", "relu6", "selu", "softsign", "tanh"])
def test_series_fixed_point_agrees_with_the_two_dimensional_quadrature(name):
    """c* and chi_c where the correlation map contracts clearly (chi_c < 0.95), against Newton
    steps on the 2-D quadrature from c = 0.5: two independent numerical routes."""
    rng = np.random.default_rng(3)
    sigma_w2, sigma_b2 = rng.uniform(0.5, 6.0, 300), rng.choice([0.0, 0.02, 0.1, 0.4], 300)
    mf = theory.mean_field(name, sigma_w2, sigma_b2)
    rows = np.flatnonzero((mf.q_status == "finite") & (mf.phase == "chaotic") & (mf.chi_c < 0.95))
    assert rows.size >= 10
    rows = rows[:24]
    phi = kernel.elementwise((registry.ACTIVATIONS[name].fn,), 0)
    c, chi_c = correlation_map.bivariate_correlation(
        phi, sigma_w2[rows], sigma_b2[rows], mf.q_star[rows], np.full(rows.size, 0.5)
    )
    # The 2-D rule is within about 1e-9 in C; c* moves by that over 1 - chi_c.
    np.testing.assert_allclose(mf.c_star[rows], c, rtol=0, atol=5e-7)
    np.testing.assert_allclose(mf.chi_c[rows], chi_c, rtol=0, atol=1e-7)
