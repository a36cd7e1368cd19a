"""A validated sweep as frozen values: `SweepSpec`, its `[train]` section `TrainSpec`, and `Axis`.

These are what every later stage receives (grid expansion, the kernels, the trainer, the manifest);
they hold checked values only, so nothing downstream validates user input again. Reading a sweep file
into them is `gradbench.sweep.spec`.
"""

from __future__ import annotations

import hashlib
import math
from dataclasses import dataclass, field

from gradbench.schema import axis_scale


@dataclass(frozen=True)
class Axis:
    """The values of one swept quantity and the scale it is drawn on: "log" for a logspace and for a
    list that `gradbench.schema.axis_scale` calls log, else "linear"."""

    values: tuple
    scale: str = "linear"

    def manifest_entry(self) -> dict:
        """This axis as the manifest's `axes.<name>` records it."""
        return {"values": list(self.values), "scale": self.scale}


@dataclass(frozen=True)
class TrainSpec:
    """The `[train]` section: K optimiser steps for every config (gradbench.training).

    Attributes:
        optimizer: optimiser names (an axis; static: one compiled trainer per name).
        lr: learning rates (an axis; dynamic: vmapped, never recompiles).
        clip: (rule, thresholds) per clipping rule; thresholds are empty for "none" and are a
            dynamic, vmapped axis otherwise.
        steps: K; log_every: record every this many steps (and after the last one).
        task: "teacher", "classification" or "digits" (gradbench.training.datasets); samples: data set
            size; batch: examples per step (= samples: full-batch); outputs: regression targets or
            classes (digits: always 10).
        trained_below: a config "trained" when it did not diverge and its final loss is below this
            fraction of the task's baseline loss (gradbench.training.datasets.baseline_loss).
        chunk_size: configs per trainer call (default: from a memory estimate).
    """

    optimizer: Axis
    lr: Axis
    clip: tuple[tuple[str, tuple[float, ...]], ...]
    steps: int
    log_every: int
    task: str
    samples: int
    batch: int
    outputs: int
    trained_below: float
    chunk_size: int | None

    @property
    def n_runs(self) -> int:
        """Training runs per network configuration."""
        rules = sum(max(1, len(t)) for _, t in self.clip)
        return len(self.optimizer.values) * len(self.lr.values) * rules

    def swept_axes(self) -> dict[str, dict]:
        """The training axes with more than one value (optimizer, lr, clip, clip_threshold), as the
        manifest's `axes` records them; clip_threshold holds the thresholds of every rule, sorted."""
        thresholds = sorted({v for _, values in self.clip for v in values})
        axes = {
            "optimizer": {"values": list(self.optimizer.values), "scale": "linear"},
            "lr": self.lr.manifest_entry(),
            "clip": {"values": [rule for rule, _ in self.clip], "scale": "linear"},
            "clip_threshold": {"values": thresholds, "scale": axis_scale(thresholds)},
        }
        return {name: axis for name, axis in axes.items() if len(axis["values"]) > 1}


@dataclass(frozen=True)
class SweepSpec:
    """A validated sweep. Scale axes are stored squared (`sigma_w2`, `sigma_b2`) whatever the file used.

    `axes` holds the network axes in the order the grid expands them (the last varies fastest).

    Attributes:
        sigma_w_given: "sigma_w" or "sigma_w2", whichever the file used (None when only presets are used).
        jacobian_probes: random probes per input of the input-output Jacobian measurement
            (`[run] jacobian = true`, `gradbench.engine.jacobian`); None: the Jacobian is not measured.
    """

    name: str
    seed: int
    description: str
    source: str
    text: str
    loss: str
    axes: dict[str, Axis]
    sigma_w_given: str | None
    sigma_b_given: str
    threshold: float
    dtype: str
    measure: str
    chunk_size: int | None
    depth_bucket_ratio: float
    imports: tuple[str, ...] = field(default=())
    train: TrainSpec | None = None
    jacobian_probes: int | None = None

    @property
    def sha256(self) -> str:
        return hashlib.sha256(self.text.encode()).hexdigest()

    def axis(self, key: str) -> tuple:
        return self.axes[key].values

    @property
    def architectures(self) -> tuple[str, ...]:
        return self.axis("architecture")

    @property
    def jacobian(self) -> bool:
        """Whether the run measures the input-output Jacobian (`[run] jacobian = true`)."""
        return self.jacobian_probes is not None

    @property
    def n_configs(self) -> int:
        networks = math.prod(len(a.values) for a in self.axes.values())
        return networks * (self.train.n_runs if self.train else 1)

    def swept_axes(self) -> dict[str, dict]:
        """The manifest's `axes`: each network axis with more than one value as {"values": [...],
        "scale": ...}, then the swept training axes (`TrainSpec.swept_axes`)."""
        network = {
            name: axis.manifest_entry() for name, axis in self.axes.items() if len(axis.values) > 1
        }
        return {**network, **(self.train.swept_axes() if self.train else {})}
