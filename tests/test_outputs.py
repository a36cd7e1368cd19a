"""What a command may write over, delete or execute: issue 12's user-file, import and bad-file rows.

Every refusal goes through the command line and checks the files it protects byte for byte.
"""

import json
import os
import re
import shutil
import signal
import subprocess
import sys
from importlib.metadata import version
from pathlib import Path

import pandas as pd
import pytest

import gradbench
from gradbench import cli, pipeline
from gradbench.errors import SpecError

SWEEP = """
name = "outs"
[model]
width = 8
batch = 4
[axes]
activation = ["tanh"]
sigma_w = [0.5, 2.0]
depth = [2, 3]
[run]
chunk_size = 2
"""
N_CONFIGS = 4


def write_sweep(directory: Path, text: str = SWEEP, name: str = "outs.toml") -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / name
    path.write_text(text)
    return path


def snapshot(directory: Path) -> dict[str, bytes]:
    """Every file under `directory` (relative path -> bytes), to check that nothing changed."""
    return {
        str(p.relative_to(directory)): p.read_bytes()
        for p in sorted(directory.rglob("*"))
        if p.is_file()
    }


@pytest.fixture(scope="module")
def sweep(tmp_path_factory) -> Path:
    return write_sweep(tmp_path_factory.mktemp("sweep"))


@pytest.fixture(scope="module")
def run_dir(sweep, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("stored") / "run"
    assert cli.main(["run", str(sweep), "--out", str(out), "--quiet", "--no-report"]) == 0
    return out


@pytest.fixture(scope="module")
def shard(sweep, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("shards") / "shard0"
    assert cli.main(["run", str(sweep), "--shard", "0/1", "--out", str(out), "--quiet"]) == 0
    return out


def test_user_files_survive_run_merge_and_shard_into_them(sweep, shard, tmp_path, capsys):
    d = tmp_path / "d"
    (d / "sub").mkdir(parents=True)
    (d / "thesis.tex").write_text("x\n")
    (d / "sub" / "results.csv").write_text("y\n")
    before = snapshot(d)
    commands = [
        ["run", str(sweep), "--out", str(d), "--quiet"],
        ["merge", str(shard), "--out", str(d)],
        ["run", str(sweep), "--shard", "0/2", "--out", str(d), "--quiet"],
    ]
    for argv in commands:
        assert cli.main(argv) == 2, argv
        err = capsys.readouterr().err
        assert f"--out {d}" in err and "thesis.tex" in err, err
        assert snapshot(d) == before, argv
    assert sorted(p.name for p in tmp_path.iterdir()) == ["d"]  # no staging or parts directory


def test_out_never_holds_the_working_directory_the_sweep_home_or_system(
    run_dir, tmp_path, monkeypatch, capsys
):
    project = tmp_path / "project"
    sweep = write_sweep(project)
    home = tmp_path / "home"
    home.mkdir()
    monkeypatch.chdir(project)
    monkeypatch.setenv("HOME", str(home))
    before = snapshot(tmp_path)
    cases = {
        ".": f"<it is the current directory ({project})>",
        str(tmp_path): f"<a directory holding the current directory ({project})>",
        str(home): f"<it is your home directory ({home})>",
        "/": "<a directory holding the current directory",
        "/proc/x": "<a path under /proc>",
        "/usr/gradbench-run": "<a path under /usr>",
    }
    for out, reason in cases.items():
        assert cli.main(["run", sweep.name, "--out", out, "--quiet"]) == 2, out
        assert f"--out {out}: got {reason}" in capsys.readouterr().err
    assert snapshot(tmp_path) == before

    # A run directory's own spec.toml, run into that directory: the sweep file would be replaced.
    stored = tmp_path / "stored"
    shutil.copytree(run_dir, stored)
    kept = snapshot(stored)
    assert cli.main(["run", str(stored / "spec.toml"), "--out", str(stored), "--quiet"]) == 2
    assert f"<a directory holding {stored / 'spec.toml'}>" in capsys.readouterr().err
    assert snapshot(stored) == kept


def test_a_run_directory_is_replaced_by_its_sweep_and_by_another_only_with_overwrite(
    run_dir, sweep, tmp_path, capsys
):
    out = tmp_path / "run"
    shutil.copytree(run_dir, out)
    (out / "figures").mkdir()
    (out / "figures" / "old.png").write_bytes(b"an earlier report's figure")
    assert cli.main(["run", str(sweep), "--out", str(out), "--quiet", "--no-report"]) == 0
    assert not (out / "figures").exists(), "the old run was replaced as a whole"
    assert len(gradbench.load(out).summary) == N_CONFIGS

    other = write_sweep(tmp_path / "other", SWEEP.replace('"outs"', '"other"'), "other.toml")
    assert cli.main(["run", str(other), "--out", str(out), "--quiet", "--no-report"]) == 2
    err = capsys.readouterr().err
    assert "'outs'" in err and "--overwrite" in err
    assert json.loads((out / "manifest.json").read_text())["name"] == "outs"
    argv = ["run", str(other), "--out", str(out), "--quiet", "--no-report", "--overwrite"]
    assert cli.main(argv) == 0
    assert json.loads((out / "manifest.json").read_text())["name"] == "other"

    (out / "notes.txt").write_text("mine")  # now it is no longer only a run directory
    assert cli.main(argv) == 2
    assert "notes.txt" in capsys.readouterr().err
    assert (out / "notes.txt").read_text() == "mine"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["other", "run"]


def test_publication_removes_only_gradbench_files_from_the_parts_directory(
    sweep, tmp_path, monkeypatch, capsys
):
    out, parts = tmp_path / "run", tmp_path / "run.parts"

    def terminated(*args, **kwargs):  # every chunk is saved by now; SIGTERM stops the assembly
        handler = signal.getsignal(signal.SIGTERM)
        assert handler not in (signal.SIG_DFL, signal.SIG_IGN, None), "SIGTERM would kill pytest"
        os.kill(os.getpid(), signal.SIGTERM)
        raise AssertionError("SIGTERM did not interrupt the run")

    monkeypatch.setattr(pipeline, "build_run", terminated)
    argv = ["run", str(sweep), "--out", str(out), "--quiet", "--no-report"]
    assert cli.main(argv) == 130
    err = capsys.readouterr().err
    saved = sorted(p.name for p in parts.glob("*.parquet"))
    assert saved and not out.exists()
    assert f"{len(saved)} of {len(saved)} chunks are saved in {parts.resolve()}" in err
    assert f"resume with: gradbench run {sweep} --out {out} --no-report --quiet" in err
    monkeypatch.undo()

    (parts / "notes.txt").write_text("my notes")
    (parts / "mine.parquet").write_bytes(b"not a part")
    assert cli.main(argv) == 0
    assert len(gradbench.load(out).summary) == N_CONFIGS
    assert snapshot(parts) == {"notes.txt": b"my notes", "mine.parquet": b"not a part"}

    foreign = tmp_path / "foreign.parts"
    foreign.mkdir()
    (foreign / "data.csv").write_text("1,2\n")
    assert cli.main(["run", str(sweep), "--out", str(tmp_path / "foreign"), "--quiet"]) == 2
    assert f"{foreign.resolve()}: got <a directory holding data.csv" in capsys.readouterr().err
    assert snapshot(foreign) == {"data.csv": b"1,2\n"}
    assert not (tmp_path / "foreign").exists()


def test_fresh_discards_only_the_parts_of_a_shard_directory(sweep, shard, tmp_path):
    copy = tmp_path / "shard"
    shutil.copytree(shard, copy)
    (copy / "notes.parquet").write_bytes(b"the user's own table")
    parts = sorted(p.name for p in copy.glob("*-*.parquet"))
    argv = ["run", str(sweep), "--shard", "0/1", "--out", str(copy), "--quiet", "--fresh"]
    assert cli.main(argv) == 0
    assert (copy / "notes.parquet").read_bytes() == b"the user's own table"
    assert sorted(p.name for p in copy.glob("*-*.parquet")) == parts


def test_merge_never_imports_code_named_by_a_shard(shard, tmp_path, monkeypatch, capsys):
    imported = tmp_path / "imported"
    module = "gradbench_test_import_side_effect"
    modules = tmp_path / "modules"
    modules.mkdir()
    (modules / f"{module}.py").write_text(
        f"from pathlib import Path\nPath({str(imported)!r}).write_text('ran')\n"
        "import jax.numpy as jnp\n\ndef act(x):\n    return jnp.tanh(x)\n"
    )
    monkeypatch.syspath_prepend(str(modules))
    monkeypatch.delitem(sys.modules, module, raising=False)
    forged = tmp_path / "forged"
    shutil.copytree(shard, forged)
    text = (forged / "spec.toml").read_text()
    assert '"tanh"' in text
    (forged / "spec.toml").write_text(text.replace('"tanh"', f'"{module}:act"'))

    merged = tmp_path / "merged"
    assert cli.main(["merge", str(forged), "--out", str(merged)]) == 2
    assert "--allow-imports" in capsys.readouterr().err
    assert not imported.exists(), "merge imported a module named by a shard's spec.toml"
    assert not merged.exists()

    # Opting in imports it; the parts then belong to another sweep (the text changed).
    assert cli.main(["merge", str(forged), "--out", str(merged), "--allow-imports"]) == 2
    assert imported.read_text() == "ran"
    assert "another sweep" in capsys.readouterr().err
    sys.modules.pop(module, None)


@pytest.mark.parametrize(
    "damaged",
    ["data/layers.parquet", "data/summary.parquet", "data/training.parquet", "manifest.json"],
)
def test_truncated_or_corrupt_files_are_bad_input(run_dir, tmp_path, capsys, damaged):
    copy = tmp_path / "run"
    shutil.copytree(run_dir, copy)
    path = copy / damaged
    if not path.exists():  # a training table, as a [train] sweep writes it
        pd.read_parquet(copy / "data" / "summary.parquet").to_parquet(path)
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    assert cli.main(["report", str(copy)]) == 2
    err = capsys.readouterr().err
    assert f"gradbench: error: {path}: got <unreadable" in err, err
    with pytest.raises(SpecError, match=re.escape(str(path))):
        gradbench.load(copy)


def test_version_and_help_say_what_the_arguments_are(capsys):
    done = subprocess.run(
        [sys.executable, "-m", "gradbench", "--version"], capture_output=True, text=True
    )
    assert done.returncode == 0
    assert done.stdout.strip() == f"gradbench {version('gradbench')}"
    for command in ["run", "merge", "report"]:
        with pytest.raises(SystemExit) as info:
            cli.main([command, "--help"])
        assert info.value.code == 0
        text = " ".join(capsys.readouterr().out.split())
        assert "SPEC a sweep file (.toml), or the name of a built-in sweep" in text
        assert "RUN_DIR a directory written by gradbench run or merge" in text
        assert "--out may replace only an absent or empty directory" in text
        assert "130 interrupted" in text
    with pytest.raises(SystemExit):
        cli.main(["run", "--help"])
    text = " ".join(capsys.readouterr().out.split())
    assert "--overwrite let --out replace a run directory of a different sweep" in text
