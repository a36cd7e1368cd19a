"""Expands a sweep into configuration rows, one per config, and groups the rows by compiled code.

`expand` builds the config table (with each row's `config_id` and kernel `group`), `kernel_groups`
and `train_groups` split it into the work of each compiled kernel and trainer, and `depth_buckets`
decides which depths share one: shallower configs run in the workspace of a deeper one. What a key
holds, and how a row maps to it, is `gradbench.sweep.keys`.
"""

from __future__ import annotations

import hashlib
import json
import math

import numpy as np
import pandas as pd

from gradbench import registry
from gradbench.schema import CONFIG_COLUMNS, TRAIN_CONFIG_COLUMNS
from gradbench.sweep.keys import (
    BLOCK_COLUMNS,
    KernelKey,
    StaticKey,
    TrainKey,
    kernel_members,
    static_key,
    train_key,
    train_keys,
)
from gradbench.sweep.types import SweepSpec, TrainSpec

# The key types are importable from here too: callers that expand a sweep group by them.
__all__ = [
    "KernelKey",
    "StaticKey",
    "TrainKey",
    "config_id",
    "config_ids",
    "depth_buckets",
    "expand",
    "kernel_groups",
    "static_key",
    "train_groups",
    "train_key",
    "train_rows",
]


def config_id(row: dict) -> str:
    """Stable hash of a canonical configuration.

    dtype and measurement mode are left out on purpose: a float64 run and a float32 run of the same
    sweep use the same draws and are compared config by config. Training settings enter only when
    the sweep has a [train] section, and an architecture's settings only for that architecture, so
    sweeps without them keep their ids.
    """
    canonical = {
        "seed": int(row["seed"]),
        "architecture": _architecture_id(row),
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


def _architecture_id(row: dict) -> str | dict:
    """The architecture's part of a config id: its name, with its settings when it has any."""
    settings = registry.ARCHITECTURES[row["architecture"]].settings
    if not settings:
        return row["architecture"]
    canonical = {"name": row["architecture"]}
    for key in settings:
        value = row[key]
        canonical[key] = value if isinstance(value, str) else _float_or_int(value)
    return canonical


def _float_or_int(value):
    return int(value) if isinstance(value, int | np.integer) else repr(float(value))


def config_ids(frame: pd.DataFrame) -> np.ndarray:
    """`config_id` of every row of a config table, computed column by column.

    The canonical JSON text is built from `"key": value` fragments, each distinct value encoded once
    and each distinct combination of fragments joined once, so a million configs cost a million
    joins and hashes, not a million dicts.
    """
    fields = {
        "seed": _fragments("seed", frame["seed"], int),
        "architecture": _architecture_fragments(frame),
        "loss": _fragments("loss", frame["loss"], str),
        "activation": _fragments("activation", frame["activation"], str),
        "init": _fragments("init", frame["init"], str),
        "sigma_w2": _fragments("sigma_w2", frame["sigma_w2"], _float_text),
        "sigma_b2": _fragments("sigma_b2", frame["sigma_b2"], _float_text),
        "depth": _fragments("depth", frame["depth"], int),
        "width": _fragments("width", frame["width"], int),
        "batch": _fragments("batch", frame["batch"], int),
        "replicate": _fragments("replicate", frame["replicate"], int),
    }
    if "optimizer" in frame:
        codes, texts = _json_objects(
            {
                "optimizer": _fragments("optimizer", frame["optimizer"], str),
                "lr": _fragments("lr", frame["lr"], _float_text),
                "clip": _fragments("clip", frame["clip"], str),
                "clip_threshold": _fragments("clip_threshold", frame["clip_threshold"], _threshold),
                "task": _fragments("task", frame["task"], str),
                "steps": _fragments("steps", frame["steps"], int),
                "samples": _fragments("samples", frame["samples"], int),
                "batch": _fragments("batch", frame["train_batch"], int),
                "outputs": _fragments("outputs", frame["outputs"], int),
            }
        )
        fields["train"] = codes, '"train": ' + texts
    codes, texts = _json_objects(fields)
    ids = [hashlib.sha256(text.encode()).hexdigest()[:16] for text in texts]
    return np.array(ids, dtype=object)[codes]


def _float_text(value) -> str:
    return repr(float(value))


def _threshold(value) -> str | None:
    return None if math.isnan(value) else repr(float(value))


def _architecture_fragments(frame: pd.DataFrame) -> tuple[np.ndarray, np.ndarray]:
    """`_fragments` of the architecture part of the ids (`_architecture_id`): one per distinct
    architecture and settings."""
    settings = [k for k in registry.NOT_APPLICABLE if k in frame]
    columns = frame[["architecture", *settings]]
    codes = columns.groupby(list(columns), sort=False, dropna=False).ngroup().to_numpy()
    _, first = np.unique(codes, return_index=True)
    rows = columns.iloc[first].to_dict("records")
    texts = [f'"architecture": {json.dumps(_architecture_id(r), sort_keys=True)}' for r in rows]
    return codes, np.array(texts, dtype=object)


def _fragments(key: str, column: pd.Series, canonical) -> tuple[np.ndarray, np.ndarray]:
    """Codes into the distinct values v of a column, and the text `"key": json.dumps(canonical(v))`."""
    values = column.to_numpy()
    if values.dtype.kind == "f":  # by bit pattern: -0.0 and 0.0 are distinct values, NaN is a value
        codes, uniques = pd.factorize(values.view(np.int64))
        uniques = uniques.view(np.float64)
    else:
        codes, uniques = pd.factorize(values)
    return codes, np.array([f'"{key}": {json.dumps(canonical(u))}' for u in uniques], dtype=object)


def _json_objects(
    fields: dict[str, tuple[np.ndarray, np.ndarray]],
) -> tuple[np.ndarray, np.ndarray]:
    """Codes into the distinct rows, and their text as `json.dumps(row, sort_keys=True)` writes it.

    Fragments are joined key by key; each join touches only the combinations that occur.
    """
    keys = sorted(fields)
    codes, texts = fields[keys[0]]
    for key in keys[1:]:
        more_codes, more_texts = fields[key]
        codes, pairs = pd.factorize(codes * len(more_texts) + more_codes)
        texts = texts[pairs // len(more_texts)] + ", " + more_texts[pairs % len(more_texts)]
    return codes, "{" + texts + "}"


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
    """One row per configuration, in a canonical order, with `config_id` and `group` columns.

    The order is that of `itertools.product` over the axes (the last axis varies fastest), then the
    training runs of each network. Built column by column: no Python object per config.
    """
    names = list(spec.axes)
    values = [_axis_array(spec.axis(k)) for k in names]
    cells = np.unravel_index(np.arange(math.prod(len(v) for v in values)), [len(v) for v in values])
    frame = pd.DataFrame({k: v[i] for k, v, i in zip(names, values, cells, strict=True)})
    presets = {
        init: registry.INIT_PRESETS[init].sigma_w2
        for init in spec.axis("init")
        if init in registry.INIT_PRESETS
    }
    if presets:
        preset_scale = frame["init"].map(presets)
        if "sigma_w2" in frame:
            frame["sigma_w2"] = preset_scale.fillna(frame["sigma_w2"]).astype(float)
            # A preset gives the same sigma_w2 for every value of a sigma_w axis.
            frame = frame.drop_duplicates(ignore_index=True)
        else:
            frame["sigma_w2"] = preset_scale.astype(float)
    frame = _architecture_settings(frame)
    frame["init_family"] = frame["init"].map(
        {init: registry.init_family(init).name for init in spec.axis("init")}
    )
    frame["sigma_w"] = np.sqrt(frame["sigma_w2"].to_numpy())
    frame["sigma_b"] = np.sqrt(frame["sigma_b2"].to_numpy())
    frame["loss"] = spec.loss
    frame["dtype"] = spec.dtype
    frame["measure"] = spec.measure
    frame["seed"] = spec.seed
    if spec.train is not None:
        frame = frame.merge(train_rows(spec.train), how="cross")
    frame["config_id"] = config_ids(frame)
    frame["group"] = ""
    for key, members in kernel_members(frame):
        frame.loc[members.index, "group"] = key.label
    columns = list(CONFIG_COLUMNS)
    if spec.train is not None:
        buckets = depth_buckets(frame["depth"].unique().tolist(), spec.depth_bucket_ratio)
        clips = tuple(rule for rule, _ in spec.train.clip)
        codes, keys = train_keys(frame, buckets, clips)
        frame["train_group"] = np.array([key.label for key in keys], dtype=object)[codes]
        columns += [*TRAIN_CONFIG_COLUMNS, "train_group"]
    return frame[columns]


def _architecture_settings(frame: pd.DataFrame) -> pd.DataFrame:
    """Each row's architecture settings, `registry.NOT_APPLICABLE` where its architecture has no
    such setting (and for norm_position without a norm), the repeats that leaves dropped; `alpha`,
    the residual branch scale of the row's depth, NaN outside resmlp."""
    frame = frame.copy()
    for key, absent in registry.NOT_APPLICABLE.items():
        if key not in frame:
            frame[key] = absent
            continue
        owner = next(a for a, arch in registry.ARCHITECTURES.items() if key in arch.settings)
        if key == "branch_scale":
            frame[key] = frame[key].map(_scale_text).astype(object)
        frame[key] = frame[key].where(frame["architecture"] == owner, absent)
    frame["norm_position"] = frame["norm_position"].where(frame["norm"] != "none", "none")
    frame = frame.drop_duplicates(ignore_index=True)
    residual = frame["architecture"] == "resmlp"
    frame["alpha"] = [
        registry.branch_scale(_scale_rule(rule), depth) if is_residual else math.nan
        for rule, depth, is_residual in zip(
            frame["branch_scale"], frame["depth"], residual, strict=True
        )
    ]
    return frame


def _scale_text(value) -> str:
    """A branch scale as the configs table holds it: a rule's name, or the number in repr form."""
    return value if isinstance(value, str) else repr(float(value))


def _scale_rule(text: str) -> float | str:
    return text if text in registry.BRANCH_SCALE_RULES else float(text)


def _axis_array(values: tuple) -> np.ndarray:
    """An axis's values as the column type pandas would infer for them (str, int64 or float64)."""
    if any(isinstance(v, str) for v in values):
        return np.array(values, dtype=object)
    return np.asarray(values)


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


def train_groups(configs: pd.DataFrame, spec: SweepSpec) -> list[tuple[TrainKey, pd.DataFrame]]:
    """Configs grouped by TrainKey (one compiled trainer each), in config order."""
    assert spec.train is not None
    buckets = depth_buckets(configs["depth"].unique().tolist(), spec.depth_bucket_ratio)
    clips = tuple(rule for rule, _ in spec.train.clip)
    codes, keys = train_keys(configs, buckets, clips, spec.train.log_every)
    return [(key, configs[codes == i]) for i, key in enumerate(keys)]


def kernel_groups(
    configs: pd.DataFrame, spec: SweepSpec
) -> list[tuple[KernelKey, list[pd.DataFrame]]]:
    """Configs grouped by the kernel that runs them, each group split into lanes of one chunk kind.

    A lane holds one activation, one init family, one residual block variant and one depth bucket
    (`depth_buckets`: a chunk runs as many layers as its deepest config, so the bucket bounds the
    layers a shallower config passes through), sorted by replicate, so that shared draws are
    adjacent.
    """
    buckets = depth_buckets(configs["depth"].unique().tolist(), spec.depth_bucket_ratio)
    out = []
    for key, members in kernel_members(configs):
        bucket = members["depth"].map(buckets)
        kind = [members[c] for c in ("activation", "init_family", *BLOCK_COLUMNS) if c in members]
        lanes = [
            lane.sort_values("replicate", kind="stable")
            for _, lane in members.groupby([*kind, bucket], sort=True)
        ]
        out.append((key, lanes))
    return out
