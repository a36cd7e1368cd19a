"""Independently written references for the residual MLP and the RNN: explicit weights, Python loops,
plain jax.grad, float64.

They share only the standard draws with gradbench (the common-random-numbers rule fixes them:
`layer_draws` at `dense_index`, `input_weight_draw`, `sequence_draw`, `shared_draws`). Gradients with
respect to a hidden vector come from a zero perturbation added to it, and the RNN's per-step weight
gradients from a separate copy of the shared W (and b) per step, so every statistic is a gradient jax
computes directly, not one reassembled from the engine's formulas.

The gradients are jit-compiled per network structure (activation, norm, depth, ...), so the many
configs of a sweep that differ only in their draws and scales reuse one compiled gradient.

Each function returns the config's rows as a DataFrame with the columns of the layers table: `layer`
(1-based block or step), `sublayer` and the log10 statistics.
"""

import functools
import math

import jax
import jax.numpy as jnp
import numpy as np
import pandas as pd

from gradbench import registry
from gradbench.engine.model import (
    dense_index,
    input_weight_draw,
    layer_draws,
    replicate_key,
    sequence_draw,
    shared_draws,
)


def _f64(array):
    return jnp.asarray(array, jnp.float64)


def _log10_norm(array) -> float:
    """log10 of the Frobenius norm; -inf for an exact zero."""
    with np.errstate(divide="ignore"):
        return float(np.log10(np.linalg.norm(np.asarray(array))))


def _loss_value(y, probe, loss: str, batch: int):
    if loss == "probe":
        return jnp.sum(probe * y) / batch
    return 0.5 * jnp.sum((y - probe) ** 2) / batch


def _normalise(a, norm: str):
    """layernorm or rmsnorm over the width axis (no eps, no gain), or the identity."""
    if norm == "layernorm":
        centred = a - jnp.mean(a, axis=-1, keepdims=True)
        return centred / jnp.sqrt(jnp.mean(centred**2, axis=-1, keepdims=True))
    if norm == "rmsnorm":
        return a / jnp.sqrt(jnp.mean(a**2, axis=-1, keepdims=True))
    return a


def _dense_draws(key, index: int, width: int, init_family: str, sigma_w2: float, sigma_b2: float):
    z_std, beta = layer_draws(key, index, width, init_family)
    return math.sqrt(sigma_w2 / width) * _f64(z_std), math.sqrt(sigma_b2) * _f64(beta)


def _branch(phi, a, weights, biases, taps):
    """F(a) and its dense outputs z_k: phi before each dense layer, none after the last."""
    z, outputs = a, []
    for w, b, tap in zip(weights, biases, taps, strict=True):
        z = phi(z) @ w.T + b[None, :] + tap
        outputs.append(z)
    return z, outputs


def _resmlp_objective(
    weights, biases, stream_taps, dense_taps, x, readout, probe, alpha, activation, norm, post, loss
):
    """J and (q of each block's output, q of each dense output); `stream_taps[l]` is added to
    h_{l-1}, the input of block l, and `dense_taps[l][k]` to z_k of block l."""
    phi = registry.ACTIVATIONS[activation].fn
    h, q_blocks, q_dense = x, [], []
    for ws, bs, stream_tap, taps in zip(weights, biases, stream_taps, dense_taps, strict=True):
        h = h + stream_tap
        if post:
            f, outputs = _branch(phi, h, ws, bs, taps)
            h = _normalise(h + alpha * f, norm)
        else:
            f, outputs = _branch(phi, _normalise(h, norm), ws, bs, taps)
            h = h + alpha * f
        q_blocks.append(jnp.mean(h**2))
        q_dense.append(jnp.stack([jnp.mean(z**2) for z in outputs]))
    top = h if post else _normalise(h, norm)
    value = _loss_value(top @ readout.T, probe, loss, x.shape[0])
    return value, (jnp.stack(q_blocks), jnp.stack(q_dense))


@functools.partial(jax.jit, static_argnames=("activation", "norm", "post", "loss"))
def _resmlp_gradients(*args, activation, norm, post, loss):
    return jax.grad(_resmlp_objective, argnums=(0, 1, 2, 3), has_aux=True)(
        *args, activation, norm, post, loss
    )


def reference_resmlp(
    *,
    activation,
    init_family,
    width,
    batch,
    depth,
    sigma_w2,
    sigma_b2,
    alpha,
    branch_layers=1,
    norm="none",
    norm_position="pre",
    seed=0,
    replicate=0,
    loss="probe",
) -> pd.DataFrame:
    """Rows (block l = 1..depth, sublayer 0..branch_layers) of a residual MLP, in float64.

    Sublayer 0: the stream gradient at the block's input dJ/dh_{l-1}, the branch's weight and bias
    gradients together, and q = mean(h_l^2) of the block's output. Sublayer k: dense layer k's
    output z_k (before phi or the skip), its dJ/dz_k, dJ/dW_k, dJ/db_k and mean(z_k^2).
    Pre-norm: h_l = h_{l-1} + alpha F(N(h_{l-1})), y = N(h_L) W_out^T; post-norm:
    h_l = N(h_{l-1} + alpha F(h_{l-1})), y = h_L W_out^T; norm "none" is the pre form with N = 1.
    """
    with jax.enable_x64(True):
        key = replicate_key(seed, replicate)
        shared = shared_draws(key, batch, width)
        weights, biases = [], []
        for block in range(depth):
            drawn = [
                _dense_draws(
                    key,
                    dense_index("resmlp", block, k, branch_layers),
                    width,
                    init_family,
                    sigma_w2,
                    sigma_b2,
                )
                for k in range(branch_layers)
            ]
            weights.append([w for w, _ in drawn])
            biases.append([b for _, b in drawn])
        zeros = jnp.zeros((batch, width), jnp.float64)
        stream_taps = [zeros] * depth
        dense_taps = [[zeros] * branch_layers for _ in range(depth)]
        grads, (q_blocks, q_dense) = _resmlp_gradients(
            weights,
            biases,
            stream_taps,
            dense_taps,
            _f64(shared.x),
            _f64(shared.readout),
            _f64(shared.probe),
            jnp.float64(alpha),
            activation=activation,
            norm=norm,
            post=norm != "none" and norm_position == "post",
            loss=loss,
        )
        g_w, g_b, g_h, g_z = grads
        rows = []
        for block in range(depth):
            rows.append(
                {
                    "layer": block + 1,
                    "sublayer": 0,
                    "log10_delta": _log10_norm(g_h[block]),
                    "log10_grad_w": _log10_norm(jnp.stack(g_w[block])),
                    "log10_grad_b": _log10_norm(jnp.stack(g_b[block])),
                    "log10_q": float(np.log10(q_blocks[block])),
                }
            )
            for k in range(branch_layers):
                rows.append(
                    {
                        "layer": block + 1,
                        "sublayer": k + 1,
                        "log10_delta": _log10_norm(g_z[block][k]),
                        "log10_grad_w": _log10_norm(g_w[block][k]),
                        "log10_grad_b": _log10_norm(g_b[block][k]),
                        "log10_q": float(np.log10(q_dense[block][k])),
                    }
                )
        return pd.DataFrame(rows)


def _rnn_objective(w_copies, b_copies, taps, inputs, u, readout, probe, activation, loss):
    """J and q_t of each step; step t uses its own copies of W and b, and adds `taps[t]` to z_t."""
    phi = registry.ACTIVATIONS[activation].fn
    h, q = jnp.zeros_like(inputs[0]), []
    for w_t, b_t, x_t, tap in zip(w_copies, b_copies, inputs, taps, strict=True):
        z = h @ w_t.T + x_t @ u.T + b_t[None, :] + tap
        q.append(jnp.mean(z**2))
        h = phi(z)
    return _loss_value(h @ readout.T, probe, loss, h.shape[0]), jnp.stack(q)


@functools.partial(jax.jit, static_argnames=("activation", "loss"))
def _rnn_gradients(*args, activation, loss):
    return jax.grad(_rnn_objective, argnums=(0, 1, 2), has_aux=True)(*args, activation, loss)


def reference_rnn(
    *,
    activation,
    init_family,
    width,
    batch,
    depth,
    sigma_w2,
    sigma_b2,
    input_scale=1.0,
    seed=0,
    replicate=0,
    loss="probe",
) -> pd.DataFrame:
    """Rows (step t = 1..depth, sublayer 0) of an Elman RNN with h_0 = 0, in float64:
    z_t = h_{t-1} W^T + x_t U^T + b, h_t = phi(z_t), y = h_T W_out^T.

    Step t's weight gradient is that of its own copy of the shared W (NaN at t = 1, where h_0 = 0
    makes it exactly zero), `log10_grad_w_sum` the norm of the copies' sum from step t to the last,
    so its first row is the whole gradient of the shared W.
    """
    with jax.enable_x64(True):
        key = replicate_key(seed, replicate)
        shared = shared_draws(key, batch, width)
        w, b = _dense_draws(key, dense_index("rnn", 0), width, init_family, sigma_w2, sigma_b2)
        u = input_scale / math.sqrt(width) * _f64(input_weight_draw(key, width))
        inputs = [_f64(sequence_draw(key, step, batch, width)) for step in range(depth)]
        zeros = jnp.zeros((batch, width), jnp.float64)
        (g_w, g_b, g_z), q = _rnn_gradients(
            [w] * depth,
            [b] * depth,
            [zeros] * depth,
            inputs,
            u,
            _f64(shared.readout),
            _f64(shared.probe),
            activation=activation,
            loss=loss,
        )
        suffix_sums = np.cumsum(np.stack([np.asarray(g) for g in g_w])[::-1], axis=0)[::-1]
        rows = []
        for step in range(depth):
            grad_w = np.nan if step == 0 else _log10_norm(g_w[step])
            rows.append(
                {
                    "layer": step + 1,
                    "sublayer": 0,
                    "log10_delta": _log10_norm(g_z[step]),
                    "log10_grad_w": grad_w,
                    "log10_grad_b": _log10_norm(g_b[step]),
                    "log10_q": float(np.log10(q[step])),
                    "log10_grad_w_sum": _log10_norm(suffix_sums[step]),
                }
            )
        return pd.DataFrame(rows)


def reference_rows(config: dict) -> pd.DataFrame:
    """The reference rows of one row of a configs table, by its architecture."""
    common = {
        k: config[k]
        for k in ("activation", "init_family", "width", "batch", "depth", "seed", "replicate")
    }
    common.update(sigma_w2=config["sigma_w2"], sigma_b2=config["sigma_b2"], loss=config["loss"])
    if config["architecture"] == "resmlp":
        return reference_resmlp(
            **common,
            alpha=config["alpha"],
            branch_layers=int(config["branch_layers"]),
            norm=config["norm"],
            norm_position=config["norm_position"],
        )
    if config["architecture"] == "rnn":
        return reference_rnn(**common, input_scale=config["input_scale"])
    raise ValueError(f"no reference for architecture {config['architecture']!r}")
