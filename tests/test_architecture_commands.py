"""The residual MLP and the RNN through every command: run, report, verify, compare, shard + merge and
an interrupted run resumed, on one tiny sweep of both (24 configs, several chunks per architecture)."""

import os
import shutil
import signal

import pandas as pd
import pytest

from gradbench import cli, results
from gradbench.batch.parts import PartStore
from gradbench.pipeline import verify

SWEEP = """
name = "arch-commands"
seed = 4
[model]
width = 8
batch = 2
input_scale = 0.5
[axes]
architecture = ["resmlp", "rnn"]
branch_layers = [2]
norm = ["none", "layernorm"]
norm_position = ["post"]
branch_scale = ["1/sqrt(depth)"]
activation = "tanh"
sigma_w2 = [0.5, 2.0]
sigma_b2 = [0.05]
depth = [2, 3]
replicate = { count = 2 }
[run]
chunk_size = 4
"""
N_CONFIGS = 16 + 8  # resmlp: 2 norms x 2 scales x 2 depths x 2 replicates; rnn: no norm


def run_cli(sweep, out, *extra):
    return cli.main(["run", str(sweep), "--out", str(out), "--quiet", *map(str, extra)])


def assert_same_tables(a, b):
    a, b = results.load(a), results.load(b)
    for name in ("configs", "layers", "summary"):
        pd.testing.assert_frame_equal(getattr(a, name), getattr(b, name), obj=name)


def edit_layers(run_dir, at, column, change):
    path = run_dir / "data" / "layers.parquet"
    table = pd.read_parquet(path)
    table[column] = table[column].where(~at(table), change(table[column]))
    table.to_parquet(path, index=False)


@pytest.fixture(scope="module")
def sweep(tmp_path_factory):
    path = tmp_path_factory.mktemp("sweep") / "arch-commands.toml"
    path.write_text(SWEEP)
    return path


@pytest.fixture(scope="module")
def stored(sweep):
    out = sweep.parent / "run"
    assert run_cli(sweep, out, "--no-report") == 0
    return out


def test_run_writes_both_architectures_and_report_renders_them(stored, tmp_path, capsys):
    run = results.load(stored)
    assert len(run.summary) == N_CONFIGS
    counts = run.configs["architecture"].value_counts().to_dict()
    assert counts == {"resmlp": 16, "rnn": 8}
    rows_per_config = run.layers.groupby("config_id").size()
    depth = run.configs.set_index("config_id")["depth"]
    blocks = run.configs.set_index("config_id")["branch_layers"].clip(lower=0) + 1
    pd.testing.assert_series_equal(
        rows_per_config.sort_index(), (depth * blocks).sort_index(), check_names=False
    )
    assert (run.layers["flag"] == "ok").all()

    copy = shutil.copytree(stored, tmp_path / "copy")
    assert not (copy / "report.md").exists()
    assert cli.main(["report", str(copy)]) == 0
    assert "report written" in capsys.readouterr().out
    assert (copy / "index.html").is_file()
    report = (copy / "report.md").read_text()
    assert "resmlp" in report and "rnn" in report
    assert_same_tables(copy, stored)  # rendering touches no table


def test_verify_passes_and_catches_an_altered_sublayer_and_step(stored, tmp_path, capsys):
    outcome = verify(stored)
    assert outcome.ok and outcome.mismatches.empty
    assert cli.main(["verify", str(stored), "--sample", "6"]) == 0
    assert "verify: PASS" in capsys.readouterr().out

    run = results.load(stored)
    configs = run.configs.set_index("config_id")
    residual = configs.index[(configs["architecture"] == "resmlp") & (configs["depth"] == 3)][0]
    recurrent = configs.index[(configs["architecture"] == "rnn") & (configs["depth"] == 3)][0]
    altered = shutil.copytree(stored, tmp_path / "altered")

    def victims(t):
        dense = (t["config_id"] == residual) & (t["layer"] == 2) & (t["sublayer"] == 2)
        step = (t["config_id"] == recurrent) & (t["layer"] == 3)
        return dense | step

    edit_layers(altered, victims, "log10_grad_w", lambda v: v + 0.01)
    outcome = verify(altered)
    assert not outcome.ok
    layers = outcome.mismatches[outcome.mismatches["table"] == "layers"]
    assert set(layers["config_id"]) == {residual, recurrent}
    assert set(layers["column"]) == {"log10_grad_w"}
    assert cli.main(["verify", str(altered)]) == 3
    printed = capsys.readouterr().out
    assert "verify: FAIL" in printed and residual in printed and recurrent in printed


def test_shards_merge_into_the_single_run_and_compare_equal(sweep, stored, tmp_path, capsys):
    shards = [tmp_path / f"shard{i}" for i in range(3)]
    for i, shard in enumerate(shards):
        assert run_cli(sweep, shard, "--shard", f"{i}/3") == 0
    assert all(list(shard.glob("*.parquet")) for shard in shards)
    merged = tmp_path / "merged"
    assert cli.main(["merge", *map(str, shards), "--out", str(merged), "--no-report"]) == 0
    assert_same_tables(merged, stored)

    capsys.readouterr()
    assert cli.main(["compare", str(stored), str(merged)]) == 0
    assert "compare: SAME" in capsys.readouterr().out

    # compare joins on (layer, sublayer): one dense layer of one block differs, and is named.
    run = results.load(stored)
    residual = run.configs.loc[run.configs["architecture"] == "resmlp", "config_id"].iloc[0]

    def dense(t):
        return (t["config_id"] == residual) & (t["layer"] == 1) & (t["sublayer"] == 1)

    edit_layers(merged, dense, "log10_delta", lambda v: v + 0.05)
    assert cli.main(["compare", str(stored), str(merged)]) == 3
    printed = capsys.readouterr().out
    assert "compare: DIFFERENT" in printed and residual in printed


def test_an_interrupted_run_resumes_to_the_uninterrupted_tables(
    sweep, stored, tmp_path, monkeypatch, capsys
):
    """SIGTERM after the first chunk is saved, as a batch scheduler sends it: exit 130, that chunk
    kept; the same command then computes only the others and ends with the full run's tables."""
    out, parts = tmp_path / "run", tmp_path / "run.parts"
    save = PartStore.save

    def save_then_terminate(self, key, frame):
        save(self, key, frame)
        handler = signal.getsignal(signal.SIGTERM)
        assert handler not in (signal.SIG_DFL, signal.SIG_IGN, None), "SIGTERM would kill pytest"
        os.kill(os.getpid(), signal.SIGTERM)
        raise AssertionError("SIGTERM did not interrupt the run")

    monkeypatch.setattr(PartStore, "save", save_then_terminate)
    assert run_cli(sweep, out, "--no-report") == 130
    err = capsys.readouterr().err
    assert "1 of " in err and "chunks are saved" in err, err
    assert len(list(parts.glob("*.parquet"))) == 1 and not out.exists()
    monkeypatch.undo()

    assert run_cli(sweep, out, "--no-report") == 0
    groups = results.load(out).manifest["groups"]
    assert sum(g["chunks_resumed"] for g in groups) == 1
    assert sum(g["chunks"] for g in groups) > 1
    assert not parts.exists()
    assert_same_tables(out, stored)
