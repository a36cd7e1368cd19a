"""Several devices on CPU: every init family finishes on 4 forced devices, with 1 device's tables.

The orthogonal draw is a batched LAPACK QR. Run inside the sharded kernel it deadlocked XLA:CPU's
intra-op pool on 4 forced devices (every worker waiting in the QR for sub-tasks none could run), so
a hang is what this test guards against: the run has a deadline, and missing it fails the test.
"""

import os
import signal
import subprocess
import sys

import numpy as np
import pandas as pd

from gradbench import cli, registry, results

FAMILIES = sorted(registry.INIT_FAMILIES)
SWEEP = f"""
name = "devices"
[model]
width = 64
batch = 8
[axes]
activation = "tanh"
init = {FAMILIES}
sigma_w2 = [0.5, 1.0, 2.0, 4.0]
sigma_b2 = [0.1]
depth = [2]
replicate = {{ count = 4 }}
"""
DEADLINE_SECONDS = 300  # it takes ~30 s; the orthogonal configs alone used to hang for good


def run_on_four_devices(sweep, out):
    process = subprocess.Popen(
        [sys.executable, "-m", "gradbench", "run", sweep, "--out", out, "--quiet", "--no-report"],
        env={**os.environ, "XLA_FLAGS": "--xla_force_host_platform_device_count=4"},
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )
    try:
        _, err = process.communicate(timeout=DEADLINE_SECONDS)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)
        process.communicate()
        raise AssertionError(f"4 devices: no result after {DEADLINE_SECONDS} s (a hang)") from None
    assert process.returncode == 0, err


def test_every_init_family_finishes_on_four_devices_with_one_devices_tables(tmp_path):
    sweep = tmp_path / "devices.toml"
    sweep.write_text(SWEEP)
    assert (
        cli.main(["run", str(sweep), "--out", str(tmp_path / "one"), "--quiet", "--no-report"]) == 0
    )
    run_on_four_devices(sweep, tmp_path / "four")

    one, four = results.load(tmp_path / "one"), results.load(tmp_path / "four")
    assert four.manifest["device_count"] == 4
    assert sorted(four.configs["init_family"].unique()) == FAMILIES
    assert len(four.summary) == 4 * 4 * 4
    pd.testing.assert_frame_equal(four.configs, one.configs)
    # Chunks of 4 devices have other shapes, so the matrix products round differently (1e-6).
    layers, reference = four.layers, one.layers
    pd.testing.assert_series_equal(layers.pop("q"), reference.pop("q"), rtol=3e-5)
    pd.testing.assert_frame_equal(layers, reference, check_exact=False, atol=1e-5, rtol=0)
    pd.testing.assert_frame_equal(four.summary, one.summary, check_exact=False, atol=1e-5, rtol=0)


def test_predrawn_weights_are_the_draws_of_each_layer():
    """The orthogonal stack drawn before the kernel holds exactly what each layer drew inside it."""
    import jax

    from gradbench.engine.kernel import make_weight_draw
    from gradbench.engine.model import replicate_key, weight_draw

    seed, replicates, width, depth = np.uint32(3), np.array([0, 5], np.int32), 16, 4
    stack = np.asarray(make_weight_draw(width, depth, "orthogonal")(seed, replicates))
    layer_draw = jax.jit(weight_draw, static_argnums=(2, 3))
    for row, replicate in enumerate(replicates):
        key = replicate_key(seed, int(replicate))
        for layer in range(depth):
            expected = np.asarray(layer_draw(key, np.int32(layer), width, "orthogonal"))
            np.testing.assert_array_equal(stack[row, layer], expected)
        z = stack[row, 0] / np.sqrt(width)
        np.testing.assert_allclose(z @ z.T, np.eye(width), atol=1e-5)  # orthogonal, scaled


def test_predrawn_weights_are_bounded_per_chunk():
    """A chunk holds the weights of as many replicates as a workspace's budget allows, at least one."""
    from gradbench.engine.chunks import chunk_shape, plan_chunks, replicate_capacity
    from gradbench.sweep.keys import KernelKey

    deep = KernelKey("mlp", 256, 64, 1000, "probe", "float32", "log", ("tanh",), ("orthogonal",))
    assert replicate_capacity(deep, "cpu", 1) == 4  # 4 x 262 MB within 1 GB
    assert replicate_capacity(deep, "cpu", 4) == 1  # every device holds a copy
    assert replicate_capacity(deep, "gpu", 8) == 16  # 4 GB per device
    assert replicate_capacity(deep._replace(init_families=("gaussian",)), "cpu", 4) >= 2048
    replicates = np.repeat(np.arange(10), 2)
    plans = plan_chunks(replicates, chunk_shape([replicates], capacity=64, max_replicates=4))
    assert max(p.rows.shape[0] for p in plans) == 4
    assert sum(int(p.real.sum()) for p in plans) == 20


ARCHITECTURES_SWEEP = """
name = "devices-architectures"
[model]
width = 16
batch = 4
[axes]
architecture = ["resmlp", "rnn"]
norm = "rmsnorm"
branch_layers = [1, 2]
activation = "relu"
init = "orthogonal"
sigma_w2 = [1.0, 2.0]
depth = [3, 5]
replicate = { count = 2 }
[run]
chunk_size = 4
"""


def test_residual_and_recurrent_nets_on_four_devices_have_one_devices_tables(tmp_path):
    """The configs axis of every architecture's chunks is sharded: 4 devices, the same numbers.
    Orthogonal weights: the pre-drawn stacks (one W for the RNN, two a block) travel with them."""
    sweep = tmp_path / "architectures.toml"
    sweep.write_text(ARCHITECTURES_SWEEP)
    one, four = tmp_path / "one", tmp_path / "four"
    assert cli.main(["run", str(sweep), "--out", str(one), "--quiet", "--no-report"]) == 0
    run_on_four_devices(sweep, four)
    a, b = results.load(one), results.load(four)
    keys = ["config_id", "layer", "sublayer"]
    left, right = (r.layers.sort_values(keys, ignore_index=True) for r in (a, b))
    assert set(a.layers["sublayer"]) == {0, 1, 2}
    assert left[keys].equals(right[keys])
    assert (left["flag"] == right["flag"]).all()
    for column in ("log10_delta", "log10_grad_w", "log10_grad_b", "log10_q"):
        np.testing.assert_allclose(left[column], right[column], rtol=0, atol=1e-5)
