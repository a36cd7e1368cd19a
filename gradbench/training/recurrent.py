"""The trained RNN: gradbench.engine's Elman network over T steps, on a sequence task's inputs.

z_t = W h_{t-1} + U x_t + b, h_t = phi(z_t), h_0 = 0, y = W_out h_T, with T = the config's depth.
W and b are shared by all steps (`model.layer_draws(rep_key, 0, ...)`), and U = input_scale /
sqrt(inputs) Z_U uses the first `inputs` columns of `model.input_weight_draw`: for the adding
problem's 2 features, Var(U_ij) = input_scale^2 / 2. Parameters (`network.init_params`): "w"
(1, width, width) = W^T, "b" (1, width), "u" (inputs, width) = U^T, "readout" (width, outputs).

A trainer's x holds T_max steps, its bucket's deepest config's; a config of depth T reads steps
0 .. T-1 and leaves h unchanged after them, so that h_T is read out. The rest of its sequence is
padding (`datasets.sequences`) that never reaches h.

Per-step gradients: a shared parameter's loss gradient is the sum over steps of the gradient of that
step's use of it. `value_and_grad` differentiates the network unrolled with untied per-step copies
(W_t, U_t, b_t), so that one backward pass gives both: the shared gradient, their sum, and the norms
of training_layers.parquet's `layer` t, ||dL/dW_t||_F = ||delta_t^T h_{t-1}||_F and ||dL/db_t||, as
the gradient sweep's layers table has them (`gradbench.engine.backprop`). dL/dW_1 is exactly 0,
since h_0 = 0; U's gradient enters the global norms only.
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp

from gradbench.engine.precision import PRECISION


def input_weights(z_u, input_scale, dtype) -> jax.Array:
    """U^T (inputs, width), U = input_scale / sqrt(inputs) Z_U, from Z_U (width, inputs)."""
    inputs = z_u.shape[-1]
    scale = (jnp.asarray(input_scale) / math.sqrt(inputs)).astype(dtype)
    return scale * jnp.swapaxes(z_u, -1, -2).astype(dtype)


def untie(params: dict, steps: int) -> dict:
    """Per-step copies of the shared parameters, leading axis `steps`."""
    copies = {k: jnp.broadcast_to(params[k], (steps, *params[k].shape[-2:])) for k in ("w", "u")}
    copies["b"] = jnp.broadcast_to(params["b"], (steps, params["b"].shape[-1]))
    return {**params, **copies}


def apply_untied(untied: dict, x, depth, phi) -> jax.Array:
    """y = W_out h_T of the unrolled network: step t uses (W_t, U_t, b_t); x is (batch, steps,
    inputs) and the steps at index >= depth leave h as it is."""

    def step(h, inputs):
        w, u, b, x_t, index = inputs
        z = (
            jnp.matmul(h, w, precision=PRECISION)
            + jnp.matmul(x_t, u, precision=PRECISION)
            + b[None, :]
        )
        return jnp.where(index < depth, phi(z), h), None

    steps = x.shape[1]
    h0 = jnp.zeros((x.shape[0], untied["w"].shape[-1]), x.dtype)
    xs = (untied["w"], untied["u"], untied["b"], jnp.swapaxes(x, 0, 1), jnp.arange(steps))
    h, _ = jax.lax.scan(step, h0, xs)
    return jnp.matmul(h, untied["readout"], precision=PRECISION)


def apply(params: dict, x, depth, phi) -> jax.Array:
    """y = W_out h_T for inputs x (batch, steps, inputs); steps at index >= depth are skipped."""
    return apply_untied(untie(params, x.shape[1]), x, depth, phi)


def value_and_grad(loss, params: dict, x, target, depth, phi):
    """(loss(y, target), its gradient with respect to `params`, per-step weight and bias gradient
    norms (steps,)); see the module docstring."""

    def untied_loss(untied):
        return loss(apply_untied(untied, x, depth, phi), target)

    value, per_step = jax.value_and_grad(untied_loss)(untie(params, x.shape[1]))
    grads = {
        "w": jnp.sum(per_step["w"], axis=0, keepdims=True),
        "b": jnp.sum(per_step["b"], axis=0, keepdims=True),
        "u": jnp.sum(per_step["u"], axis=0),
        "readout": per_step["readout"],
    }
    layer_w = jnp.sqrt(jnp.sum(jnp.square(per_step["w"]), axis=(1, 2)))
    layer_b = jnp.sqrt(jnp.sum(jnp.square(per_step["b"]), axis=1))
    return value, grads, layer_w, layer_b
