"""Size before work: huge grids and impossible widths are refused at once; large grids expand fast."""

import os
import signal
import subprocess
import sys
import time

import jax.numpy as jnp
import numpy as np
import pytest

from gradbench import cli, schema
from gradbench.batch import sizing
from gradbench.engine.kernel import Chunk, make_kernel, new_workspace, predrawn
from gradbench.engine.model import Branch
from gradbench.errors import SpecError
from gradbench.sweep import grid
from gradbench.sweep import spec as spec_module
from gradbench.sweep.keys import KernelKey

HUGE = """
name = "huge"
[model]
width = 64
[axes]
activation = "tanh"
sigma_w2 = { linspace = [0.5, 4, 100000] }
sigma_b2 = { linspace = [0, 0.3, 1000] }
depth = [8]
"""

# Runs `python -m gradbench ARGS...` and writes, at exit, the process's peak resident memory in kB:
# VmHWM of this image. (The rusage of a forked child also counts the pages it shared with the test
# process before exec, so a large pytest process would be counted as the child's.)
PEAK_MEMORY_CHILD = """
import atexit, runpy, sys
from pathlib import Path

peak_file = Path(sys.argv.pop(1))
sys.argv[0] = "gradbench"


@atexit.register
def write_peak():
    status = Path("/proc/self/status").read_text().splitlines()
    peak_file.write_text(next(line.split()[1] for line in status if line.startswith("VmHWM:")))


runpy.run_module("gradbench", run_name="__main__")
"""


def test_huge_grid_is_refused_fast_and_with_small_memory(tmp_path):
    """10^8 configs: exit 2 with the count, the estimate, the machine's memory and the way out."""
    sweep, out = tmp_path / "huge.toml", tmp_path / "out"
    sweep.write_text(HUGE)
    stderr, peak_kb = tmp_path / "stderr.txt", tmp_path / "peak_kb.txt"
    with open(stderr, "w") as err:
        process = subprocess.Popen(
            [
                sys.executable,
                "-c",
                PEAK_MEMORY_CHILD,
                str(peak_kb),
                "run",
                str(sweep),
                "--out",
                str(out),
            ],
            stdout=subprocess.DEVNULL,
            stderr=err,
            start_new_session=True,
        )
    deadline = time.monotonic() + 240  # wall time on a busy machine; the CPU time is checked below
    while True:
        # os.wait4 gives this child's own CPU time (RUSAGE_CHILDREN: the sum over all children).
        pid, status, usage = os.wait4(process.pid, os.WNOHANG)
        if pid:
            process.returncode = os.waitstatus_to_exitcode(status)
            break
        if time.monotonic() > deadline:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait()
            raise AssertionError("the huge grid was not refused within 240 s")
        time.sleep(0.1)
    message = stderr.read_text()
    assert process.returncode == 2, message
    assert "100,000,000 configs" in message and "100,000 sigma_w2 x 1,000 sigma_b2" in message
    assert "GB" in message and "available" in message and "fewer axis values" in message
    assert int(peak_kb.read_text()) * 1024 < 1 << 30  # well under 1 GB (was 23.8 GB)
    assert usage.ru_utime + usage.ru_stime < 60  # mostly importing JAX
    assert not out.exists()


def test_width_that_cannot_fit_is_refused_before_any_work(tmp_path, capsys):
    sweep = tmp_path / "wide.toml"
    sweep.write_text(
        '[model]\nwidth = 1000000\n[axes]\nactivation = "tanh"\nsigma_w2 = 1.0\ndepth = 8\n'
    )
    assert cli.main(["run", str(sweep), "--out", str(tmp_path / "out"), "--quiet"]) == 2
    message = capsys.readouterr().err
    assert "model.width: got 1000000" in message
    assert "needs at least 8.0 TB" in message
    assert "CPU devices share" in message  # what the device (here: the host) has
    assert not (tmp_path / "out").exists()

    sweep.write_text(
        '[axes]\nwidth = [16, 1000000]\nactivation = "tanh"\nsigma_w2 = 1.0\ndepth = 8\n'
    )
    assert cli.main(["run", str(sweep), "--out", str(tmp_path / "out"), "--quiet"]) == 2
    assert "axes.width: got 1000000" in capsys.readouterr().err


def test_config_that_runs_out_of_memory_alone_is_refused(tmp_path, monkeypatch, capsys):
    """Beyond the lower bound: a chunk of one config that still runs out of memory is exit 2."""
    from gradbench.batch import execute

    def kernel_without_memory(self, static, inputs, workspace):
        def exhausted(*args):
            raise RuntimeError("RESOURCE_EXHAUSTED: Out of memory allocating 123456 bytes")

        return exhausted

    monkeypatch.setattr(execute.Kernels, "kernel", kernel_without_memory)
    sweep = tmp_path / "s.toml"
    sweep.write_text(
        '[model]\nwidth = 16\n[axes]\nactivation = "tanh"\nsigma_w2 = [1.0, 2.0]\ndepth = 3\n'
    )
    assert cli.main(["run", str(sweep), "--out", str(tmp_path / "out"), "--quiet"]) == 2
    message = capsys.readouterr().err
    assert "model.width: got 16" in message and "ran out of it alone" in message
    assert "allocating 123456 bytes" in message
    assert not (tmp_path / "out").exists()


def test_cgroup_limit_counts_and_shards_are_offered_when_they_help(tmp_path, monkeypatch, capsys):
    """A container's limit is what this machine has; --shard is offered when layer rows dominate."""
    limit, usage = tmp_path / "memory.max", tmp_path / "memory.current"
    limit.write_text(f"{2 << 30}\n")
    usage.write_text(f"{1 << 29}\n")
    monkeypatch.setattr(sizing, "_cgroup_files", lambda: [(limit, usage)])
    available, source = sizing.host_memory()
    assert available == (2 << 30) - (1 << 29) and str(limit) in source

    # 2,000 configs of depth 10,000: 20 million layer rows, a few GB, most of it layer rows.
    text = '[model]\nwidth = 2\nbatch = 1\n[axes]\nactivation = "tanh"\n'
    text += "sigma_w2 = { linspace = [0.5, 4, 2000] }\ndepth = 10000\n"
    sweep = tmp_path / "deep.toml"
    sweep.write_text(text)
    assert cli.main(["run", str(sweep), "--out", str(tmp_path / "out"), "--quiet"]) == 2
    message = capsys.readouterr().err
    assert "2,000 configs" in message and "20,000,000 layer rows" in message
    assert str(limit) in message and "--shard I/" in message
    shards = int(message.split("--shard I/")[1].split()[0])
    spec = spec_module.parse(text, source=str(sweep))
    sizing.check(spec, shards=shards)  # each job fits
    assert shards >= 2
    with pytest.raises(SpecError):
        sizing.check(spec, shards=shards - 1)


def test_size_of_a_grid_is_counted_from_its_axes():
    spec = spec_module.parse(
        '[model]\nwidth = 4\n[axes]\nactivation = ["tanh", "relu"]\nsigma_w2 = [1.0, 2.0, 3.0]\n'
        "depth = [2, 5]\nreplicate = { count = 2 }\n"
    )
    configs = grid.expand(spec)
    size = sizing.sweep_size(spec)
    assert size.configs == len(configs) == 24
    assert size.layer_rows == configs["depth"].sum() == 12 * 7
    assert sizing.sweep_size(spec, configs.iloc[:3]) == (3, int(configs["depth"].iloc[:3].sum()), 0)


@pytest.mark.parametrize(
    "static",
    [
        KernelKey("mlp", 256, 8, 4, "probe", "float32", "log", ("tanh",), ("gaussian",)),
        KernelKey("mlp", 128, 32, 48, "mse", "float32", "plain", ("relu",), ("uniform",)),
        KernelKey("mlp", 64, 4, 16, "probe", "float32", "log", ("tanh",), ("orthogonal",)),
    ],
    ids=lambda s: s.label,
)
def test_device_bound_is_below_what_the_compiled_kernel_needs(static):
    """The refusal rests on a lower bound: XLA's own count for one config is never below it."""
    rows = (1, 1)
    chunk = Chunk(
        replicate=jnp.zeros(1, jnp.int32),
        sigma_w=jnp.ones(rows),
        sigma_b=jnp.zeros(rows),
        depth=jnp.full(rows, static.depth, jnp.int32),
        branch=Branch(jnp.int32(0), jnp.int32(0), jnp.int32(static.depth)),
        weights=jnp.zeros((1, static.depth, static.width, static.width))
        if predrawn(static)
        else None,
    )
    compiled = make_kernel(static).lower(np.uint32(0), chunk, new_workspace(static, chunk))
    memory = compiled.compile().memory_analysis()
    needed = (
        memory.argument_size_in_bytes
        + memory.output_size_in_bytes
        + memory.temp_size_in_bytes
        - memory.alias_size_in_bytes
    )
    bound = sizing.config_device_bytes(
        static.width, static.batch, static.depth, static.dtype, static.init_families[0]
    )
    assert bound <= needed < 4 * bound


LARGE = """
[model]
width = 16
[axes]
activation = ["tanh", "relu"]
sigma_w2 = {{ linspace = [0.5, 4, {n}] }}
sigma_b2 = {{ linspace = [0, 0.3, 10] }}
depth = [4, 8, 16, 32, 64]
replicate = {{ count = 2 }}
"""
TRAIN = """
[train]
lr = [0.01, 0.1]
clip = ["none", "global_norm"]
clip_threshold = [1.0, 2.0]
"""
PRESETS = """
[model]
width = [16, 32]
[axes]
activation = "relu"
init = ["he", "torch-default", "lecun"]
sigma_b2 = [-0.0, 0.1]
depth = [3, 9]
"""


@pytest.mark.parametrize("text", [LARGE.format(n=3) + TRAIN, PRESETS], ids=["train", "presets"])
def test_config_ids_and_columns_are_those_of_the_per_row_definition(text):
    spec = spec_module.parse(text.replace("width = [16, 32]", "width = 16"))
    configs = grid.expand(spec)
    expected = [grid.config_id(row) for row in configs.to_dict("records")]
    assert configs["config_id"].tolist() == expected
    assert configs["config_id"].is_unique and len(configs) == spec.n_configs
    extra = [*schema.TRAIN_CONFIG_COLUMNS, "train_group"] if spec.train else []
    assert list(configs.columns) == [*schema.CONFIG_COLUMNS, *extra]
    if not spec.train:
        he = configs[configs["init"] == "he"]
        assert (he["sigma_w2"] == 2.0).all() and (he["init_family"] == "gaussian").all()
        assert np.signbit(configs["sigma_b2"]).sum() == len(configs) // 2  # -0.0 keeps its sign


def test_a_large_grid_expands_in_seconds():
    """200,000 configs: the per-row expansion took 26 s of CPU time here, this one about 1.5 s."""
    spec = spec_module.parse(LARGE.format(n=1000))
    started = time.process_time()
    configs = grid.expand(spec)
    groups = grid.kernel_groups(configs, spec)
    assert time.process_time() - started < 10
    assert len(configs) == spec.n_configs == 200_000
    ((key, lanes),) = groups  # one kernel; a lane per activation and depth bucket
    assert key.activations == ("relu", "tanh") and key.depth == 64 and len(lanes) == 2 * 5
