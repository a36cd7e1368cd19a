"""The fully connected network: its common random numbers and its forward pass in scaled frames.

Common random numbers: layer l's standard draws Z_l, beta_l depend only on (seed, replicate, layer index,
shape), drawn in float32 whatever the compute dtype. A config uses W_l = sigma_w / sqrt(width) Z_l and
b_l = sigma_b beta_l, so a depth-L net is the prefix of a deeper one and every config of a replicate
shares one matrix product per layer (rows = configs x batch).

Frames: the forward pass may carry h_l = exp(s_l) * h_hat_l with h_hat_l of unit RMS. For positively
homogeneous activations phi(exp(s) z) = exp(s) phi(z), so this changes nothing but the range of the
numbers float arithmetic sees (`gradbench.measure` puts the scales back).
"""

from __future__ import annotations

import math
from typing import NamedTuple

import jax
import jax.numpy as jnp

from gradbench import registry
from gradbench.grid import StaticKey
from gradbench.layerstats import is_tiny, unit_norm

LAYER_STREAM, INPUT_STREAM, READOUT_STREAM, TARGET_STREAM = range(4)


def replicate_key(seed, replicate) -> jax.Array:
    return jax.random.fold_in(jax.random.key(seed), replicate)


def _layer_keys(rep_key: jax.Array, layer) -> jax.Array:
    return jax.random.split(jax.random.fold_in(jax.random.fold_in(rep_key, LAYER_STREAM), layer))


def weight_draw(rep_key: jax.Array, layer, width: int, init_family: str) -> jax.Array:
    """Standard draw Z_l (width, width) of hidden layer `layer` (0-based), unit variance, float32."""
    return registry.INIT_FAMILIES[init_family].draw(_layer_keys(rep_key, layer)[0], (width, width))


# Families whose standard draw calls a batched LAPACK kernel (the QR of `orthogonal`). Inside the
# sharded kernel such a call deadlocks XLA:CPU's intra-op pool: each device's QR waits on sub-tasks
# that no free worker can run. Their draws are made beforehand, unsharded (`weight_stack`), and the
# kernel reads them; the other families are drawn in the kernel, which costs no memory.
PREDRAWN_FAMILIES = frozenset({"orthogonal"})


def weight_stack(rep_key: jax.Array, depth: int, width: int, init_family: str) -> jax.Array:
    """Standard draws Z_0 .. Z_{depth-1} of one replicate, (depth, width, width), as `weight_draw`."""
    return jax.vmap(lambda layer: weight_draw(rep_key, layer, width, init_family))(
        jnp.arange(depth)
    )


def standard_weight(
    rep_key: jax.Array, layer, width: int, init_family: str, stack: jax.Array | None
) -> jax.Array:
    """Z_l of hidden layer `layer`: read from the replicate's `weight_stack` if given, else drawn."""
    if stack is None:
        return weight_draw(rep_key, layer, width, init_family)
    return jax.lax.dynamic_index_in_dim(stack, layer, keepdims=False)


def bias_draw(rep_key: jax.Array, layer, width: int) -> jax.Array:
    """Standard draw beta_l (width,) of hidden layer `layer`, N(0, 1), float32."""
    return jax.random.normal(_layer_keys(rep_key, layer)[1], (width,), jnp.float32)


def layer_draws(
    rep_key: jax.Array, layer, width: int, init_family: str
) -> tuple[jax.Array, jax.Array]:
    """Standard draws (Z_l, beta_l) of hidden layer `layer` (0-based), unit variance, float32."""
    return weight_draw(rep_key, layer, width, init_family), bias_draw(rep_key, layer, width)


class Shared(NamedTuple):
    """Draws every config of a replicate shares besides the layers: inputs, readout and probe/targets."""

    x: jax.Array  # (batch, width) inputs, N(0, 1)
    readout: jax.Array  # (width, width) W_out with Var = 1 / width
    probe: jax.Array  # (batch, width) u (probe loss) or targets t (mse), N(0, 1)


def shared_draws(rep_key: jax.Array, batch: int, width: int) -> Shared:
    def normal(stream, shape):
        return jax.random.normal(jax.random.fold_in(rep_key, stream), shape, jnp.float32)

    return Shared(
        x=normal(INPUT_STREAM, (batch, width)),
        readout=normal(READOUT_STREAM, (width, width)) / math.sqrt(width),
        probe=normal(TARGET_STREAM, (batch, width)),
    )


class Forward(NamedTuple):
    """Per-layer forward facts (leading axis: layer) and the frame scale of the loss gradient."""

    log_q: jax.Array  # ln mean(z_l^2), true scale
    tiny_z: jax.Array  # 1 where max|z_hat_l| has lost its digits to underflow (`is_tiny`)
    log_h_scale: jax.Array  # s_{l-1}: h_{l-1} = exp(s_{l-1}) h_hat_{l-1}
    log_top_scale: jax.Array  # dJ/dz_l = exp(log_top_scale - s_{l-1}) * d J_hat / d z_hat_l


class Saved(NamedTuple):
    """What the backward pass reads back: one array per layer, everything else it recomputes.

    Layer l's entries describe its input h_hat_{l-1} = phi(z_hat_{l-1}) exp(-log_rms_{l-1}), so that the
    reverse scan reads everything about a layer at its own step (entry 0 is unused: h_{-1} is x).
    """

    z_in: jax.Array  # (depth, batch, width) z_hat_{l-1}
    log_rms_in: jax.Array  # (depth,) log_rms_{l-1}, the frame step of the layer below
    z_top: jax.Array  # (batch, width) z_hat of the last layer, whose output feeds the readout
    log_rms_top: jax.Array


def uses_frames(static: StaticKey, phi: registry.Activation) -> bool:
    """Whether the forward pass carries h in scaled frames: log mode and a positively homogeneous phi."""
    return static.measure == "log" and phi.homogeneous


def make_forward(static: StaticKey, allow_imports: bool = False):
    """Builds `forward(rep_key, shared, sigma_w, sigma_b, depth, workspace, stack)`.

    One config's forward pass, returning `(Saved, Forward, top_grad)`; `top_grad` is d J_hat / d h_hat_top,
    the loss gradient in the frame of the last layer (probe loss J = mean_b <u_b, W_out h_b>, or mse
    J = mean_b ||W_out h_b - t_b||^2 / 2). Layers at index >= depth are identity. `workspace`, a
    (depth_bucket, batch, width) array whose contents do not matter, is overwritten with `Saved.z_in`:
    the kernel passes a donated buffer there, so that the largest array of a call reuses the previous
    call's memory instead of new pages. `stack` is the replicate's `weight_stack` (None: draw in place).
    """
    phi = registry.activation(static.activation, allow_imports=allow_imports)
    renormalise = uses_frames(static, phi)
    dtype = jnp.dtype(static.dtype)
    width, batch = static.width, static.batch
    log_size = math.log(batch * width)
    precision = jax.lax.Precision.HIGHEST

    def forward(rep_key, shared: Shared, sigma_w, sigma_b, depth, workspace, stack=None):
        weight_scale = (sigma_w / math.sqrt(width)).astype(dtype)
        sigma_b = sigma_b.astype(dtype)

        def layer(carry, inputs):
            h, s, z_below, log_rms_below, workspace = carry
            index, beta = inputs
            z_std = standard_weight(rep_key, index, width, static.init_family, stack)
            # In the frame h = exp(s) h_hat the bias reads b exp(-s); skip the product when b = 0 so
            # that exp(-s) overflowing never turns 0 into NaN.
            bias = jnp.where(sigma_b > 0, sigma_b * jnp.exp(-s), 0.0) * beta[None, :]
            z = weight_scale * jnp.matmul(h, z_std.astype(dtype).T, precision=precision) + bias
            z_norm = unit_norm(z)
            log_q = 2 * z_norm.log_norm - log_size + 2 * s
            h_next, log_rms = phi.fn(z), jnp.zeros((), dtype)
            if renormalise:
                log_rms = unit_norm(h_next).log_norm - 0.5 * log_size
                log_rms = jnp.where(jnp.isfinite(log_rms), log_rms, 0.0)
                h_next = h_next * jnp.exp(-log_rms)
            # Past the config's depth layers are identity: h and s stay. z and log_rms need no mask:
            # the backward pass uses them only for the layers below the depth.
            active = index < depth
            workspace = jax.lax.dynamic_update_index_in_dim(workspace, z_below, index, 0)
            h_next, s_next = jnp.where(active, h_next, h), jnp.where(active, s + log_rms, s)
            carry = (h_next, s_next, z, log_rms, workspace)
            return carry, (log_rms_below, log_q, is_tiny(z_norm.max_abs), s)

        x = shared.x.astype(dtype)
        start = (x, jnp.zeros((), dtype), jnp.zeros_like(x), jnp.zeros((), dtype), workspace)
        indices = jnp.arange(static.depth)
        # Drawn before the scan: inside it XLA would fuse the draw into the per-element loop that adds
        # the bias, evaluating it once per row (configs x batch) instead of once.
        betas = jax.vmap(bias_draw, in_axes=(None, 0, None))(rep_key, indices, width).astype(dtype)
        (h_top, s_top, z_top, log_rms_top, z_in), (log_rms_in, log_q, tiny_z, log_h_scale) = (
            jax.lax.scan(layer, start, (indices, betas))
        )
        readout = shared.readout.astype(dtype)
        probe = shared.probe.astype(dtype)
        if static.loss == "probe":
            dj_dy, log_top = probe / batch, s_top
        else:  # mse: dJ/dy = y - t = exp(s_top) (y_hat - t exp(-s_top))
            y = jnp.matmul(h_top, readout.T, precision=precision)
            dj_dy, log_top = (y - probe * jnp.exp(-s_top)) / batch, 2 * s_top
        top_grad = jnp.matmul(dj_dy, readout, precision=precision)
        saved = Saved(z_in, log_rms_in, z_top, log_rms_top)
        return saved, Forward(log_q, tiny_z, log_h_scale, log_top), top_grad

    return forward
