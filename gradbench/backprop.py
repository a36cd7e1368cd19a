"""The backward pass, written out: a reverse scan over layers that measures every layer as it goes.

Per layer it recomputes what the forward pass did not keep (the layer input h_{l-1} = phi(z_{l-1}) and
the slope phi'(z_l) from the one saved array z, the standard draw Z_l from its key unless it was
pre-drawn), forms the backward signal delta_l = dJ/dz_l, reads its statistics
(`gradbench.layerstats.layer_stats`) and passes dJ/dh_{l-1} = sigma_w / sqrt(width) delta_l Z_l down.
In log mode it passes delta_l divided by its norm, so float32 never sees numbers far from 1; the logs
of the removed norms are in the statistics.

Writing it out, rather than `jax.grad` through the forward scan, keeps the saved set to one
(batch, width) array per layer: autodiff would also keep Z_l, h_{l-1} and phi(z_l), which at depth
dominate both memory and the time spent moving it.
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp

from gradbench import registry
from gradbench.grid import StaticKey
from gradbench.layerstats import layer_stats, prefer_gram
from gradbench.model import Saved, standard_weight, uses_frames


def make_backward(static: StaticKey, allow_imports: bool = False):
    """Builds `backward(rep_key, x, saved, top_grad, sigma_w, depth, stack) -> tags` for one config.

    `tags` has shape (depth_bucket, N_TAG): layer l's raw statistics (`gradbench.layerstats`), with
    delta_l in the frame of the layer input. Layers at index >= depth are identity: they pass the
    signal through and their tags are meaningless (`gradbench.measure` drops them). `stack` is the
    replicate's `gradbench.model.weight_stack`, or None to draw each Z_l again from its key.
    """
    phi = registry.activation(static.activation, allow_imports=allow_imports)
    log_mode = static.measure == "log"
    gram = prefer_gram(static.batch, static.width)
    dtype = jnp.dtype(static.dtype)
    width = static.width
    precision = jax.lax.Precision.HIGHEST
    renormalised = uses_frames(static, phi)

    def output_and_slope(z, log_rms):
        """h_hat = phi(z) exp(-log_rms) as the forward pass made it, and d h_hat / d z."""
        h, slope = jax.jvp(phi.fn, (z,), (jnp.ones_like(z),))
        if not renormalised:
            return h, slope
        frame = jnp.exp(-log_rms)
        return h * frame, slope * frame

    def backward(rep_key, x, saved: Saved, top_grad, sigma_w, depth, stack=None):
        weight_scale = (sigma_w / math.sqrt(width)).astype(dtype)

        def measure(carry, index, h_prev):
            """Layer `index`'s statistics and the signal it passes down (before the product)."""
            grad_h, slope = carry  # dJ/dh_hat_l and d h_hat_l / d z_hat_l
            delta = jnp.where(index < depth, grad_h * slope, 0.0)
            stats, delta_norm = layer_stats(delta, h_prev, gram=gram)
            return stats, delta_norm.unit if log_mode else delta

        def layer(carry, inputs):
            index, log_rms_in = inputs
            # Read by index rather than scanned over: under vmap a scanned-over stack would be
            # transposed to layer-major first, a copy of the largest array of the call.
            z_in = jax.lax.dynamic_index_in_dim(saved.z_in, index, keepdims=False)
            h_prev, slope_prev = output_and_slope(z_in, log_rms_in)
            stats, passed = measure(carry, index, h_prev)
            z_std = standard_weight(rep_key, index, width, static.init_family, stack)
            grad_prev = weight_scale * jnp.matmul(passed, z_std.astype(dtype), precision=precision)
            grad_h = jnp.where(index < depth, grad_prev, carry[0])
            return (grad_h, slope_prev), stats

        _, top_slope = output_and_slope(saved.z_top, saved.log_rms_top)
        # Layers depth_bucket - 1 .. 1 in the scan; layer 0 reads x and passes nothing down.
        above = (jnp.arange(1, static.depth), saved.log_rms_in[1:])
        carry, tags = jax.lax.scan(layer, (top_grad, top_slope), above, reverse=True)
        first, _ = measure(carry, 0, x)
        return jnp.concatenate([first[None], tags])

    return backward
