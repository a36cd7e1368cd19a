"""The vmapped, looped, masked kernel against an independent per-config loop (tests/reference.py)."""

import logging

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from reference import reference_layers

from gradbench import registry
from gradbench.engine.kernel import Chunk, make_kernel, new_workspace
from gradbench.engine.model import Branch
from gradbench.pipeline import run
from gradbench.sweep import spec as spec_module
from gradbench.sweep.keys import KernelKey

STATS = ["log10_delta", "log10_grad_w", "log10_grad_b", "log10_q"]

CASES = [
    # activation, init, loss, measure, dtype, batch, sigma_w2, sigma_b2, tolerance (log10)
    ("tanh", "orthogonal", "probe", "log", "float32", 4, [0.5, 2.0], [0.05], 2e-4),
    ("relu", "gaussian", "mse", "log", "float32", 12, [1.0, 3.0], [0.0, 0.1], 2e-4),
    ("gelu", "uniform", "probe", "plain", "float64", 4, [0.7, 2.5], [0.02], 1e-9),
    ("sigmoid", "truncated_normal", "mse", "log", "float64", 4, [1.0, 9.0], [0.0], 1e-9),
    ("leaky_relu", "gaussian", "probe", "log", "float32", 4, [8.0], [0.3], 2e-4),
]


def sweep_text(activation, init, loss, measure, dtype, batch, sigma_w2, sigma_b2, depths):
    return f"""
name = "kernel-check"
seed = 3
[model]
width = 16
batch = {batch}
loss = "{loss}"
[axes]
activation = "{activation}"
init = "{init}"
sigma_w2 = {sigma_w2}
sigma_b2 = {sigma_b2}
depth = {depths}
replicate = {{ count = 2 }}
[run]
dtype = "{dtype}"
measure = "{measure}"
"""


@pytest.mark.parametrize("case", CASES, ids=[f"{c[0]}-{c[1]}-{c[2]}-{c[3]}-{c[4]}" for c in CASES])
def test_kernel_equals_reference_loop(case, tmp_path):
    *settings, tolerance = case
    depths = [5, 7]  # one depth bucket: the depth-5 configs run masked in the depth-7 kernel
    spec = spec_module.parse(sweep_text(*settings, depths))
    result = run(spec, tmp_path / "out", progress=False, report=False)
    assert result.configs["group"].nunique() == 1

    layers = result.layers.set_index(["config_id", "layer"]).sort_index()
    for config in result.configs.to_dict("records"):
        expected = reference_layers(
            activation=config["activation"],
            init_family=config["init_family"],
            width=config["width"],
            batch=config["batch"],
            depth=config["depth"],
            sigma_w2=config["sigma_w2"],
            sigma_b2=config["sigma_b2"],
            seed=config["seed"],
            replicate=config["replicate"],
            loss=config["loss"],
        )
        measured = layers.loc[config["config_id"]]
        assert list(measured.index) == list(range(1, config["depth"] + 1))
        assert (measured["flag"] == "ok").all()
        for stat in STATS:
            np.testing.assert_allclose(
                measured[stat], expected[stat], rtol=0, atol=tolerance, err_msg=stat
            )


MIXED = """
name = "one-kernel"
seed = 5
[model]
width = 16
batch = 4
[axes]
activation = ["tanh", "relu", "erf", "gelu", "selu", "sigmoid"]
init = ["gaussian", "uniform", "truncated_normal"]
sigma_w2 = [1.5]
sigma_b2 = [0.05]
depth = [3, 6, 12, 24]
"""


def test_one_kernel_runs_every_activation_init_family_and_depth(tmp_path, caplog):
    """6 activations x 3 init families x 4 depths: one gradient kernel is traced and compiled (its
    branches and trip counts are runtime values), and every config equals the per-config loop."""
    spec = spec_module.parse(MIXED)
    jax.config.update("jax_log_compiles", True)
    try:
        with caplog.at_level(logging.DEBUG, logger="jax"):
            result = run(spec, tmp_path / "out", progress=False, report=False)
    finally:
        jax.config.update("jax_log_compiles", False)
    traced = [r for r in caplog.records if r.getMessage().startswith("Compiling jit(kernel)")]
    assert len(traced) == 1
    (group,) = result.manifest["groups"]
    assert group["compiles"] + group["cache_hits"] == 1 and group["chunks"] == 6 * 3 * 4
    assert result.configs["group"].nunique() == 1 and len(result.configs) == 72

    layers = result.layers.set_index(["config_id", "layer"]).sort_index()
    for config in result.configs.to_dict("records"):
        expected = reference_layers(
            **{k: config[k] for k in ("activation", "init_family", "width", "batch", "depth")},
            **{k: config[k] for k in ("sigma_w2", "sigma_b2", "seed", "replicate", "loss")},
        )
        measured = layers.loc[config["config_id"]]
        assert list(measured.index) == list(range(1, config["depth"] + 1))
        for stat in STATS:
            np.testing.assert_allclose(
                measured[stat], expected[stat], rtol=0, atol=2e-4, err_msg=f"{stat} {config}"
            )


def test_every_activation_and_init_family_in_one_sweep_equals_the_reference(tmp_path):
    """All registered activations x all init families, float64, mixed depths in each lane: every
    switch branch (activation, weight draw, frames or none) equals the float64 per-config loop.

    They agree to 3e-8 in log10 for every activation, as the per-activation kernels before did; a
    wrong branch is off by 1e-2 or more."""
    names = sorted(a for a in registry.ACTIVATIONS if a != "swish")  # swish is silu's alias
    text = f"""
name = "every-branch"
seed = 11
[model]
width = 8
batch = 4
[axes]
activation = {names}
init = ["gaussian", "uniform", "truncated_normal", "orthogonal"]
sigma_w2 = [1.7]
sigma_b2 = [0.1]
depth = [2, 3]
[run]
dtype = "float64"
"""
    result = run(spec_module.parse(text), tmp_path / "out", progress=False, report=False)
    assert result.configs["group"].nunique() == 2  # orthogonal's pre-drawn weights: a kernel apart
    layers = result.layers.set_index(["config_id", "layer"]).sort_index()
    for config in result.configs.to_dict("records"):
        expected = reference_layers(
            **{k: config[k] for k in ("activation", "init_family", "width", "batch", "depth")},
            **{k: config[k] for k in ("sigma_w2", "sigma_b2", "seed", "replicate", "loss")},
        )
        measured = layers.loc[config["config_id"]]
        for stat in STATS:
            np.testing.assert_allclose(
                measured[stat], expected[stat], rtol=0, atol=1e-7, err_msg=f"{stat} {config}"
            )


def test_mixed_depths_in_one_chunk_equal_separate_runs(tmp_path):
    """Depths 4, 5 and 6 share chunks (one bucket, trip count 6); each equals its own run."""

    def measured(depths, out):
        text = sweep_text("tanh", "gaussian", "probe", "log", "float32", 4, [0.8, 2], [0.1], depths)
        return run(spec_module.parse(text), tmp_path / out, progress=False, report=False)

    mixed = measured([4, 5, 6], "mixed")
    assert mixed.manifest["groups"][0]["chunks"] == 1
    for depth in (4, 5, 6):
        alone = measured(depth, f"d{depth}")
        a = alone.layers.sort_values(["config_id", "layer"]).reset_index(drop=True)
        b = mixed.layers[mixed.layers["config_id"].isin(a["config_id"])]
        b = b.sort_values(["config_id", "layer"]).reset_index(drop=True)
        assert len(a) == len(b) == 4 * depth
        np.testing.assert_allclose(a[STATS].to_numpy(), b[STATS].to_numpy(), rtol=0, atol=1e-6)


def test_group_compiles_once_and_chunking_changes_nothing(tmp_path):
    text = sweep_text(
        "tanh", "gaussian", "probe", "log", "float32", 4, [0.5, 1.0, 2.0], [0.0, 0.1], [3, 4]
    )
    compiles = []

    def listener(event, duration, **kwargs):
        if event == "/jax/core/compile/backend_compile_duration":
            compiles.append(duration)

    jax.monitoring.register_event_duration_secs_listener(listener)
    try:
        chunked = run(
            spec_module.parse(text + "chunk_size = 2\n"),
            tmp_path / "a",
            progress=False,
            report=False,
        )
        kernel_compiles = len(compiles)
    finally:
        jax.monitoring.unregister_event_duration_listener(listener)
    assert chunked.manifest["groups"][0]["chunks"] >= 6
    # One kernel for the group; small helper computations (array conversions) may compile too, but
    # never once per chunk.
    assert kernel_compiles < chunked.manifest["groups"][0]["chunks"]

    whole = run(spec_module.parse(text), tmp_path / "b", progress=False, report=False)
    assert whole.manifest["groups"][0]["chunks"] == 1
    a = chunked.layers.sort_values(["config_id", "layer"]).reset_index(drop=True)
    b = whole.layers.sort_values(["config_id", "layer"]).reset_index(drop=True)
    np.testing.assert_allclose(a[STATS].to_numpy(), b[STATS].to_numpy(), rtol=0, atol=1e-5)


def test_only_the_workspace_grows_with_depth():
    """Per layer and config the kernel keeps one (batch, width) array, in the donated workspace, and
    nothing else of that size: autodiff through the forward scan kept three such arrays and each
    layer's (width, width) draw, which at depth 10,000 made memory the limit."""
    configs, batch, width = 4, 16, 32
    layer_bytes = configs * batch * width * 4

    def memory(depth):
        static = KernelKey(
            "mlp", width, batch, depth, "probe", "float32", "log", ("tanh",), ("gaussian",)
        )
        chunk = Chunk(
            replicate=jnp.zeros(1, jnp.uint32),
            sigma_w=jnp.ones((1, configs), jnp.float32),
            sigma_b=jnp.zeros((1, configs), jnp.float32),
            depth=jnp.full((1, configs), depth, jnp.int32),
            branch=Branch(jnp.int32(0), jnp.int32(0), jnp.int32(depth)),
        )
        workspace = new_workspace(static, chunk)
        compiled = make_kernel(static).lower(np.uint32(0), chunk, workspace).compile()
        return compiled.memory_analysis()

    short, deep = memory(8), memory(200)
    assert deep.alias_size_in_bytes == 200 * layer_bytes  # the workspace is reused, not copied
    # Per-layer scalars (statistics, frame scales) still grow, by well under a quarter of an array.
    assert deep.temp_size_in_bytes - short.temp_size_in_bytes < 0.25 * 192 * layer_bytes
