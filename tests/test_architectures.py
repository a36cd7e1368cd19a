"""The residual MLP and the RNN against independent float64 loops (tests/reference_architectures.py).

Every case sweeps depths 4 and 6 in one chunk, so the depth-4 configs run masked in a depth-6 kernel,
and two replicates; every row and statistic of the layers table must equal the reference at the
kernel's tolerances (2e-4 in log10 for float32, 1e-9 for float64), no row may be flagged, and the
summary's ratio and the RNN's whole shared-weight gradient must be the reference's.
"""

import json

import numpy as np
import pandas as pd
import pytest
from reference import reference_layers
from reference_architectures import reference_rows

from gradbench.pipeline import run
from gradbench.sweep import spec as spec_module

STATS = ["log10_delta", "log10_grad_w", "log10_grad_b", "log10_q"]
DEPTHS = [4, 6]
FLOAT32, FLOAT64 = 2e-4, 1e-9

# id: (model settings, axes, loss, measure, dtype)
CASES = {
    "resmlp-relu-gaussian-none-b1-alpha-and-1/depth": (
        {"architecture": "resmlp", "branch_layers": 1},
        {"branch_scale": [1.0, "1/depth"], "activation": "relu", "init": "gaussian",
         "sigma_w2": [2.0], "sigma_b2": [0.0, 0.1]},
        "probe", "log", "float32",
    ),
    "resmlp-tanh-relu-orthogonal-layernorm-pre-b2-1/sqrt(depth)": (
        {"architecture": "resmlp", "branch_layers": 2, "norm": "layernorm",
         "norm_position": "pre", "branch_scale": "1/sqrt(depth)"},
        {"activation": ["tanh", "relu"], "init": "orthogonal", "sigma_w2": [0.8, 3.0],
         "sigma_b2": [0.05]},
        "mse", "log", "float64",
    ),
    "resmlp-gelu-uniform-rmsnorm-post-b1": (
        {"architecture": "resmlp", "norm": "rmsnorm", "norm_position": "post",
         "branch_scale": 0.5},
        {"activation": "gelu", "init": "uniform", "sigma_w2": [1.0, 4.0], "sigma_b2": [0.0]},
        "probe", "plain", "float32",
    ),
    "resmlp-relu-uniform-layernorm-post-b2": (
        {"architecture": "resmlp", "branch_layers": 2, "norm": "layernorm",
         "norm_position": "post", "branch_scale": 0.7},
        {"activation": "relu", "init": "uniform", "sigma_w2": [1.0, 2.0], "sigma_b2": [0.1]},
        "probe", "log", "float32",
    ),
    "resmlp-tanh-gaussian-rmsnorm-pre-b2-1/depth": (
        {"architecture": "resmlp", "branch_layers": 2, "norm": "rmsnorm", "branch_scale": "1/depth"},
        {"activation": "tanh", "init": "gaussian", "sigma_w2": [1.5], "sigma_b2": [0.0, 0.1]},
        "mse", "plain", "float64",
    ),
    # Every setting swept in [axes], beside the MLP and the RNN.
    "mixed-architectures-settings-in-axes": (
        {},
        {"architecture": ["mlp", "resmlp", "rnn"], "branch_layers": [2], "norm": ["none"],
         "branch_scale": [0.3], "input_scale": [0.5], "activation": "gelu", "init": "gaussian",
         "sigma_w2": [1.2], "sigma_b2": [0.02]},
        "mse", "log", "float32",
    ),
    "rnn-tanh-relu-gaussian-input-scales": (
        {"architecture": "rnn"},
        {"input_scale": [1.0, 0.5], "activation": ["tanh", "relu"], "init": "gaussian",
         "sigma_w2": [0.5, 2.0], "sigma_b2": [0.1]},
        "probe", "log", "float32",
    ),
    "rnn-relu-orthogonal": (
        {"architecture": "rnn", "input_scale": 1.0},
        {"activation": "relu", "init": "orthogonal", "sigma_w2": [1.0, 2.5], "sigma_b2": [0.05]},
        "mse", "plain", "float64",
    ),
    "rnn-linear-gaussian": (
        {"architecture": "rnn", "input_scale": 0.5},
        {"activation": "linear", "init": "gaussian", "sigma_w2": [0.9, 1.2], "sigma_b2": [0.1]},
        "probe", "log", "float64",
    ),
}  # fmt: skip


def toml_lines(table: dict) -> str:
    # JSON's strings, numbers and lists of them are TOML values too.
    return "".join(f"{key} = {json.dumps(value)}\n" for key, value in table.items())


def sweep_text(model: dict, axes: dict, loss: str, measure: str, dtype: str) -> str:
    return (
        f'name = "architectures"\nseed = 7\n[model]\nwidth = 16\nbatch = 4\nloss = "{loss}"\n'
        + toml_lines(model)
        + "[axes]\n"
        + toml_lines({**axes, "depth": DEPTHS})
        + "replicate = { count = 2 }\n"
        + f'[run]\ndtype = "{dtype}"\nmeasure = "{measure}"\n'
    )


def expected_rows(config: dict):
    """The reference rows of a config, indexed by (layer, sublayer)."""
    if config["architecture"] == "mlp":
        names = ("activation", "init_family", "width", "batch", "depth", "sigma_w2", "sigma_b2")
        stats = reference_layers(**{k: config[k] for k in (*names, "seed", "replicate", "loss")})
        frame = pd.DataFrame(stats)
        frame.insert(0, "sublayer", 0)
        frame.insert(0, "layer", np.arange(1, config["depth"] + 1))
        return frame.set_index(["layer", "sublayer"])
    return reference_rows(config).set_index(["layer", "sublayer"])


@pytest.mark.parametrize("case", list(CASES), ids=list(CASES))
def test_engine_equals_reference_loop(case, tmp_path):
    model, axes, loss, measure, dtype = CASES[case]
    tolerance = FLOAT64 if dtype == "float64" else FLOAT32
    spec = spec_module.parse(sweep_text(model, axes, loss, measure, dtype))
    result = run(spec, tmp_path / "out", progress=False, report=False)
    # Each kernel runs the deepest config's trip count: the depth-4 configs run masked beside depth 6.
    assert {g["workspace_depth"] for g in result.manifest["groups"]} == {max(DEPTHS)}
    assert set(result.configs["depth"]) == set(DEPTHS)

    layers = result.layers.set_index(["config_id", "layer", "sublayer"]).sort_index()
    summary = result.summary.set_index("config_id")
    for config in result.configs.to_dict("records"):
        expected = expected_rows(config)
        measured = layers.loc[config["config_id"]]
        where = f"{config['architecture']} {config['config_id']} depth {config['depth']}"
        assert list(measured.index) == list(expected.index), where
        assert (measured["flag"] == "ok").all(), where
        for stat in STATS:
            np.testing.assert_allclose(
                measured[stat], expected[stat], rtol=0, atol=tolerance, err_msg=f"{stat} {where}"
            )
        np.testing.assert_allclose(
            measured["q"], 10.0 ** expected["log10_q"], rtol=3 * tolerance, err_msg=where
        )
        blocks = expected.xs(0, level="sublayer")
        row = summary.loc[config["config_id"]]
        np.testing.assert_allclose(
            row["log10_delta_ratio"],
            blocks["log10_delta"].iloc[0] - blocks["log10_delta"].iloc[-1],
            rtol=0,
            atol=2 * tolerance,
            err_msg=where,
        )
        if config["architecture"] == "rnn":
            # h_0 = 0: step 1 adds exactly nothing to dJ/dW, a NaN that is no flag.
            assert np.isnan(measured.loc[(1, 0), "log10_grad_w"]), where
            np.testing.assert_allclose(
                measured["log10_grad_w_sum"],
                expected["log10_grad_w_sum"],
                rtol=0,
                atol=tolerance,
                err_msg=where,
            )
            np.testing.assert_allclose(
                row["log10_grad_w_total"],
                blocks["log10_grad_w_sum"].iloc[0],
                rtol=0,
                atol=tolerance,
                err_msg=where,
            )
        else:  # one weight per dense layer: no sum over steps
            assert measured["log10_grad_w_sum"].isna().all(), where
            assert np.isnan(row["log10_grad_w_total"]), where
