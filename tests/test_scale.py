"""Batch jobs at scale, on CPU: several devices, several processes, job arrays, resume after SIGKILL."""

import os
import signal
import socket
import subprocess
import sys
import time

import pandas as pd
import pytest

from gradbench import cli, results

SWEEP = """
name = "scale"
[model]
width = 16
batch = 4
[axes]
activation = ["tanh", "relu"]
sigma_w2 = [0.5, 1.5, 4.0]
sigma_b2 = [0.0]
depth = [3, 12, 13]
replicate = [0, 5, 6]
[run]
chunk_size = 2
"""
N_CONFIGS = 2 * 3 * 1 * 3 * 3  # 54, not a multiple of 4; depths 12 and 13 share a kernel


def gradbench(*args, env=None, **kwargs):
    return subprocess.Popen(
        [sys.executable, "-m", "gradbench", *map(str, args)],
        env={**os.environ, **(env or {})},
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        **kwargs,
    )


def finish(process, timeout=600):
    out, err = process.communicate(timeout=timeout)
    assert process.returncode == 0, err
    return out


def tables(path):
    run = results.load(path)
    return run.layers, run.summary


@pytest.fixture(scope="module")
def sweep_file(tmp_path_factory):
    path = tmp_path_factory.mktemp("scale") / "scale.toml"
    path.write_text(SWEEP)
    return path


@pytest.fixture(scope="module")
def reference(sweep_file):
    out = sweep_file.parent / "reference"
    assert cli.main(["run", str(sweep_file), "--out", str(out), "--quiet", "--no-report"]) == 0
    return tables(out)


def assert_same(path, reference, atol=0.0):
    """Equal tables; with atol, log10 values within atol (and q, not a log, within the same ratio)."""
    layers, summary = tables(path)
    ref_layers, ref_summary = reference
    assert len(summary) == N_CONFIGS
    pd.testing.assert_series_equal(
        layers.pop("q"), ref_layers["q"], check_exact=atol == 0, rtol=3 * atol
    )
    ref_layers = ref_layers.drop(columns="q")
    pd.testing.assert_frame_equal(layers, ref_layers, check_exact=atol == 0, atol=atol, rtol=0)
    pd.testing.assert_frame_equal(summary, ref_summary, check_exact=atol == 0, atol=atol, rtol=0)


def test_four_devices_match_one(sweep_file, reference, tmp_path):
    out = tmp_path / "four"
    env = {"XLA_FLAGS": "--xla_force_host_platform_device_count=4"}
    finish(gradbench("run", sweep_file, "--out", out, "--quiet", "--no-report", env=env))
    manifest = results.load(out).manifest
    assert manifest["device_count"] == 4
    assert all(g["chunk_shape"][1] % 4 == 0 for g in manifest["groups"])  # padded, never reported
    assert_same(out, reference, atol=1e-5)


def test_two_processes_match_one(sweep_file, reference, tmp_path):
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    out = tmp_path / "hosts"
    common = [
        "run",
        sweep_file,
        "--out",
        out,
        "--quiet",
        "--no-report",
        "--coordinator",
        f"127.0.0.1:{port}",
    ]
    workers = [gradbench(*common, "--num-processes", 2, "--process-id", i) for i in (0, 1)]
    outputs = [finish(w) for w in workers]
    assert f"{N_CONFIGS} configs" in outputs[0] and "chunks are written" in outputs[1]
    assert results.load(out).manifest["process_count"] == 2
    assert_same(out, reference)


def test_shards_then_merge_equal_the_whole_run(sweep_file, reference, tmp_path, capsys):
    parts = [tmp_path / f"part{i}" for i in range(3)]
    for i, part in enumerate(parts):
        assert (
            cli.main(["run", str(sweep_file), "--shard", f"{i}/3", "--out", str(part), "--quiet"])
            == 0
        )
    assert all(list(p.glob("*.parquet")) for p in parts)
    assert cli.main(["merge", *map(str, parts[:2]), "--out", str(tmp_path / "incomplete")]) == 2
    assert "missing" in capsys.readouterr().err
    assert (
        cli.main(["merge", *map(str, parts), "--out", str(tmp_path / "merged"), "--no-report"]) == 0
    )
    assert_same(tmp_path / "merged", reference)

    other = tmp_path / "other.toml"
    other.write_text(SWEEP.replace("[0.5, 1.5, 4.0]", "[0.5, 1.5, 4.5]"))
    assert (
        cli.main(
            ["run", str(other), "--shard", "0/3", "--out", str(tmp_path / "foreign"), "--quiet"]
        )
        == 0
    )
    assert (
        cli.main(
            ["merge", str(parts[1]), str(tmp_path / "foreign"), "--out", str(tmp_path / "mix")]
        )
        == 2
    )
    assert "differ" in capsys.readouterr().err
    assert not (tmp_path / "mix").exists()


def test_sigkill_then_resume_equals_an_uninterrupted_run(sweep_file, reference, tmp_path, capsys):
    out = tmp_path / "killed"
    parts = tmp_path / "killed.parts"
    process = gradbench(
        "run", sweep_file, "--out", out, "--quiet", "--no-report", start_new_session=True
    )
    deadline = time.monotonic() + 300
    # The first group's chunks land within milliseconds of each other; the next group then compiles
    # for seconds, which is when the kill arrives.
    while not list(parts.glob("*.parquet")) and time.monotonic() < deadline:
        time.sleep(0.02)
    os.killpg(process.pid, signal.SIGKILL)
    process.communicate()  # reaps it and closes its pipes
    finished = sorted(parts.glob("*.parquet"))
    assert finished and not out.exists()
    n_parts = len(finished)

    edited = tmp_path / "edited.toml"
    edited.write_text(SWEEP.replace("batch = 4", "batch = 5"))
    assert cli.main(["run", str(edited), "--out", str(out), "--quiet", "--no-report"]) == 2
    assert "--fresh" in capsys.readouterr().err
    assert len(list(parts.glob("*.parquet"))) == n_parts

    truncated = finished[0]
    truncated.write_bytes(truncated.read_bytes()[: truncated.stat().st_size // 2])
    assert cli.main(["run", str(sweep_file), "--out", str(out), "--quiet", "--no-report"]) == 0
    groups = results.load(out).manifest["groups"]
    assert (
        sum(g["chunks_resumed"] for g in groups) == n_parts - 1
    )  # the truncated part was recomputed
    assert sum(g["chunks"] for g in groups) > n_parts
    assert not parts.exists()
    assert_same(out, reference)


def test_out_of_memory_splits_the_chunk_and_retries(sweep_file, reference, tmp_path, monkeypatch):
    from gradbench.batch import execute

    real_kernel = execute.Kernels.kernel

    def kernel_with_small_memory(self, static, inputs, workspace):
        compiled = real_kernel(self, static, inputs, workspace)
        if inputs.sigma_w.size > 2:

            def exhausted(*args):
                raise RuntimeError("RESOURCE_EXHAUSTED: Out of memory allocating 1234 bytes")

            return exhausted
        return compiled

    monkeypatch.setattr(execute.Kernels, "kernel", kernel_with_small_memory)
    spec = sweep_file.read_text().replace("chunk_size = 2", "chunk_size = 8")
    path = tmp_path / "big-chunks.toml"
    path.write_text(spec)
    out = tmp_path / "oom"
    assert cli.main(["run", str(path), "--out", str(out), "--quiet", "--no-report"]) == 0
    groups = results.load(out).manifest["groups"]
    assert all(g["out_of_memory_splits"] > 0 for g in groups)
    layers, _ = tables(out)
    ref_layers, _ = reference
    pd.testing.assert_frame_equal(layers, ref_layers, check_exact=False, atol=1e-6, rtol=0)


def test_chunk_capacity_keeps_cpu_layers_cache_sized_and_workspaces_bounded():
    from gradbench.engine.chunks import chunk_capacity
    from gradbench.sweep.keys import KernelKey

    bench = KernelKey("mlp", 256, 128, 32, "probe", "float32", "log", ("tanh",), ("gaussian",))
    assert chunk_capacity(bench, None, "cpu") == 16  # 16 x 128 x 256 float32 = 2 MB per layer
    assert chunk_capacity(bench._replace(width=64), None, "cpu") == 64
    assert chunk_capacity(bench._replace(dtype="float64"), None, "cpu") == 8
    assert chunk_capacity(bench, None, "gpu") == 1024  # 4 GB workspace / (32 layers x 128 KB)
    deep = bench._replace(depth=10_000, batch=64)  # 655 MB per config
    assert chunk_capacity(deep, None, "cpu") == 1
    assert chunk_capacity(deep, None, "gpu") == 6
    assert chunk_capacity(bench._replace(width=4, batch=1), None, "gpu") == 2048  # the cap
    assert chunk_capacity(deep, 7, "cpu") == 7  # [run] chunk_size wins
