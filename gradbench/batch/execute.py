"""Execution: chunk tasks -> compiled kernel calls -> tables, each stored as a part when asked.

A gradient task's table is its chunk's layer rows, a Jacobian task's one row per config
(`gradbench.engine.jacobian`); both kernels take the chunk's inputs and donated workspace alike.
Kernels are compiled lazily, once per (kernel, chunk shape), and their compile and run seconds are the
facts the manifest records per group. A chunk that runs out of device memory is split and retried.
"""

from __future__ import annotations

import contextlib
import functools
import time

import jax
import numpy as np
import pandas as pd

from gradbench.batch import sizing
from gradbench.batch.parts import PartStore
from gradbench.batch.plan import (
    GRADIENTS,
    JACOBIAN,
    ChunkTask,
    measured_tables,
    plan_tasks,
    split_plan,
)
from gradbench.batch.progress import Progress
from gradbench.engine import compilation_cache
from gradbench.engine.chunks import (
    ChunkPlan,
    chunk_inputs,
    chunk_replicates,
    chunk_weights,
    config_mesh,
    layer_table,
)
from gradbench.engine.jacobian import jacobian_table, make_jacobian_kernel
from gradbench.engine.kernel import (
    dense_layers,
    make_kernel,
    make_weight_draw,
    new_workspace,
    predrawn,
)
from gradbench.sweep.spec import SweepSpec


def execute(
    tasks: list[ChunkTask],
    spec: SweepSpec,
    *,
    allow_imports: bool,
    progress: bool,
    store: PartStore | None = None,
) -> tuple[list[pd.DataFrame], list[dict]]:
    """Runs the tasks (skipping those whose part is stored), compiling each group once, lazily."""
    stored = [store.load(t.key, t.n_rows) if store else None for t in tasks]
    reused = sum(table is not None for table in stored)
    # Configs are counted once, by their gradient chunks; a Jacobian chunk measures the same ones again.
    counted = [int(t.plan.real.sum()) if t.measurement == GRADIENTS else 0 for t in tasks]
    bar = Progress(sum(counted), enabled=progress)
    if reused:
        bar.note(f"resuming: {reused} of {len(tasks)} chunks already done in {store.directory}")
    kernels = Kernels(spec, allow_imports)
    tables = []
    with jax.enable_x64(True) if spec.dtype == "float64" else contextlib.nullcontext():
        for task, table, configs in zip(tasks, stored, counted, strict=True):
            fact = kernels.fact(task)
            fact["chunks"] += 1
            resumed = table is not None
            if resumed:
                fact["chunks_resumed"] += 1
            else:
                t0, compiling = time.perf_counter(), fact["compile_seconds"]
                table = kernels.chunk_table(task, task.plan)
                spent = time.perf_counter() - t0 - (fact["compile_seconds"] - compiling)
                fact["run_seconds"] = round(fact["run_seconds"] + spent, 3)
                if store:
                    store.save(task.key, table)
            tables.append(table)
            bar.update(configs, task.label, computed=not resumed)
    return tables, list(kernels.facts.values())


class Kernels:
    """Compiled kernels by (kernel, chunk shape), and the facts the manifest records about them."""

    def __init__(self, spec: SweepSpec, allow_imports: bool):
        self.spec = spec
        self.allow_imports = allow_imports
        self.mesh = config_mesh()
        self.seed = np.uint32(spec.seed)
        self.executables = compilation_cache.Executables()
        self.workspace: tuple | None = (
            None  # (key, array): the latest shape's, donated call to call
        )
        self.stack: tuple | None = None  # (key, array): the latest chunk's pre-drawn weights
        self.facts: dict[str, dict] = {}

    def fact(self, task: ChunkTask) -> dict:
        return self.facts.setdefault(
            task.label,
            {
                "group": task.label,
                "workspace_depth": task.kernel_key.depth,
                "chunk_shape": list(task.plan.rows.shape),
                "chunks": 0,
                "chunks_resumed": 0,
                "out_of_memory_splits": 0,
                "compile_seconds": 0.0,
                "compiles": 0,
                "cache_hits": 0,
                "run_seconds": 0.0,
            },
        )

    def chunk_table(self, task: ChunkTask, plan: ChunkPlan) -> pd.DataFrame:
        """The table of `task` over the cells of `plan` (its own, or a part of it): a chunk that runs
        out of device memory is split in two and retried.

        Raises:
            SpecError: a chunk of one config per device still runs out of memory.
        """
        kernel_key, members = task.kernel_key, task.members
        try:
            weights = None
            if predrawn(kernel_key):
                weights = self.weights(task, chunk_replicates(members, plan))
            inputs = chunk_inputs(kernel_key, members, plan, self.mesh, weights)
            raw = jax.device_get(self.call(task, inputs))
        except Exception as exc:  # XLA reports exhausted memory as a runtime error
            self.workspace = self.stack = None
            if "RESOURCE_EXHAUSTED" not in str(exc):
                raise
            halves = split_plan(plan, self.mesh.size)
            if halves is None:
                raise sizing.too_large_alone(self.spec, kernel_key, exc) from exc
            self.facts[task.label]["out_of_memory_splits"] += 1
            return pd.concat([self.chunk_table(task, h) for h in halves], ignore_index=True)
        if task.measurement == JACOBIAN:
            return jacobian_table(members, plan, raw, kernel_key.width)
        return layer_table(kernel_key, members, plan, raw, self.spec.measure)

    def weights(self, task: ChunkTask, replicates: np.ndarray):
        """Pre-drawn weights of a chunk's replicates; kept while the next chunks use the same ones."""
        kernel_key = task.kernel_key
        (family,) = kernel_key.init_families
        shape = (kernel_key.width, dense_layers(kernel_key), family)
        key = (*shape, tuple(replicates))
        if self.stack is None or self.stack[0] != key:
            self.stack = None  # free the previous chunk's before drawing
            draw = self.compile(
                ("draw", *shape, len(replicates)),
                task.label,
                lambda: make_weight_draw(*shape).lower(self.seed, replicates),
            )
            self.stack = (key, chunk_weights(draw, self.seed, replicates, self.mesh))
        return self.stack[1]

    def call(self, task: ChunkTask, inputs):
        """One kernel call (gradient or Jacobian: raw statistics). The workspace of the latest chunk
        shape is kept: each call donates it, and both kernels of a chunk shape take the same one."""
        kernel_key = task.kernel_key
        key = (kernel_key, inputs.sigma_w.shape)
        if self.workspace is None or self.workspace[0] != key:
            self.workspace = None  # free the previous shape's before allocating
            self.workspace = (key, new_workspace(kernel_key, inputs, self.mesh))
        kernel = self.kernel(task, inputs, self.workspace[1])
        raw, workspace = kernel(self.seed, inputs, self.workspace[1])
        self.workspace = (key, workspace)
        return raw

    def kernel(self, task: ChunkTask, inputs, workspace):
        kernel_key = task.kernel_key
        if task.measurement == JACOBIAN:
            probes = self.spec.jacobian_probes
            make = functools.partial(make_jacobian_kernel, kernel_key, probes, self.allow_imports)
        else:
            make = functools.partial(make_kernel, kernel_key, self.allow_imports)
        return self.compile(
            (task.measurement, kernel_key, inputs.sigma_w.shape),
            task.label,
            lambda: make().lower(self.seed, inputs, workspace),
        )

    def compile(self, key, label: str, lower):
        """The executable of `lower()`, compiled once per `key`, counted in the group `label`."""
        return self.executables.get(key, lower, self.facts[label])


def compute_tables(
    spec: SweepSpec, configs: pd.DataFrame, *, allow_imports: bool = False, progress: bool = False
) -> tuple[pd.DataFrame, pd.DataFrame | None, list[dict]]:
    """The per-layer table of any subset of a sweep's configs, their Jacobian table (None unless the
    sweep measures it) and facts about each compile group.

    Common random numbers make a config's numbers independent of which other configs run beside it, so
    a sample re-run (gradbench verify) measures the same thing as the full sweep.
    """
    sizing.check(spec, configs)
    compilation_cache.enable()
    tasks = plan_tasks(spec, configs, len(jax.local_devices()))
    tables, facts = execute(tasks, spec, allow_imports=allow_imports, progress=progress)
    return (*measured_tables(tasks, tables), facts)
