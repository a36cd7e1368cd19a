"""One compiled gradient computation per StaticKey: jax.grad of the loss, vmapped over configs.

A chunk is laid out (replicates, configs): the inner vmap runs the configs of one replicate, which share
their standard draws, so every layer's forward and backward product is one (configs x batch, width)
matrix product; the outer vmap runs several replicates side by side.
"""

from __future__ import annotations

import functools
from typing import NamedTuple

import jax
import jax.numpy as jnp

from gradbench.grid import StaticKey
from gradbench.layerstats import N_TAG
from gradbench.model import Forward, make_loss, replicate_key, shared_draws


class Chunk(NamedTuple):
    """Dynamic inputs of one kernel call. `replicate` has shape (R,), the rest (R, C)."""

    replicate: jax.Array
    sigma_w: jax.Array
    sigma_b: jax.Array
    depth: jax.Array


class RawStats(NamedTuple):
    """Raw per-layer statistics, shape (R, C, depth_bucket[, N_TAG]); `gradbench.measure` reads them."""

    tags: jax.Array
    forward: Forward


@functools.cache
def make_kernel(static: StaticKey, allow_imports: bool = False):
    """The jitted `kernel(seed, chunk) -> RawStats` for one StaticKey (compiled once per chunk shape)."""
    loss = make_loss(static, allow_imports)
    grad = jax.grad(loss, has_aux=True)
    dtype = jnp.dtype(static.dtype)

    def one_replicate(seed, replicate, sigma_w, sigma_b, depth):
        rep_key = replicate_key(seed, replicate)
        shared = shared_draws(rep_key, static.batch, static.width)
        tags = jnp.zeros((static.depth, N_TAG), dtype)

        def one_config(sw, sb, d):
            tag_grads, forward = grad(tags, rep_key, shared, sw, sb, d)
            return RawStats(tag_grads, forward)

        return jax.vmap(one_config)(sigma_w, sigma_b, depth)

    @jax.jit
    def kernel(seed, chunk: Chunk) -> RawStats:
        return jax.vmap(one_replicate, in_axes=(None, 0, 0, 0, 0))(
            seed, chunk.replicate, chunk.sigma_w, chunk.sigma_b, chunk.depth
        )

    return kernel
