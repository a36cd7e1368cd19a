"""Training dynamics: K optax steps for every config of a group inside one jit, vmapped over configs.

The network is gradbench.engine.model's, with explicit parameters: the stacked hidden weights
W_l = sigma_w / sqrt(width) Z_l and biases b_l = sigma_b beta_l come from the common random numbers
`model.layer_draws(replicate_key(seed, replicate), l, width, init_family)`, and the readout is the
first `outputs` rows of the replicate's W_out. So training starts from exactly the network whose
gradients the sweep measured, and a depth-L net is still the prefix of a deeper one (layers past a
config's depth are masked to identity and receive zero gradients, hence zero updates).

One compiled trainer per `grid.TrainKey` (network StaticKey, optimiser, task, K): a `lax.scan` over
log intervals around a `lax.scan` over steps, vmapped over configs. The learning rate, the clip
threshold and the clipping rule are per-config arrays closed over inside the vmapped function (optax
accepts traced scalars; every rule of the sweep is computed and one is selected), so new values never
recompile and a clipping sweep compiles once per network group. A config whose loss or gradient turns NaN/Inf is
marked diverged at that step and frozen; configs never interact, so it cannot poison the others.

Recorded at steps 0, e, 2e, ... and after the last step K: the loss on the whole data set, the step's
pre-clip global gradient norm and per-layer norms, the post-clip norm, the update norm (the change of
the parameters), and over each interval the fraction of steps that clipping changed and the largest
norms. Tables and columns: docs/results.md.
"""

from __future__ import annotations

import contextlib
import functools
import math
import time
from collections.abc import Collection
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pandas as pd
from jax.sharding import NamedSharding, PartitionSpec

from gradbench import registry
from gradbench.batch.progress import Progress
from gradbench.engine import compilation_cache
from gradbench.engine.chunks import config_mesh
from gradbench.engine.model import layer_draws, replicate_key, shared_draws
from gradbench.sweep import grid
from gradbench.sweep.spec import SweepSpec
from gradbench.training import datasets as tasks

MOMENTUM = 0.9  # optimizer = "momentum": optax.sgd(lr, momentum=0.9); adam uses optax's defaults
ADAPTIVE_EPS = 1e-3  # optax.adaptive_grad_clip's default: units with smaller norm count as this
TRAIN_CHUNK_BYTES = 1 << 28
MAX_TRAIN_CHUNK = 256
PRECISION = jax.lax.Precision.HIGHEST


def optimizer(name: str, lr) -> optax.GradientTransformation:
    """The optax optimiser `name` ("sgd", "momentum", "adam") with learning rate `lr` (may be traced)."""
    if name == "sgd":
        return optax.sgd(lr)
    if name == "momentum":
        return optax.sgd(lr, momentum=MOMENTUM)
    if name == "adam":
        return optax.adam(lr)
    raise ValueError(f"`train.optimizer`: unknown optimiser {name!r}")


def clipper(rule: str, threshold) -> optax.GradientTransformation:
    """The optax clipping rule applied to gradients before the optimiser.

    "global_norm": optax.clip_by_global_norm (Pascanu et al. 2013); "value": optax.clip, elementwise
    to [-t, t]; "adaptive": optax.adaptive_grad_clip (Brock et al. 2021), unit-wise relative to the
    parameter norm. The hidden weights are stacked (L, in, out), so their units (one per output
    neuron of one layer) are reduced over axis 1 only; each layer's bias vector is one unit.
    """
    if rule == "none":
        return optax.identity()
    if rule == "global_norm":
        return optax.clip_by_global_norm(threshold)
    if rule == "value":
        return optax.clip(threshold)
    if rule == "adaptive":
        return optax.partition(
            {
                "stacked": optax.adaptive_grad_clip(threshold, ADAPTIVE_EPS, axis=1),
                "plain": optax.adaptive_grad_clip(threshold, ADAPTIVE_EPS),
            },
            {"w": "stacked", "b": "stacked", "readout": "plain"},
        )
    raise ValueError(f"`train.clip`: unknown rule {rule!r}")


class Draws(NamedTuple):
    """Standard draws of some replicates (leading axis R): z (R, L, out, in), beta (R, L, out), and
    the readout (R, width, width) with Var = 1/width (gradbench.engine.model's common random numbers)."""

    z: jax.Array
    beta: jax.Array
    readout: jax.Array


@functools.cache
def _layer_draws(width: int, init_family: str):
    # Jitted per layer (the layer index is traced): threefry compiles once per width, not once per
    # depth bucket or trainer, which on a CPU is seconds each time.
    return jax.jit(lambda rep_key, layer: layer_draws(rep_key, layer, width, init_family))


@functools.cache
def _readout(width: int):
    return jax.jit(lambda rep_key: shared_draws(rep_key, 1, width).readout)


def draws(seed: int, replicates, width: int, depth: int, init_family: str) -> Draws:
    """The draws of `depth` layers for each replicate; a shallower bucket uses a prefix of them."""
    layer_fn, readout_fn = _layer_draws(width, init_family), _readout(width)
    zs, betas, readouts = [], [], []
    for replicate in replicates:
        rep_key = replicate_key(np.uint32(seed), int(replicate))
        pairs = [layer_fn(rep_key, np.int32(layer)) for layer in range(depth)]
        zs.append(np.stack([np.asarray(z) for z, _ in pairs]))
        betas.append(np.stack([np.asarray(b) for _, b in pairs]))
        readouts.append(np.asarray(readout_fn(rep_key)))
    return Draws(np.stack(zs), np.stack(betas), np.stack(readouts))


def init_params(static: grid.StaticKey, z, beta, readout, sigma_w, sigma_b, outputs: int) -> dict:
    """Parameters of one config from its replicate's draws: w (L, in, out), b (L, out), readout.

    W_l = sigma_w / sqrt(width) Z_l (stored transposed, (in, out)), b_l = sigma_b beta_l, and the
    readout is the first `outputs` rows of W_out, stored (width, outputs).
    """
    dtype = jnp.dtype(static.dtype)
    return {
        "w": (sigma_w / math.sqrt(static.width)).astype(dtype)
        * jnp.swapaxes(z, -1, -2).astype(dtype),
        "b": sigma_b.astype(dtype) * beta.astype(dtype),
        "readout": readout[:outputs].T.astype(dtype),
    }


def apply(params: dict, x, depth, phi) -> jax.Array:
    """y = W_out h_L with h_l = phi(h_{l-1} W_l + b_l); layers at index >= depth are identity."""

    def layer(h, inputs):
        w, b, index = inputs
        z = jnp.matmul(h, w, precision=PRECISION) + b[None, :]
        return jnp.where(index < depth, phi(z), h), None

    n_layers = params["w"].shape[0]
    h, _ = jax.lax.scan(layer, x, (params["w"], params["b"], jnp.arange(n_layers)))
    return jnp.matmul(h, params["readout"], precision=PRECISION)


class TrainInputs(NamedTuple):
    """Per-config dynamic inputs of one trainer call, each of shape (C,)."""

    draw: jax.Array  # index into the chunk's Draws (its replicate)
    sigma_w: jax.Array
    sigma_b: jax.Array
    depth: jax.Array
    lr: jax.Array
    threshold: jax.Array
    rule: jax.Array  # index into the TrainKey's `clips`


class Record(NamedTuple):
    """What a trainer returns, shape (C, n_logs[, L]); the last log point is after step K.

    Per-step values are those of the step at the log point; `*_max` and the step counts cover the
    interval from this log point to the next (NaN/0 at the final point, which has no steps after it).
    """

    loss: jax.Array
    grad_norm: jax.Array
    clipped_norm: jax.Array
    update_norm: jax.Array
    grad_w: jax.Array  # (C, n_logs, L) pre-clip ||dL/dW_l||_F
    grad_b: jax.Array  # (C, n_logs, L) pre-clip ||dL/db_l||
    grad_norm_max: jax.Array
    clipped_norm_max: jax.Array
    update_norm_max: jax.Array
    clipped_steps: jax.Array
    live_steps: jax.Array
    diverged_step: jax.Array  # (C,): first step whose loss or gradient was NaN/Inf; -1 if none


def _norm(tree) -> jax.Array:
    return jnp.sqrt(sum(jnp.sum(jnp.square(x)) for x in jax.tree.leaves(tree)))


def _finite(tree) -> jax.Array:
    return jnp.all(jnp.stack([jnp.all(jnp.isfinite(x)) for x in jax.tree.leaves(tree)]))


def _where(cond, new, old):
    return jax.tree.map(lambda a, b: jnp.where(cond, a, b), new, old)


def log_steps(steps: int, log_every: int) -> np.ndarray:
    """The steps at which a trainer records: 0, e, 2e, ... below K, and K."""
    return np.append(np.arange(0, steps, log_every), steps)


@functools.cache
def make_trainer(key: grid.TrainKey, allow_imports: bool = False):
    """The jitted `trainer(seed, data, draws, inputs) -> Record` of one TrainKey (compiled once per
    chunk shape)."""
    static = key.static
    phi = registry.activation(static.activation, allow_imports=allow_imports).fn
    outputs = tasks.outputs_of(key.task, key.outputs)
    every, steps = key.log_every, key.steps
    intervals = -(-steps // every)
    full_batch = key.batch == key.samples
    inf = jnp.array(jnp.inf, static.dtype)

    def task_loss(params, x, target, depth):
        return tasks.loss(key.task, apply(params, x, depth, phi), target)

    def one_config(data, stack: Draws, batch_key, draw, sigma_w, sigma_b, depth, lr, t, rule):
        z, beta, readout = (a[draw] for a in stack)
        params = init_params(static, z, beta, readout, sigma_w, sigma_b, outputs)
        clips, opt = [clipper(r, t) for r in key.clips], optimizer(key.optimizer, lr)

        def clip_update(grads, states, params):
            """Every rule's clipped gradient (all stateless), then the config's own `rule`."""
            pairs = [c.update(grads, s, params) for c, s in zip(clips, states, strict=True)]
            chosen = pairs[0][0]
            for index, (clipped, _) in enumerate(pairs[1:], start=1):
                chosen = _where(rule == index, clipped, chosen)
            return chosen, tuple(s for _, s in pairs)

        def evaluate(params, s):
            """Loss and gradient of step s (its minibatch; every config of a run shares it)."""
            if full_batch:
                x, target = data
            else:
                pick = jax.random.choice(
                    jax.random.fold_in(batch_key, s), key.samples, (key.batch,), replace=False
                )
                x, target = data.x[pick], data.target[pick]
            loss, grads = jax.value_and_grad(task_loss)(params, x, target, depth)
            layer_w = jnp.sqrt(jnp.sum(jnp.square(grads["w"]), axis=(1, 2)))
            layer_b = jnp.sqrt(jnp.sum(jnp.square(grads["b"]), axis=1))
            return loss, grads, layer_w, layer_b, _finite((loss, grads))

        def step(carry, s):
            params, clip_state, opt_state, diverged = carry
            loss, grads, layer_w, layer_b, finite = evaluate(params, s)
            diverged = jnp.where((diverged < 0) & ~finite & (s < steps), s, diverged)
            live = (diverged < 0) & (s < steps)
            clipped, new_clip_state = clip_update(grads, clip_state, params)
            updates, new_opt_state = opt.update(clipped, opt_state, params)
            new = (optax.apply_updates(params, updates), new_clip_state, new_opt_state)
            carry = (*_where(live, new, (params, clip_state, opt_state)), diverged)
            changed = jnp.any(jnp.stack([jnp.any(a != b) for a, b in zip(
                jax.tree.leaves(clipped), jax.tree.leaves(grads), strict=True)]))  # fmt: skip
            out = (loss, _norm(grads), _norm(clipped), _norm(updates), layer_w, layer_b)
            return carry, (*out, live, live & changed)

        def interval(carry, k):
            full_loss = None if full_batch else task_loss(carry[0], data.x, data.target, depth)
            carry, (loss, g, c, u, lw, lb, live, changed) = jax.lax.scan(
                step, carry, k * every + jnp.arange(every, dtype=jnp.int32)
            )
            top = lambda v: jnp.max(jnp.where(live, v, -inf))  # noqa: E731
            record = Record(
                loss=loss[0] if full_batch else full_loss,
                grad_norm=g[0],
                clipped_norm=c[0],
                update_norm=u[0],
                grad_w=lw[0],
                grad_b=lb[0],
                grad_norm_max=top(g),
                clipped_norm_max=top(c),
                update_norm_max=top(u),
                clipped_steps=jnp.sum(changed),
                live_steps=jnp.sum(live),
                diverged_step=carry[3],
            )
            return carry, record

        clip_states = tuple(c.init(params) for c in clips)
        start = (params, clip_states, opt.init(params), jnp.array(-1, jnp.int32))
        (params, *_, diverged), records = jax.lax.scan(
            interval, start, jnp.arange(intervals, dtype=jnp.int32)
        )
        loss, grads, layer_w, layer_b, finite = evaluate(params, jnp.int32(steps))
        if not full_batch:
            loss = task_loss(params, data.x, data.target, depth)
        diverged = jnp.where((diverged < 0) & ~(finite & jnp.isfinite(loss)), steps, diverged)
        nan, zero = jnp.array(jnp.nan, loss.dtype), jnp.array(0, jnp.int32)
        last = Record(
            loss, _norm(grads), nan, nan, layer_w, layer_b, nan, nan, nan, zero, zero, diverged
        )
        records = jax.tree.map(lambda a, b: jnp.concatenate([a, b[None]]), records, last)
        return records._replace(diverged_step=diverged)

    vmapped = jax.vmap(one_config, in_axes=(None, None, None, 0, 0, 0, 0, 0, 0, 0))

    @jax.jit
    def trainer(seed, data: tasks.TaskData, stack: Draws, inputs: TrainInputs) -> Record:
        """Trains every config of `inputs`; `stack` holds the draws of the replicates they use."""
        batch_key = jax.random.fold_in(jax.random.fold_in(jax.random.key(seed), tasks.TASK_SALT), 1)
        return vmapped(data, stack, batch_key, *inputs)

    return trainer


class Training(NamedTuple):
    """Host-side results of a sweep's training: the tables of docs/results.md and per-group facts."""

    steps: pd.DataFrame  # data/training.parquet: config x log step
    layers: pd.DataFrame  # data/training_layers.parquet: config x log step x layer
    outcomes: pd.DataFrame  # one row per config, merged into the summary
    facts: list[dict]


def chunk_capacity(key: grid.TrainKey, override: int | None, devices: int = 1) -> int:
    """Configs per trainer call: the override, or what fits TRAIN_CHUNK_BYTES (a rough estimate of
    parameters, optimiser state, gradients and the saved activations of one step)."""
    if override:
        size = override
    else:
        s = key.static
        params = s.depth * (s.width * s.width + s.width) + s.width * key.outputs
        floats = 6 * params + 4 * key.batch * s.width * s.depth
        size = min(MAX_TRAIN_CHUNK, max(1, TRAIN_CHUNK_BYTES // (4 * floats)))
    return -(-size // devices) * devices


def train_configs(
    spec: SweepSpec,
    configs: pd.DataFrame,
    *,
    allow_imports: bool = False,
    progress: bool = False,
    only: Collection[str] | None = None,
) -> Training:
    """Trains every config of a sweep with a [train] section; groups compile once each.

    Chunks of a group have one shape (the last is padded with repeats that are dropped), and their
    config axis is sharded over this process's devices.

    Args:
        spec: the sweep.
        configs: all of its configs (`grid.expand`): they decide groups, chunk shapes and draws.
        allow_imports: permit activations given as "package.module:function".
        progress: print progress to stderr.
        only: config_ids; if given, only the chunks that hold one of them are trained, in the
            chunk shapes of the whole sweep (`gradbench verify`). A trainer compiled for another
            chunk shape may round differently, and training can amplify a rounding difference
            into a different trajectory; in its own chunk a config repeats its numbers bit for bit.
    """
    train = spec.train
    assert train is not None, "`train_configs`: the sweep has no [train] section"
    compilation_cache.enable()
    mesh = config_mesh()
    sharded = NamedSharding(mesh, PartitionSpec("configs"))
    seed = np.uint32(spec.seed)
    dtype = np.dtype(spec.dtype)
    replicates = np.sort(configs["replicate"].unique())
    deepest = int(configs["depth"].max())
    data, stacks = {}, {}
    wanted = pd.Index(configs["config_id"] if only is None else only)
    bar = Progress(len(wanted), enabled=progress)
    records, facts = [], []
    with jax.enable_x64(True) if spec.dtype == "float64" else contextlib.nullcontext():
        for key, members in grid.train_groups(configs, spec):
            if not members["config_id"].isin(wanted).any():
                continue
            static = key.static
            task_id = (key.task, key.samples, static.width, key.outputs)
            if task_id not in data:
                data[task_id] = tasks.make_task(
                    key.task,
                    seed=spec.seed,
                    samples=key.samples,
                    width=static.width,
                    outputs=key.outputs,
                    dtype=dtype,
                )
            draw_id = (static.width, static.init_family)
            if draw_id not in stacks:
                stacks[draw_id] = draws(spec.seed, replicates, *draw_id[:1], deepest, draw_id[1])
            full = stacks[draw_id]
            stack = Draws(full.z[:, : static.depth], full.beta[:, : static.depth], full.readout)
            trainer = make_trainer(key, allow_imports)
            size = chunk_capacity(key, train.chunk_size, mesh.size)
            size = min(size, -(-len(members) // mesh.size) * mesh.size)
            fact = {"group": key.label, "configs": len(members), "chunk_size": size, "chunks": 0}
            fact |= {"compile_seconds": 0.0, "run_seconds": 0.0, "compiles": 0, "cache_hits": 0}
            for start in range(0, len(members), size):
                part = members.iloc[start : start + size]
                if not part["config_id"].isin(wanted).any():
                    continue
                rows = np.minimum(np.arange(size), len(part) - 1)  # pad with repeats
                inputs = _inputs(part.iloc[rows], replicates, key.clips, dtype, sharded)
                t0 = time.perf_counter()
                with compilation_cache.counting() as cache:
                    compiled, fresh = _compiled(
                        key, allow_imports, trainer, seed, data[task_id], stack, inputs
                    )
                fact["compile_seconds"] = round(
                    fact["compile_seconds"] + time.perf_counter() - t0, 3
                )
                fact["compiles"] += int(fresh) - cache.hits
                fact["cache_hits"] += cache.hits
                t0 = time.perf_counter()
                raw = jax.device_get(compiled(seed, data[task_id], stack, inputs))
                fact["run_seconds"] = round(fact["run_seconds"] + time.perf_counter() - t0, 3)
                fact["chunks"] += 1
                n = len(part)
                raw = jax.tree.map(lambda a: a[:n], raw)  # noqa: B023 (used at once)
                records.append((part, raw, tasks.baseline_loss(key.task, data[task_id])))
                bar.update(int(part["config_id"].isin(wanted).sum()), f"train {key.label}")
            facts.append(fact)
    return tables(records, train.steps, train.log_every, train.trained_below, facts)


_COMPILED: dict = {}


def _compiled(key, allow_imports, trainer, *args):
    """The trainer compiled for these argument shapes, once per process (ahead of time, so that
    compile and run seconds are reported apart), and whether this call compiled (or loaded) it.
    Values never enter the cache key: a new learning rate or threshold reuses the executable."""
    shapes = tuple((a.shape, str(a.dtype)) for a in jax.tree.leaves(args[1:]))
    cache_key = (key, allow_imports, jax.config.jax_enable_x64, shapes)
    fresh = cache_key not in _COMPILED
    if fresh:
        _COMPILED[cache_key] = trainer.lower(*args).compile()
    return _COMPILED[cache_key], fresh


def _inputs(rows: pd.DataFrame, replicates: np.ndarray, clips, dtype, sharding) -> TrainInputs:
    def put(column, kind, fill=None):
        values = rows[column].to_numpy(dtype=float if fill is not None else None)
        if fill is not None:
            values = np.where(np.isnan(values), fill, values)
        return jax.device_put(np.asarray(values, kind), sharding)

    return TrainInputs(
        draw=jax.device_put(
            np.searchsorted(replicates, rows["replicate"].to_numpy()).astype(np.int32), sharding
        ),
        sigma_w=put("sigma_w", dtype),
        sigma_b=put("sigma_b", dtype),
        depth=put("depth", np.int32),
        lr=put("lr", dtype),
        threshold=put("clip_threshold", dtype, fill=1.0),  # unused by clip = "none"
        rule=jax.device_put(np.array([clips.index(c) for c in rows["clip"]], np.int32), sharding),
    )


def _log10(x) -> np.ndarray:
    """log10 of norms and losses; NaN where the value is zero or not finite (never a number)."""
    x = np.asarray(x, np.float64)
    ok = np.isfinite(x) & (x > 0)
    return np.where(ok, np.log10(np.where(ok, x, 1.0)), np.nan)


def tables(records, steps: int, log_every: int, trained_below: float, facts=()) -> Training:
    """training / training_layers / outcome tables from (config rows, Record, baseline loss) triples.

    A config is `trained` when it did not diverge and its final loss is below `trained_below` times
    the task's baseline loss (gradbench.training.datasets.baseline_loss: the best input-independent prediction).
    The baseline, not the initial loss, is the yardstick: an exploding ReLU net starts with a loss of
    1e9, and shrinking its outputs to zero would "reduce the loss 1e9-fold" without learning anything.
    """
    logged = log_steps(steps, log_every)
    step_tables, layer_tables, outcome_tables = [], [], []
    for part, rec, baseline in records:
        ids = part["config_id"].to_numpy()
        depth = part["depth"].to_numpy()
        n, t = len(ids), len(logged)
        diverged_step = np.asarray(rec.diverged_step)
        diverged = diverged_step >= 0
        column = lambda a: np.asarray(a, np.float64).ravel()  # noqa: E731
        live = np.asarray(rec.live_steps, np.float64)
        with np.errstate(invalid="ignore", divide="ignore"):
            fraction = np.where(live > 0, np.asarray(rec.clipped_steps) / live, np.nan)
        grad_w = _log10(rec.grad_w)  # (n, t, L)
        first = grad_w[:, :, 0]
        last = np.take_along_axis(grad_w, (depth - 1)[:, None, None], axis=2)[:, :, 0]
        step_tables.append(
            pd.DataFrame(
                {
                    "config_id": np.repeat(ids, t),
                    "step": np.tile(logged, n),
                    "loss": column(rec.loss),
                    "log10_loss": _log10(rec.loss).ravel(),
                    "log10_grad_norm": _log10(rec.grad_norm).ravel(),
                    "log10_clipped_norm": _log10(rec.clipped_norm).ravel(),
                    "log10_update_norm": _log10(rec.update_norm).ravel(),
                    "log10_grad_w_first": first.ravel(),
                    "log10_grad_w_last": last.ravel(),
                    "clipped_fraction": fraction.ravel(),
                    "log10_grad_norm_max": _log10(rec.grad_norm_max).ravel(),
                    "log10_clipped_norm_max": _log10(rec.clipped_norm_max).ravel(),
                    "log10_update_norm_max": _log10(rec.update_norm_max).ravel(),
                    "diverged": (
                        diverged[:, None] & (logged[None, :] >= diverged_step[:, None])
                    ).ravel(),
                }
            )
        )
        n_layers = grad_w.shape[2]
        keep = np.arange(n_layers)[None, None, :] < depth[:, None, None]
        keep = np.broadcast_to(keep, grad_w.shape)
        layer_tables.append(
            pd.DataFrame(
                {
                    "config_id": np.broadcast_to(ids[:, None, None], keep.shape)[keep],
                    "step": np.broadcast_to(logged[None, :, None], keep.shape)[keep],
                    "layer": np.broadcast_to(np.arange(1, n_layers + 1), keep.shape)[keep],
                    "log10_grad_w": grad_w[keep],
                    "log10_grad_b": _log10(rec.grad_b)[keep],
                }
            )
        )
        loss = np.asarray(rec.loss, np.float64)
        with np.errstate(invalid="ignore", divide="ignore"):
            ratio = np.where(diverged, np.nan, loss[:, -1] / loss[:, 0])
            fit = np.where(diverged, np.nan, loss[:, -1] / baseline)
            total = np.asarray(rec.clipped_steps).sum(1) / np.maximum(live.sum(1), 1)
        outcome_tables.append(
            pd.DataFrame(
                {
                    "config_id": ids,
                    "loss_initial": loss[:, 0],
                    "loss_final": loss[:, -1],
                    "loss_baseline": baseline,
                    "loss_ratio": ratio,
                    "fit_ratio": fit,
                    "trained": ~diverged & (fit < trained_below),
                    "diverged": diverged,
                    "diverged_step": pd.array(np.where(diverged, diverged_step, 0), "Int64"),
                    "clipped_fraction": np.where(live.sum(1) > 0, total, np.nan),
                    "log10_grad_norm_initial": _log10(rec.grad_norm[:, 0]),
                    "log10_grad_norm_max": _row_max(_log10(rec.grad_norm_max)),
                    "log10_clipped_norm_max": _row_max(_log10(rec.clipped_norm_max)),
                    "log10_update_norm_max": _row_max(_log10(rec.update_norm_max)),
                    "trained_below": float(trained_below),
                }
            )
        )
        outcome_tables[-1].loc[~diverged, "diverged_step"] = pd.NA
    return Training(
        pd.concat(step_tables, ignore_index=True),
        pd.concat(layer_tables, ignore_index=True),
        pd.concat(outcome_tables, ignore_index=True),
        list(facts),
    )


def _row_max(a: np.ndarray) -> np.ndarray:
    """Largest non-NaN value of each row; NaN for a row without one."""
    top = np.where(np.isnan(a), -np.inf, a).max(axis=1)
    return np.where(np.isneginf(top), np.nan, top)


def with_outcomes(summary: pd.DataFrame, training: Training) -> pd.DataFrame:
    """The summary with the training outcome columns of each config."""
    return summary.merge(training.outcomes, on="config_id", how="left", validate="1:1")


def manifest_entry(train, training: Training) -> dict:
    """The manifest's `training` entry: the [train] settings and per-group compile and run facts."""
    return {
        "optimizer": list(train.optimizer.values),
        "momentum": MOMENTUM,
        "lr": {"values": list(train.lr.values), "scale": train.lr.scale},
        "clip": {rule: list(thresholds) for rule, thresholds in train.clip},
        "steps": train.steps,
        "log_every": train.log_every,
        "task": train.task,
        "samples": train.samples,
        "batch": train.batch,
        "outputs": train.outputs,
        "trained_below": train.trained_below,
        "groups": training.facts,
    }
