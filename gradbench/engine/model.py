"""The fully connected and the recurrent network: common random numbers and the forward pass in frames.

Common random numbers: layer l's standard draws Z_l, beta_l depend only on (seed, replicate, layer index,
shape), drawn in float32 whatever the compute dtype. A config uses W_l = sigma_w / sqrt(width) Z_l and
b_l = sigma_b beta_l, so a depth-L net is the prefix of a deeper one and every config of a replicate
shares one matrix product per layer (rows = configs x batch).

The RNN (`architecture = "rnn"`) is the same loop with one shared layer: step t computes
z_t = W h_{t-1} + U x_t + b with the draws of layer 0 for every step, h_0 = 0, and a fresh input
x_t (`sequence_draw`) through U = input_scale / sqrt(width) Z_U (`input_weight_draw`). Residual
networks have their own passes (`gradbench.engine.residual`) on the same draws (`dense_index`).

Frames: the forward pass may carry h_l = exp(s_l) * h_hat_l with h_hat_l of unit RMS. For positively
homogeneous activations phi(exp(s) z) = exp(s) phi(z), so this changes nothing but the range of the
numbers float arithmetic sees (`gradbench.engine.decode` puts the scales back).
"""

from __future__ import annotations

import math
from typing import NamedTuple

import jax
import jax.numpy as jnp

from gradbench import registry
from gradbench.engine.layerstats import is_tiny, unit_norm
from gradbench.engine.precision import PRECISION
from gradbench.sweep.keys import KernelKey

LAYER_STREAM, INPUT_STREAM, READOUT_STREAM, TARGET_STREAM, INPUT_WEIGHT_STREAM, SEQUENCE_STREAM = (
    range(6)
)


def replicate_key(seed, replicate) -> jax.Array:
    return jax.random.fold_in(jax.random.key(seed), replicate)


def _layer_keys(rep_key: jax.Array, layer) -> jax.Array:
    return jax.random.split(jax.random.fold_in(jax.random.fold_in(rep_key, LAYER_STREAM), layer))


def weight_draw(rep_key: jax.Array, layer, width: int, init_family: str) -> jax.Array:
    """Standard draw Z_l (width, width) of hidden layer `layer` (0-based), unit variance, float32."""
    return registry.INIT_FAMILIES[init_family].draw(_layer_keys(rep_key, layer)[0], (width, width))


def weight_stack(rep_key: jax.Array, depth: int, width: int, init_family: str) -> jax.Array:
    """Standard draws Z_0 .. Z_{depth-1} of one replicate, (depth, width, width), as `weight_draw`."""
    return jax.vmap(lambda layer: weight_draw(rep_key, layer, width, init_family))(
        jnp.arange(depth)
    )


def bias_draw(rep_key: jax.Array, layer, width: int) -> jax.Array:
    """Standard draw beta_l (width,) of hidden layer `layer`, N(0, 1), float32."""
    return jax.random.normal(_layer_keys(rep_key, layer)[1], (width,), jnp.float32)


def layer_draws(
    rep_key: jax.Array, layer, width: int, init_family: str
) -> tuple[jax.Array, jax.Array]:
    """Standard draws (Z_l, beta_l) of hidden layer `layer` (0-based), unit variance, float32."""
    return weight_draw(rep_key, layer, width, init_family), bias_draw(rep_key, layer, width)


def dense_index(architecture: str, layer, sublayer=0, branch_layers: int = 1):
    """Which standard draws (`layer_draws` index) a dense layer uses: layer l of an MLP, dense layer
    `sublayer` of residual block `layer` (0-based both), and for the RNN's one shared W always 0."""
    if architecture == "resmlp":
        return layer * branch_layers + sublayer
    if architecture == "rnn":
        return 0
    return layer


def input_weight_draw(rep_key: jax.Array, width: int, inputs: int | None = None) -> jax.Array:
    """The RNN's standard input weights Z_U (width, inputs), N(0, 1), float32: U = input_scale /
    sqrt(inputs) Z_U. A narrower input (a training task's) uses the first columns of the square draw."""
    z = jax.random.normal(
        jax.random.fold_in(rep_key, INPUT_WEIGHT_STREAM), (width, width), jnp.float32
    )
    return z if inputs is None else z[:, :inputs]


def sequence_draw(rep_key: jax.Array, step, batch: int, width: int) -> jax.Array:
    """The RNN's input x_t (batch, width) of step `step` (0-based), N(0, 1), float32."""
    key = jax.random.fold_in(jax.random.fold_in(rep_key, SEQUENCE_STREAM), step)
    return jax.random.normal(key, (batch, width), jnp.float32)


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


class Scales(NamedTuple):
    """One config's continuous settings, dynamic in the kernel: the weight and bias scales, the
    residual branch scale alpha (resmlp) and the input scale (rnn); each () or (configs,)."""

    sigma_w: jax.Array
    sigma_b: jax.Array
    alpha: jax.Array | None = None
    input_scale: jax.Array | None = None


class Forward(NamedTuple):
    """Per-layer forward facts (leading axis: layer) and the frame scale of the loss gradient."""

    log_q: jax.Array  # ln mean(z_l^2), true scale
    tiny_z: jax.Array  # 1 where max|z_hat_l| has lost its digits to underflow (`is_tiny`)
    log_h_scale: jax.Array  # s_{l-1}: h_{l-1} = exp(s_{l-1}) h_hat_{l-1}
    log_top_scale: jax.Array  # dJ/dz_l = exp(log_top_scale - s_{l-1}) * d J_hat / d z_hat_l


class Saved(NamedTuple):
    """What the backward pass reads back: one array per layer, everything else it recomputes.

    Entry l describes layer l's output h_hat_l = phi(z_hat_l) exp(-log_rms_l).
    """

    z: jax.Array  # (depth, batch, width) z_hat_l
    log_rms: jax.Array  # (depth,) log_rms_l, the frame step of layer l


def first_input(key: KernelKey, shared: Shared) -> jax.Array:
    """The first layer's input h_0: the inputs x, or for the RNN its initial state 0."""
    return jnp.zeros_like(shared.x) if key.architecture == "rnn" else shared.x


def uses_frames(measure: str, phi: registry.Activation) -> bool:
    """Whether the forward pass carries h in scaled frames: log mode and a positively homogeneous phi."""
    return measure == "log" and phi.homogeneous


class Branch(NamedTuple):
    """A chunk's choices, the same for all its configs: unbatched, so each `lax.switch` runs one branch.

    `activation` and `init_family` index `KernelKey.activations` and `KernelKey.init_families`;
    `n_layers`, the depth of the chunk's deepest config, is the trip count of the layer loops;
    `block` indexes a residual kernel's `KernelKey.blocks` (0 elsewhere).
    """

    activation: jax.Array
    init_family: jax.Array
    n_layers: jax.Array
    block: jax.Array | int = 0


def activations(key: KernelKey, allow_imports: bool = False) -> list[registry.Activation]:
    """The kernel's activations, in the order of its switch branches."""
    return [registry.activation(name, allow_imports=allow_imports) for name in key.activations]


def make_standard_weight(key: KernelKey):
    """`weight(rep_key, layer, family, stack) -> Z_l`: `standard_weight` of the family
    `key.init_families[family]`, a switch over the kernel's families (unless `stack` holds them)."""
    shape = (key.width, key.width)
    branches = [
        lambda k, draw=registry.INIT_FAMILIES[name].draw: draw(k, shape)
        for name in key.init_families
    ]

    def weight(rep_key, layer, family, stack):
        if stack is not None:
            return jax.lax.dynamic_index_in_dim(stack, layer, keepdims=False)
        return jax.lax.switch(family, branches, _layer_keys(rep_key, layer)[0])

    return weight


def make_forward(key: KernelKey, allow_imports: bool = False):
    """Builds `forward(rep_key, shared, scales, depth, workspace, branch, stack)` (mlp and rnn).

    One config's forward pass over `branch.n_layers` layers (RNN steps), returning
    `(Saved, Forward, top_grad)`;
    `top_grad` is d J_hat / d h_hat_top, the loss gradient in the frame of the last layer (probe loss
    J = mean_b <u_b, W_out h_b>, or mse J = mean_b ||W_out h_b - t_b||^2 / 2). Layers at index >=
    depth are identity. `workspace`, a (key.depth, batch, width) array whose contents do not matter,
    is overwritten with `Saved.z`: the kernel passes a donated buffer there, so that the largest array
    of a call reuses the previous call's memory instead of new pages; entries past `branch.n_layers`
    keep what they held. `stack` is the replicate's `weight_stack` (None: draw in place).
    """
    dtype = jnp.dtype(key.dtype)
    width, batch = key.width, key.batch
    log_size = math.log(batch * width)
    precision = PRECISION
    weight = make_standard_weight(key)
    loss = registry.LOSSES[key.loss]

    def activate(phi: registry.Activation):
        """`z -> (h_hat, log_rms)`: phi(z), renormalised to unit RMS when the pass uses frames."""

        def branch(z):
            h, log_rms = phi.fn(z), jnp.zeros((), dtype)
            if uses_frames(key.measure, phi):
                log_rms = unit_norm(h).log_norm - 0.5 * log_size
                log_rms = jnp.where(jnp.isfinite(log_rms), log_rms, 0.0)
                h = h * jnp.exp(-log_rms)
            return h, log_rms

        return branch

    branches = [activate(phi) for phi in activations(key, allow_imports)]
    recurrent = key.architecture == "rnn"

    def forward(rep_key, shared: Shared, scales: Scales, depth, workspace, branch, stack=None):
        weight_scale = (scales.sigma_w / math.sqrt(width)).astype(dtype)
        sigma_b = scales.sigma_b.astype(dtype)
        # Drawn before the loop: inside it XLA would fuse the draw into the per-element loop that adds
        # the bias, evaluating it once per row (configs x batch) instead of once.
        indices = jnp.arange(1 if recurrent else key.depth)
        betas = jax.vmap(bias_draw, in_axes=(None, 0, None))(rep_key, indices, width).astype(dtype)
        if recurrent:
            input_weights = input_weight_draw(rep_key, width).astype(dtype)
            input_scale = (scales.input_scale / math.sqrt(width)).astype(dtype)

        def injected(index, s):
            """What a layer adds to W h_{l-1}, in the frame of h_{l-1}: the bias, and for the RNN U x_t.

            In the frame h = exp(s) h_hat it reads b exp(-s); skip the product when b = 0 so that
            exp(-s) overflowing never turns 0 into NaN."""
            if not recurrent:
                return jnp.where(sigma_b > 0, sigma_b * jnp.exp(-s), 0.0) * betas[index][None, :]
            # U x_t is the same for every config of the replicate: one product per step.
            x_t = sequence_draw(rep_key, index, batch, width).astype(dtype)
            drive = input_scale * jnp.matmul(x_t, input_weights.T, precision=precision)
            drive = drive + sigma_b * betas[0][None, :]
            return jnp.where(jnp.any(drive != 0), drive * jnp.exp(-s), 0.0)

        def layer(index, carry):
            h, s, workspace, facts = carry
            z_std = weight(rep_key, dense_index(key.architecture, index), branch.init_family, stack)
            z = weight_scale * jnp.matmul(h, z_std.astype(dtype).T, precision=precision)
            z = z + injected(index, s)
            z_norm = unit_norm(z)
            log_q = 2 * z_norm.log_norm - log_size + 2 * s
            h_next, log_rms = jax.lax.switch(branch.activation, branches, z)
            workspace = jax.lax.dynamic_update_index_in_dim(workspace, z, index, 0)
            fact = jnp.stack([log_rms, log_q, is_tiny(z_norm.max_abs).astype(dtype), s])
            facts = jax.lax.dynamic_update_index_in_dim(facts, fact, index, 1)
            # Past the config's depth layers are identity: h and s stay. z and log_rms need no mask:
            # the backward pass uses them only for the layers below the depth.
            active = index < depth
            h_next, s_next = jnp.where(active, h_next, h), jnp.where(active, s + log_rms, s)
            return h_next, s_next, workspace, facts

        x = first_input(key, shared).astype(dtype)
        start = (x, jnp.zeros((), dtype), workspace, jnp.zeros((4, key.depth), dtype))
        h_top, s_top, z, facts = jax.lax.fori_loop(0, branch.n_layers, layer, start)
        log_rms, log_q, tiny_z, log_h_scale = facts
        readout = shared.readout.astype(dtype)
        probe = shared.probe.astype(dtype)
        dj_dy, log_top = loss.output_gradient(h_top, s_top, readout, probe, precision)
        top_grad = jnp.matmul(dj_dy, readout, precision=precision)
        return Saved(z, log_rms), Forward(log_q, tiny_z, log_h_scale, log_top), top_grad

    return forward
