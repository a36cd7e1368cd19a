"""End to end through the command line: files, documented columns, exit codes."""

import json
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from gradbench import cli, results

DOCS = Path(__file__).resolve().parent.parent / "docs" / "results.md"

SWEEP = """
name = "tiny"
description = "two activations, two scales, two depths"
[model]
width = 8
batch = 4
[axes]
activation = ["tanh", "relu"]
sigma_w = [0.5, 2.0]
sigma_b2 = [0.0, 0.1]
depth = [2, 3]
replicate = { count = 2 }
"""


def documented_columns(section: str) -> set[str]:
    """Column names listed in the docs/results.md table under `## <section>`."""
    text = DOCS.read_text().split(f"## {section}\n", 1)[1].split("\n## ", 1)[0]
    names = set()
    for line in text.splitlines():
        if line.startswith("| `"):
            names.update(re.findall(r"`([a-z0-9_]+)`", line.split("|")[1]))
    return names


def test_run_writes_every_file_with_the_documented_columns(tmp_path, capsys):
    spec = tmp_path / "tiny.toml"
    spec.write_text(SWEEP)
    out = tmp_path / "run"
    assert cli.main(["run", str(spec), "--out", str(out), "--quiet"]) == 0
    assert "tiny: 32 configs" in capsys.readouterr().out
    for name in ["spec.toml", "manifest.json", "index.html", "report.md"]:
        assert (out / name).is_file(), name
    assert (out / "spec.toml").read_text() == SWEEP
    assert not list(tmp_path.glob(".run.*")), "no staging directory left behind"

    configs = pd.read_parquet(out / "data" / "configs.parquet")
    layers = pd.read_parquet(out / "data" / "layers.parquet")
    summary = pd.read_parquet(out / "data" / "summary.parquet")
    assert documented_columns("configs.parquet") <= set(configs.columns)
    assert documented_columns("layers.parquet") <= set(layers.columns)
    assert documented_columns("summary.parquet") - {"chi1"} <= set(summary.columns)
    assert len(configs) == len(summary) == 2 * 2 * 2 * 2 * 2
    assert len(layers) == configs["depth"].sum()
    assert set(summary["regime"]) <= {"vanishing", "stable", "exploding", "nonfinite"}

    manifest = json.loads((out / "manifest.json").read_text())
    for key in [
        "schema_version",
        "spec_sha256",
        "git_commit",
        "jax_version",
        "backend",
        "device_count",
        "groups",
    ]:
        assert key in manifest, key
    assert manifest["n_configs"] == 32
    assert manifest["axes"]["sigma_w2"]["values"] == [0.25, 4.0]

    loaded = results.load(out)
    pd.testing.assert_frame_equal(loaded.summary, summary)


def test_rerun_replaces_the_run_only_when_complete(tmp_path):
    spec = tmp_path / "tiny.toml"
    spec.write_text(SWEEP)
    out = tmp_path / "run"
    assert cli.main(["run", str(spec), "--out", str(out), "--quiet", "--no-report"]) == 0
    first = pd.read_parquet(out / "data" / "summary.parquet")
    assert cli.main(["run", str(spec), "--out", str(out), "--quiet", "--no-report"]) == 0
    pd.testing.assert_frame_equal(first, pd.read_parquet(out / "data" / "summary.parquet"))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["run", "tiny.toml"]


def test_module_entry_point_and_list():
    listing = subprocess.run(
        [sys.executable, "-m", "gradbench", "list"], capture_output=True, text=True, check=True
    ).stdout
    for name in ["sigmoid", "gelu_tanh", "mish", "orthogonal", "torch-default", "probe", "default"]:
        assert name in listing
    bad = subprocess.run([sys.executable, "-m", "gradbench", "run"], capture_output=True, text=True)
    assert bad.returncode == 2


def test_python_api_mirrors_the_cli(tmp_path):
    import gradbench

    spec = tmp_path / "tiny.toml"
    spec.write_text(SWEEP)
    run = gradbench.run(spec, out=tmp_path / "api", progress=False, report=False)
    assert run.path == (tmp_path / "api").resolve()
    assert len(run.summary) == len(run.configs) == 32
    assert set(run.layers["config_id"]) == set(run.configs["config_id"])
    again = gradbench.load(run.path)
    pd.testing.assert_frame_equal(again.layers, run.layers)


def test_summary_carries_mean_field_theory(tmp_path):
    import gradbench

    spec = tmp_path / "tiny.toml"
    spec.write_text(SWEEP)
    summary = gradbench.run(spec, out=tmp_path / "theory", progress=False, report=False).summary
    relu = summary[summary["activation"] == "relu"]
    # Closed forms: ReLU chi_1 = sigma_w^2 / 2 at any q; predicted r = (L - 1) log10(chi_1) / 2.
    np.testing.assert_allclose(relu["chi1"], relu["sigma_w2"] / 2, rtol=1e-9)
    expected = (relu["depth"] - 1) * np.log10(relu["sigma_w2"] / 2) / 2
    np.testing.assert_allclose(relu["predicted_log10_delta_ratio"], expected, rtol=1e-9)
    tanh = summary[(summary["activation"] == "tanh") & (summary["sigma_b2"] == 0.0)]
    # tanh without bias below sigma_w^2 = 1: q* = 0 and chi_1 = sigma_w^2 tanh'(0)^2 = sigma_w^2.
    small = tanh[tanh["sigma_w2"] < 1]
    np.testing.assert_allclose(small["chi1"], small["sigma_w2"], rtol=1e-6)
    assert (small["q_star"] == 0).all()


def test_theory_command_prints_critical_point_and_depth_scales(capsys):
    assert cli.main(["theory", "--activation", "tanh", "--sigma-b2", "0.05"]) == 0
    text = capsys.readouterr().out
    assert "1.76095" in text and "xi_grad" in text and "chaotic" in text and "ordered" in text
    assert (
        cli.main(
            ["theory", "--activation", "relu", "--sigma-b2", "0.05", "--sigma-w2", "3", "--json"]
        )
        == 0
    )

    def refuse(constant):
        raise AssertionError(f"not strict JSON: {constant}")

    data = json.loads(capsys.readouterr().out, parse_constant=refuse)
    assert data["chi1"] == pytest.approx(1.5) and data["q_star"] == "inf"
