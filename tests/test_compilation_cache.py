"""The persistent compilation cache: a second identical run loads its kernels instead of compiling them."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from gradbench.engine import compilation_cache

SWEEP = """
name = "cached"
[model]
width = 16
batch = 8
[axes]
activation = ["tanh", "relu"]
sigma_w2 = [0.5, 2.0]
depth = [3]
[train]
optimizer = "sgd"
lr = [0.01]
steps = 4
log_every = 2
samples = 8
"""


def _run(sweep: Path, out: Path, cache: str) -> dict:
    env = {**os.environ, compilation_cache.ENV: cache}
    command = [sys.executable, "-m", "gradbench", "run", str(sweep), "--out", str(out)]
    done = subprocess.run(
        [*command, "--no-report", "--quiet"], env=env, capture_output=True, text=True, timeout=600
    )
    assert done.returncode == 0, done.stderr
    return json.loads((out / "manifest.json").read_text())


def _totals(manifest: dict) -> tuple[int, int]:
    kernels = [*manifest["groups"], *manifest["training"]["groups"]]
    return sum(g["compiles"] for g in kernels), sum(g["cache_hits"] for g in kernels)


@pytest.mark.timeout(900)
def test_second_run_compiles_no_kernel(tmp_path, tiny_sweep):
    sweep = tiny_sweep(SWEEP)
    cache = tmp_path / "cache"
    first = _run(sweep, tmp_path / "a", str(cache))
    second = _run(sweep, tmp_path / "b", str(cache))
    compiled, _ = _totals(first)
    assert compiled >= 2  # a gradient kernel per activation group, and the trainers
    assert any(cache.iterdir())
    assert _totals(second) == (0, compiled)  # every kernel the first run compiled, loaded


@pytest.mark.timeout(600)
def test_cache_can_be_disabled(tmp_path, tiny_sweep):
    sweep = tiny_sweep(SWEEP.replace("[train]", "[nothing]").split("[nothing]")[0])
    manifest = _run(sweep, tmp_path / "a", compilation_cache.DISABLED)
    assert all(g["cache_hits"] == 0 and g["compiles"] >= 1 for g in manifest["groups"])


def test_cache_directory_follows_the_environment(monkeypatch, tmp_path):
    monkeypatch.setenv(compilation_cache.ENV, str(tmp_path / "x"))
    assert compilation_cache.cache_dir() == tmp_path / "x"
    monkeypatch.setenv(compilation_cache.ENV, "off")
    assert compilation_cache.cache_dir() is None
    monkeypatch.delenv(compilation_cache.ENV)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    if not compilation_cache.jax.config.jax_compilation_cache_dir:
        assert compilation_cache.cache_dir() == tmp_path / "xdg" / "gradbench"
