"""Bad architecture settings are bad input: exit 2, a message naming the file and the key, nothing
written to --out (nor beside it)."""

import subprocess
import sys

import pytest

from gradbench import cli

NETWORK = """
[axes]
activation = "tanh"
sigma_w2 = 1.0
depth = 2
"""

# id: (the sweep's [model] lines, lines appended to [axes], extra sections, the key named)
BAD = {
    "unknown-architecture": ('architecture = "transformer"', "", "", "model.architecture"),
    "unknown-architecture-in-axes": ("", 'architecture = ["mlp", "cnn"]', "", "axes.architecture"),
    "branch-layers-3": ('architecture = "resmlp"\nbranch_layers = 3', "", "", "model.branch_layers"),
    "norm-batchnorm": ('architecture = "resmlp"', 'norm = ["batchnorm"]', "", "axes.norm"),
    "norm-position-middle": (
        'architecture = "resmlp"\nnorm = "layernorm"\nnorm_position = "middle"', "", "",
        "model.norm_position",
    ),
    "branch-scale-0": ('architecture = "resmlp"', "branch_scale = [0.0]", "", "axes.branch_scale"),
    "branch-scale-negative": ('architecture = "resmlp"\nbranch_scale = -1', "", "",
                              "model.branch_scale"),
    "branch-scale-unknown-rule": (
        'architecture = "resmlp"', 'branch_scale = ["1/log(depth)"]', "", "axes.branch_scale",
    ),
    "branch-scale-nan": ('architecture = "resmlp"', "branch_scale = nan", "", "axes.branch_scale"),
    "branch-scale-inf": ('architecture = "resmlp"', "branch_scale = [0.5, inf]", "",
                         "axes.branch_scale"),
    "input-scale-negative": ('architecture = "rnn"\ninput_scale = -1', "", "", "model.input_scale"),
    "input-scale-nan": ('architecture = "rnn"', "input_scale = [nan]", "", "axes.input_scale"),
    "branch-layers-with-mlp": ("branch_layers = 2", "", "", "model.branch_layers"),
    "norm-with-rnn-only": ('architecture = "rnn"', 'norm = ["layernorm"]', "", "axes.norm"),
    "branch-scale-with-mlp-and-rnn": (
        "", 'architecture = ["mlp", "rnn"]\nbranch_scale = 0.5', "", "axes.branch_scale",
    ),
    "input-scale-without-rnn": (
        'architecture = "resmlp"\ninput_scale = 0.5', "", "", "model.input_scale",
    ),
    "norm-position-without-norm": (
        'architecture = "resmlp"\nnorm_position = "post"', "", "", "model.norm_position",
    ),
    "norm-position-with-norm-none": (
        'architecture = "resmlp"', 'norm = ["none"]\nnorm_position = ["pre"]', "",
        "axes.norm_position",
    ),
    "jacobian-with-rnn": ('architecture = "rnn"', "", "[run]\njacobian = true", "run.jacobian"),
    "jacobian-with-resmlp-in-axes": (
        "", 'architecture = ["mlp", "resmlp"]', "[run]\njacobian = true", "run.jacobian",
    ),
    "architecture-in-model-and-axes": (
        'architecture = "rnn"', 'architecture = ["rnn", "mlp"]', "", "model.architecture",
    ),
    "norm-in-model-and-axes": (
        'architecture = "resmlp"\nnorm = "rmsnorm"', 'norm = ["layernorm"]', "", "model.norm",
    ),
}  # fmt: skip


def sweep_text(model: str, axes: str, extra: str) -> str:
    return f'name = "bad"\n[model]\nwidth = 8\nbatch = 2\n{model}\n{NETWORK}{axes}\n{extra}\n'


@pytest.mark.parametrize("case", list(BAD), ids=list(BAD))
def test_bad_architecture_input_exits_2_naming_file_and_key(case, tmp_path, capsys):
    model, axes, extra, key = BAD[case]
    sweep = tmp_path / "bad.toml"
    sweep.write_text(sweep_text(model, axes, extra))
    out = tmp_path / "out"
    assert cli.main(["run", str(sweep), "--out", str(out), "--quiet"]) == 2
    err = capsys.readouterr().err
    assert f"{sweep}: {key}: got " in err, err
    assert "Traceback" not in err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["bad.toml"], "nothing may be written"


def test_the_module_entry_point_exits_2_too(tmp_path):
    model, axes, extra, key = BAD["branch-scale-unknown-rule"]
    sweep = tmp_path / "bad.toml"
    sweep.write_text(sweep_text(model, axes, extra))
    out = tmp_path / "out"
    finished = subprocess.run(
        [sys.executable, "-m", "gradbench", "run", str(sweep), "--out", str(out)],
        capture_output=True,
        text=True,
    )
    assert finished.returncode == 2, finished.stderr
    assert f"{sweep}: {key}: got '1/log(depth)'" in finished.stderr
    assert "1/sqrt(depth)" in finished.stderr  # what would have been accepted
    assert sorted(p.name for p in tmp_path.iterdir()) == ["bad.toml"]


def test_the_good_settings_parse():
    """The settings refused above are refused for their values, not their keys: the same keys with
    good values make a sweep."""
    from gradbench.sweep import spec as spec_module

    text = sweep_text(
        "",
        'architecture = ["mlp", "resmlp", "rnn"]\nbranch_layers = [1, 2]\n'
        'norm = ["none", "layernorm", "rmsnorm"]\nnorm_position = ["pre", "post"]\n'
        'branch_scale = [0.5, "1/sqrt(depth)", "1/depth"]\ninput_scale = [0.0, 1.0]',
        "",
    )
    spec = spec_module.parse(text)
    assert spec.axes["branch_scale"].values == (0.5, "1/sqrt(depth)", "1/depth")
    assert spec.axes["input_scale"].values == (0.0, 1.0)
