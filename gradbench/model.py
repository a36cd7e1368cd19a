"""The fully connected network, its common random numbers, and its forward pass in scaled frames.

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
from gradbench.layerstats import is_tiny, make_observe, unit_norm

LAYER_STREAM, INPUT_STREAM, READOUT_STREAM, TARGET_STREAM = range(4)


def replicate_key(seed, replicate) -> jax.Array:
    return jax.random.fold_in(jax.random.key(seed), replicate)


def layer_draws(
    rep_key: jax.Array, layer, width: int, init_family: str
) -> tuple[jax.Array, jax.Array]:
    """Standard draws (Z_l, beta_l) of hidden layer `layer` (0-based), unit variance, float32."""
    key = jax.random.fold_in(jax.random.fold_in(rep_key, LAYER_STREAM), layer)
    key_w, key_b = jax.random.split(key)
    z = registry.INIT_FAMILIES[init_family].draw(key_w, (width, width))
    return z, jax.random.normal(key_b, (width,), jnp.float32)


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
    tiny_z: (
        jax.Array
    )  # 1 where max|z_hat_l| is below the smallest normal number: q_l has lost its digits
    log_h_scale: jax.Array  # s_{l-1}: h_{l-1} = exp(s_{l-1}) h_hat_{l-1}
    log_top_scale: jax.Array  # dJ/dz_l = exp(log_top_scale - s_{l-1}) * d J_hat / d z_hat_l


def make_loss(static: StaticKey, allow_imports: bool = False):
    """Builds `loss(tags, rep_key, shared, sigma_w, sigma_b, depth) -> (J_hat, Forward)` for one config.

    `jax.grad` of it with respect to `tags` (shape (depth_bucket, N_TAG), zeros) gives the raw per-layer
    statistics of `gradbench.layerstats`. Layers at index >= depth are identity.
    """
    phi = registry.activation(static.activation, allow_imports=allow_imports)
    log_mode = static.measure == "log"
    renormalise_forward = log_mode and phi.homogeneous
    observe = make_observe(renormalise=log_mode, gram=2 * static.batch < static.width)
    dtype = jnp.dtype(static.dtype)
    width, batch = static.width, static.batch
    log_size = math.log(batch * width)
    precision = jax.lax.Precision.HIGHEST

    def loss(tags, rep_key, shared: Shared, sigma_w, sigma_b, depth):
        weight_scale = (sigma_w / math.sqrt(width)).astype(dtype)
        sigma_b = sigma_b.astype(dtype)

        def layer(carry, inputs):
            h, s = carry
            index, tag = inputs
            z_std, beta = layer_draws(rep_key, index, width, static.init_family)
            # In the frame h = exp(s) h_hat the bias reads b exp(-s); skip the product when b = 0 so
            # that exp(-s) overflowing never turns 0 into NaN.
            bias = jnp.where(sigma_b > 0, sigma_b * jnp.exp(-s), 0.0) * beta.astype(dtype)[None, :]
            z = weight_scale * jnp.matmul(h, z_std.astype(dtype).T, precision=precision) + bias
            z = observe(z, h, tag)
            z_norm = unit_norm(z)
            log_q = 2 * z_norm.log_norm - log_size + 2 * s
            h_next, s_next = phi.fn(z), s
            if renormalise_forward:
                log_rms = jax.lax.stop_gradient(unit_norm(h_next).log_norm - 0.5 * log_size)
                log_rms = jnp.where(jnp.isfinite(log_rms), log_rms, 0.0)
                h_next, s_next = h_next * jnp.exp(-log_rms), s + log_rms
            active = index < depth
            carry = (jnp.where(active, h_next, h), jnp.where(active, s_next, s))
            return carry, (log_q, is_tiny(z_norm.max_abs), s)

        x = shared.x.astype(dtype)
        layers = (jnp.arange(static.depth), tags)
        (h_top, s_top), (log_q, tiny_z, log_h_scale) = jax.lax.scan(
            layer, (x, jnp.zeros((), dtype)), layers
        )
        y = jnp.matmul(h_top, shared.readout.astype(dtype).T, precision=precision)
        probe = shared.probe.astype(dtype)
        if static.loss == "probe":
            j_hat, log_top = jnp.sum(probe * y) / batch, s_top
        else:  # mse: dJ/dy = y - t = exp(s_top) (y_hat - t exp(-s_top))
            target = jax.lax.stop_gradient(probe * jnp.exp(-s_top))
            j_hat, log_top = 0.5 * jnp.sum(jnp.square(y - target)) / batch, 2 * s_top
        return j_hat, Forward(log_q, tiny_z, log_h_scale, log_top)

    return loss
