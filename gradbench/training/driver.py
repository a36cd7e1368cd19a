"""Training a sweep: its configs grouped by compiled trainer, cut into chunks of one shape, each chunk
sharded over this process's devices, with progress and per-group compile and run facts.

The trainer itself (`gradbench.training.trainer`) sees one chunk at a time; this module decides which
chunks exist, builds their inputs and the data and draws they share, and hands the raw records to
`gradbench.training.tables`.
"""

from __future__ import annotations

import contextlib
import functools
import time
from collections.abc import Collection

import jax
import numpy as np
import pandas as pd
from jax.sharding import NamedSharding, PartitionSpec

from gradbench.batch.progress import Progress
from gradbench.engine import compilation_cache
from gradbench.engine.chunks import config_mesh
from gradbench.sweep import grid
from gradbench.sweep.keys import TrainKey
from gradbench.sweep.spec import SweepSpec
from gradbench.training import datasets
from gradbench.training.network import Draws, draws
from gradbench.training.tables import Training, training_tables
from gradbench.training.trainer import TrainInputs, make_trainer

TRAIN_CHUNK_BYTES = 1 << 28
MAX_TRAIN_CHUNK = 256

# Trainers compiled ahead of time (so that compile and run seconds are reported apart), once per
# process: `gradbench verify` re-training in the process that trained reuses them.
_EXECUTABLES = compilation_cache.Executables()


def configs_per_trainer_call(key: TrainKey, override: int | None, devices: int = 1) -> int:
    """Configs per trainer call: the override, or what fits TRAIN_CHUNK_BYTES (a rough estimate of
    parameters, optimiser state, gradients and the saved activations of one step), rounded up to a
    multiple of `devices` (the config axis is sharded)."""
    if override:
        size = override
    else:
        s = key.static
        params = s.depth * (s.width * s.width + s.width) + s.width * key.outputs
        floats = 6 * params + 4 * key.batch * s.width * s.depth
        size = min(MAX_TRAIN_CHUNK, max(1, TRAIN_CHUNK_BYTES // (4 * floats)))
    return -(-size // devices) * devices


def train_configs(
    spec: SweepSpec,
    configs: pd.DataFrame,
    *,
    allow_imports: bool = False,
    progress: bool = False,
    only: Collection[str] | None = None,
) -> Training:
    """Trains every config of a sweep with a [train] section; groups compile once each.

    Chunks of a group have one shape (the last is padded with repeats that are dropped), and their
    config axis is sharded over this process's devices.

    Args:
        spec: the sweep.
        configs: all of its configs (`grid.expand`): they decide groups, chunk shapes and draws.
        allow_imports: permit activations given as "package.module:function".
        progress: print progress to stderr.
        only: config_ids; if given, only the chunks that hold one of them are trained, in the
            chunk shapes of the whole sweep (`gradbench verify`). A trainer compiled for another
            chunk shape may round differently, and training can amplify a rounding difference
            into a different trajectory; in its own chunk a config repeats its numbers bit for bit.
    """
    train = spec.train
    assert train is not None, "`train_configs`: the sweep has no [train] section"
    compilation_cache.enable()
    mesh = config_mesh()
    sharded = NamedSharding(mesh, PartitionSpec("configs"))
    seed = np.uint32(spec.seed)
    dtype = np.dtype(spec.dtype)
    replicates = np.sort(configs["replicate"].unique())
    deepest = int(configs["depth"].max())
    data, stacks = {}, {}
    wanted = pd.Index(configs["config_id"] if only is None else only)
    bar = Progress(len(wanted), enabled=progress)
    records, facts = [], []
    with jax.enable_x64(True) if spec.dtype == "float64" else contextlib.nullcontext():
        for key, members in grid.train_groups(configs, spec):
            if not members["config_id"].isin(wanted).any():
                continue
            static = key.static
            task_id = (key.task, key.samples, static.width, key.outputs)
            if task_id not in data:
                data[task_id] = datasets.make_task(
                    key.task,
                    seed=spec.seed,
                    samples=key.samples,
                    width=static.width,
                    outputs=key.outputs,
                    dtype=dtype,
                )
            draw_id = (static.width, static.init_family)
            if draw_id not in stacks:
                stacks[draw_id] = draws(spec.seed, replicates, *draw_id[:1], deepest, draw_id[1])
            full = stacks[draw_id]
            stack = Draws(full.z[:, : static.depth], full.beta[:, : static.depth], full.readout)
            trainer = make_trainer(key, allow_imports)
            size = configs_per_trainer_call(key, train.chunk_size, mesh.size)
            size = min(size, -(-len(members) // mesh.size) * mesh.size)
            fact = {"group": key.label, "configs": len(members), "chunk_size": size, "chunks": 0}
            fact |= {"compile_seconds": 0.0, "run_seconds": 0.0, "compiles": 0, "cache_hits": 0}
            for start in range(0, len(members), size):
                part = members.iloc[start : start + size]
                if not part["config_id"].isin(wanted).any():
                    continue
                rows = np.minimum(np.arange(size), len(part) - 1)  # pad with repeats
                inputs = _inputs(part.iloc[rows], replicates, key.clips, dtype, sharded)
                args = (seed, data[task_id], stack, inputs)
                compiled = _EXECUTABLES.get(
                    _executable_key(key, allow_imports, args),
                    functools.partial(trainer.lower, *args),
                    fact,
                )
                t0 = time.perf_counter()
                raw = jax.device_get(compiled(*args))
                fact["run_seconds"] = round(fact["run_seconds"] + time.perf_counter() - t0, 3)
                fact["chunks"] += 1
                n = len(part)
                raw = jax.tree.map(lambda a: a[:n], raw)  # noqa: B023 (used at once)
                records.append((part, raw, datasets.baseline_loss(key.task, data[task_id])))
                bar.update(int(part["config_id"].isin(wanted).sum()), f"train {key.label}")
            facts.append(fact)
    return training_tables(records, train.steps, train.log_every, train.trained_below, facts)


def _executable_key(key: TrainKey, allow_imports: bool, args: tuple) -> tuple:
    """What a compiled trainer is specialised on: its TrainKey, the x64 mode and the shapes and
    dtypes of the data, draws and inputs. Values never enter it: a new learning rate or threshold
    reuses the executable."""
    shapes = tuple((a.shape, str(a.dtype)) for a in jax.tree.leaves(args[1:]))
    return (key, allow_imports, jax.config.jax_enable_x64, shapes)


def _inputs(rows: pd.DataFrame, replicates: np.ndarray, clips, dtype, sharding) -> TrainInputs:
    """The trainer inputs of a chunk's config rows, sharded over the config axis. `draw` indexes
    `replicates`, `rule` the TrainKey's `clips`."""

    def put(column, kind, fill=None):
        values = rows[column].to_numpy(dtype=float if fill is not None else None)
        if fill is not None:
            values = np.where(np.isnan(values), fill, values)
        return jax.device_put(np.asarray(values, kind), sharding)

    return TrainInputs(
        draw=jax.device_put(
            np.searchsorted(replicates, rows["replicate"].to_numpy()).astype(np.int32), sharding
        ),
        sigma_w=put("sigma_w", dtype),
        sigma_b=put("sigma_b", dtype),
        depth=put("depth", np.int32),
        lr=put("lr", dtype),
        threshold=put("clip_threshold", dtype, fill=1.0),  # unused by clip = "none"
        rule=jax.device_put(np.array([clips.index(c) for c in rows["clip"]], np.int32), sharding),
    )
