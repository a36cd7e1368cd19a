"""Reproducibility reviews: verify checks every number a stored run states against a re-run."""

import json
import shutil

import numpy as np
import pandas as pd
import pytest

from gradbench import cli, results, training
from gradbench.pipeline import verify
from gradbench.sweep import grid
from gradbench.sweep import spec as spec_module

SWEEP = """
name = "review"
[model]
width = 16
batch = 4
[axes]
activation = ["tanh"]
sigma_w2 = [0.5, 1.5, 4.0]
sigma_b2 = [0.0, 0.05]
depth = [3, 4, 12]
replicate = { count = 2 }
"""

# Eight trained networks: one gradient group, one trainer in two chunks of four.
TRAINING_SWEEP = """
name = "review-train"
[model]
width = 8
batch = 4
[axes]
activation = "tanh"
sigma_w2 = [0.5, 4.0]
depth = 3
replicate = { count = 2 }
[train]
optimizer = "sgd"
lr = 0.5
steps = 6
log_every = 3
task = "teacher"
samples = 8
clip = ["none", "global_norm"]
clip_threshold = 1.0
chunk_size = 4
"""


def _run(root, text, name):
    spec = root / f"{name}.toml"
    spec.write_text(text)
    out = root / name
    assert cli.main(["run", str(spec), "--out", str(out), "--quiet", "--no-report"]) == 0
    return out


@pytest.fixture(scope="module")
def stored(tmp_path_factory):
    return _run(tmp_path_factory.mktemp("review"), SWEEP, "run")


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    return _run(tmp_path_factory.mktemp("review-train"), TRAINING_SWEEP, "run")


def _copy(run_dir, tmp_path, name="copy"):
    return shutil.copytree(run_dir, tmp_path / name)


def _edit(path, column, change):
    """Rewrites one column of a stored table: `change(values) -> new values`."""
    table = pd.read_parquet(path)
    table[column] = change(table[column])
    table.to_parquet(path, index=False)


def test_verify_passes_on_an_intact_run_and_a_sample(stored, capsys):
    full = verify(stored)
    assert full.ok and full.mismatches.empty
    assert (full.largest["max_diff"] <= 1e-4).all()
    assert cli.main(["verify", str(stored), "--sample", "4"]) == 0
    printed = capsys.readouterr().out
    assert "verify: PASS" in printed
    assert "re-run of 4 of 36 configs" in printed and "layers: 4 configs, " in printed
    assert "every config (36)" in printed and "summary: 36 configs, 36 rows" in printed


def test_verify_fails_naming_altered_configs(stored, tmp_path, capsys):
    altered = _copy(stored, tmp_path)
    run = results.load(stored)
    victim = run.summary.loc[run.summary["depth"] == 12, "config_id"].iloc[1]
    at = (run.layers["config_id"] == victim) & (run.layers["layer"] == 2)
    _edit(altered / "data" / "layers.parquet", "log10_delta", lambda v: v.where(~at, v + 0.01))

    outcome = verify(altered)
    assert not outcome.ok
    mismatches = outcome.mismatches
    assert set(mismatches["config_id"]) == {victim}
    layers = mismatches[mismatches["table"] == "layers"]
    assert list(layers["layer"]) == [2] and list(layers["column"]) == ["log10_delta"]
    # The stored summary no longer matches its own layers: the growth rate moved.
    assert "delta_growth" in set(mismatches.loc[mismatches["table"] == "summary", "column"])
    assert cli.main(["verify", str(altered)]) == 3
    printed = capsys.readouterr().out
    assert victim in printed and "verify: FAIL" in printed


def test_verify_refuses_an_edited_spec(stored, tmp_path, capsys):
    edited = _copy(stored, tmp_path)
    spec = edited / "spec.toml"
    spec.write_text(spec.read_text().replace("[0.5, 1.5, 4.0]", "[0.5, 1.5, 4.5]"))
    assert cli.main(["verify", str(edited)]) == 2
    assert "spec.toml" in capsys.readouterr().err


def test_verify_checks_the_summary_of_configs_outside_the_sample(stored, tmp_path, capsys):
    altered = _copy(stored, tmp_path)
    summary = results.load(stored).summary
    sampled = np.random.default_rng(0).choice(len(summary), 1, replace=False)[0]
    victim = summary["config_id"].iloc[(sampled + 1) % len(summary)]
    row = summary["config_id"] == victim
    _edit(altered / "data" / "summary.parquet", "chi1", lambda v: v.where(~row, v * 1.01))
    assert cli.main(["verify", str(altered), "--sample", "1", "--seed", "0"]) == 3
    printed = capsys.readouterr().out
    assert "re-run of 1 of 36 configs: ok" in printed
    assert "summary.chi1 1" in printed and victim in printed


def test_verify_checks_the_config_table_against_the_spec(stored, tmp_path, capsys):
    altered = _copy(stored, tmp_path)
    _edit(altered / "data" / "configs.parquet", "sigma_b2", lambda v: v + 1e-12)
    assert cli.main(["verify", str(altered), "--sample", "1"]) == 3
    assert "configs.sigma_b2 36" in capsys.readouterr().out


def test_verify_fails_on_tampered_training_results(trained, tmp_path, capsys):
    """The issue's repro: every trained/diverged flipped and every loss x100 must not pass."""
    tampered = _copy(trained, tmp_path)
    for column in ("trained", "diverged"):
        _edit(tampered / "data" / "summary.parquet", column, lambda v: ~v)
    for column in ("loss_initial", "loss_final", "loss_baseline"):
        _edit(tampered / "data" / "summary.parquet", column, lambda v: v * 100)
    _edit(tampered / "data" / "training.parquet", "loss", lambda v: v * 100)

    assert cli.main(["verify", str(tampered)]) == 3
    printed = capsys.readouterr().out
    assert "verify: FAIL" in printed
    for named in ("trained 8", "diverged 8", "loss_initial 8", "loss_baseline 8"):
        assert f"outcomes.{named}" in printed
    assert "training.loss 24" in printed
    assert "activation=tanh" not in printed  # a constant axis does not name configs
    assert "sigma_w2=4" in printed


def test_verify_re_trains_an_untampered_run_bit_for_bit(trained, capsys):
    assert cli.main(["verify", str(trained), "--sample", "1"]) == 0
    printed = capsys.readouterr().out
    assert "verify: PASS" in printed
    # The sampled config's trainer chunk (chunk_size = 4) is re-trained: 4 configs x 3 log steps.
    assert "re-run of 1 of 8 configs and re-training of the 4 configs of their chunks" in printed
    for table in (
        "outcomes: 4 configs",
        "training: 4 configs, 12 rows",
        "training_layers: 4 configs, 36 rows",
    ):
        assert table in printed
    outcome = verify(trained, sample=1)
    training_tables = {"training", "training_layers", "outcomes"}
    assert not outcome.largest["table"].isin(training_tables).any()  # identical values


def test_a_config_retrained_in_its_chunk_repeats_the_sweep(trained):
    run = results.load(trained)
    spec = spec_module.parse(run.spec_text, source="spec.toml")
    configs = grid.expand(spec)
    again = training.train_configs(spec, configs, only=configs["config_id"].iloc[[5]])
    chunk = configs["config_id"].iloc[4:8]  # the second of the trainer's two chunks of 4
    assert list(again.outcomes["config_id"]) == list(chunk)
    stored = pd.read_parquet(trained / "data" / "training.parquet")
    stored = stored[stored["config_id"].isin(chunk)].reset_index(drop=True)
    pd.testing.assert_frame_equal(again.steps, stored, check_exact=True)


def test_verify_on_another_setup_compares_what_does_not_depend_on_the_trajectory(
    trained, tmp_path, capsys
):
    elsewhere = _copy(trained, tmp_path)
    manifest = json.loads((elsewhere / "manifest.json").read_text())
    manifest["jax_version"] = "0.0.0"
    (elsewhere / "manifest.json").write_text(json.dumps(manifest))
    later = pd.read_parquet(elsewhere / "data" / "training.parquet")["step"] > 0
    _edit(elsewhere / "data" / "training.parquet", "loss", lambda v: v.where(~later, v * 2))

    assert cli.main(["verify", str(elsewhere), "--sample", "1"]) == 0
    assert "not compared" in capsys.readouterr().out
    assert cli.main(["verify", str(elsewhere), "--sample", "1", "--train-tolerance", "1e-3"]) == 3
    assert "training.loss" in capsys.readouterr().out
    _edit(elsewhere / "data" / "training.parquet", "loss", lambda v: v.where(later, v * 1.01))
    assert cli.main(["verify", str(elsewhere), "--sample", "1"]) == 3
    assert "training.loss" in capsys.readouterr().out


def test_verify_refuses_a_training_run_without_its_training_tables(trained, tmp_path, capsys):
    stripped = _copy(trained, tmp_path)
    (stripped / "data" / "training_layers.parquet").unlink()
    assert cli.main(["verify", str(stripped)]) == 2
    assert "training_layers" in capsys.readouterr().err
