"""gradbench compare: config-by-config differences of two runs, exit status 3 when they differ."""

import shutil

import numpy as np
import pandas as pd
import pytest

from gradbench import cli, results
from gradbench.analysis.compare import Tolerance, compare, config_labels

SWEEP = """
name = "pair"
seed = {seed}
[model]
width = 8
batch = 4
[axes]
activation = "tanh"
sigma_w2 = [0.5, 4.0]
depth = [2, 3]
replicate = {{ count = 2 }}
[train]
optimizer = "sgd"
lr = 0.2
steps = 4
log_every = 2
task = "teacher"
samples = 8
"""


@pytest.fixture(scope="module")
def pair(tmp_path_factory):
    """A small training run (8 configs) and a run of the same axes under another seed."""
    root = tmp_path_factory.mktemp("pair")
    runs = []
    for seed in (0, 1):
        spec = root / f"seed{seed}.toml"
        spec.write_text(SWEEP.format(seed=seed))
        out = root / f"run{seed}"
        assert cli.main(["run", str(spec), "--out", str(out), "--quiet", "--no-report"]) == 0
        runs.append(out)
    return runs


def _copy(run_dir, tmp_path):
    return shutil.copytree(run_dir, tmp_path / "copy")


def _edit(path, column, change):
    table = pd.read_parquet(path)
    table[column] = change(table[column])
    table.to_parquet(path, index=False)


def test_identical_runs_exit_0(pair, tmp_path, capsys):
    copy = _copy(pair[0], tmp_path)
    assert cli.main(["compare", str(pair[0]), str(copy)]) == 0
    printed = capsys.readouterr().out
    assert "mismatches beyond tolerance: 0" in printed and "compare: SAME" in printed
    for table in (
        "layers: 8 configs, 20 rows",
        "summary: 8 configs",
        "training: 8 configs, 24 rows",
    ):
        assert table in printed


def test_a_difference_beyond_tolerance_exits_3_naming_the_config_by_its_axes(
    pair, tmp_path, capsys
):
    copy = _copy(pair[0], tmp_path)
    summary = results.load(pair[0]).summary
    victim = summary.iloc[5]
    layers = pd.read_parquet(copy / "data" / "layers.parquet")
    at = (layers["config_id"] == victim["config_id"]) & (layers["layer"] == 2)
    _edit(copy / "data" / "layers.parquet", "log10_grad_b", lambda v: v.where(~at, v + 0.01))

    assert cli.main(["compare", str(pair[0]), str(copy)]) == 3
    printed = capsys.readouterr().out
    assert "compare: DIFFERENT" in printed and "layers.log10_grad_b 1" in printed
    name = (
        f"sigma_w2={victim['sigma_w2']:g} depth={victim['depth']} replicate={victim['replicate']}"
    )
    assert name in printed
    assert cli.main(["compare", str(pair[0]), str(copy), "--tolerance", "0.02"]) == 0


def test_a_changed_regime_alone_exits_3(pair, tmp_path, capsys):
    copy = _copy(pair[0], tmp_path)
    _edit(copy / "data" / "summary.parquet", "regime", lambda v: v.where(v.index != 2, "nonfinite"))
    assert cli.main(["compare", str(pair[0]), str(copy)]) == 3
    printed = capsys.readouterr().out
    assert "mismatches beyond tolerance: 0" in printed
    assert "configs whose regime changed: 1" in printed


def test_training_tables_are_compared(pair, tmp_path, capsys):
    copy = _copy(pair[0], tmp_path)
    _edit(copy / "data" / "training_layers.parquet", "log10_grad_w", lambda v: v + 0.5)
    _edit(copy / "data" / "summary.parquet", "trained", lambda v: ~v)
    assert cli.main(["compare", str(pair[0]), str(copy)]) == 3
    printed = capsys.readouterr().out
    assert "training_layers.log10_grad_w 60" in printed and "outcomes.trained 8" in printed


def test_runs_without_a_shared_config_exit_2(pair, capsys):
    assert cli.main(["compare", str(pair[0]), str(pair[1])]) == 2
    error = capsys.readouterr().err
    assert "no config in common" in error and str(pair[1]) in error


def test_only_configs_of_both_sides_are_compared():
    """A config on one side only is reported, not a mismatch; a layer one side lacks is."""
    summary = pd.DataFrame(
        {
            "config_id": ["a", "b", "c"],
            "sigma_w2": [1.0, 2.0, 3.0],
            "depth": [2, 2, 2],
            "regime": "stable",
            "log10_delta_ratio": 0.0,
        }
    )
    layers = pd.DataFrame(
        {
            "config_id": np.repeat(["a", "b", "c"], 2),
            "layer": [1, 2] * 3,
            "log10_delta": np.arange(6.0),
            "flag": "ok",
        }
    )
    b_layers = layers[
        (layers["config_id"] != "c") & ~((layers["config_id"] == "b") & (layers["layer"] == 2))
    ]
    result = compare(
        {"layers": layers, "summary": summary},
        {"layers": b_layers, "summary": summary.iloc[:2]},
        tolerance=Tolerance(1e-3, 1e-3),
    )
    assert result.only_in_a == ["c"] and not result.only_in_b
    assert list(result.mismatches["column"]) == ["<row>"]
    assert list(result.mismatches[["config_id", "layer"]].itertuples(index=False, name=None)) == [
        ("b", 2)
    ]
    assert config_labels(summary).to_dict() == {
        "a": "sigma_w2=1",
        "b": "sigma_w2=2",
        "c": "sigma_w2=3",
    }


@pytest.mark.parametrize(
    ("kind_column", "a", "b", "differs"),
    [
        ("log10_delta", 1.0, 1.0 + 0.9e-3, False),
        ("log10_delta", 1.0, 1.0 + 1.1e-3, True),
        ("log10_delta", np.nan, np.nan, False),
        ("log10_delta", np.nan, 1.0, True),
        ("log10_delta", np.inf, np.inf, False),
        ("log10_delta", np.inf, -np.inf, True),
        ("q", 100.0, 100.2, False),  # relative 2e-3 < 10^1e-3 - 1 = 2.3e-3
        ("q", 100.0, 100.3, True),
        ("flag", "ok", "underflow", True),
    ],
)
def test_each_kind_of_column_has_its_stated_tolerance(kind_column, a, b, differs):
    frame = lambda value: pd.DataFrame({"config_id": ["x"], "layer": [1], kind_column: [value]})  # noqa: E731
    result = compare({"layers": frame(a)}, {"layers": frame(b)}, tolerance=Tolerance(1e-3, 1e-3))
    assert (not result.ok) == differs
