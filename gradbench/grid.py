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
from gradbench.spec import SweepSpec


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


def config_id(row: dict) -> str:
    """Stable hash of a canonical configuration.

    dtype and measurement mode are left out on purpose: a float64 run and a float32 run of the same
    sweep use the same draws and are compared config by config.
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
    return frame[columns]


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
