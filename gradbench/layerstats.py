"""Per-layer statistics, computed on device inside the backward pass.

`make_observe` builds an identity function on a layer's pre-activation z whose backward pass sees the
backward signal dJ/dz_l and the layer input h_{l-1}, reports their statistics through the cotangent of a
zero "tag" argument (so `jax.grad` with respect to the tags returns the statistics), and optionally
renormalises the backward signal to unit norm. The log of every norm it removes is reported, so the
true magnitudes are recovered exactly on the host (see `gradbench.measure`) while float32 arithmetic
never sees numbers far from 1.
"""

from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp

# Order of the statistics in a tag vector.
LOG_DELTA, LOG_GRAD_W, LOG_GRAD_B, TINY_DELTA, TINY_INPUT = range(5)
N_TAG = 5


class UnitNorm(NamedTuple):
    """x = exp(log_norm) * unit, with ||unit||_F = 1 (or unit = x when x is zero or non-finite)."""

    unit: jax.Array
    log_norm: jax.Array
    max_abs: jax.Array


def unit_norm(x: jax.Array) -> UnitNorm:
    """Splits x into its Frobenius norm (as a log) and a unit-norm direction without under/overflow.

    Squaring first would lose values below ~1e-19 in float32; scaling by max|x| first does not.
    """
    max_abs = jnp.max(jnp.abs(x))
    usable = (max_abs > 0) & jnp.isfinite(max_abs)
    scaled = x / jnp.where(usable, max_abs, 1)
    norm_of_scaled = jnp.sqrt(jnp.sum(jnp.square(scaled)))
    unit = jnp.where(usable, scaled / jnp.where(usable, norm_of_scaled, 1), x)
    log_norm = jnp.log(jnp.where(usable, max_abs, jnp.abs(max_abs))) + jnp.log(
        jnp.where(usable, norm_of_scaled, 1)
    )
    return UnitNorm(unit, log_norm, max_abs)


def is_tiny(max_abs: jax.Array) -> jax.Array:
    """1.0 where a vector with this largest entry has lost digits to underflow, else 0.0.

    Below tiny / eps (about 1e-31 in float32) the entries that still matter to a norm, down to
    max x eps, are subnormal or zero; above it every such entry is a normal number.
    """
    info = jnp.finfo(max_abs.dtype)
    return (max_abs < info.tiny / info.eps).astype(max_abs.dtype)


def log_frobenius(x: jax.Array) -> jax.Array:
    return unit_norm(x).log_norm


def log_outer_norm(d_unit: jax.Array, h_unit: jax.Array, *, gram: bool) -> jax.Array:
    """log ||d^T h||_F for unit-norm (batch, width) factors: the weight gradient of a dense layer.

    With gram=True it uses ||D^T H||_F^2 = <D D^T, H H^T>, cheaper when batch < width / 2, and never
    materialises the (width, width) matrix.
    """
    precision = jax.lax.Precision.HIGHEST
    if gram:
        dd = jnp.matmul(d_unit, d_unit.T, precision=precision)
        hh = jnp.matmul(h_unit, h_unit.T, precision=precision)
        return 0.5 * jnp.log(jnp.maximum(jnp.sum(dd * hh), 0.0))
    return log_frobenius(jnp.matmul(d_unit.T, h_unit, precision=precision))


def make_observe(*, renormalise: bool, gram: bool):
    """The identity `observe(z, h_prev, tag) -> z` whose VJP writes layer statistics into `tag`'s cotangent.

    The tag cotangent holds [ln ||delta||, ln ||delta_unit^T h_prev||, ln ||sum_b delta_unit||, tiny_delta,
    tiny_input] where delta is the cotangent of z in the current frame and the tiny flags (`is_tiny`) are 1
    when delta (or h_prev) has lost digits to underflow, zero included.
    """

    @jax.custom_vjp
    def observe(z, h_prev, tag):
        del h_prev, tag
        return z

    def forward(z, h_prev, tag):
        del tag
        return z, h_prev

    def backward(h_prev, delta):
        d = unit_norm(delta)
        h = unit_norm(h_prev)
        stats = jnp.stack(
            [
                d.log_norm,
                log_outer_norm(d.unit, h.unit, gram=gram) + h.log_norm,
                log_frobenius(jnp.sum(d.unit, axis=0)),
                is_tiny(d.max_abs),
                is_tiny(h.max_abs),
            ]
        )
        passed_on = d.unit if renormalise else delta
        return passed_on, jnp.zeros_like(h_prev), stats.astype(delta.dtype)

    observe.defvjp(forward, backward)
    return observe
