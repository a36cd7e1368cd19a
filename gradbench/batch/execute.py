"""Execution: chunks -> compiled kernel calls -> per-layer tables, each stored as a part when asked.

Kernels are compiled lazily, once per (kernel, chunk shape), and their compile and run seconds are the
facts the manifest records per group. A chunk that runs out of device memory is split and retried.
"""

from __future__ import annotations

import contextlib
import time

import jax
import numpy as np
import pandas as pd

from gradbench.batch import sizing
from gradbench.batch.parts import PartStore
from gradbench.batch.plan import ChunkTask, plan_tasks, split_plan
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
from gradbench.engine.kernel import RawStats, make_kernel, make_weight_draw, new_workspace, predrawn
from gradbench.sweep.keys import KernelKey
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
    bar = Progress(sum(int(t.plan.real.sum()) for t in tasks), enabled=progress)
    if reused:
        bar.note(f"resuming: {reused} of {len(tasks)} chunks already done in {store.directory}")
    kernels = Kernels(spec, allow_imports)
    tables = []
    with jax.enable_x64(True) if spec.dtype == "float64" else contextlib.nullcontext():
        for task, table in zip(tasks, stored, strict=True):
            fact = kernels.fact(task)
            fact["chunks"] += 1
            resumed = table is not None
            if resumed:
                fact["chunks_resumed"] += 1
            else:
                t0, compiling = time.perf_counter(), fact["compile_seconds"]
                table = kernels.chunk_table(task.kernel_key, task.members, task.plan)
                spent = time.perf_counter() - t0 - (fact["compile_seconds"] - compiling)
                fact["run_seconds"] = round(fact["run_seconds"] + spent, 3)
                if store:
                    store.save(task.key, table)
            tables.append(table)
            bar.update(int(task.plan.real.sum()), task.kernel_key.label, computed=not resumed)
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
            task.kernel_key.label,
            {
                "group": task.kernel_key.label,
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

    def chunk_table(
        self, kernel_key: KernelKey, members: pd.DataFrame, plan: ChunkPlan
    ) -> pd.DataFrame:
        """The chunk's layer table; a chunk that runs out of device memory is split in two and retried.

        Raises:
            SpecError: a chunk of one config per device still runs out of memory.
        """
        try:
            weights = None
            if predrawn(kernel_key):
                weights = self.weights(kernel_key, chunk_replicates(members, plan))
            inputs = chunk_inputs(kernel_key, members, plan, self.mesh, weights)
            raw = jax.device_get(self.call(kernel_key, inputs))
        except Exception as exc:  # XLA reports exhausted memory as a runtime error
            self.workspace = self.stack = None
            if "RESOURCE_EXHAUSTED" not in str(exc):
                raise
            halves = split_plan(plan, self.mesh.size)
            if halves is None:
                raise sizing.too_large_alone(self.spec, kernel_key, exc) from exc
            self.facts[kernel_key.label]["out_of_memory_splits"] += 1
            return pd.concat(
                [self.chunk_table(kernel_key, members, h) for h in halves], ignore_index=True
            )
        return layer_table(members, plan, raw, self.spec.measure)

    def weights(self, kernel_key: KernelKey, replicates: np.ndarray):
        """Pre-drawn weights of a chunk's replicates; kept while the next chunks use the same ones."""
        (family,) = kernel_key.init_families
        shape = (kernel_key.width, kernel_key.depth, family)
        key = (*shape, tuple(replicates))
        if self.stack is None or self.stack[0] != key:
            self.stack = None  # free the previous chunk's before drawing
            draw = self.compile(
                ("draw", *shape, len(replicates)),
                kernel_key,
                lambda: make_weight_draw(*shape).lower(self.seed, replicates),
            )
            self.stack = (key, chunk_weights(draw, self.seed, replicates, self.mesh))
        return self.stack[1]

    def call(self, kernel_key: KernelKey, inputs) -> RawStats:
        """One kernel call. The workspace of the latest chunk shape is kept: each call donates it."""
        key = (kernel_key, inputs.sigma_w.shape)
        if self.workspace is None or self.workspace[0] != key:
            self.workspace = None  # free the previous shape's before allocating
            self.workspace = (key, new_workspace(kernel_key, inputs, self.mesh))
        kernel = self.kernel(kernel_key, inputs, self.workspace[1])
        raw, workspace = kernel(self.seed, inputs, self.workspace[1])
        self.workspace = (key, workspace)
        return raw

    def kernel(self, kernel_key: KernelKey, inputs, workspace):
        return self.compile(
            (kernel_key, inputs.sigma_w.shape),
            kernel_key,
            lambda: make_kernel(kernel_key, self.allow_imports).lower(self.seed, inputs, workspace),
        )

    def compile(self, key, kernel_key: KernelKey, lower):
        """The executable of `lower()`, compiled once per `key`, counted in `kernel_key`'s group."""
        return self.executables.get(key, lower, self.facts[kernel_key.label])


def compute_layers(
    spec: SweepSpec, configs: pd.DataFrame, *, allow_imports: bool = False, progress: bool = False
) -> tuple[pd.DataFrame, list[dict]]:
    """Per-layer table of any subset of a sweep's configs, and facts about each compile group.

    Common random numbers make a config's numbers independent of which other configs run beside it, so
    a sample re-run (gradbench verify) measures the same thing as the full sweep.
    """
    sizing.check(spec, configs)
    compilation_cache.enable()
    tasks = plan_tasks(spec, configs, len(jax.local_devices()))
    tables, facts = execute(tasks, spec, allow_imports=allow_imports, progress=progress)
    return pd.concat(tables, ignore_index=True), facts
