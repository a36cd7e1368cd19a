"""One compiled gradient computation per KernelKey: the forward and backward loops, vmapped over configs.

A chunk is laid out (replicates, configs): the inner vmap runs the configs of one replicate, which share
their standard draws, so every layer's forward and backward product is one (configs x batch, width)
matrix product; the outer vmap runs several replicates side by side.

Activation, init family and depth are values, not compile-time constants. A chunk's configs share one
activation and one init family, chosen by unbatched `lax.switch` indices (`gradbench.engine.model.Branch`),
so only the chosen branch runs; the layer loops run as many layers as the chunk's deepest config
(shallower configs pass the extra layers through as identity). So a sweep compiles one kernel per
shape (width, batch, loss, dtype, measure mode, and chunk shape), whatever activations, init families
and depths it sweeps.

The saved pre-activations live in a `workspace` the caller passes in and gets back: the kernel donates it,
so consecutive calls of one shape reuse its memory. Fresh memory of that size (hundreds of MB) costs
a page fault per 4 KB on first touch, which measured ~15 % of a call on CPU.

Init families in `gradbench.registry.PREDRAWN_FAMILIES` (orthogonal: a QR per layer) are drawn by a
separate, unsharded `make_weight_draw` call per chunk and passed in, replicated on every device.
"""

from __future__ import annotations

import functools
from typing import NamedTuple

import jax
import jax.numpy as jnp
from jax.sharding import Mesh, NamedSharding, PartitionSpec
from jaxtyping import Array, Float, Float32, Int32

from gradbench import registry
from gradbench.engine.backprop import make_backward
from gradbench.engine.model import (
    Branch,
    Forward,
    Scales,
    first_input,
    make_forward,
    replicate_key,
    shared_draws,
    weight_stack,
)
from gradbench.engine.residual import make_residual
from gradbench.sweep.keys import KernelKey


class Chunk(NamedTuple):
    """Dynamic inputs of one kernel call: R replicates x C configs, and one branch for all of them.

    `weights` is None, or for a pre-drawn init family the replicates' standard draws from
    `make_weight_draw` (D = the kernel's dense layers, `dense_layers`). `alpha` (resmlp) and
    `input_scale` (rnn) are None for architectures without them.
    """

    replicate: Int32[Array, " R"]
    sigma_w: Float[Array, "R C"]
    sigma_b: Float[Array, "R C"]
    depth: Int32[Array, "R C"]
    branch: Branch
    weights: Float32[Array, "R D width width"] | None = None
    alpha: Float[Array, "R C"] | None = None
    input_scale: Float[Array, "R C"] | None = None

    @property
    def scales(self) -> Scales:
        return Scales(self.sigma_w, self.sigma_b, self.alpha, self.input_scale)


class RawStats(NamedTuple):
    """Raw per-layer statistics of a chunk; `gradbench.engine.decode` turns them into log10 norms.

    `tags` holds the `gradbench.engine.layerstats` columns of every layer (L = `KernelKey.depth`;
    a residual block's are `gradbench.engine.residual`'s); `forward`'s arrays are (R, C, L), its
    `log_top_scale` (R, C).
    """

    tags: Float[Array, "R C L tag"]
    forward: Forward


def new_workspace(key: KernelKey, chunk: Chunk, mesh: Mesh | None = None) -> jax.Array:
    """A kernel's workspace for chunks shaped like `chunk`: (R, C, depth, batch, width), the layout the
    vmapped loops use (any other costs a transposed copy), its C axis sharded over `mesh` like chunks'."""
    shape = (*chunk.sigma_w.shape, key.depth, key.batch, key.width)
    placement = None if mesh is None else NamedSharding(mesh, PartitionSpec(None, "configs"))
    return jnp.zeros(shape, key.dtype, device=placement)


def predrawn(key: KernelKey) -> bool:
    """Whether the kernel of `key` reads pre-drawn weights (`Chunk.weights`) instead of drawing.
    Such families have kernels of their own (`gradbench.sweep.grid.kernel_groups`)."""
    return any(family in registry.PREDRAWN_FAMILIES for family in key.init_families)


def dense_layers(key: KernelKey) -> int:
    """How many (width, width) weight matrices a network of the kernel's depth has: one per layer, per
    dense layer of each residual branch, and the RNN's one shared W."""
    if key.architecture == "rnn":
        return 1
    if key.architecture == "resmlp":
        return key.depth * key.branch_layers
    return key.depth


def weight_stack_bytes(key: KernelKey) -> int:
    """Bytes of one replicate's pre-drawn weights: `dense_layers` float32 (width, width) matrices."""
    return 4 * dense_layers(key) * key.width**2


@functools.cache
def make_weight_draw(width: int, depth: int, init_family: str):
    """The jitted `draw(seed, replicates) -> (R, depth, width, width)` standard draws, float32, of
    `depth` dense layers (`dense_layers`).

    Run on its own, not inside the sharded kernel: its QR then has XLA:CPU's thread pool to itself.
    """

    def draw(seed, replicates):
        def one(replicate):
            return weight_stack(replicate_key(seed, replicate), depth, width, init_family)

        return jax.vmap(one)(replicates)

    return jax.jit(draw)


@functools.cache
def make_kernel(key: KernelKey, allow_imports: bool = False):
    """The jitted `kernel(seed, chunk, workspace) -> (RawStats, workspace)` for one KernelKey (compiled
    once per chunk shape). `workspace` (see `new_workspace`) is donated: pass the one the previous call
    returned."""
    if key.architecture == "resmlp":
        forward, backward = make_residual(key, allow_imports)
    else:
        forward, backward = make_forward(key, allow_imports), make_backward(key, allow_imports)

    def one_replicate(seed, replicate, scales, depth, workspace, stack, branch):
        rep_key = replicate_key(seed, replicate)
        shared = shared_draws(rep_key, key.batch, key.width)

        def one_config(scale, d, workspace):
            saved, facts, top_grad = forward(rep_key, shared, scale, d, workspace, branch, stack)
            x = first_input(key, shared).astype(saved.z.dtype)
            tags = backward(rep_key, x, saved, top_grad, scale, d, branch, stack)
            return RawStats(tags, facts), saved.z

        return jax.vmap(one_config)(scales, depth, workspace)

    return over_chunk(one_replicate)


def over_chunk(one_replicate):
    """The jitted `kernel(seed, chunk, workspace) -> (stats, workspace)` that runs
    `one_replicate(seed, replicate, scales, depth, workspace, weights, branch)` on every replicate
    row of a `Chunk` (`scales`: its `Scales`). The workspace is donated; the branch is not vmapped:
    a batched switch index would run every branch."""

    @functools.partial(jax.jit, donate_argnums=2)
    def kernel(seed, chunk: Chunk, workspace: jax.Array):
        return jax.vmap(one_replicate, in_axes=(None, 0, 0, 0, 0, 0, None))(
            seed,
            chunk.replicate,
            chunk.scales,
            chunk.depth,
            workspace,
            chunk.weights,
            chunk.branch,
        )

    return kernel
