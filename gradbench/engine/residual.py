"""Residual networks (`architecture = "resmlp"`): the forward pass in frames, the backward pass by block.

Block l (1-based) maps the residual stream h_{l-1} (h_0 = x) to

    pre:   h_l = h_{l-1} + alpha F(N(h_{l-1})), then a final N before the readout
    post:  h_l = N(h_{l-1} + alpha F(h_{l-1}))

with F(a) = W phi(a) + b (`branch_layers = 1`) or W2 phi(W1 phi(a) + b1) + b2 (2), and N layernorm or
rmsnorm over the width (no epsilon, no gain: exactly scale-invariant), or the identity (`norm = "none"`,
the pre form without a final N). Dense layer k of block l uses the draws `model.dense_index` names.

Frames: in log mode the stream is carried as h_l = exp(s_l) h_hat_l with h_hat_l of unit RMS wherever
that is exact. With a pre norm the branch reads N(h), which does not see the scale, so for any phi;
without a norm for positively homogeneous phi, whose branch then runs in the stream's frame with the
biases read as b exp(-s) (as in the MLP). A post norm keeps the stream at unit RMS by itself.

Backward: one reverse loop over blocks. Each block recomputes its forward pass from its saved input
h_hat_{l-1} and takes `jax.vjp` of it with respect to that input and to zero offsets e_k added to
each dense output z_k: at e = 0 this gives dJ/dh_{l-1} and every dJ/dz_k of the branch in one pass,
without the weight gradients themselves (their norms come from `layerstats`, as for the MLP). In log
mode the stream signal passed down is divided by its norm, whose log is in the tags. The saved set is
the block inputs, one (batch, width) array per block, like the MLP's.

A block's tags are [ln ||g||, tiny(g)] for the stream signal g it passes down, then the
`layerstats` columns of each dense layer; `gradbench.engine.decode.decode_residual` puts the frames back.
"""

from __future__ import annotations

import math
from typing import NamedTuple

import jax
import jax.numpy as jnp

from gradbench import registry
from gradbench.engine.layerstats import N_TAG, is_tiny, layer_stats, prefer_gram, unit_norm
from gradbench.engine.model import (
    Branch,
    Scales,
    Shared,
    activations,
    bias_draw,
    dense_index,
    make_standard_weight,
)
from gradbench.engine.precision import PRECISION
from gradbench.sweep.keys import KernelKey


def n_tags(branch_layers: int) -> int:
    return 2 + N_TAG * branch_layers


class ResidualSaved(NamedTuple):
    """What the backward pass reads back: each block's input h_hat_{l-1} and its frame s_{l-1}."""

    z: jax.Array  # (depth, batch, width) block inputs h_hat_{l-1}: the kernel's workspace
    log_scale: jax.Array  # (depth,) s_{l-1}


class ResidualForward(NamedTuple):
    """Per-block forward facts (leading axis: block) and the frame of the loss gradient.

    The stream signal at block l's input is dJ/dh_{l-1} = exp(log_top_scale) g_l, g_l what the
    backward pass propagates (in log mode with the norms it removed put back).
    """

    log_q: jax.Array  # ln mean(h_l^2), the block's output stream, true scale
    tiny_z: jax.Array  # 1 where the stream h_l has lost its digits to underflow
    log_h_scale: jax.Array  # s_{l-1}, the frame of the block's input
    log_top_scale: jax.Array
    dense_log_q: jax.Array  # (depth, branch_layers) ln mean(z_k^2) of each dense output, true scale
    dense_tiny: jax.Array  # (depth, branch_layers)


def normalise(norm: str, a: jax.Array) -> jax.Array:
    """layernorm or rmsnorm over the last axis (an all-zero row stays zero); identity for "none"."""
    if norm == "none":
        return a
    if norm == "layernorm":
        a = a - jnp.mean(a, axis=-1, keepdims=True)
    mean_square = jnp.mean(jnp.square(a), axis=-1, keepdims=True)
    usable = mean_square > 0
    return jnp.where(usable, a * jax.lax.rsqrt(jnp.where(usable, mean_square, 1.0)), 0.0)


class Block(NamedTuple):
    """One variant of a residual kernel's blocks (an entry of `KernelKey.blocks`)."""

    branch_layers: int
    norm: str
    position: str

    @property
    def post(self) -> bool:
        return self.position == "post"

    @property
    def branch_frames(self) -> bool:
        """Whether the branch reads the stream in its frame (no norm) rather than at true scale."""
        return self.norm == "none"

    @property
    def final_norm(self) -> bool:
        """Whether the readout reads N(h_L) (a pre norm)."""
        return self.norm != "none" and not self.post

    def framed(self, measure: str, phi: registry.Activation) -> bool:
        """Whether the stream is carried in frames (see the module docstring)."""
        if measure != "log" or self.post:
            return False
        return self.norm != "none" or phi.homogeneous


def make_residual(key: KernelKey, allow_imports: bool = False):
    """Builds `(forward, backward)` of a resmlp kernel, with the MLP's calling conventions
    (`gradbench.engine.model.make_forward`, `gradbench.engine.backprop.make_backward`).

    The block variant (`Branch.block`) is a switch index like the activation: every variant's block,
    readout and draws are one branch of a `lax.switch`, so one kernel runs them all. Branches of
    variants with fewer dense layers than the kernel's most pad their dense-layer outputs with zeros.
    """
    dtype = jnp.dtype(key.dtype)
    width, batch, n_dense = key.width, key.batch, key.branch_layers
    log_size = math.log(batch * width)
    precision = PRECISION
    weight = make_standard_weight(key)
    loss = registry.LOSSES[key.loss]
    phis = activations(key, allow_imports)
    blocks = [Block(*b) for b in key.blocks]
    frames = jnp.array([[b.framed(key.measure, phi) for phi in phis] for b in blocks])
    log_mode = key.measure == "log"
    gram = prefer_gram(batch, width)
    zero = jnp.zeros((), dtype)

    def make_block(variant: Block):
        """`(h_hat, s, index, offsets, scales, branch, draws) -> (new, (inputs, outputs), frame)`: the
        block's output stream in the frame s of its input; each dense layer's input and output z_k
        (z_k offset by `offsets[k]`), zero-padded to the kernel's most dense layers; and the frame
        the branch runs in."""

        def block(h_hat, s, index, offsets, scales: Scales, branch: Branch, draws):
            rep_key, betas, stack = draws
            weight_scale = (scales.sigma_w / math.sqrt(width)).astype(dtype)
            sigma_b = scales.sigma_b.astype(dtype)
            alpha = scales.alpha.astype(dtype)
            frame = s if variant.branch_frames else zero
            bias_scale = jnp.where(sigma_b > 0, sigma_b * jnp.exp(-frame), 0.0)
            a = h_hat if variant.post else normalise(variant.norm, h_hat)
            inputs, outputs = [], []
            for k in range(variant.branch_layers):
                dense = dense_index("resmlp", index, k, variant.branch_layers)
                z_std = weight(rep_key, dense, branch.init_family, stack).astype(dtype)
                x = jax.lax.switch(branch.activation, [phi.fn for phi in phis], a)
                a = weight_scale * jnp.matmul(x, z_std.T, precision=precision)
                a = a + bias_scale * betas[dense][None, :] + offsets[k]
                inputs.append(x)
                outputs.append(a)
            if variant.post:
                new = normalise(variant.norm, h_hat + alpha * a)
            elif variant.branch_frames:
                new = h_hat + alpha * a
            else:
                new = h_hat + (alpha * jnp.exp(-s)) * a
            padding = [jnp.zeros_like(a)] * (n_dense - variant.branch_layers)
            return new, (inputs + padding, outputs + padding), frame

        return block

    def make_top(variant: Block):
        """`(h_top, s_top, shared) -> (top_grad, log_g)`: the loss gradient at the last block's
        output, in its frame (through the final norm of a pre-norm stack)."""

        def top(h_top, s_top, shared: Shared):
            readout = shared.readout.astype(dtype)
            probe = shared.probe.astype(dtype)
            if not variant.final_norm:
                dj_dy, log_g = loss.output_gradient(h_top, s_top, readout, probe, precision)
                return jnp.matmul(dj_dy, readout, precision=precision), log_g
            y, pullback = jax.vjp(lambda h: normalise(variant.norm, h), h_top)
            dj_dy, log_g = loss.output_gradient(y, zero, readout, probe, precision)
            (top_grad,) = pullback(jnp.matmul(dj_dy, readout, precision=precision))
            return top_grad, log_g

        return top

    block_fns = [make_block(b) for b in blocks]
    top_fns = [make_top(b) for b in blocks]

    def bias_draws(rep_key):
        indices = jnp.arange(key.depth * n_dense)
        betas = jax.vmap(bias_draw, in_axes=(None, 0, None))(rep_key, indices, width)
        return betas.astype(dtype)

    def dense_facts(outputs, frame):
        """(2, n_dense): ln mean(z_k^2) at true scale and the tiny flag of each dense output."""
        facts = []
        for z in outputs:
            norm = unit_norm(z)
            tiny = is_tiny(norm.max_abs).astype(dtype)
            facts.append(jnp.stack([2 * norm.log_norm - log_size + 2 * frame, tiny]))
        return jnp.stack(facts, axis=-1)

    def forward(rep_key, shared: Shared, scales: Scales, depth, workspace, branch, stack=None):
        draws = (rep_key, bias_draws(rep_key), stack)
        uses_frames = frames[branch.block, branch.activation]
        no_offsets = (zero,) * n_dense

        def block(index, carry):
            h, s, workspace, facts, dense = carry
            new, (_, outputs), frame = jax.lax.switch(
                branch.block, block_fns, h, s, index, no_offsets, scales, branch, draws
            )
            workspace = jax.lax.dynamic_update_index_in_dim(workspace, h, index, 0)
            norm = unit_norm(new)
            log_q = 2 * norm.log_norm - log_size + 2 * s
            fact = jnp.stack([log_q, is_tiny(norm.max_abs).astype(dtype), s])
            facts = jax.lax.dynamic_update_index_in_dim(facts, fact, index, 1)
            dense = jax.lax.dynamic_update_index_in_dim(
                dense, dense_facts(outputs, frame), index, 0
            )
            log_rms = jnp.where(uses_frames, norm.log_norm - 0.5 * log_size, 0.0)
            log_rms = jnp.where(jnp.isfinite(log_rms), log_rms, 0.0)
            active = index < depth
            h_next = jnp.where(active, new * jnp.exp(-log_rms), h)
            return h_next, jnp.where(active, s + log_rms, s), workspace, facts, dense

        x = shared.x.astype(dtype)
        facts = jnp.zeros((3, key.depth), dtype)
        dense = jnp.zeros((key.depth, 2, n_dense), dtype)
        start = (x, zero, workspace, facts, dense)
        h_top, s_top, inputs, facts, dense = jax.lax.fori_loop(0, branch.n_layers, block, start)
        log_q, tiny, log_scale = facts
        top_grad, log_g = jax.lax.switch(branch.block, top_fns, h_top, s_top, shared)
        facts = ResidualForward(log_q, tiny, log_scale, log_g - s_top, dense[:, 0], dense[:, 1])
        return ResidualSaved(inputs, log_scale), facts, top_grad

    def backward(rep_key, x, saved: ResidualSaved, top_grad, scales, depth, branch, stack=None):
        draws = (rep_key, bias_draws(rep_key), stack)
        zero_offsets = tuple(jnp.zeros((batch, width), dtype) for _ in range(n_dense))

        def block(step, carry):
            signal, tags = carry
            index = branch.n_layers - 1 - step
            h = jax.lax.dynamic_index_in_dim(saved.z, index, keepdims=False)
            s = saved.log_scale[index]

            def output(h, offsets):
                new, (inputs, _), _ = jax.lax.switch(
                    branch.block, block_fns, h, s, index, offsets, scales, branch, draws
                )
                return new, inputs

            _, pullback, inputs = jax.vjp(output, h, zero_offsets, has_aux=True)
            grad_h, grad_z = pullback(signal)
            stream = unit_norm(grad_h)
            parts = [stream.log_norm[None], is_tiny(stream.max_abs)[None]]
            for delta, h_in in zip(grad_z, inputs, strict=True):
                parts.append(layer_stats(delta, h_in, gram=gram)[0])
            tags = jax.lax.dynamic_update_index_in_dim(
                tags, jnp.concatenate(parts).astype(dtype), index, 0
            )
            passed = stream.unit if log_mode else grad_h
            return jnp.where(index < depth, passed, signal), tags

        tags = jnp.zeros((key.depth, n_tags(n_dense)), dtype)
        _, tags = jax.lax.fori_loop(0, branch.n_layers, block, (top_grad, tags))
        return tags

    return forward, backward
