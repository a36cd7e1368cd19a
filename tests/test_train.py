"""Training dynamics (gradbench.training) against plain, per-config optax loops written independently.

The reference below shares only the conventions that define a config: the standard draws of
gradbench.engine.model (common random numbers), the task data of gradbench.training.datasets, and the minibatch of
step s (`jax.random.choice(fold_in(batch_key, s), ...)`, the same for every config). Everything
else (parameter layout, forward pass, optax chain, norms, divergence) is written here again: a list
of per-layer (in, out) matrices, a Python loop over layers and over steps, optax's default
unit-wise conventions for adaptive clipping.
"""

from __future__ import annotations

import math
import re
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pandas as pd
import pytest

from gradbench import registry, report, results, schema, training
from gradbench.engine.model import layer_draws, replicate_key, shared_draws
from gradbench.errors import SpecError
from gradbench.pipeline import run
from gradbench.report import training as training_report
from gradbench.sweep import grid
from gradbench.sweep import spec as spec_module
from gradbench.training import datasets as tasks
from gradbench.training import network

OPTIMISERS = {
    "sgd": optax.sgd,
    "momentum": lambda lr: optax.sgd(lr, momentum=0.9),
    "adam": optax.adam,
}
CLIPS = {
    "none": lambda t: optax.identity(),
    "global_norm": optax.clip_by_global_norm,
    "value": optax.clip,
    "adaptive": optax.adaptive_grad_clip,
}


def sweep(
    *,
    activation="tanh",
    sigma_w2="[0.8, 3.0]",
    depth="[3, 4]",
    optimizer="sgd",
    lr="[0.05, 0.2]",
    clip='"none"',
    threshold="",
    steps=12,
    log_every=3,
    samples=16,
    batch=16,
    task="teacher",
    dtype="float64",
    replicates=2,
    width=8,
    sigma_b2=0.05,
    extra="",
):
    threshold_line = f"clip_threshold = {threshold}" if threshold else ""
    return spec_module.parse(
        f"""
name = "train-check"
seed = 4
[model]
width = {width}
batch = 4
[axes]
activation = "{activation}"
sigma_w2 = {sigma_w2}
sigma_b2 = {sigma_b2}
depth = {depth}
replicate = {{ count = {replicates} }}
[train]
optimizer = "{optimizer}"
lr = {lr}
clip = {clip}
{threshold_line}
steps = {steps}
log_every = {log_every}
samples = {samples}
batch = {batch}
task = "{task}"
outputs = 3
{extra}
[run]
dtype = "{dtype}"
"""
    )


# Draws are made under jit, as the gradient kernel makes them: eager and jitted float32 arithmetic
# may differ in the last bit (x / sqrt(width) vs x * (1 / sqrt(width))).
_draw = jax.jit(layer_draws, static_argnums=(2, 3))
_readout = jax.jit(lambda key, width: shared_draws(key, 1, width).readout, static_argnums=1)


def reference_training(config: dict, spec) -> dict:
    """K steps of one config with a plain optax loop; per-step records, in the spec's dtype."""
    t = spec.train
    dtype = jnp.dtype(spec.dtype)
    width, depth = int(config["width"]), int(config["depth"])
    data = tasks.make_task(
        t.task, seed=spec.seed, samples=t.samples, width=width, outputs=t.outputs, dtype=dtype
    )
    key = replicate_key(spec.seed, int(config["replicate"]))
    readout = _readout(key, width)
    params = {"w": [], "b": []}
    for layer in range(depth):
        z, beta = _draw(key, layer, width, config["init_family"])
        params["w"].append(config["sigma_w"] / math.sqrt(width) * jnp.asarray(z.T, dtype))
        params["b"].append(config["sigma_b"] * jnp.asarray(beta, dtype))
    outputs = tasks.outputs_of(t.task, t.outputs)
    params["r"] = jnp.asarray(readout[:outputs].T, dtype)
    step = _reference_step(spec, depth, config["activation"], config["optimizer"], config["clip"])
    lr, threshold = config["lr"], config["clip_threshold"]
    clip_state = CLIPS[config["clip"]](threshold).init(params)
    opt_state = OPTIMISERS[config["optimizer"]](lr).init(params)
    records, diverged_step = [], None
    for s in range(t.steps + 1):
        new, new_clip, new_opt, stats = step(params, clip_state, opt_state, s, lr, threshold, data)
        stats = {k: np.asarray(v) for k, v in stats.items()}
        records.append(stats)
        if not stats["finite"]:
            diverged_step = s
            break
        params, clip_state, opt_state = new, new_clip, new_opt
    return {"records": records, "diverged_step": diverged_step}


_STEPS: dict = {}


def _reference_step(spec, depth: int, activation: str, optimizer: str, clip_rule: str):
    """One jitted reference step per (sweep, depth, activation, optimiser, rule); the learning rate
    and threshold are arguments, so the reference compiles once per shape, not once per config."""
    cache_key = (spec.text, depth, activation, optimizer, clip_rule)
    if cache_key in _STEPS:
        return _STEPS[cache_key]
    t = spec.train
    phi = registry.ACTIVATIONS[activation].fn
    batch_key = jax.random.fold_in(
        jax.random.fold_in(jax.random.key(np.uint32(spec.seed)), tasks.TASK_SALT), 1
    )

    def loss_fn(p, x, target):
        h = x
        for w, b in zip(p["w"], p["b"], strict=True):
            h = phi(h @ w + b[None, :])
        y = h @ p["r"]
        if t.task == "teacher":
            return 0.5 * jnp.mean((y - target) ** 2)
        return optax.softmax_cross_entropy_with_integer_labels(y, target).mean()

    @jax.jit
    def step(p, clip_state, opt_state, s, lr, threshold, data):
        if t.batch == t.samples:
            x, target = data
        else:
            pick = jax.random.choice(
                jax.random.fold_in(batch_key, s), t.samples, (t.batch,), replace=False
            )
            x, target = data.x[pick], data.target[pick]
        clip, opt = CLIPS[clip_rule](threshold), OPTIMISERS[optimizer](lr)
        loss, g = jax.value_and_grad(loss_fn)(p, x, target)
        clipped, clip_state = clip.update(g, clip_state, p)
        updates, opt_state = opt.update(clipped, opt_state, p)
        changed = jnp.any(
            jnp.stack(jax.tree.leaves(jax.tree.map(lambda a, b: jnp.any(a != b), clipped, g)))
        )
        stats = {
            "loss": loss,
            "full_loss": loss_fn(p, data.x, data.target),
            "grad_norm": optax.tree.norm(g),
            "clipped_norm": optax.tree.norm(clipped),
            "update_norm": optax.tree.norm(updates),
            "grad_w": jnp.stack([jnp.linalg.norm(w) for w in g["w"]]),
            "changed": changed,
            "finite": jnp.isfinite(loss)
            & jnp.all(jnp.stack([jnp.all(jnp.isfinite(a)) for a in jax.tree.leaves(g)])),
        }
        return optax.apply_updates(p, updates), clip_state, opt_state, stats

    _STEPS[cache_key] = step
    return step


def by_config(result: training.Training):
    return result.steps.set_index(["config_id", "step"]).sort_index()


CASES = [  # optimizer, clip, thresholds, activation, sigma_w2, lr, log_every, minibatch, replicates,
    # task
    ("sgd", '["none", "global_norm"]', "[0.3, 2.0]", "relu", "[1.0, 5.0]", "[0.02, 0.1]", 1, 16, 2,
     "teacher"),
    ("momentum", '["value", "adaptive"]', "{ value = [0.01, 0.1], adaptive = 0.05 }", "tanh",
     "[0.8, 3.0]", "[0.05, 0.2]", 3, 8, 1, "teacher"),
    ("adam", '"adaptive"', "[0.02, 0.5]", "tanh", "[0.8, 3.0]", "[0.001, 0.01]", 4, 16, 1,
     "classification"),
]  # fmt: skip


@pytest.fixture(scope="module", params=CASES, ids=[c[0] for c in CASES])
def case(request):
    optimizer, clip, thresholds, activation, sigma_w2, lr, log_every, batch, reps, task = (
        request.param
    )
    spec = sweep(
        optimizer=optimizer,
        clip=clip,
        threshold=thresholds,
        activation=activation,
        sigma_w2=sigma_w2,
        lr=lr,
        log_every=log_every,
        batch=batch,
        replicates=reps,
        task=task,
    )
    configs = grid.expand(spec)
    return spec, configs, training.train_configs(spec, configs)


def test_vmapped_training_equals_plain_optax_loops(case):
    spec, configs, result = case
    # one trainer: depths 3 and 4 share it (masked), and so do the clipping rules (selected per config)
    assert configs["train_group"].nunique() == 1
    steps = by_config(result)
    outcomes = result.outcomes.set_index("config_id")
    logged = training.log_steps(spec.train.steps, spec.train.log_every)
    with jax.enable_x64(True):
        for config in configs.to_dict("records"):
            expected = reference_training(config, spec)
            assert expected["diverged_step"] is None
            mine = steps.loc[config["config_id"]]
            assert list(mine.index) == list(logged)
            layers = result.layers[result.layers["config_id"] == config["config_id"]]
            for s in logged:
                ref = expected["records"][s]
                row = mine.loc[s]
                np.testing.assert_allclose(row["loss"], ref["full_loss"], rtol=1e-9)
                np.testing.assert_allclose(
                    row["log10_grad_norm"], np.log10(ref["grad_norm"]), rtol=0, atol=1e-9
                )
                per_layer = layers[layers["step"] == s].sort_values("layer")["log10_grad_w"]
                np.testing.assert_allclose(per_layer, np.log10(ref["grad_w"]), rtol=0, atol=1e-9)
                if s < spec.train.steps:
                    for name in ("clipped_norm", "update_norm"):
                        np.testing.assert_allclose(
                            row[f"log10_{name}"], np.log10(ref[name]), rtol=0, atol=1e-9
                        )
            performed = expected["records"][: spec.train.steps]
            clipped = np.mean([r["changed"] for r in performed])
            assert outcomes.loc[config["config_id"], "clipped_fraction"] == pytest.approx(clipped)
            final = expected["records"][-1]["full_loss"]
            assert outcomes.loc[config["config_id"], "loss_final"] == pytest.approx(final, rel=1e-9)
    # Each case clips on some steps of some configs and not on others: the rule is exercised.
    assert 0 < outcomes["clipped_fraction"].mean() < 1


def test_global_norm_clipping_bounds_every_update(case):
    spec, configs, result = case
    if "global_norm" not in set(configs["clip"]):
        pytest.skip("global-norm case only")
    steps = result.steps.merge(
        configs[["config_id", "clip", "clip_threshold", "lr"]], on="config_id"
    )
    performed = steps[(steps["step"] < spec.train.steps) & (steps["clip"] == "global_norm")]
    assert spec.train.log_every == 1  # every step is a log point
    threshold = performed["clip_threshold"].to_numpy()
    clipped = 10 ** performed["log10_clipped_norm"].to_numpy()
    assert np.all(clipped <= threshold * (1 + 1e-12))
    pre = 10 ** performed["log10_grad_norm"].to_numpy()
    np.testing.assert_allclose(clipped, np.minimum(pre, threshold), rtol=1e-12)
    # sgd: the parameter change is lr times the clipped gradient
    update = 10 ** performed["log10_update_norm"].to_numpy()
    np.testing.assert_allclose(update, performed["lr"] * clipped, rtol=1e-12)
    assert np.array_equal(performed["clipped_fraction"] == 1, pre > threshold)
    assert (pre > threshold).any() and (pre < threshold).any()


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


def test_new_learning_rates_and_thresholds_do_not_recompile(case):
    spec, configs, first = case
    if "global_norm" not in set(configs["clip"]):
        pytest.skip("one case is enough")
    text = spec.text.replace("lr = [0.02, 0.1]", "lr = [0.03, 0.07]")
    text = text.replace("clip_threshold = [0.3, 2.0]", "clip_threshold = [0.5, 1.5]")
    changed = spec_module.parse(text)
    new_configs = grid.expand(changed)
    compiles, second = count_compiles(lambda: training.train_configs(changed, new_configs))
    assert compiles == 0
    assert set(new_configs["lr"]) == {0.03, 0.07}
    assert set(new_configs["clip_threshold"].dropna()) == {0.5, 1.5}
    # new values were used: other losses, and the clipped norms respect the new thresholds
    assert not np.allclose(first.outcomes["loss_final"], second.outcomes["loss_final"])
    merged = second.steps.merge(
        new_configs[["config_id", "clip", "clip_threshold"]], on="config_id"
    )
    merged = merged[(merged["clip"] == "global_norm") & merged["log10_clipped_norm"].notna()]
    assert np.all(10 ** merged["log10_clipped_norm"] <= merged["clip_threshold"] * (1 + 1e-12))


def test_divergence_is_recorded_with_its_step_and_does_not_poison_the_batch():
    # chunks of 3 configs: a diverging config shares its chunk with others, and the last chunk is
    # padded with repeats that must not reach the tables
    spec = sweep(
        activation="linear",
        sigma_w2="[1.0, 6.0]",
        depth="[5]",
        lr="[0.01, 3.0]",
        extra="chunk_size = 3",
    )
    configs = grid.expand(spec)
    result = training.train_configs(spec, configs)
    outcomes = result.outcomes.set_index("config_id")
    steps = by_config(result)
    with jax.enable_x64(True):
        for config in configs.to_dict("records"):
            expected = reference_training(config, spec)
            got = outcomes.loc[config["config_id"]]
            if expected["diverged_step"] is None:
                assert not got["diverged"] and np.isfinite(got["loss_ratio"])
                mine = steps.loc[config["config_id"]]
                assert not mine["diverged"].any()
                for s in mine.index:
                    ref = expected["records"][s]
                    np.testing.assert_allclose(mine.loc[s, "loss"], ref["full_loss"], rtol=1e-9)
            else:
                assert got["diverged"] and not got["trained"]
                assert got["diverged_step"] == expected["diverged_step"]
                assert np.isnan(got["loss_ratio"])
                mine = steps.loc[config["config_id"]]
                assert list(mine["diverged"]) == list(mine.index >= expected["diverged_step"])
    assert 0 < outcomes["diverged"].sum() < len(outcomes)
    assert result.facts[0]["chunks"] == 3 and len(result.outcomes) == len(configs) == 8


@pytest.mark.parametrize(
    "line, key, allowed",
    [
        ("lr = 0.1\nsteps = 3\nmomentum = 0.9", "train.momentum", "keys"),
        ("lr = -0.1", "train.lr", "> 0"),
        ("lr = 0.0", "train.lr", "> 0"),
        ("lr = 0.1\nsteps = 0", "train.steps", ">= 1"),
        ("lr = 0.1\noptimizer = 'rmsprop'", "train.optimizer", "adam"),
        ("lr = 0.1\nclip = 'norm'", "train.clip", "global_norm"),
        ("lr = 0.1\nclip = 'value'", "train.clip_threshold", "<missing>"),
        ("lr = 0.1\nclip = 'value'\nclip_threshold = -1.0", "train.clip_threshold", "> 0"),
        (
            "lr = 0.1\nclip = 'value'\nclip_threshold = { value = 0.1, adaptive = 0.1 }",
            "train.clip_threshold.adaptive",
            "only for the clip rules",
        ),
        ("lr = 0.1\ntask = 'mnist'", "train.task", "teacher"),
        ("lr = 0.1\nsamples = 8\nbatch = 9", "train.batch", "samples = 8"),
        ("lr = 0.1\nsteps = 5\nlog_every = 6", "train.log_every", "steps = 5"),
        ("lr = 0.1\ntrained_below = 1.5", "train.trained_below", "(0, 1)"),
        ("steps = 3", "train.lr", "<missing>"),
    ],
)
def test_bad_train_sections_are_spec_errors(line, key, allowed):
    text = BASE_TEXT + "[train]\n" + line + "\n"
    with pytest.raises(SpecError) as info:
        spec_module.parse(text, source="s.toml")
    message = str(info.value)
    assert f"s.toml: {key}" in message and allowed in message


BASE_TEXT = """
name = "s"
[model]
width = 8
batch = 2
[axes]
activation = "tanh"
sigma_w2 = [1.0]
depth = [2]
"""


def test_train_section_expands_and_leaves_other_sweeps_alone():
    plain = grid.expand(spec_module.parse(BASE_TEXT))
    assert "lr" not in plain and "train_group" not in plain
    text = (
        BASE_TEXT
        + """
[train]
optimizer = ["sgd", "adam"]
lr = { logspace = [-3, -1, 3] }
clip = ["none", "global_norm", "value"]
clip_threshold = { global_norm = [0.5, 1.0], value = 0.01 }
"""
    )
    spec = spec_module.parse(text)
    configs = grid.expand(spec)
    assert len(configs) == spec.n_configs == 2 * 3 * (1 + 2 + 1)
    assert configs["config_id"].is_unique
    assert set(plain["config_id"]).isdisjoint(configs["config_id"])
    assert configs.loc[configs["clip"] == "none", "clip_threshold"].isna().all()
    assert configs["train_group"].nunique() == 2  # per optimizer: lr and clipping are dynamic
    assert configs["group"].nunique() == 1  # the gradient measurement is shared
    assert spec.train.log_every == 4  # default: steps // 50


def test_every_registered_name_has_an_implementation_here():
    """The registry's tasks have data generators, and its optimisers and clipping rules have the
    independent references of this file."""
    assert set(tasks.GENERATORS) == set(registry.TASKS)
    assert set(OPTIMISERS) == set(registry.OPTIMIZERS)
    assert set(CLIPS) == set(registry.CLIP_RULES)


@pytest.mark.skipif(registry.TASKS["digits"].available(), reason="scikit-learn is installed")
def test_digits_without_scikit_learn_is_a_spec_error():
    with pytest.raises(SpecError, match="scikit-learn"):
        spec_module.parse(BASE_TEXT + "[train]\nlr = 0.1\ntask = 'digits'\n")


@pytest.mark.skipif(not registry.TASKS["digits"].available(), reason="scikit-learn not installed")
def test_digits_task_is_bundled_data():
    data = tasks.make_task("digits", seed=0, samples=100, width=32, outputs=4)
    assert data.x.shape == (100, 32) and data.target.shape == (100,)
    assert set(np.unique(data.target)) <= set(range(10))
    assert tasks.baseline_loss("digits", data) == pytest.approx(np.log(10), rel=0.05)


@pytest.fixture(scope="module")
def tanh_run(tmp_path_factory):
    """`gradbench run` of a small trainability sweep with clipping, through the runner.

    tanh, sigma_b^2 = 0.05 (critical sigma_w^2 = 1.76), depths 16 and 24 (one masked trainer),
    width 32, 200 momentum steps on 64 teacher examples, without and with global-norm clipping.
    """
    spec = sweep(
        activation="tanh",
        sigma_w2="[0.5, 1.76]",
        depth="[16, 24]",
        width=32,
        optimizer="momentum",
        lr="0.05",
        clip='["none", "global_norm"]',
        threshold="1.0",
        steps=200,
        log_every=50,
        samples=64,
        batch=64,
        dtype="float32",
        replicates=1,
    )
    out = tmp_path_factory.mktemp("tanh") / "run"
    return spec, run(spec, out, progress=False, report=False)


def test_ordered_phase_fails_to_train_at_depth_while_near_critical_trains(tanh_run):
    """Mean-field theory: xi_c = 1.2 layers at sigma_w^2 = 0.5, so depth 24 is 20 xi_c, far beyond
    the trainable ~6 xi_c of Schoenholz et al. (2017); at the critical point xi_c diverges. Stated
    margin: the ordered config keeps more than half of the trivial predictor's loss, the
    near-critical one less than a tenth (measured: about 1.0 and below 1e-3)."""
    _, result = tanh_run
    s = result.summary
    deep = s[(s["depth"] == 24) & (s["clip"] == "none")].set_index("sigma_w2")
    assert deep.loc[0.5, "fit_ratio"] > 0.5 and not deep.loc[0.5, "trained"]
    assert deep.loc[1.76, "fit_ratio"] < 0.1 and deep.loc[1.76, "trained"]
    assert not s["diverged"].any()


def documented(section: str) -> set[str]:
    """Column names in the docs/results.md table under `### <section>`."""
    docs = Path(__file__).resolve().parent.parent / "docs" / "results.md"
    text = docs.read_text().split(f"### {section}", 1)[1].split("\n#", 1)[0]
    names = set()
    for line in text.splitlines():
        if line.startswith("| `"):
            names.update(re.findall(r"`([a-z0-9_]+)`", line.split("|")[1]))
    return names


def test_run_directory_report_and_initial_network(tanh_run):
    """`gradbench run` with a [train] section writes the documented training tables, outcome
    columns and report sections, and training starts from the very network the gradient sweep
    measured (the probe-loss gradient of the trainer's initial parameters equals layers.parquet)."""
    spec, result = tanh_run
    out = result.path
    for name in ("training", "training_layers"):
        assert (out / "data" / f"{name}.parquet").is_file()
    assert documented("training.parquet") == set(result.training.columns)
    assert documented("summary.parquet, outcome columns") == set(schema.OUTCOME_COLUMNS)
    assert set(schema.OUTCOME_COLUMNS) <= set(result.summary.columns)
    assert documented("configs.parquet, extra columns") == {
        *schema.TRAIN_CONFIG_COLUMNS,
        "train_group",
    }
    assert set(result.training["step"]) == {0, 50, 100, 150, 200}
    assert len(result.training) == 5 * len(result.configs)
    assert result.manifest["training"]["clip"] == {"none": [], "global_norm": [1.0]}

    # the report of a stored run reads the training tables back from parquet (no JAX work)
    stored = results.load(out)
    pd.testing.assert_frame_equal(training_report.training_steps(stored), result.training)
    report.write_report(stored)
    for stem in ("trainability", "clipping_fit", "clipping_updates", "loss_curves"):
        assert (out / "figures" / f"{stem}.png").is_file(), stem
    page = (out / "report.md").read_text()
    assert "## Training" in page and "Clipping outcomes" in page and "Trainable band" in page
    # gradient sections count each network once, not once per training setting
    assert len(training_report.gradient_view(stored).summary) == len(stored.summary) // 2

    # initial parameters: probe-loss gradient of the trainer's network = the gradient sweep's
    width, batch, bucket = 32, 4, 24

    @jax.jit
    def weight_grads(params, x, u, depth):
        def probe(p):
            return jnp.sum(u * network.apply(p, x, depth, jnp.tanh)) / batch

        w = jax.grad(probe)(params)["w"]
        return jnp.sqrt(jnp.sum(jnp.square(w), axis=(1, 2)))

    layers = result.layers.set_index(["config_id", "layer"])
    stack = network.draws(spec.seed, [0], width, bucket, "gaussian")
    for config in result.configs.to_dict("records"):
        params = network.init_params(
            grid.static_key(config, bucket), stack.z[0], stack.beta[0], stack.readout[0],
            jnp.float32(config["sigma_w"]), jnp.float32(config["sigma_b"]), width,
        )  # fmt: skip
        shared = shared_draws(replicate_key(spec.seed, 0), batch, width)
        norms = weight_grads(params, shared.x, shared.probe, config["depth"])
        mine = np.log10(np.asarray(norms, np.float64)[: config["depth"]])
        np.testing.assert_allclose(
            mine, layers.loc[config["config_id"], "log10_grad_w"], rtol=0, atol=1e-4
        )


def test_a_sweep_without_train_has_no_training_outputs(tmp_path):
    spec = spec_module.parse(BASE_TEXT)
    configs = grid.expand(spec)
    assert spec.train is None and spec.n_configs == len(configs)
    result = run(spec, tmp_path / "run", progress=False, report=False)
    assert result.training is None and result.training_layers is None
    assert not list((tmp_path / "run" / "data").glob("training*"))
    assert not set(schema.OUTCOME_COLUMNS) & set(result.summary.columns)
    assert "train_group" not in configs and "lr" not in configs
