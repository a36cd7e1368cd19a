"""The compiled trainer: K optax steps for every config of a group inside one jit, vmapped over configs.

One trainer per `gradbench.sweep.keys.TrainKey` (network StaticKey, optimiser, task, K): a `lax.scan` over log
intervals around a `lax.scan` over steps, vmapped over configs. The network's architecture and code
paths (branch layers, norm and its position) are the StaticKey's; its depth, scales, residual branch
scale alpha and RNN input scale, the learning rate, the clip threshold and the clipping rule are
per-config arrays closed over inside the vmapped function (optax accepts traced scalars; every rule
of the sweep is computed and one is selected), so new values never recompile and a clipping sweep
compiles once per network group. A config whose loss or gradient
turns NaN/Inf is marked diverged at that step and frozen; configs never interact, so it cannot
poison the others.

Recorded at steps 0, e, 2e, ... and after the last step K: the loss on the whole data set, the step's
pre-clip global gradient norm and per-layer norms (`gradbench.training.network`: per layer, residual
block or RNN step), the post-clip norm, the update norm (the change of
the parameters), and over each interval the fraction of steps that clipping changed and the largest
norms.
"""

from __future__ import annotations

import functools
from typing import NamedTuple

import jax
import jax.numpy as jnp
import optax

from gradbench import registry
from gradbench.sweep.keys import TrainKey
from gradbench.training import datasets
from gradbench.training.network import Draws, init_params, network


class TrainInputs(NamedTuple):
    """Per-config dynamic inputs of one trainer call, each of shape (C,)."""

    draw: jax.Array  # index into the chunk's Draws (its replicate)
    sigma_w: jax.Array
    sigma_b: jax.Array
    depth: jax.Array
    lr: jax.Array
    threshold: jax.Array
    rule: jax.Array  # index into the TrainKey's `clips`
    alpha: jax.Array  # resmlp's residual branch scale (unused by the others)
    input_scale: jax.Array  # the rnn's input weight scale (unused by the others)
    sequence: jax.Array  # a sequence task's data set (index into the stacked lengths); else unused


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


@functools.cache
def make_trainer(key: TrainKey, allow_imports: bool = False):
    """The jitted `trainer(seed, data, draws, inputs) -> Record` of one TrainKey (compiled once per
    chunk shape). A sequence task's `data` is the stack of `datasets.sequences`, of which each config
    trains on its own (`TrainInputs.sequence`)."""
    static = key.static
    phi = registry.activation(static.activation, allow_imports=allow_imports).fn
    net = network(static, phi)
    outputs = datasets.outputs_of(key.task, key.outputs)
    every, steps = key.log_every, key.steps
    intervals = -(-steps // every)
    full_batch = key.batch == key.samples
    sequence_task = registry.TASKS[key.task].sequence_features > 0
    inf = jnp.array(jnp.inf, static.dtype)

    def task_loss(y, target):
        return datasets.loss(key.task, y, target)

    def one_config(data, stack: Draws, batch_key, config: TrainInputs):
        depth, alpha, rule = config.depth, config.alpha, config.rule
        input_weight = None if stack.input_weight is None else stack.input_weight[config.draw]
        params = init_params(
            static,
            stack.z[config.draw],
            stack.beta[config.draw],
            stack.readout[config.draw],
            config.sigma_w,
            config.sigma_b,
            outputs,
            input_weight,
            config.input_scale,
        )
        if sequence_task:
            data = datasets.TaskData(data.x[config.sequence], data.target[config.sequence])
        clips = [registry.clip_rule(rule_name).make(config.threshold) for rule_name in key.clips]
        opt = registry.optimizer(key.optimizer).make(config.lr)

        def full_loss_of(params):
            return task_loss(net.apply(params, data.x, depth, alpha), data.target)

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
            loss, grads, layer_w, layer_b = net.value_and_grad(
                task_loss, params, x, target, depth, alpha
            )
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
            full_loss = None if full_batch else full_loss_of(carry[0])
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
            loss = full_loss_of(params)
        diverged = jnp.where((diverged < 0) & ~(finite & jnp.isfinite(loss)), steps, diverged)
        nan, zero = jnp.array(jnp.nan, loss.dtype), jnp.array(0, jnp.int32)
        last = Record(
            loss, _norm(grads), nan, nan, layer_w, layer_b, nan, nan, nan, zero, zero, diverged
        )
        records = jax.tree.map(lambda a, b: jnp.concatenate([a, b[None]]), records, last)
        return records._replace(diverged_step=diverged)

    vmapped = jax.vmap(one_config, in_axes=(None, None, None, 0))

    @jax.jit
    def trainer(seed, data: datasets.TaskData, stack: Draws, inputs: TrainInputs) -> Record:
        """Trains every config of `inputs`; `stack` holds the draws of the replicates they use."""
        batch_key = jax.random.fold_in(
            jax.random.fold_in(jax.random.key(seed), datasets.TASK_SALT), 1
        )
        return vmapped(data, stack, batch_key, inputs)

    return trainer
