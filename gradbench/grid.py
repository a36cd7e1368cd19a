"""Expands a sweep into configuration rows and splits each row into static and dynamic parts.

The static part (`StaticKey`) is everything that changes shapes or code paths; it is both the jit cache
key and the groupby key. The dynamic part (scales, depth, replicate) becomes arrays that vmap sees.
"""

from __future__ import annotations

import hashlib
import itertools
import json
import math
from typing import NamedTuple

import pandas as pd

from gradbench import registry
from gradbench.spec import SweepSpec, TrainSpec


class StaticKey(NamedTuple):
    """What one compiled kernel is specialised on. `depth` is the bucket's largest depth."""

    architecture: str
    activation: str
    init_family: str
    width: int
    batch: int
    depth: int
    loss: str
    dtype: str
    measure: str

    @property
    def label(self) -> str:
        return (
            f"{self.activation}-{self.init_family}-w{self.width}-b{self.batch}-L{self.depth}"
            f"-{self.loss}-{self.dtype}-{self.measure}"
        )


class TrainKey(NamedTuple):
    """What one compiled trainer is specialised on: the network's StaticKey and the training code path.

    Learning rate, clip threshold and which of `clips` a config uses are not here: they are
    per-config arrays that vmap sees. `clips` lists every clipping rule of the sweep; a trainer
    computes each of them (cheap elementwise work beside the matrix products) and selects per
    config, so a clipping sweep compiles once per network group, not once per rule.
    """

    static: StaticKey
    optimizer: str
    clips: tuple[str, ...]
    task: str
    steps: int
    log_every: int
    samples: int
    batch: int
    outputs: int

    @property
    def label(self) -> str:
        return (
            f"{self.static.label}-{self.optimizer}-clip_{'+'.join(self.clips)}-{self.task}"
            f"-K{self.steps}"
            f"-n{self.samples}-b{self.batch}-o{self.outputs}"
        )


# Config columns of the training axes ([train] sections only); `clip_threshold` is NaN for "none".
TRAIN_COLUMNS = ["optimizer", "lr", "clip", "clip_threshold", "task", "steps", "samples"]
TRAIN_COLUMNS += ["train_batch", "outputs"]


def config_id(row: dict) -> str:
    """Stable hash of a canonical configuration.

    dtype and measurement mode are left out on purpose: a float64 run and a float32 run of the same
    sweep use the same draws and are compared config by config. Training settings enter only when
    the sweep has a [train] section, so sweeps without one keep their ids.
    """
    canonical = {
        "seed": int(row["seed"]),
        "architecture": row["architecture"],
        "loss": row["loss"],
        "activation": row["activation"],
        "init": row["init"],
        "sigma_w2": repr(float(row["sigma_w2"])),
        "sigma_b2": repr(float(row["sigma_b2"])),
        "depth": int(row["depth"]),
        "width": int(row["width"]),
        "batch": int(row["batch"]),
        "replicate": int(row["replicate"]),
    }
    if "optimizer" in row:
        threshold = float(row["clip_threshold"])
        canonical["train"] = {
            "optimizer": row["optimizer"],
            "lr": repr(float(row["lr"])),
            "clip": row["clip"],
            "clip_threshold": None if math.isnan(threshold) else repr(threshold),
            "task": row["task"],
            "steps": int(row["steps"]),
            "samples": int(row["samples"]),
            "batch": int(row["train_batch"]),
            "outputs": int(row["outputs"]),
        }
    return hashlib.sha256(json.dumps(canonical, sort_keys=True).encode()).hexdigest()[:16]


def depth_buckets(depths: list[int], ratio: float) -> dict[int, int]:
    """Maps each depth to its bucket's largest depth, so that padding stays below a factor `ratio`.

    Shallower configs share the kernel of a deeper one with their extra layers masked to identity;
    within a bucket the deepest is at most `ratio` times the shallowest.
    """
    bucket_of: dict[int, int] = {}
    top = None
    for d in sorted(set(depths), reverse=True):
        if top is None or d * ratio < top:
            top = d
        bucket_of[d] = top
    return bucket_of


def expand(spec: SweepSpec) -> pd.DataFrame:
    """One row per configuration, in a canonical order, with `config_id` and `group` columns."""
    names = list(spec.axes)
    rows = []
    for values in itertools.product(*(spec.axis(k) for k in names)):
        row = dict(zip(names, values, strict=True))
        init = row["init"]
        if init in registry.INIT_PRESETS:
            row["sigma_w2"] = registry.INIT_PRESETS[init].sigma_w2
        row["init_family"] = registry.init_family(init).name
        rows.append(row)
    frame = pd.DataFrame(rows)
    # Presets give the same sigma_w2 for every value of a (possibly absent) sigma_w axis.
    frame = frame.drop_duplicates(ignore_index=True)
    frame["sigma_w"] = frame["sigma_w2"].map(math.sqrt)
    frame["sigma_b"] = frame["sigma_b2"].map(math.sqrt)
    frame["architecture"] = spec.architecture
    frame["loss"] = spec.loss
    frame["dtype"] = spec.dtype
    frame["measure"] = spec.measure
    frame["seed"] = spec.seed
    if spec.train is not None:
        frame = frame.merge(train_rows(spec.train), how="cross")
    frame["config_id"] = [config_id(r) for r in frame.to_dict("records")]
    buckets = depth_buckets(frame["depth"].tolist(), spec.depth_bucket_ratio)
    frame["group"] = [static_key(r, buckets[r["depth"]]).label for r in frame.to_dict("records")]
    columns = [
        "config_id",
        "group",
        "activation",
        "init",
        "init_family",
        "sigma_w2",
        "sigma_w",
        "sigma_b2",
        "sigma_b",
        "depth",
        "width",
        "batch",
        "replicate",
        "architecture",
        "loss",
        "dtype",
        "measure",
        "seed",
    ]
    if spec.train is not None:
        clips = tuple(rule for rule, _ in spec.train.clip)
        frame["train_group"] = [
            train_key(r, buckets[r["depth"]], clips).label for r in frame.to_dict("records")
        ]
        columns += [*TRAIN_COLUMNS, "train_group"]
    return frame[columns]


def train_rows(train: TrainSpec) -> pd.DataFrame:
    """One row per training run of a network: optimizer x lr x (clip rule, threshold)."""
    rules = [(r, t) for r, ts in train.clip for t in (ts or (math.nan,))]
    rows = [
        {
            "optimizer": opt,
            "lr": float(lr),
            "clip": rule,
            "clip_threshold": float(t),
            "task": train.task,
            "steps": train.steps,
            "samples": train.samples,
            "train_batch": train.batch,
            "outputs": train.outputs,
        }
        for opt in train.optimizer.values
        for lr in train.lr.values
        for rule, t in rules
    ]
    return pd.DataFrame(rows)


def train_key(row: dict, bucket_depth: int, clips: tuple[str, ...], log_every: int = 0) -> TrainKey:
    """The trainer of a config row (`log_every` only changes what is recorded, not the group)."""
    return TrainKey(
        static=static_key(row, bucket_depth),
        optimizer=row["optimizer"],
        clips=clips,
        task=row["task"],
        steps=int(row["steps"]),
        log_every=int(log_every),
        samples=int(row["samples"]),
        batch=int(row["train_batch"]),
        outputs=int(row["outputs"]),
    )


def train_groups(configs: pd.DataFrame, spec: SweepSpec) -> list[tuple[TrainKey, pd.DataFrame]]:
    """Configs grouped by TrainKey (one compiled trainer each), in config order."""
    assert spec.train is not None
    buckets = depth_buckets(configs["depth"].tolist(), spec.depth_bucket_ratio)
    clips = tuple(rule for rule, _ in spec.train.clip)
    keys = [
        train_key(r, buckets[r["depth"]], clips, spec.train.log_every)
        for r in configs.to_dict("records")
    ]
    out = []
    for key in dict.fromkeys(keys):
        out.append((key, configs[[k == key for k in keys]]))
    return out


def static_key(row: dict, bucket_depth: int) -> StaticKey:
    return StaticKey(
        architecture=row["architecture"],
        activation=row["activation"],
        init_family=row["init_family"],
        width=int(row["width"]),
        batch=int(row["batch"]),
        depth=int(bucket_depth),
        loss=row["loss"],
        dtype=row["dtype"],
        measure=row["measure"],
    )


def groups(configs: pd.DataFrame, spec: SweepSpec) -> list[tuple[StaticKey, pd.DataFrame]]:
    """Configs grouped by StaticKey, each group sorted by replicate so that shared draws are adjacent."""
    buckets = depth_buckets(configs["depth"].tolist(), spec.depth_bucket_ratio)
    keys = [static_key(r, buckets[r["depth"]]) for r in configs.to_dict("records")]
    out = []
    for key in dict.fromkeys(keys):
        members = configs[[k == key for k in keys]]
        out.append((key, members.sort_values("replicate", kind="stable")))
    return out
