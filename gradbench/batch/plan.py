"""Planning: a sweep's configs -> the chunks that measure them, each with the name of its part.

A kernel (`gradbench.sweep.keys.KernelKey`) gets one chunk shape (replicates, configs), sized to the
device's memory; its lanes are cut into chunks of that shape. A chunk's part name hashes its config ids,
so the same chunk has the same name in every process, job and resumed run.
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


@dataclass(frozen=True)
class ChunkTask:
    """One chunk of one compile group (of one of its lanes), with the name of its part."""

    kernel_key: KernelKey
    members: pd.DataFrame
    plan: ChunkPlan
    key: str

    @property
    def n_rows(self) -> int:
        """Rows the chunk contributes to the layer table (its real configs' depths)."""
        depths = self.members["depth"].to_numpy()[self.plan.rows]
        return int(depths[self.plan.real].sum())


def plan_tasks(spec: SweepSpec, configs: pd.DataFrame, devices: int) -> list[ChunkTask]:
    """Every chunk of the sweep's `configs`, kernel by kernel: one chunk shape per kernel, each chunk
    of one lane (activation, init family, depth bucket), its C axis a multiple of `devices`."""
    tasks = []
    platform = jax.local_devices()[0].platform
    for kernel_key, lanes in grid.kernel_groups(configs, spec):
        capacity = chunk_capacity(kernel_key, spec.chunk_size, platform)
        most = replicate_capacity(kernel_key, platform, devices)
        replicates = [lane["replicate"].to_numpy() for lane in lanes]
        shape = chunk_shape(replicates, capacity, multiple=devices, max_replicates=most)
        for lane in lanes:
            for plan in plan_chunks(lane["replicate"].to_numpy(), shape):
                ids = lane["config_id"].to_numpy()[plan.rows][plan.real]
                tasks.append(ChunkTask(kernel_key, lane, plan, chunk_key(kernel_key.label, ids)))
    return tasks


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
