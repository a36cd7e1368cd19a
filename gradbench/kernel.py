"""One compiled gradient computation per StaticKey: the forward and backward scans, vmapped over configs.

A chunk is laid out (replicates, configs): the inner vmap runs the configs of one replicate, which share
their standard draws, so every layer's forward and backward product is one (configs x batch, width)
matrix product; the outer vmap runs several replicates side by side.

The saved pre-activations live in a `workspace` the caller passes in and gets back: the kernel donates it,
so consecutive calls of one shape reuse its memory. Fresh memory of that size (hundreds of MB) costs
a page fault per 4 KB on first touch, which measured ~15 % of a call on CPU.
"""

from __future__ import annotations

import functools
from typing import NamedTuple

import jax
import jax.numpy as jnp
from jax.sharding import Mesh, NamedSharding, PartitionSpec

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


def new_workspace(static: StaticKey, chunk: Chunk, mesh: Mesh | None = None) -> jax.Array:
    """A kernel's workspace for chunks shaped like `chunk`: (R, C, depth, batch, width), the layout the
    vmapped scans use (any other costs a transposed copy), its C axis sharded over `mesh` like chunks'."""
    shape = (*chunk.sigma_w.shape, static.depth, static.batch, static.width)
    placement = None if mesh is None else NamedSharding(mesh, PartitionSpec(None, "configs"))
    return jnp.zeros(shape, static.dtype, device=placement)


@functools.cache
def make_kernel(static: StaticKey, allow_imports: bool = False):
    """The jitted `kernel(seed, chunk, workspace) -> (RawStats, workspace)` for one StaticKey (compiled once per
    chunk shape). `workspace` (see `new_workspace`) is donated: pass the one the previous call returned."""
    forward = make_forward(static, allow_imports)
    backward = make_backward(static, allow_imports)

    def one_replicate(seed, replicate, sigma_w, sigma_b, depth, workspace):
        rep_key = replicate_key(seed, replicate)
        shared = shared_draws(rep_key, static.batch, static.width)

        def one_config(sw, sb, d, workspace):
            saved, facts, top_grad = forward(rep_key, shared, sw, sb, d, workspace)
            tags = backward(rep_key, shared.x.astype(saved.z_in.dtype), saved, top_grad, sw, d)
            return RawStats(tags, facts), saved.z_in

        return jax.vmap(one_config)(sigma_w, sigma_b, depth, workspace)

    @functools.partial(jax.jit, donate_argnums=2)
    def kernel(seed, chunk: Chunk, workspace: jax.Array) -> tuple[RawStats, jax.Array]:
        return jax.vmap(one_replicate, in_axes=(None, 0, 0, 0, 0, 0))(
            seed, chunk.replicate, chunk.sigma_w, chunk.sigma_b, chunk.depth, workspace
        )

    return kernel
