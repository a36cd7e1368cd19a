"""Training resmlp and rnn (gradbench.training) against networks written out explicitly, and the
adding problem's data.

The references share only what defines a config: the standard draws of gradbench.engine.model
(`layer_draws` at `dense_index`, `input_weight_draw`, the readout), the task data and the minibatch
of step s. Their networks are lists of (in, out) kernels in Python loops (no scan, no stacking, no
masking), differentiated by plain float64 `jax.grad`; the RNN's per-step gradients are those of a
list of per-step copies of its shared parameters.
"""

from __future__ import annotations

import functools
import math

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pandas as pd
import pytest

from gradbench import registry, schema, training
from gradbench.engine.model import (
    dense_index,
    input_weight_draw,
    layer_draws,
    replicate_key,
    sequence_draw,
    shared_draws,
)
from gradbench.errors import SpecError
from gradbench.pipeline import run
from gradbench.sweep import grid
from gradbench.sweep import spec as spec_module
from gradbench.sweep.keys import StaticKey
from gradbench.sweep.train_section import check_task
from gradbench.sweep.values import ValueReader
from gradbench.training import datasets, network, recurrent

SEED, WIDTH, F64 = 5, 8, jnp.float64
CLIPS = {
    "none": lambda t: optax.identity(),
    "global_norm": optax.clip_by_global_norm,
    "adaptive": optax.adaptive_grad_clip,
}
# Draws under jit, as the trainer makes them (eager and jitted float32 may differ in the last bit).
_draw = jax.jit(layer_draws, static_argnums=(2, 3))
_readout = jax.jit(lambda key, width: shared_draws(key, 1, width).readout, static_argnums=1)
_input_draw = jax.jit(input_weight_draw, static_argnums=(1, 2))


def half_mse(y, t):
    return 0.5 * jnp.mean((y - t) ** 2)


def mse(y, t):
    return jnp.mean((y - t) ** 2)


def ref_norm(a, norm):
    if norm == "none":
        return a
    if norm == "layernorm":
        a = a - a.mean(-1, keepdims=True)
    return a / jnp.sqrt(jnp.mean(a**2, -1, keepdims=True))


def ref_resmlp(p, x, *, norm, post, alpha, phi):
    """p["kernels"][l][k], p["biases"][l][k]: dense layer k of block l; as many blocks as given."""
    h = x
    for kernels, biases in zip(p["kernels"], p["biases"], strict=True):
        a = h if post else ref_norm(h, norm)
        for kernel, bias in zip(kernels, biases, strict=True):
            a = phi(a) @ kernel + bias[None, :]
        h = h + alpha * a
        if post:
            h = ref_norm(h, norm)
    return (h if post else ref_norm(h, norm)) @ p["readout"]


def ref_rnn_steps(p, x, phi):
    """p["w"][t], p["u"][t], p["b"][t]: the parameters step t uses; as many steps as given."""
    h = jnp.zeros((x.shape[0], p["w"][0].shape[0]), x.dtype)
    for t, (w, u, b) in enumerate(zip(p["w"], p["u"], p["b"], strict=True)):
        h = phi(h @ w + x[:, t] @ u + b[None, :])
    return h @ p["readout"]


def ref_rnn(p, x, phi):
    """The shared parameters p["w"], p["u"], p["b"] at every step of x (batch, T, inputs)."""
    steps = x.shape[1]
    tied = {"w": [p["w"]] * steps, "u": [p["u"]] * steps, "b": [p["b"]] * steps}
    return ref_rnn_steps({**tied, "readout": p["readout"]}, x, phi)


def ref_params(architecture, replicate, depth, sigma_w, sigma_b, outputs, **kw):
    """The reference's parameters, each dense layer's kernel W^T (in, out), from the standard draws."""
    key = replicate_key(SEED, replicate)
    readout = jnp.asarray(_readout(key, WIDTH)[:outputs].T, F64)

    def dense(index):
        z, beta = _draw(key, index, WIDTH, "gaussian")
        return sigma_w / math.sqrt(WIDTH) * jnp.asarray(z, F64).T, sigma_b * jnp.asarray(beta, F64)

    if architecture == "rnn":
        w, b = dense(dense_index("rnn", 0))
        z_u = jnp.asarray(_input_draw(key, WIDTH, kw["inputs"]), F64)
        u = kw["input_scale"] / math.sqrt(kw["inputs"]) * z_u.T
        return {"w": w, "u": u, "b": b, "readout": readout}
    k = kw["branch_layers"]
    blocks = [[dense(dense_index("resmlp", b, s, k)) for s in range(k)] for b in range(depth)]
    return {
        "kernels": [[kernel for kernel, _ in block] for block in blocks],
        "biases": [[bias for _, bias in block] for block in blocks],
        "readout": readout,
    }


def network_of(architecture, depth_bucket, activation="tanh", branch_layers=0, norm="none",
               position="none"):  # fmt: skip
    return StaticKey(architecture, activation, "gaussian", WIDTH, 4, depth_bucket, "probe",
                     "float64", "log", branch_layers, norm, position)  # fmt: skip


def trainer_params(static, replicate, sigma_w, sigma_b, outputs, input_scale=1.0, inputs=None):
    stack = network.draws(SEED, [replicate], WIDTH, network.dense_layers(static), "gaussian",
                          inputs)  # fmt: skip
    return network.init_params(
        static, stack.z[0], stack.beta[0], stack.readout[0], jnp.float64(sigma_w),
        jnp.float64(sigma_b), outputs,
        None if inputs is None else stack.input_weight[0], jnp.float64(input_scale),
    )  # fmt: skip


# Every norm and position, and one and two dense layers per branch: each of the five (norm, position)
# code paths with one of the two branch depths (and "none" with both); the trainer test below adds
# rmsnorm post with two.
RESIDUAL_CASES = [
    ("none", "none", 1, "tanh"),
    ("none", "none", 2, "relu"),
    ("layernorm", "pre", 2, "tanh"),
    ("layernorm", "post", 1, "relu"),
    ("rmsnorm", "pre", 1, "relu"),
    ("rmsnorm", "post", 2, "tanh"),
]


@pytest.mark.parametrize("norm, position, branch_layers, activation", RESIDUAL_CASES)
def test_residual_loss_gradient_is_the_explicit_networks(norm, position, branch_layers, activation):
    """A depth-3 resmlp in a trainer of 4 blocks: loss, every parameter's gradient and the per-block
    norms equal a 3-block network written out; the 4th block gets exactly zero gradient."""
    depth, bucket, alpha, sigma_w, sigma_b, outputs = 3, 4, 0.7, 1.3, 0.3, 3
    phi = registry.ACTIVATIONS[activation].fn
    with jax.enable_x64(True):
        static = network_of("resmlp", bucket, activation, branch_layers, norm, position)
        params = trainer_params(static, 1, sigma_w, sigma_b, outputs)
        data = datasets.make_task(
            "teacher", seed=SEED, samples=16, width=WIDTH, outputs=outputs, dtype=F64
        )
        net = network.network(static, phi)
        loss, grads, layer_w, layer_b = jax.jit(
            lambda p, x, t: net.value_and_grad(half_mse, p, x, t, jnp.int32(depth), F64(alpha))
        )(params, data.x, data.target)

        ref = ref_params("resmlp", 1, depth, sigma_w, sigma_b, outputs, branch_layers=branch_layers)
        post = position == "post"

        def ref_loss(p):
            y = ref_resmlp(p, data.x, norm=norm, post=post, alpha=alpha, phi=phi)
            return half_mse(y, data.target)

        ref_loss_value, g = jax.value_and_grad(ref_loss)(ref)
        loss, grads, layer_w, layer_b, ref_loss_value, g = jax.tree.map(
            np.asarray, (loss, grads, layer_w, layer_b, ref_loss_value, g)
        )
    assert 0 < loss == pytest.approx(float(ref_loss_value), rel=1e-12)
    for block in range(bucket):
        for sub in range(branch_layers):
            i = block * branch_layers + sub
            if block < depth:
                scale = np.abs(g["kernels"][block][sub]).max()
                np.testing.assert_allclose(grads["w"][i], g["kernels"][block][sub],
                                           rtol=0, atol=1e-11 * scale)  # fmt: skip
                np.testing.assert_allclose(grads["b"][i], g["biases"][block][sub],
                                           rtol=0, atol=1e-11 * scale)  # fmt: skip
            else:
                assert not np.any(grads["w"][i]) and not np.any(grads["b"][i])
    np.testing.assert_allclose(grads["readout"], g["readout"], rtol=1e-10)
    for block in range(depth):
        w = math.sqrt(sum(float(np.sum(k**2)) for k in g["kernels"][block]))
        b = math.sqrt(sum(float(np.sum(v**2)) for v in g["biases"][block]))
        assert layer_w[block] == pytest.approx(w, rel=1e-10)
        assert layer_b[block] == pytest.approx(b, rel=1e-10)
    assert layer_w[depth] == 0 and layer_b[depth] == 0


@pytest.mark.parametrize("activation, depth", [("tanh", 3), ("relu", 5)])
def test_rnn_loss_gradient_and_per_step_norms_are_the_explicit_networks(activation, depth):
    """An rnn of `depth` steps in a trainer of 5 reads exactly its first `depth` steps (the rest of
    its input is noise here, not padding): loss and the shared parameters' gradients equal the
    unrolled reference's, and each step's norms are those of its own copy of W and b."""
    bucket, sigma_w, sigma_b, input_scale = 5, 1.2, 0.4, 1.7
    phi = registry.ACTIVATIONS[activation].fn
    with jax.enable_x64(True):
        static = network_of("rnn", bucket, activation)
        params = trainer_params(static, 0, sigma_w, sigma_b, 1, input_scale, inputs=2)
        data = datasets.make_task(
            "adding", seed=SEED, samples=12, width=WIDTH, outputs=1, length=depth, dtype=F64
        )
        noise = jax.random.normal(jax.random.key(9), (12, bucket - depth, 2), F64)
        x = jnp.concatenate([data.x, noise], axis=1)
        net = network.network(static, phi)
        loss, grads, layer_w, layer_b = jax.jit(
            lambda p, x, t: net.value_and_grad(mse, p, x, t, jnp.int32(depth), F64(1.0))
        )(params, x, data.target)

        ref = ref_params("rnn", 0, depth, sigma_w, sigma_b, 1, inputs=2, input_scale=input_scale)
        ref_loss, g = jax.value_and_grad(lambda p: mse(ref_rnn(p, data.x, phi), data.target))(ref)
        copies = {k: [ref[k]] * depth for k in ("w", "u", "b")} | {"readout": ref["readout"]}
        per_step = jax.grad(lambda p: mse(ref_rnn_steps(p, data.x, phi), data.target))(copies)
        loss, grads, layer_w, layer_b, ref_loss, g, per_step = jax.tree.map(
            np.asarray, (loss, grads, layer_w, layer_b, ref_loss, g, per_step)
        )
    assert 0 < loss == pytest.approx(float(ref_loss), rel=1e-12)
    np.testing.assert_allclose(grads["w"][0], g["w"], rtol=0, atol=1e-11 * np.abs(g["w"]).max())
    np.testing.assert_allclose(grads["u"], g["u"], rtol=0, atol=1e-11 * np.abs(g["u"]).max())
    np.testing.assert_allclose(grads["b"][0], g["b"], rtol=0, atol=1e-11 * np.abs(g["b"]).max())
    np.testing.assert_allclose(grads["readout"], g["readout"], rtol=1e-10)
    steps_w = [float(np.linalg.norm(w)) for w in per_step["w"]]
    steps_b = [float(np.linalg.norm(b)) for b in per_step["b"]]
    assert layer_w[0] == steps_w[0] == 0  # h_0 = 0
    np.testing.assert_allclose(layer_w[1:depth], steps_w[1:], rtol=1e-10)
    np.testing.assert_allclose(layer_b[:depth], steps_b, rtol=1e-10)
    assert not np.any(layer_w[depth:]) and not np.any(layer_b[depth:])


def test_norms_leave_an_all_zero_row_zero_with_a_finite_gradient():
    a = jnp.array([[0.0, 0.0, 0.0], [1.0, 2.0, 4.0], [3.0, 3.0, 3.0]])
    np.testing.assert_allclose(
        network.normalise(a, "rmsnorm")[1], np.array([1, 2, 4]) / math.sqrt(7), rtol=1e-6
    )
    assert not np.any(network.normalise(a, "rmsnorm")[0])
    assert not np.any(np.asarray(network.normalise(a, "layernorm"))[[0, 2]])  # centred: zeros
    weights = jnp.arange(3.0)[None, :]
    for norm in ("rmsnorm", "layernorm"):
        grad = jax.grad(lambda v, n=norm: jnp.sum(network.normalise(v, n) * weights))(a)
        assert np.all(np.isfinite(grad))


# ---- the adding problem -------------------------------------------------------------------------


def test_adding_problem_data():
    """Two features; exactly two markers, one in each half; target = the sum of the two marked
    values; the baseline (predict the mean, plain MSE) is the target's variance, Var(U1 + U2) = 1/6.
    Deterministic in (seed, T); another T draws other sequences."""
    samples, length = 4000, 11
    data = datasets.make_task(
        "adding", seed=SEED, samples=samples, width=WIDTH, outputs=4, length=length
    )
    x, target = np.asarray(data.x), np.asarray(data.target)
    assert x.shape == (samples, length, 2) and target.shape == (samples, 1)
    values, markers = x[..., 0], x[..., 1]
    assert np.all((values >= 0) & (values < 1)) and set(np.unique(markers)) == {0.0, 1.0}
    half = length // 2
    assert np.all(markers[:, :half].sum(1) == 1) and np.all(markers[:, half:].sum(1) == 1)
    marked = np.where(markers == 1, values, 0.0).sum(1)
    np.testing.assert_array_equal(target[:, 0], marked)
    # marker positions are uniform over each half (every position is used, about equally often)
    counts = markers.sum(0)
    np.testing.assert_allclose(counts[:half], samples / half, rtol=0.15)
    np.testing.assert_allclose(counts[half:], samples / (length - half), rtol=0.15)
    # values are U(0, 1): mean 1/2, variance 1/12; the sum's variance 1/6 (sd of the estimate 0.003)
    assert values.mean() == pytest.approx(0.5, abs=0.005)
    baseline = datasets.baseline_loss("adding", data)
    assert baseline == pytest.approx(np.var(target.astype(np.float64)), rel=1e-6)
    assert baseline == pytest.approx(1 / 6, abs=0.015)
    assert datasets.outputs_of("adding", 4) == 1
    again = datasets.make_task("adding", seed=SEED, samples=samples, width=3, outputs=1,
                               length=length)  # fmt: skip
    np.testing.assert_array_equal(np.asarray(again.x), x)
    other = datasets.make_task("adding", seed=SEED, samples=samples, width=WIDTH, outputs=1,
                               length=length + 1)  # fmt: skip
    assert not np.allclose(np.asarray(other.x)[:, :length, 0], values)


def test_sequences_stack_each_length_zero_padded():
    stacked = datasets.sequences("adding", seed=SEED, samples=6, lengths=[2, 4], steps=5)
    assert stacked.x.shape == (2, 6, 5, 2) and stacked.target.shape == (2, 6, 1)
    for i, length in enumerate([2, 4]):
        alone = datasets.make_task("adding", seed=SEED, samples=6, width=0, outputs=1,
                                   length=length)  # fmt: skip
        np.testing.assert_array_equal(stacked.x[i, :, :length], alone.x)
        np.testing.assert_array_equal(stacked.target[i], alone.target)
        assert not np.any(stacked.x[i, :, length:])


def test_tasks_are_checked_against_the_architectures_and_depths():
    reader = ValueReader("s.toml")
    check_task(reader, "adding", ["rnn"], [2, 30])
    check_task(reader, "teacher", ["mlp", "resmlp"], [1])
    cases = [
        ("teacher", ["rnn"], [4], "train.task", "rnn: ['adding']"),
        (
            "adding",
            ["resmlp"],
            [4],
            "train.task",
            "resmlp: ['teacher', 'classification', 'digits']",
        ),
        ("adding", ["mlp", "rnn"], [4], "train.task", "separate sweeps"),
        ("adding", ["rnn"], [1, 3], "axes.depth", "depths >= 2"),
    ]
    for task, architectures, depths, key, allowed in cases:
        with pytest.raises(SpecError) as info:
            check_task(reader, task, architectures, depths)
        assert f"s.toml: {key}" in str(info.value) and allowed in str(info.value)


# ---- trainers end to end ------------------------------------------------------------------------


def sweep_text(architecture, depth, clip, threshold, *, task, lr, extra_axes="", steps=12):
    return f"""
name = "arch-train"
seed = {SEED}
[model]
width = {WIDTH}
batch = 4
architecture = "{architecture}"
[axes]
activation = "tanh"
sigma_w2 = [1.5]
sigma_b2 = 0.1
depth = {depth}
{extra_axes}
[train]
optimizer = "sgd"
lr = {lr}
clip = {clip}
clip_threshold = {threshold}
steps = {steps}
log_every = 4
samples = 32
batch = 16
task = "{task}"
outputs = 2
[run]
dtype = "float64"
"""


def batch_of(s, samples, batch):
    key = jax.random.fold_in(
        jax.random.fold_in(jax.random.key(np.uint32(SEED)), datasets.TASK_SALT), 1
    )
    return jax.random.choice(jax.random.fold_in(key, s), samples, (batch,), replace=False)


def reference_training(spec, config, params, reference, data, *args):
    """K sgd steps of one config in a Python loop: records at every step (loss on all the data,
    gradient, clipped and update norms, per-layer norms). `reference` = (forward(p, x, *args),
    step(p, x, y, *args) -> (gradient, per-layer norms)), jitted once per network shape."""
    t = spec.train
    forward, step = reference
    lr, rule, threshold = config["lr"], config["clip"], config["clip_threshold"]
    clip, opt = CLIPS[rule](threshold), optax.sgd(lr)
    clip_state, opt_state = clip.init(params), opt.init(params)
    loss = {"adding": mse, "teacher": half_mse}[t.task]
    records = []
    for s in range(t.steps + 1):
        pick = batch_of(s, t.samples, t.batch)
        g, layers = step(params, data.x[pick], data.target[pick], *args)
        clipped, clip_state = clip.update(g, clip_state, params)
        updates, opt_state = opt.update(clipped, opt_state, params)
        records.append({
            "loss": float(loss(forward(params, data.x, *args), data.target)),
            "grad_norm": float(optax.tree.norm(g)),
            "clipped_norm": float(optax.tree.norm(clipped)),
            "update_norm": float(optax.tree.norm(updates)),
            "layers": np.asarray(layers),
        })  # fmt: skip
        params = optax.apply_updates(params, updates)
    return records


@functools.cache
def rnn_reference(depth: int):
    """The reference rnn of `depth` steps (tanh, plain MSE): forward and per-step W norms."""

    def forward(p, x):
        return ref_rnn(p, x, jnp.tanh)

    def step(p, x, y):
        g = jax.grad(lambda q: mse(forward(q, x), y))(p)
        copies = {k: [p[k]] * depth for k in ("w", "u", "b")} | {"readout": p["readout"]}
        per_step = jax.grad(lambda q: mse(ref_rnn_steps(q, x, jnp.tanh), y))(copies)
        return g, jnp.stack([jnp.linalg.norm(w) for w in per_step["w"]])

    return jax.jit(forward), jax.jit(step)


@functools.cache
def resmlp_reference(norm: str, post: bool):
    """The reference resmlp (tanh, half MSE) with branch scale alpha: forward and per-block norms
    of the branch's kernels together."""

    def forward(p, x, alpha):
        return ref_resmlp(p, x, norm=norm, post=post, alpha=alpha, phi=jnp.tanh)

    def step(p, x, y, alpha):
        g = jax.grad(lambda q: half_mse(forward(q, x, alpha), y))(p)
        blocks = [jnp.sqrt(sum(jnp.sum(k**2) for k in block)) for block in g["kernels"]]
        return g, jnp.stack(blocks)

    return jax.jit(forward), jax.jit(step)


def assert_tables_match(spec, steps, layers, config, records):
    """training.parquet and training_layers.parquet rows of `config` against the reference."""
    steps = steps[steps["config_id"] == config["config_id"]].set_index("step")
    layers = layers[layers["config_id"] == config["config_id"]]
    for s in steps.index:
        ref, row = records[s], steps.loc[s]
        np.testing.assert_allclose(row["loss"], ref["loss"], rtol=1e-9)
        np.testing.assert_allclose(row["log10_grad_norm"], np.log10(ref["grad_norm"]), atol=1e-9)
        mine = layers[layers["step"] == s].sort_values("layer")["log10_grad_w"].to_numpy()
        with np.errstate(divide="ignore"):
            expected = np.log10(ref["layers"])
        expected[~np.isfinite(expected)] = np.nan  # a zero norm is stored as NaN
        np.testing.assert_allclose(mine, expected, atol=1e-9)
        if s < spec.train.steps:
            for name in ("clipped_norm", "update_norm"):
                np.testing.assert_allclose(row[f"log10_{name}"], np.log10(ref[name]), atol=1e-9)


@pytest.fixture(scope="module")
def rnn_run(tmp_path_factory):
    """`gradbench.run` of a tiny rnn sweep on the adding problem, clip "none" vs global_norm;
    depths 3 and 4 share one trainer (depth bucket 4)."""
    spec = spec_module.parse(
        sweep_text(
            "rnn",
            "[3, 4]",
            '["none", "global_norm"]',
            "0.3",
            task="adding",
            lr=0.2,
            extra_axes="input_scale = 1.5",
        )  # fmt: skip
    )
    out = tmp_path_factory.mktemp("rnn") / "run"
    return spec, run(spec, out, progress=False, report=False)


def test_rnn_run_writes_the_training_tables_of_the_reference(rnn_run):
    spec, result = rnn_run
    configs = result.configs
    assert configs["train_group"].nunique() == 1 and "-L4-" in configs["train_group"].iloc[0]
    for name in schema.TRAINING_TABLES:
        assert (result.path / "data" / f"{name}.parquet").is_file()
    assert list(result.training.columns) == list(schema.TRAINING_COLUMNS)
    assert list(result.training_layers.columns) == list(schema.TRAINING_LAYER_COLUMNS)
    per_config = result.training_layers.groupby("config_id")["layer"].max()
    assert per_config.to_dict() == configs.set_index("config_id")["depth"].to_dict()

    for config in configs.to_dict("records"):
        depth = int(config["depth"])
        with jax.enable_x64(True):
            data = datasets.make_task("adding", seed=SEED, samples=32, width=WIDTH, outputs=1,
                                      length=depth, dtype=F64)  # fmt: skip
            params = ref_params("rnn", 0, depth, config["sigma_w"], config["sigma_b"], 1,
                                inputs=2, input_scale=config["input_scale"])  # fmt: skip
            records = reference_training(spec, config, params, rnn_reference(depth), data)
        assert_tables_match(spec, result.training, result.training_layers, config, records)
        summary = result.summary.set_index("config_id").loc[config["config_id"]]
        assert summary["loss_baseline"] == pytest.approx(float(np.var(np.asarray(data.target))))
    s = result.summary
    clipped = s[s["clip"] == "global_norm"]["clipped_fraction"]
    assert (clipped > 0).all() and (s[s["clip"] == "none"]["clipped_fraction"] == 0).all()
    # training lowers the loss below its start on every config (the adding problem is learnable
    # in its mean within a few steps: the initial outputs are far from the targets' mean of 1)
    assert (s["loss_final"] < s["loss_initial"]).all()


def count_compiles(fn):
    """Backend compilations while `fn` runs (jax.monitoring), and its result."""
    compiles = []

    def listener(event, duration, **kwargs):
        if event == "/jax/core/compile/backend_compile_duration":
            compiles.append(duration)

    jax.monitoring.register_event_duration_secs_listener(listener)
    try:
        result = fn()
    finally:
        jax.monitoring.unregister_event_duration_listener(listener)
    return len(compiles), result


def test_rnn_in_a_deeper_bucket_trains_as_alone_and_new_input_scales_do_not_recompile(rnn_run):
    spec, result = rnn_run
    alone = spec_module.parse(spec.text.replace("depth = [3, 4]", "depth = [3]"))
    configs = grid.expand(alone)
    assert "-L3-" in configs["train_group"].iloc[0]
    trained = training.train_configs(alone, configs)
    ids = set(configs["config_id"])
    for mine, theirs in (
        (trained.steps, result.training),
        (trained.layers, result.training_layers),
    ):
        theirs = theirs[theirs["config_id"].isin(ids)].reset_index(drop=True)
        assert len(theirs) == len(mine) > 0
        pd.testing.assert_frame_equal(mine, theirs, check_exact=False, rtol=1e-12, atol=1e-12)

    changed = spec_module.parse(spec.text.replace("input_scale = 1.5", "input_scale = 0.5"))
    new_configs = grid.expand(changed)
    compiles, second = count_compiles(lambda: training.train_configs(changed, new_configs))
    assert compiles == 0
    assert set(new_configs["input_scale"]) == {0.5}
    before = result.summary.set_index("config_id").loc[result.configs["config_id"], "loss_final"]
    after = second.outcomes.set_index("config_id").loc[new_configs["config_id"], "loss_final"]
    assert not np.allclose(before.to_numpy(), after.to_numpy())


def test_rnn_trainer_starts_from_the_network_the_sweep_measured(rnn_run):
    """The probe-loss gradient of the trainer's initial rnn, fed the gradient sweep's inputs (width
    features through the full Z_U, x_t = `sequence_draw`), has the per-step ||dJ/dW_t|| of
    layers.parquet."""
    spec, result = rnn_run
    batch, bucket, rep_key = 4, 4, replicate_key(SEED, 0)
    layers = schema.layer_rows(result.layers).set_index(["config_id", "layer"])
    with jax.enable_x64(True):
        x = jnp.stack([sequence_draw(rep_key, t, batch, WIDTH) for t in range(bucket)], 1)
        probe = shared_draws(rep_key, batch, WIDTH).probe.astype(F64)

        @jax.jit
        def step_norms(params, depth):
            def probe_loss(y, u):
                return jnp.sum(u * y) / batch

            return recurrent.value_and_grad(
                probe_loss, params, x.astype(F64), probe, depth, jnp.tanh
            )[2]

        for config in result.configs.to_dict("records"):
            static = grid.static_key(config, bucket)
            params = trainer_params(static, 0, config["sigma_w"], config["sigma_b"], WIDTH,
                                    config["input_scale"], inputs=WIDTH)  # fmt: skip
            layer_w = np.asarray(step_norms(params, config["depth"]))
            measured = layers.loc[config["config_id"], "log10_grad_w"].to_numpy()
            assert len(measured) == config["depth"]
            assert np.isnan(measured[0]) and layer_w[0] == 0
            mine = np.log10(layer_w[1 : config["depth"]])
            np.testing.assert_allclose(mine, measured[1:], rtol=0, atol=1e-9)


def test_resmlp_trainer_matches_the_explicit_networks_sgd_loop():
    """A resmlp sweep (rmsnorm post, two dense layers per branch, depths 3 and 4 in one trainer)
    trained by the trainer: its tables equal the explicit network's sgd loop, with alpha per depth
    (1/sqrt(depth)) and per config, and adaptive clipping unit-wise on the stacked dense layers. The
    depth-3 configs train in the bucket of depth 4 as the 3-block reference does alone."""
    extra = 'branch_layers = 2\nnorm = "rmsnorm"\nnorm_position = "post"\n'
    extra += 'branch_scale = ["1/sqrt(depth)", 0.5]'
    text = sweep_text("resmlp", "[3, 4]", '"adaptive"', "0.02", task="teacher", lr=0.1,
                      extra_axes=extra, steps=8)  # fmt: skip
    spec = spec_module.parse(text)
    configs = grid.expand(spec)
    assert configs["train_group"].nunique() == 1 and "-L4-" in configs["train_group"].iloc[0]
    result = training.train_configs(spec, configs)
    with jax.enable_x64(True):
        data = datasets.make_task("teacher", seed=SEED, samples=32, width=WIDTH, outputs=2,
                                  dtype=F64)  # fmt: skip
        for config in configs.to_dict("records"):
            depth = int(config["depth"])
            rule = 1 / math.sqrt(depth) if config["branch_scale"] == "1/sqrt(depth)" else 0.5
            assert config["alpha"] == rule
            params = ref_params("resmlp", 0, depth, config["sigma_w"], config["sigma_b"], 2,
                                branch_layers=2)  # fmt: skip
            reference = resmlp_reference("rmsnorm", True)
            records = reference_training(spec, config, params, reference, data, config["alpha"])
            assert_tables_match(spec, result.steps, result.layers, config, records)
    assert (result.outcomes["clipped_fraction"] > 0).all()  # the rule acted
