"""The input-output Jacobian of the hidden stack, J = dh_L/dx, measured with random probes.

J = D_L W_L ... D_1 W_1 with D_l = diag phi'(z_l): one (width, width) matrix per input. The moments
of its squared singular values (the eigenvalues of J J^T), m_k = tr((J^T J)^k) / width, say whether
the network is dynamically isometric: m1 is the mean squared gain of an input perturbation (chi_1^L
at large width), and the spread m2 / m1^2 - 1 is their normalised variance (0 when every direction
passes with the same gain).

Matrix-free: per input, P probes v uniform on the sphere of radius sqrt(width) (a Gaussian draw
scaled to that norm, so E[v v^T] = I and E||J v||^2 = tr(J^T J)). A forward-mode pass gives J v and a
reverse-mode pass J^T (J v); m1 = mean ||J v||^2 / width and m2 = mean ||J^T J v||^2 / width over the
probes and inputs. Spherical rather than Gaussian probes make an isometric J (J^T J = c I) read
spread 0 exactly instead of the scatter of ||v||^2, and keep the spread estimate >= 0 (Cauchy-Schwarz
per probe). Probes come from the replicate's key like its inputs: every config of a replicate sees
the same ones, whatever its chunk.

Both passes are written out, like `gradbench.engine.backprop`: autodiff through the forward pass
would differentiate its frame renormalisation too. The forward pass is `gradbench.engine.model`'s
(the gradient kernel's draws, frames and depth masking) and saves z_l; the passes use only phi'(z_l)
(in a frame z_hat = exp(-s) z the slope of a positively homogeneous phi is unchanged) and Z_l,
redrawn from its key. Each layer divides every probe's vector by its norm and keeps the log, so m1
is measured far outside float32's range.
"""

from __future__ import annotations

import functools
import math
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import pandas as pd
from jaxtyping import Array, Float

from gradbench.engine.chunks import ChunkPlan
from gradbench.engine.kernel import over_chunk
from gradbench.engine.layerstats import unit_norm
from gradbench.engine.model import (
    TARGET_STREAM,
    Branch,
    activations,
    make_forward,
    make_standard_weight,
    replicate_key,
    shared_draws,
)
from gradbench.engine.precision import PRECISION
from gradbench.schema import JACOBIAN_COLUMNS
from gradbench.sweep.keys import KernelKey

PROBE_STREAM = TARGET_STREAM + 1  # a replicate's key stream beside gradbench.engine.model's


def probe_draws(rep_key: jax.Array, batch: int, probes: int, width: int) -> jax.Array:
    """(batch, probes, width) probe vectors, each uniform on the sphere of radius sqrt(width), float32."""
    v = jax.random.normal(
        jax.random.fold_in(rep_key, PROBE_STREAM), (batch, probes, width), jnp.float32
    )
    return v * (math.sqrt(width) / jnp.linalg.norm(v, axis=-1, keepdims=True))


class JacobianStats(NamedTuple):
    """Per (replicate, config, input, probe): ln ||J v|| and ln ||J^T J v||."""

    log_forward: Float[Array, "R C batch probes"]
    log_round_trip: Float[Array, "R C batch probes"]


def make_probe_passes(key: KernelKey, probes: int, allow_imports: bool = False):
    """Builds `passes(rep_key, z, v, sigma_w, depth, branch, stack) -> (JacobianStats, z)` of one config.

    `z` is the forward pass's `Saved.z`, `v` the probes of `probe_draws`. The forward-mode pass
    overwrites z_l with phi'(z_l) as it goes, for the reverse-mode pass to read back (one activation
    switch per layer, not two); the returned buffer is the caller's workspace again. Layers at index
    >= depth are identity in both passes; the loops run `branch.n_layers` layers.
    """
    dtype = jnp.dtype(key.dtype)
    width, rows = key.width, key.batch * probes
    weight = make_standard_weight(key)

    def slope_of(phi):
        def branch(z, index):
            z_l = jax.lax.dynamic_index_in_dim(z, index, keepdims=False)
            return jax.jvp(phi.fn, (z_l,), (jnp.ones_like(z_l),))[1]

        return branch

    slopes = [slope_of(phi) for phi in activations(key, allow_imports)]

    def passes(rep_key, z, v, sigma_w, depth, branch: Branch, stack=None):
        weight_scale = (sigma_w / math.sqrt(width)).astype(dtype)

        def matmul(u, z_std, transpose):
            z_std = z_std.astype(dtype)
            product = jnp.matmul(
                u.reshape(rows, width), z_std.T if transpose else z_std, precision=PRECISION
            )
            return weight_scale * product.reshape(u.shape)

        def renormalised(index, y, carry):
            """`y` divided by each probe's norm, the logs added; unchanged past the depth."""
            u, log_norm = carry
            parts = jax.vmap(unit_norm)(y.reshape(rows, width))
            active = index < depth
            return (
                jnp.where(active, parts.unit.reshape(u.shape), u),
                jnp.where(active, log_norm + parts.log_norm.reshape(log_norm.shape), log_norm),
            )

        def tangent(index, carry):  # u <- D_l W_l u; z_l <- phi'(z_l)
            z, *vectors = carry
            slope = jax.lax.switch(branch.activation, slopes, z, index)
            z = jax.lax.dynamic_update_index_in_dim(z, slope, index, 0)
            z_std = weight(rep_key, index, branch.init_family, stack)
            # One slope row per input, shared by its probes.
            y = matmul(vectors[0], z_std, True) * slope[:, None, :]
            return z, *renormalised(index, y, vectors)

        start = (z, v.astype(dtype), jnp.zeros(v.shape[:2], dtype))
        slopes_saved, unit_jv, log_forward = jax.lax.fori_loop(0, branch.n_layers, tangent, start)

        def cotangent(step, carry):  # w <- W_l^T D_l w, from the top layer down
            index = branch.n_layers - 1 - step
            slope = jax.lax.dynamic_index_in_dim(slopes_saved, index, keepdims=False)
            z_std = weight(rep_key, index, branch.init_family, stack)
            return renormalised(index, matmul(carry[0] * slope[:, None, :], z_std, False), carry)

        start = (unit_jv, jnp.zeros_like(log_forward))
        _, log_back = jax.lax.fori_loop(0, branch.n_layers, cotangent, start)
        return JacobianStats(log_forward, log_forward + log_back), slopes_saved

    return passes


@functools.cache
def make_jacobian_kernel(key: KernelKey, probes: int, allow_imports: bool = False):
    """The jitted `kernel(seed, chunk, workspace) -> (JacobianStats, workspace)`: the gradient
    kernel's calling convention (`gradbench.engine.kernel.make_kernel`), so it runs the same chunks
    with the same sharding and takes the same donated workspace."""
    forward = make_forward(key, allow_imports)
    passes = make_probe_passes(key, probes, allow_imports)

    def one_replicate(seed, replicate, scales, depth, workspace, stack, branch):
        rep_key = replicate_key(seed, replicate)
        shared = shared_draws(rep_key, key.batch, key.width)
        v = probe_draws(rep_key, key.batch, probes, key.width)

        def one_config(scale, d, workspace):
            saved, _, _ = forward(rep_key, shared, scale, d, workspace, branch, stack)
            return passes(rep_key, saved.z, v, scale.sigma_w, d, branch, stack)

        return jax.vmap(one_config)(scales, depth, workspace)

    return over_chunk(one_replicate)


def _log_mean_exp(x: np.ndarray, axes: tuple[int, ...]) -> np.ndarray:
    """ln mean exp(x) over `axes`, in float64 without overflow; -inf where every x is -inf."""
    top = np.max(x, axis=axes, keepdims=True)
    shift = np.where(np.isfinite(top), top, 0.0)
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.log(np.mean(np.exp(x - shift), axis=axes)) + np.squeeze(shift, axes)


def jacobian_moments(raw: JacobianStats, width: int) -> tuple[np.ndarray, np.ndarray]:
    """(log10 m1, m2 / m1^2 - 1) per (replicate, config), averaged over inputs and probes.

    NaN where a pass was not finite; m1 = 0 (every J v exactly zero) gives -inf and a NaN spread.
    """
    a = np.asarray(raw.log_forward, np.float64)
    b = np.asarray(raw.log_round_trip, np.float64)
    log_m1 = _log_mean_exp(2 * a, (-2, -1)) - math.log(width)
    log_m2 = _log_mean_exp(2 * b, (-2, -1)) - math.log(width)
    with np.errstate(invalid="ignore", over="ignore"):
        return log_m1 / math.log(10.0), np.expm1(log_m2 - 2 * log_m1)


def jacobian_table(
    members: pd.DataFrame, plan: ChunkPlan, raw: JacobianStats, width: int
) -> pd.DataFrame:
    """One row per real config of a chunk: config_id and `gradbench.schema.JACOBIAN_COLUMNS`."""
    log10_mean, spread = jacobian_moments(raw, width)
    ids = members["config_id"].to_numpy()[plan.rows]
    mean_column, spread_column = JACOBIAN_COLUMNS
    return pd.DataFrame(
        {
            "config_id": ids[plan.real],
            mean_column: log10_mean[plan.real],
            spread_column: spread[plan.real],
        }
    )
