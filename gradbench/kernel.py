"""One compiled gradient computation per StaticKey: the forward and backward scans, vmapped over configs.

A chunk is laid out (replicates, configs): the inner vmap runs the configs of one replicate, which share
their standard draws, so every layer's forward and backward product is one (configs x batch, width)
matrix product; the outer vmap runs several replicates side by side.
"""

from __future__ import annotations

import functools
from typing import NamedTuple

import jax

from gradbench.backprop import make_backward
from gradbench.grid import StaticKey
from gradbench.model import Forward, make_forward, replicate_key, shared_draws


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
    forward = make_forward(static, allow_imports)
    backward = make_backward(static, allow_imports)

    def one_replicate(seed, replicate, sigma_w, sigma_b, depth):
        rep_key = replicate_key(seed, replicate)
        shared = shared_draws(rep_key, static.batch, static.width)

        def one_config(sw, sb, d):
            saved, facts, top_grad = forward(rep_key, shared, sw, sb, d)
            tags = backward(rep_key, shared.x.astype(saved.z_in.dtype), saved, top_grad, sw, d)
            return RawStats(tags, facts)

        return jax.vmap(one_config)(sigma_w, sigma_b, depth)

    @jax.jit
    def kernel(seed, chunk: Chunk) -> RawStats:
        return jax.vmap(one_replicate, in_axes=(None, 0, 0, 0, 0))(
            seed, chunk.replicate, chunk.sigma_w, chunk.sigma_b, chunk.depth
        )

    return kernel
