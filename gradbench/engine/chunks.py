"""Chunks: how a compile group's configs are laid out for one kernel call, and back into table rows.

A chunk is (replicates R, configs C): the configs of a replicate row share their draws. All chunks of a
kernel have one shape (one shape, one compile), and each holds configs of one lane: one activation,
init family and depth bucket (`gradbench.sweep.grid.kernel_groups`). The C axis is sharded over this
process's devices, so C is a multiple of the device count; padding cells repeat a real config and
are dropped on the way back.
"""

from __future__ import annotations

from dataclasses import dataclass

import jax
import jax.numpy as jnp
import numpy as np
import pandas as pd
from jax.sharding import Mesh, NamedSharding, PartitionSpec

from gradbench.engine.decode import decode, decode_residual
from gradbench.engine.kernel import Chunk, predrawn, weight_stack_bytes
from gradbench.engine.model import Branch
from gradbench.schema import FLAGS, LAYER_STATS
from gradbench.sweep.keys import KernelKey

# A chunk's memory is dominated by its workspace: one (batch, width) array per layer and config.
CPU_WORKSPACE_BYTES = 1 << 30
ACCELERATOR_WORKSPACE_BYTES = 1 << 32
# On CPU a layer's (configs x batch, width) arrays should stay cache-sized: per config, chunks wider
# than this ran up to 1.3x slower, not faster (benchmarks/RESULTS.md).
CPU_LAYER_BYTES = 1 << 21
MAX_CHUNK = 2048


@dataclass(frozen=True)
class ChunkPlan:
    """Row positions (into a group's config table) of one chunk, laid out (replicates, configs).

    Cells past the group's end repeat a real config; `real` marks the cells whose results are kept.
    """

    rows: np.ndarray  # (R, C) int
    real: np.ndarray  # (R, C) bool


def chunk_capacity(key: KernelKey, override: int | None, platform: str = "cpu") -> int:
    """Configs per chunk: the sweep's chunk_size, or what suits the platform (see the constants)."""
    if override:
        return override
    layer = jnp.dtype(key.dtype).itemsize * key.batch * key.width
    if platform == "cpu":
        capacity = min(CPU_WORKSPACE_BYTES // (layer * key.depth), CPU_LAYER_BYTES // layer)
    else:
        capacity = ACCELERATOR_WORKSPACE_BYTES // (layer * key.depth)
    return int(min(MAX_CHUNK, max(1, capacity)))


def replicate_capacity(key: KernelKey, platform: str = "cpu", devices: int = 1) -> int:
    """Replicates per chunk: unbounded, except for pre-drawn weights, which every device holds whole.

    Their (R, depth, width, width) stack gets the budget of a workspace (on CPU the devices share
    the host's memory, so it is divided among them); one replicate always fits.
    """
    if not predrawn(key):
        return MAX_CHUNK
    if platform == "cpu":
        budget = CPU_WORKSPACE_BYTES // devices
    else:
        budget = ACCELERATOR_WORKSPACE_BYTES
    return int(min(MAX_CHUNK, max(1, budget // weight_stack_bytes(key))))


def chunk_shape(
    lanes: list[np.ndarray], capacity: int, multiple: int = 1, max_replicates: int = MAX_CHUNK
) -> tuple[int, int]:
    """The one (R, C) shape of a kernel's chunks, from its lanes' replicate columns.

    C covers the most configs any lane has per replicate, up to `capacity` and rounded up to a
    multiple of `multiple` (the device count: the C axis is sharded); R fills the rest of `capacity`
    with replicates, at most `max_replicates`. Smaller lanes are padded.
    """
    counts = [np.unique(replicates, return_counts=True)[1] for replicates in lanes]
    per_rep = max(int(c.max()) for c in counts)
    n_reps = max(len(c) for c in counts)
    c = -(-min(per_rep, capacity) // multiple) * multiple
    return max(1, min(n_reps, capacity // c, max_replicates)), c


def plan_chunks(replicates: np.ndarray, shape: tuple[int, int]) -> list[ChunkPlan]:
    """Tiles a lane's configs (sorted by replicate) into chunks of `shape` (see `chunk_shape`).

    Each chunk holds C configs of each of R replicates, so the configs of a replicate row share their
    draws. Replicates with fewer configs (a sampled re-run) and the lane's end are padded with repeats
    that are not kept.
    """
    r, c = shape
    reps, starts, counts = np.unique(replicates, return_index=True, return_counts=True)
    per_rep = int(counts.max())
    column = np.arange(per_rep)
    table = starts[:, None] + np.minimum(column[None, :], counts[:, None] - 1)
    filled = column[None, :] < counts[:, None]
    plans = []
    for i in range(0, len(reps), r):
        rows = np.minimum(np.arange(i, i + r), len(reps) - 1)
        for j in range(0, per_rep, c):
            cols = np.minimum(np.arange(j, j + c), per_rep - 1)
            real = filled[np.ix_(rows, cols)] & (np.arange(i, i + r) < len(reps))[:, None]
            real &= (np.arange(j, j + c) < per_rep)[None, :]
            plans.append(ChunkPlan(table[np.ix_(rows, cols)], real))
    return plans


def config_mesh() -> Mesh:
    """A 1-D mesh over this process's devices; chunks are sharded along its "configs" axis.

    Local devices only: with several processes each one runs its own chunks (no collectives).
    """
    return Mesh(np.array(jax.local_devices()), ("configs",))


def chunk_replicates(members: pd.DataFrame, plan: ChunkPlan) -> np.ndarray:
    """The replicate of each row of a chunk, (R,) int32."""
    return np.asarray(members["replicate"].to_numpy()[plan.rows[:, 0]], np.int32)


def chunk_weights(draw, seed, replicates: np.ndarray, mesh: Mesh) -> jax.Array:
    """The pre-drawn standard weights of a chunk's replicates (`gradbench.registry.PREDRAWN_FAMILIES`),
    replicated on every device of `mesh`. `draw` is `gradbench.engine.kernel.make_weight_draw`'s function:
    a call of its own, finished before the sharded kernel starts."""
    stack = jax.block_until_ready(draw(seed, replicates))
    return jax.device_put(stack, NamedSharding(mesh, PartitionSpec()))


def chunk_inputs(
    key: KernelKey,
    lane: pd.DataFrame,
    plan: ChunkPlan,
    mesh: Mesh,
    weights: jax.Array | None = None,
) -> Chunk:
    """The kernel's inputs for one chunk of `lane`: the C axis sharded; replicates, the lane's branch
    (activation, init family, trip count) and `weights` replicated."""
    sharded = NamedSharding(mesh, PartitionSpec(None, "configs"))
    replicated = NamedSharding(mesh, PartitionSpec())

    def cells(column, kind):
        return jax.device_put(np.asarray(lane[column].to_numpy()[plan.rows], kind), sharded)

    def scalar(value):
        return jax.device_put(np.int32(value), replicated)

    depths = lane["depth"].to_numpy()[plan.rows]
    return Chunk(
        replicate=jax.device_put(chunk_replicates(lane, plan), replicated),
        sigma_w=cells("sigma_w", np.dtype(key.dtype)),
        sigma_b=cells("sigma_b", np.dtype(key.dtype)),
        depth=cells("depth", jnp.int32),
        alpha=cells("alpha", np.dtype(key.dtype)) if key.architecture == "resmlp" else None,
        input_scale=cells("input_scale", np.dtype(key.dtype))
        if key.architecture == "rnn"
        else None,
        branch=Branch(
            activation=scalar(key.activations.index(lane["activation"].iloc[0])),
            init_family=scalar(key.init_families.index(lane["init_family"].iloc[0])),
            n_layers=scalar(depths.max()),
            block=scalar(key.blocks.index(block_of(lane.iloc[0])) if key.blocks else 0),
        ),
        weights=None if weights is None else jax.device_put(weights, replicated),
    )


def block_of(row) -> tuple[int, str, str]:
    """A residual config's block variant, as `KernelKey.blocks` lists them."""
    return int(row["branch_layers"]), str(row["norm"]), str(row["norm_position"])


def layer_table(
    key: KernelKey, members: pd.DataFrame, plan: ChunkPlan, raw, measure_mode: str
) -> pd.DataFrame:
    """Long-form per-layer rows of the real configs of one chunk: (layer, sublayer) with sublayer 0
    the layer, block or step itself, and for residual blocks 1..branch_layers their dense layers."""
    depth = members["depth"].to_numpy()[plan.rows]
    branch_layers = np.zeros_like(depth)
    if key.architecture == "resmlp":
        branch_layers = members["branch_layers"].to_numpy()[plan.rows]
        pre_norm = (members["norm"] != "none") & (members["norm_position"] == "pre")
        stats = decode_residual(
            raw.tags,
            raw.forward,
            depth,
            measure=measure_mode,
            branch_layers=branch_layers,
            pre_norm=pre_norm.to_numpy()[plan.rows],
        )
    else:
        stats = {
            k: v[..., None]
            for k, v in decode(raw.tags, raw.forward, depth, measure=measure_mode).items()
        }
    n_layers, n_sub = stats["flag"].shape[-2:]
    keep = plan.real[..., None, None] & (np.arange(n_layers) < depth[..., None])[..., None]
    keep = keep & (np.arange(n_sub) <= branch_layers[..., None, None])
    keep = np.broadcast_to(keep, stats["flag"].shape)
    ids = members["config_id"].to_numpy()[plan.rows]
    table = {
        "config_id": np.broadcast_to(ids[..., None, None], keep.shape)[keep],
        "layer": np.broadcast_to(np.arange(1, n_layers + 1)[:, None], keep.shape)[keep],
        "sublayer": np.broadcast_to(np.arange(n_sub), keep.shape)[keep],
    }
    for name in LAYER_STATS:
        table[name] = stats[name][keep]
    with np.errstate(over="ignore"):
        table["q"] = np.power(10.0, table["log10_q"])
    table["flag"] = np.asarray(FLAGS)[stats["flag"][keep]]
    return pd.DataFrame(table)
