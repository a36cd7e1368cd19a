"""The trained networks: gradbench.engine's mlp, resmlp and rnn, with explicit parameters.

Parameters come from the sweep's common random numbers, so training starts from exactly the network
whose gradients the sweep measured. Dense layer i (`model.dense_index`: layer l of the MLP, dense
layer k of residual block l, the RNN's one shared W) has W_i = sigma_w / sqrt(width) Z_i and
b_i = sigma_b beta_i from `model.layer_draws(replicate_key(seed, replicate), i, width, init_family)`;
the readout is the first `outputs` rows of the replicate's W_out. Parameters (`init_params`):

- "w" (dense layers, in, out), W_i transposed, and "b" (dense layers, out), stacked in
  `dense_index` order: depth layers (mlp), depth x branch_layers (resmlp), 1 (rnn);
- "readout" (width, outputs);
- rnn only, "u" (inputs, width): the input weights (`gradbench.training.recurrent`).

A trainer serves a depth bucket: its stack has as many layers, blocks or steps as the bucket's
deepest config, and a config of depth L treats those past L as the identity (h stays; the RNN reads
exactly its own L steps). They receive zero gradients, hence zero updates, so a config trains in a
deeper bucket as it would alone.

Each network's `value_and_grad` also returns per-layer gradient norms, one per row of
training_layers.parquet: ||dL/dW_l||_F and ||dL/db_l|| of MLP layer l; of residual block l, the norms
of its branch's dense layers together; of RNN step t, those of the step's own use of the shared W and
b (`gradbench.training.recurrent`). They mean what the rows of layers.parquet (sublayer 0) mean.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from gradbench.engine.model import input_weight_draw, layer_draws, replicate_key, shared_draws
from gradbench.engine.precision import PRECISION
from gradbench.sweep.keys import StaticKey
from gradbench.training import recurrent


class Draws(NamedTuple):
    """Standard draws of some replicates (leading axis R): z (R, dense layers, out, in), beta
    (R, dense layers, out), the readout (R, width, width) with Var = 1/width, and for the RNN the
    input weights Z_U (R, width, inputs) (gradbench.engine.model's common random numbers)."""

    z: jax.Array
    beta: jax.Array
    readout: jax.Array
    input_weight: jax.Array | None = None


def dense_layers(static: StaticKey) -> int:
    """How many dense layers (stacked draws) the network of `static` has."""
    if static.architecture == "resmlp":
        return static.depth * static.branch_layers
    if static.architecture == "rnn":
        return 1
    return static.depth


@functools.cache
def _layer_draws(width: int, init_family: str):
    # Jitted per layer (the layer index is traced): threefry compiles once per width, not once per
    # depth bucket or trainer, which on a CPU is seconds each time.
    return jax.jit(lambda rep_key, layer: layer_draws(rep_key, layer, width, init_family))


@functools.cache
def _readout(width: int):
    return jax.jit(lambda rep_key: shared_draws(rep_key, 1, width).readout)


@functools.cache
def _input_weight(width: int, inputs: int):
    return jax.jit(lambda rep_key: input_weight_draw(rep_key, width, inputs))


def draws(
    seed: int, replicates, width: int, depth: int, init_family: str, inputs: int | None = None
) -> Draws:
    """The draws of `depth` dense layers for each replicate (a shallower bucket uses a prefix of
    them), and with `inputs` the RNN's input weights of that many input features."""
    layer_fn, readout_fn = _layer_draws(width, init_family), _readout(width)
    zs, betas, readouts, input_weights = [], [], [], []
    for replicate in replicates:
        rep_key = replicate_key(np.uint32(seed), int(replicate))
        pairs = [layer_fn(rep_key, np.int32(layer)) for layer in range(depth)]
        zs.append(np.stack([np.asarray(z) for z, _ in pairs]))
        betas.append(np.stack([np.asarray(b) for _, b in pairs]))
        readouts.append(np.asarray(readout_fn(rep_key)))
        if inputs is not None:
            input_weights.append(np.asarray(_input_weight(width, inputs)(rep_key)))
    stacked = np.stack(input_weights) if inputs is not None else None
    return Draws(np.stack(zs), np.stack(betas), np.stack(readouts), stacked)


def init_params(
    static: StaticKey,
    z,
    beta,
    readout,
    sigma_w,
    sigma_b,
    outputs: int,
    input_weight=None,
    input_scale=None,
) -> dict:
    """Parameters of one config from its replicate's draws (the module docstring's layout).

    W_i = sigma_w / sqrt(width) Z_i (stored transposed, (in, out)), b_i = sigma_b beta_i, and the
    readout is the first `outputs` rows of W_out, stored (width, outputs). The RNN also takes its
    input weights' draw Z_U (width, inputs) and `input_scale` (`recurrent.input_weights`).
    """
    dtype = jnp.dtype(static.dtype)
    params = {
        "w": (sigma_w / math.sqrt(static.width)).astype(dtype)
        * jnp.swapaxes(z, -1, -2).astype(dtype),
        "b": sigma_b.astype(dtype) * beta.astype(dtype),
        "readout": readout[:outputs].T.astype(dtype),
    }
    if static.architecture == "rnn":
        params["u"] = recurrent.input_weights(input_weight, input_scale, dtype)
    return params


def apply(params: dict, x, depth, phi) -> jax.Array:
    """MLP: y = W_out h_L with h_l = phi(h_{l-1} W_l + b_l); layers at index >= depth are identity."""

    def layer(h, inputs):
        w, b, index = inputs
        z = jnp.matmul(h, w, precision=PRECISION) + b[None, :]
        return jnp.where(index < depth, phi(z), h), None

    n_layers = params["w"].shape[0]
    h, _ = jax.lax.scan(layer, x, (params["w"], params["b"], jnp.arange(n_layers)))
    return jnp.matmul(h, params["readout"], precision=PRECISION)


def normalise(a, norm: str) -> jax.Array:
    """N(a) over the last (width) axis, without epsilon or gain: "layernorm" (a - mean) / rms of
    that, "rmsnorm" a / rms(a), "none" a. A row that is all zero (after centring) stays zero."""
    if norm == "none":
        return a
    if norm == "layernorm":
        a = a - jnp.mean(a, axis=-1, keepdims=True)
    mean_square = jnp.mean(jnp.square(a), axis=-1, keepdims=True)
    usable = mean_square > 0  # the inner where keeps 0 / 0 out of the gradient too
    return jnp.where(usable, a * jax.lax.rsqrt(jnp.where(usable, mean_square, 1.0)), 0.0)


def apply_residual(static: StaticKey, params: dict, x, depth, alpha, phi) -> jax.Array:
    """resmlp: y = W_out h_L over residual blocks; blocks at index >= depth are identity.

    pre (or no norm): h_l = h_{l-1} + alpha F(N(h_{l-1})), and N(h_L) is read out; post:
    h_l = N(h_{l-1} + alpha F(h_{l-1})). F(a) = W phi(a) + b, or W2 phi(W1 phi(a) + b1) + b2.
    """
    k, width = static.branch_layers, static.width
    post = static.norm_position == "post"

    def block(h, inputs):
        w, b, index = inputs
        a = h if post else normalise(h, static.norm)
        for sub in range(k):
            a = jnp.matmul(phi(a), w[sub], precision=PRECISION) + b[sub][None, :]
        new = h + alpha * a
        if post:
            new = normalise(new, static.norm)
        return jnp.where(index < depth, new, h), None

    w = params["w"].reshape(-1, k, width, width)
    b = params["b"].reshape(-1, k, width)
    h, _ = jax.lax.scan(block, x, (w, b, jnp.arange(w.shape[0])))
    if not post:
        h = normalise(h, static.norm)
    return jnp.matmul(h, params["readout"], precision=PRECISION)


def _frobenius(a, axes) -> jax.Array:
    return jnp.sqrt(jnp.sum(jnp.square(a), axis=axes))


class Network(NamedTuple):
    """One StaticKey's network, for a trainer.

    Attributes:
        apply: `apply(params, x, depth, alpha) -> outputs` (alpha is resmlp's branch scale).
        value_and_grad: `value_and_grad(loss, params, x, target, depth, alpha) -> (loss value,
            grads, layer_w, layer_b)` for `loss(outputs, target)`; layer_w and layer_b (depth,) are
            the per-layer norms of the module docstring.
    """

    apply: Callable
    value_and_grad: Callable


def network(static: StaticKey, phi) -> Network:
    """The network of `static.architecture` with activation `phi`."""
    if static.architecture == "rnn":
        return Network(
            lambda params, x, depth, alpha: recurrent.apply(params, x, depth, phi),
            lambda loss, params, x, target, depth, alpha: recurrent.value_and_grad(
                loss, params, x, target, depth, phi
            ),
        )
    if static.architecture == "resmlp":

        def forward(params, x, depth, alpha):
            return apply_residual(static, params, x, depth, alpha, phi)

        def per_layer(grads):
            k = static.branch_layers
            w = jnp.sum(jnp.square(grads["w"]), axis=(1, 2)).reshape(-1, k)
            b = jnp.sum(jnp.square(grads["b"]), axis=1).reshape(-1, k)
            return jnp.sqrt(jnp.sum(w, axis=1)), jnp.sqrt(jnp.sum(b, axis=1))

    else:

        def forward(params, x, depth, alpha):
            return apply(params, x, depth, phi)

        def per_layer(grads):
            return _frobenius(grads["w"], (1, 2)), _frobenius(grads["b"], 1)

    def value_and_grad(loss, params, x, target, depth, alpha):
        value, grads = jax.value_and_grad(lambda p: loss(forward(p, x, depth, alpha), target))(
            params
        )
        return (value, grads, *per_layer(grads))

    return Network(forward, value_and_grad)
