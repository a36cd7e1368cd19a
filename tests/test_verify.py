"""Reproducibility reviews: verify re-runs stored configs; compare joins two runs on config_id."""

import pandas as pd
import pytest

from gradbench import cli, results
from gradbench.compare import compare
from gradbench.verify import verify

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


@pytest.fixture(scope="module")
def stored(tmp_path_factory):
    root = tmp_path_factory.mktemp("review")
    spec = root / "review.toml"
    spec.write_text(SWEEP)
    assert cli.main(["run", str(spec), "--out", str(root / "run"), "--quiet", "--no-report"]) == 0
    return root / "run"


def test_verify_passes_on_an_intact_run_and_a_sample(stored, capsys):
    full = verify(stored)
    assert full.ok and full.mismatches.empty
    assert full.largest["max_abs_diff"].max() <= 1e-4
    sampled = verify(stored, sample=5, seed=3)
    assert sampled.ok
    assert cli.main(["verify", str(stored), "--sample", "4"]) == 0
    assert "verify: PASS" in capsys.readouterr().out


def test_verify_fails_naming_altered_configs(stored, tmp_path, capsys):
    altered = tmp_path / "altered"
    run = results.load(stored)
    victim = run.summary["config_id"].iloc[7]
    layers = run.layers.copy()
    layers.loc[(layers["config_id"] == victim) & (layers["layer"] == 2), "log10_delta"] += 0.01
    run.layers = layers
    run.path = altered
    run.write_data()

    outcome = verify(altered)
    assert not outcome.ok
    assert set(outcome.mismatches["config_id"]) == {victim}
    assert list(outcome.mismatches["layer"]) == [2]
    assert cli.main(["verify", str(altered)]) == 3
    printed = capsys.readouterr().out
    assert victim in printed and "verify: FAIL" in printed


def test_verify_refuses_an_edited_spec(stored, tmp_path, capsys):
    edited = tmp_path / "edited"
    run = results.load(stored)
    run.path = edited
    run.spec_text = run.spec_text.replace("[0.5, 1.5, 4.0]", "[0.5, 1.5, 4.5]")
    run.write_data()
    assert cli.main(["verify", str(edited)]) == 2
    assert "spec.toml" in capsys.readouterr().err


def test_compare_reports_regime_changes_and_largest_differences(stored):
    run = results.load(stored)
    summary_b = run.summary.copy()
    flipped = summary_b.index[summary_b["regime"] == "stable"][0]
    summary_b.loc[flipped, "regime"] = "exploding"
    layers_b = run.layers.copy()
    layers_b["log10_q"] += 5e-4
    result = compare(run.layers, run.summary, layers_b, summary_b, tolerance=1e-3)
    assert result.ok  # within tolerance
    assert list(result.regime_changes["config_id"]) == [summary_b.at[flipped, "config_id"]]
    largest = result.largest.set_index("statistic")["max_abs_diff"]
    assert largest["log10_q"] == pytest.approx(5e-4)
    assert largest["log10_delta"] == 0
    strict = compare(run.layers, run.summary, layers_b, summary_b.iloc[1:], tolerance=1e-4)
    assert not strict.ok and len(strict.only_in_a) == 1
    assert set(strict.mismatches["statistic"]) == {"log10_q"}
    pd.testing.assert_frame_equal(run.summary, results.load(stored).summary)
