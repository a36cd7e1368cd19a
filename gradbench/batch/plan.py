"""Planning: a sweep's configs -> the chunks that measure them, each with the name of its part.

A kernel (`gradbench.sweep.keys.KernelKey`) gets one chunk shape (replicates, configs), sized to the
device's memory; its lanes are cut into chunks of that shape. A chunk's part name hashes its config ids,
so the same chunk has the same name in every process, job and resumed run.

A task measures its chunk's gradients (`GRADIENTS`: layer rows) or, in sweeps with `[run] jacobian =
true`, its input-output Jacobian (`JACOBIAN`: one row per config, `gradbench.engine.jacobian`): two
tasks and two parts per chunk, so resume, shards and merge treat the second like the first.
"""

from __future__ import annotations

from dataclasses import dataclass

import jax
import pandas as pd

from gradbench.batch.parts import chunk_key
from gradbench.engine.chunks import (
    ChunkPlan,
    chunk_capacity,
    chunk_shape,
    plan_chunks,
    replicate_capacity,
)
from gradbench.sweep import grid
from gradbench.sweep.keys import KernelKey
from gradbench.sweep.spec import SweepSpec

GRADIENTS, JACOBIAN = "gradients", "jacobian"  # what a task measures


@dataclass(frozen=True)
class ChunkTask:
    """One chunk of one compile group (of one of its lanes), what it measures and the name of its part."""

    kernel_key: KernelKey
    members: pd.DataFrame
    plan: ChunkPlan
    key: str
    measurement: str = GRADIENTS

    @property
    def n_rows(self) -> int:
        """Rows of its part: one per real config (Jacobian), or its layer rows: a row per layer, and a
        residual block's one more per dense layer of its branch."""
        if self.measurement == JACOBIAN:
            return int(self.plan.real.sum())
        rows = self.members["depth"].to_numpy()
        if "branch_layers" in self.members:
            rows = rows * (1 + self.members["branch_layers"].to_numpy())
        return int(rows[self.plan.rows][self.plan.real].sum())

    @property
    def label(self) -> str:
        """The compiled kernel it runs (`group_label`)."""
        return group_label(self.kernel_key, self.measurement)


def group_label(kernel_key: KernelKey, measurement: str) -> str:
    """The compiled kernel that makes `measurement` for `kernel_key`, as the manifest's `groups`
    name it (and its parts begin): the gradient kernel keeps the config table's `group`."""
    return kernel_key.label if measurement == GRADIENTS else f"{kernel_key.label}-{measurement}"


def plan_tasks(spec: SweepSpec, configs: pd.DataFrame, devices: int) -> list[ChunkTask]:
    """Every chunk of the sweep's `configs`, kernel by kernel: one chunk shape per kernel, each chunk
    of one lane (activation, init family, depth bucket), its C axis a multiple of `devices`. With
    `spec.jacobian`, each kernel's gradient tasks are followed by a Jacobian task per chunk."""
    tasks = []
    platform = jax.local_devices()[0].platform
    for kernel_key, lanes in grid.kernel_groups(configs, spec):
        capacity = chunk_capacity(kernel_key, spec.chunk_size, platform)
        most = replicate_capacity(kernel_key, platform, devices)
        replicates = [lane["replicate"].to_numpy() for lane in lanes]
        shape = chunk_shape(replicates, capacity, multiple=devices, max_replicates=most)
        chunks = [
            (lane, plan)
            for lane in lanes
            for plan in plan_chunks(lane["replicate"].to_numpy(), shape)
        ]
        for measurement in (GRADIENTS, JACOBIAN) if spec.jacobian else (GRADIENTS,):
            label = group_label(kernel_key, measurement)
            for lane, plan in chunks:
                ids = lane["config_id"].to_numpy()[plan.rows][plan.real]
                key = chunk_key(label, ids)
                tasks.append(ChunkTask(kernel_key, lane, plan, key, measurement))
    return tasks


def measured_tables(
    tasks: list[ChunkTask], tables: list[pd.DataFrame]
) -> tuple[pd.DataFrame, pd.DataFrame | None]:
    """The layer table and the Jacobian table (None when no task measured it) of the tasks' parts."""
    kinds = {GRADIENTS: [], JACOBIAN: []}
    for task, table in zip(tasks, tables, strict=True):
        kinds[task.measurement].append(table)
    layers = pd.concat(kinds[GRADIENTS], ignore_index=True)
    jacobian = pd.concat(kinds[JACOBIAN], ignore_index=True) if kinds[JACOBIAN] else None
    return layers, jacobian


def split_plan(plan: ChunkPlan, multiple: int) -> list[ChunkPlan] | None:
    """Two smaller chunks covering `plan` (replicate rows first, then configs), or None if it is minimal."""
    r, c = plan.rows.shape
    if r > 1:
        cut = r // 2
        return [
            ChunkPlan(plan.rows[:cut], plan.real[:cut]),
            ChunkPlan(plan.rows[cut:], plan.real[cut:]),
        ]
    half = -(-(c // 2) // multiple) * multiple
    if half >= c or half == 0:
        return None
    keep = plan.real.copy()
    return [
        ChunkPlan(plan.rows[:, :half], keep[:, :half]),
        ChunkPlan(plan.rows[:, half:], keep[:, half:]),
    ]
