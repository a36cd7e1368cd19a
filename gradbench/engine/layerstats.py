"""Per-layer statistics, computed on device inside the backward pass.

`layer_stats` reads a layer's backward signal dJ/dz_l and its input h_{l-1} and returns their
statistics as one "tag" vector per layer. In log mode the backward pass (`gradbench.engine.backprop`) then
passes the signal on divided by its norm; the log of every norm it removes is in the tags, so the true
magnitudes are recovered exactly on the host (see `gradbench.engine.decode`) while float32 arithmetic never
sees numbers far from 1.
"""

from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp

from gradbench.engine.precision import PRECISION
from gradbench.schema import lost_below

# Order of the statistics in a tag vector; the RNN's have one more (`gradbench.engine.backprop`).
LOG_DELTA, LOG_GRAD_W, LOG_GRAD_B, TINY_DELTA, TINY_INPUT, LOG_GRAD_W_SUM = range(6)
N_TAG = 5
# A residual block's first two tags, before its dense layers' (`gradbench.engine.residual`).
STREAM_LOG, STREAM_TINY = range(2)


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
    """1.0 where a vector with this largest entry has lost digits to underflow (`lost_below`), else 0.0.

    Zero counts as lost: plain arithmetic cannot tell an exact zero from an underflow.
    """
    return (max_abs < lost_below(max_abs.dtype)).astype(max_abs.dtype)


def log_frobenius(x: jax.Array) -> jax.Array:
    return unit_norm(x).log_norm


def prefer_gram(batch: int, width: int) -> bool:
    """Whether `log_outer_norm` should use Gram matrices for (batch, width) factors.

    Both forms cost the same flops at 2 x batch = width (2 B W^2 against 4 B^2 W); there the Gram form
    still wins because its outputs are (B, B) rather than (W, W).
    """
    return 2 * batch <= width


def log_outer_norm(
    d_unit: jax.Array, h: jax.Array, h_max_abs: jax.Array, *, gram: bool
) -> jax.Array:
    """log ||d^T h||_F for a unit-norm d and any h, both (batch, width): a dense layer's weight gradient.

    The product is taken with h / max|h|, so every entry of d^T h (or of the Gram matrices) is at most
    sqrt(batch) and the plain sum of squares neither overflows nor, for any h that is not flagged
    tiny, underflows. The direct form puts 1 / max|h| on d instead, where it joins the copy that
    transposes d for the product. With gram=True it uses ||D^T H||_F^2 = <D D^T, H H^T> and never
    materialises the (width, width) matrix.
    """
    precision = PRECISION
    usable = (h_max_abs > 0) & jnp.isfinite(h_max_abs)
    scale = jnp.where(usable, h_max_abs, 1.0)
    if gram:
        h_scaled = h / scale
        dd = jnp.matmul(d_unit, d_unit.T, precision=precision)
        hh = jnp.matmul(h_scaled, h_scaled.T, precision=precision)
        square = jnp.maximum(jnp.sum(dd * hh), 0.0)
    else:
        product = jnp.matmul((d_unit / scale).T, h, precision=precision)
        square = jnp.sum(jnp.square(product))
    return 0.5 * jnp.log(square) + jnp.log(scale)


def layer_stats(delta: jax.Array, h_prev: jax.Array, *, gram: bool) -> tuple[jax.Array, UnitNorm]:
    """A layer's tag vector from its backward signal delta = dJ/dz_l and its input h_{l-1}.

    Returns the statistics [ln ||delta||, ln ||delta_unit^T h_prev||, ln ||sum_b delta_unit||, tiny_delta,
    tiny_input] (the tiny flags, `is_tiny`, are 1 when delta or h_prev has lost digits to underflow, zero
    included) and delta's `UnitNorm`, whose unit part is what log mode passes down.
    """
    d = unit_norm(delta)
    h_max_abs = jnp.max(jnp.abs(h_prev))
    stats = jnp.stack(
        [
            d.log_norm,
            log_outer_norm(d.unit, h_prev, h_max_abs, gram=gram),
            log_frobenius(jnp.sum(d.unit, axis=0)),
            is_tiny(d.max_abs),
            is_tiny(h_max_abs),
        ]
    )
    return stats.astype(delta.dtype), d
