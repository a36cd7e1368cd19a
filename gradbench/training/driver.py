"""Training a sweep: its configs grouped by compiled trainer, cut into chunks of one shape, each chunk
sharded over this process's devices, with progress and per-group compile and run facts.

The trainer itself (`gradbench.training.trainer`) sees one chunk at a time; this module decides which
chunks exist, builds their inputs and the data and draws they share, and hands the raw records to
`gradbench.training.tables`. A sequence task's data depend on the sequence length, the config's
depth: a group gets the data sets of every depth it holds, stacked (`datasets.sequences`).
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

from gradbench import registry
from gradbench.batch.progress import Progress
from gradbench.engine import compilation_cache
from gradbench.engine.chunks import config_mesh
from gradbench.sweep import grid
from gradbench.sweep.keys import TrainKey
from gradbench.sweep.spec import SweepSpec
from gradbench.training import datasets
from gradbench.training.network import Draws, dense_layers, draws
from gradbench.training.tables import Training, training_tables
from gradbench.training.trainer import TrainInputs, make_trainer

TRAIN_CHUNK_BYTES = 1 << 28
MAX_TRAIN_CHUNK = 256

# Trainers compiled ahead of time (so that compile and run seconds are reported apart), once per
# process: `gradbench verify` re-training in the process that trained reuses them.
_EXECUTABLES = compilation_cache.Executables()


def configs_per_trainer_call(key: TrainKey, override: int | None, devices: int = 1) -> int:
    """Configs per trainer call: the override, or what fits TRAIN_CHUNK_BYTES (a rough estimate of
    parameters, optimiser state, gradients and the saved activations of one step, and a sequence
    task's data set, which each config reads its own copy of), rounded up to a multiple of
    `devices` (the config axis is sharded)."""
    if override:
        size = override
    else:
        s = key.static
        # dense layers per block; the rnn's per-step copies of its W (`recurrent`) count as depth
        layers = s.depth * max(1, s.branch_layers)
        params = layers * (s.width * s.width + s.width) + s.width * key.outputs
        floats = 6 * params + 4 * key.batch * s.width * layers
        floats += key.samples * s.depth * registry.TASKS[key.task].sequence_features
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
    groups = grid.train_groups(configs, spec)
    # Each kind of draws is made once, as deep as its deepest group needs.
    deepest: dict[tuple, int] = {}
    for key, _ in groups:
        draw_id = _draw_id(key.static)
        deepest[draw_id] = max(deepest.get(draw_id, 0), dense_layers(key.static))
    features = registry.TASKS[train.task].sequence_features or None
    data, stacks = {}, {}
    wanted = pd.Index(configs["config_id"] if only is None else only)
    bar = Progress(len(wanted), enabled=progress)
    records, facts = [], []
    with jax.enable_x64(True) if spec.dtype == "float64" else contextlib.nullcontext():
        for key, members in groups:
            if not members["config_id"].isin(wanted).any():
                continue
            static = key.static
            lengths = np.sort(members["depth"].unique()) if features else None
            task_id = (key.task, key.samples, static.width, key.outputs)
            if features:
                task_id += (static.depth, *lengths)
            if task_id not in data:
                data[task_id] = _task_data(key, spec.seed, lengths, dtype)
            draw_id = _draw_id(static)
            if draw_id not in stacks:
                width, family, rnn = draw_id
                stacks[draw_id] = draws(
                    spec.seed,
                    replicates,
                    width,
                    deepest[draw_id],
                    family,
                    features if rnn else None,
                )
            stack = _prefix(stacks[draw_id], static)
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
                config_inputs = _inputs(
                    part.iloc[rows], replicates, key.clips, lengths, dtype, sharded
                )
                args = (seed, data[task_id], stack, config_inputs)
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
                records.append((part, raw, _baselines(key.task, data[task_id], part, lengths)))
                bar.update(int(part["config_id"].isin(wanted).sum()), f"train {key.label}")
            facts.append(fact)
    return training_tables(records, train.steps, train.log_every, train.trained_below, facts)


def _executable_key(key: TrainKey, allow_imports: bool, args: tuple) -> tuple:
    """What a compiled trainer is specialised on: its TrainKey, the x64 mode and the shapes and
    dtypes of the data, draws and inputs. Values never enter it: a new learning rate or threshold
    reuses the executable."""
    shapes = tuple((a.shape, str(a.dtype)) for a in jax.tree.leaves(args[1:]))
    return (key, allow_imports, jax.config.jax_enable_x64, shapes)


def _task_data(key: TrainKey, seed: int, lengths, dtype) -> datasets.TaskData:
    """A group's task data: one data set, or for a sequence task one per length, stacked and padded
    to the group's deepest config."""
    if lengths is None:
        return datasets.make_task(
            key.task,
            seed=seed,
            samples=key.samples,
            width=key.static.width,
            outputs=key.outputs,
            dtype=dtype,
        )
    return datasets.sequences(
        key.task,
        seed=seed,
        samples=key.samples,
        lengths=lengths,
        steps=key.static.depth,
        dtype=dtype,
    )


def _baselines(task: str, data: datasets.TaskData, part: pd.DataFrame, lengths):
    """The baseline loss of a chunk's configs: the task's, or for a sequence task each config's
    own length's."""
    if lengths is None:
        return datasets.baseline_loss(task, data)
    per_length = [
        datasets.baseline_loss(task, datasets.TaskData(x, target))
        for x, target in zip(data.x, data.target, strict=True)
    ]
    return np.array(per_length)[np.searchsorted(lengths, part["depth"].to_numpy())]


def _draw_id(static) -> tuple:
    """What a network's draws depend on: width, init family, and for the rnn its input weights."""
    return static.width, static.init_family, static.architecture == "rnn"


def _prefix(full: Draws, static) -> Draws:
    """The draws a group's trainer uses: its dense layers' prefix of the deepest stack."""
    n = dense_layers(static)
    return full._replace(z=full.z[:, :n], beta=full.beta[:, :n])


def _inputs(
    rows: pd.DataFrame, replicates: np.ndarray, clips, lengths, dtype, sharding
) -> TrainInputs:
    """The trainer inputs of a chunk's config rows, sharded over the config axis. `draw` indexes
    `replicates`, `rule` the TrainKey's `clips`, `sequence` the group's sequence `lengths` (0
    without a sequence task)."""

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
        alpha=put("alpha", dtype, fill=1.0),  # NaN outside resmlp, which alone reads it
        input_scale=put("input_scale", dtype),
        sequence=jax.device_put(
            np.zeros(len(rows), np.int32)
            if lengths is None
            else np.searchsorted(lengths, rows["depth"].to_numpy()).astype(np.int32),
            sharding,
        ),
    )
