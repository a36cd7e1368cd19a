"""The backward pass, written out: a reverse loop over layers that measures every layer as it goes.

Per layer it recomputes what the forward pass did not keep (the layer input h_{l-1} = phi(z_{l-1}) and
the slope phi'(z_l) from the one saved array z, the standard draw Z_l from its key unless it was
pre-drawn), forms the backward signal delta_l = dJ/dz_l, reads its statistics
(`gradbench.engine.layerstats.layer_stats`) and passes dJ/dh_{l-1} = sigma_w / sqrt(width) delta_l Z_l down.
In log mode it passes delta_l divided by its norm, so float32 never sees numbers far from 1; the logs
of the removed norms are in the statistics.

Writing it out, rather than `jax.grad` through the forward loop, keeps the saved set to one
(batch, width) array per layer: autodiff would also keep Z_l, h_{l-1} and phi(z_l), which at depth
dominate both memory and the time spent moving it.
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp

from gradbench import registry
from gradbench.engine.layerstats import N_TAG, TINY_INPUT, layer_stats, prefer_gram, unit_norm
from gradbench.engine.model import (
    Branch,
    Saved,
    Scales,
    activations,
    dense_index,
    make_standard_weight,
    uses_frames,
)
from gradbench.engine.precision import PRECISION
from gradbench.sweep.keys import KernelKey


def make_backward(key: KernelKey, allow_imports: bool = False):
    """Builds `backward(rep_key, x, saved, top_grad, scales, depth, branch, stack) -> tags`.

    One config's backward pass over `branch.n_layers` layers. `tags` has shape (key.depth, N_TAG)
    (N_TAG + 1 for the RNN):
    layer l's raw statistics (`gradbench.engine.layerstats`), with delta_l in the frame of the layer input.
    Layers at index >= depth are identity: they pass the signal through and their tags are
    meaningless (`gradbench.engine.decode` drops them), as are those past `branch.n_layers`, which the loop
    never reaches. `stack` is the replicate's `gradbench.engine.model.weight_stack`, or None to draw each
    Z_l again from its key.

    The RNN's one W is used by every step, so its gradient is the sum of the steps' contributions
    delta_t^T h_{t-1}. Its tags' extra column `LOG_GRAD_W_SUM` holds, at step t, ln || sum_{k >= t}
    delta_k^T h_{k-1} || (at step 1: the whole dJ/dW) in the frame of the step's other logs: the sum is
    kept as exp(c) G_hat, each term weighted by the norms log mode removed above it. h_0 = 0 is no
    underflow: step 1 contributes nothing to dJ/dW, exactly.
    """
    log_mode = key.measure == "log"
    gram = prefer_gram(key.batch, key.width)
    dtype = jnp.dtype(key.dtype)
    width = key.width
    precision = PRECISION
    weight = make_standard_weight(key)

    def output_and_slope(phi: registry.Activation):
        """`(saved, index) -> (h_hat, d h_hat / d z_hat)` of layer `index`, h_hat = phi(z_hat)
        exp(-log_rms) as the forward pass made it. The branch reads z_hat itself, so that the read
        fuses with phi instead of materialising z_hat as the switch's operand."""

        def branch(saved: Saved, index):
            z = jax.lax.dynamic_index_in_dim(saved.z, index, keepdims=False)
            h, slope = jax.jvp(phi.fn, (z,), (jnp.ones_like(z),))
            if not uses_frames(key.measure, phi):
                return h, slope
            frame = jnp.exp(-saved.log_rms[index])
            return h * frame, slope * frame

        return branch

    branches = [output_and_slope(phi) for phi in activations(key, allow_imports)]

    recurrent = key.architecture == "rnn"

    def backward(
        rep_key, x, saved: Saved, top_grad, scales: Scales, depth, branch: Branch, stack=None
    ):
        weight_scale = (scales.sigma_w / math.sqrt(width)).astype(dtype)

        def layer_signal(carry, index, h_prev):
            """Layer `index`'s statistics, delta_l and the signal it passes down (before the product)."""
            grad_h, slope = carry  # dJ/dh_hat_l and d h_hat_l / d z_hat_l
            delta = jnp.where(index < depth, grad_h * slope, 0.0)
            stats, delta_norm = layer_stats(delta, h_prev, gram=gram)
            return stats, delta, delta_norm.unit if log_mode else delta

        def add_contribution(total, delta, h_prev, log_removed, index):
            """The RNN's running sum of delta_t^T h_{t-1}, each term exp(removed) times its frame value."""
            g_hat, c, removed = total
            term = jnp.matmul(delta.T, h_prev, precision=precision)
            top = jnp.maximum(c, removed)
            g_hat = g_hat * jnp.exp(c - top) + term * jnp.exp(removed - top)
            removed = removed + jnp.where((index < depth) & log_mode, log_removed, 0.0)
            return g_hat, top, removed

        def layer(step, carry):
            signal, tags, total = carry
            index = branch.n_layers - 1 - step
            h_prev, slope_prev = jax.lax.switch(branch.activation, branches, saved, index - 1)
            stats, delta, passed = layer_signal(signal, index, h_prev)
            if recurrent:
                total = add_contribution(total, delta, h_prev, stats[0], index)
                stats = jnp.append(stats, total[1] + unit_norm(total[0]).log_norm)
            z_std = weight(rep_key, dense_index(key.architecture, index), branch.init_family, stack)
            grad_prev = weight_scale * jnp.matmul(passed, z_std.astype(dtype), precision=precision)
            grad_h = jnp.where(index < depth, grad_prev, signal[0])
            tags = jax.lax.dynamic_update_index_in_dim(tags, stats.astype(dtype), index, 0)
            return (grad_h, slope_prev), tags, total

        _, top_slope = jax.lax.switch(branch.activation, branches, saved, branch.n_layers - 1)
        # Layers n_layers - 1 .. 1 in the loop; layer 0 reads x and passes nothing down.
        tags = jnp.zeros((key.depth, N_TAG + recurrent), dtype)
        total = None
        if recurrent:
            zero = jnp.zeros((), dtype)
            total = (jnp.zeros((width, width), dtype), zero - jnp.inf, zero)
        signal, tags, total = jax.lax.fori_loop(
            0, branch.n_layers - 1, layer, ((top_grad, top_slope), tags, total)
        )
        first, _, _ = layer_signal(signal, 0, x)
        if recurrent:
            first = first.at[TINY_INPUT].set(0.0)  # h_0 = 0 by definition, not lost
            first = jnp.append(first, total[1] + unit_norm(total[0]).log_norm)
        return jax.lax.dynamic_update_index_in_dim(tags, first.astype(dtype), 0, 0)

    return backward
