"""The static part of a configuration: what a compiled kernel or trainer is specialised on.

Everything that changes shapes or code paths is in a key, which is both a jit cache key and a groupby
key: `KernelKey` for the gradient kernel, whose activation, init family and depth are runtime values,
and `TrainKey` (around a network's `StaticKey`) for a trainer. A key holds the deepest depth of its
group; each config's own depth, its scales, replicate, learning rate and clip threshold, and the
kernel's branch choices are arrays that the compiled code sees. This module maps config rows to their
keys; `gradbench.sweep.grid` builds the rows and groups them.
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np
import pandas as pd

from gradbench import registry


class StaticKey(NamedTuple):
    """What one network of a compiled trainer is specialised on. `depth` is the bucket's largest;
    `branch_layers`, `norm` and `norm_position` are resmlp's (`registry.NOT_APPLICABLE` otherwise)."""

    architecture: str
    activation: str
    init_family: str
    width: int
    batch: int
    depth: int
    loss: str
    dtype: str
    measure: str
    branch_layers: int = 0
    norm: str = "none"
    norm_position: str = "none"

    @property
    def label(self) -> str:
        return (
            f"{architecture_label(self)}{self.activation}-{self.init_family}-w{self.width}"
            f"-b{self.batch}-L{self.depth}-{self.loss}-{self.dtype}-{self.measure}"
        )


def architecture_label(key: StaticKey) -> str:
    """The part of a trainer's label that names a non-MLP architecture and its variant."""
    if key.architecture == "mlp":
        return ""
    if key.architecture == "resmlp":
        norm = "" if key.norm == "none" else f"-{key.norm_position}{key.norm}"
        return f"resmlp{key.branch_layers}{norm}-"
    return f"{key.architecture}-"


class KernelKey(NamedTuple):
    """What one compiled gradient kernel is specialised on: shapes and code paths, none of the axes
    a sweep varies but width and batch.

    A chunk picks one of `activations` and one of `init_families` at run time (unbatched
    `lax.switch` indices, so only the chosen branch runs), and its configs may have any depth up to
    `depth`, the workspace's: the deepest config of the group. A residual kernel likewise picks one
    of its `blocks`, the (branch_layers, norm, norm_position) variants of its configs.
    """

    architecture: str
    width: int
    batch: int
    depth: int
    loss: str
    dtype: str
    measure: str
    activations: tuple[str, ...]
    init_families: tuple[str, ...]
    blocks: tuple[tuple[int, str, str], ...] = ()

    @property
    def label(self) -> str:
        return (
            f"{self.architecture}-w{self.width}-b{self.batch}-L{self.depth}-{self.loss}"
            f"-{self.dtype}-{self.measure}-{'+'.join(self.init_families)}"
        )

    @property
    def branch_layers(self) -> int:
        """The most dense layers a residual branch of this kernel has (0 for other architectures)."""
        return max((b for b, _, _ in self.blocks), default=0)


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


def static_key(row: dict, bucket_depth: int) -> StaticKey:
    """The network of a config row, in a trainer compiled for its depth bucket's deepest config."""
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
        branch_layers=int(row.get("branch_layers", 0)),
        norm=row.get("norm", "none"),
        norm_position=row.get("norm_position", "none"),
    )


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


# The config columns a gradient kernel is specialised on (besides its deepest depth and its branches).
KERNEL_COLUMNS = ["architecture", "width", "batch", "loss", "dtype", "measure"]
# The columns of a residual block's variant (`KernelKey.blocks`), in the order of its tuples.
BLOCK_COLUMNS = ["branch_layers", "norm", "norm_position"]


def kernel_members(configs: pd.DataFrame) -> list[tuple[KernelKey, pd.DataFrame]]:
    """Each gradient kernel of a config table with the rows it runs, in order of appearance: the
    kernel's depth is its deepest row's, its branches the activations and init families it runs."""
    # Pre-drawn families (`registry.PREDRAWN_FAMILIES`) get a kernel of their own.
    predrawn = configs["init_family"].isin(list(registry.PREDRAWN_FAMILIES))
    own = configs["init_family"].where(predrawn, "")
    out = []
    for values, members in configs.groupby(
        [*(configs[c] for c in KERNEL_COLUMNS), own], sort=False
    ):
        group = dict(zip(KERNEL_COLUMNS, values[:-1], strict=True))
        key = KernelKey(
            architecture=group["architecture"],
            width=int(group["width"]),
            batch=int(group["batch"]),
            depth=int(members["depth"].max()),
            loss=group["loss"],
            dtype=group["dtype"],
            measure=group["measure"],
            activations=tuple(sorted(members["activation"].unique())),
            init_families=tuple(sorted(members["init_family"].unique())),
            blocks=block_variants(members) if group["architecture"] == "resmlp" else (),
        )
        out.append((key, members))
    return out


def block_variants(rows: pd.DataFrame) -> tuple[tuple[int, str, str], ...]:
    """The distinct (branch_layers, norm, norm_position) of residual config rows, sorted."""
    distinct = rows[BLOCK_COLUMNS].drop_duplicates().itertuples(index=False)
    return tuple(sorted((int(b), str(n), str(p)) for b, n, p in distinct))


def train_keys(
    configs: pd.DataFrame, buckets: dict[int, int], clips: tuple[str, ...], log_every: int = 0
) -> tuple[np.ndarray, list[TrainKey]]:
    """Each row's index into its table's distinct TrainKeys, and those keys in order of appearance."""
    fields = [*StaticKey._fields, "optimizer", "task", "steps", "samples", "train_batch", "outputs"]
    columns = configs[fields].assign(depth=configs["depth"].map(buckets))
    codes, rows = _distinct_rows(columns)
    keys = [train_key(row, row["depth"], clips, log_every) for row in rows]
    return codes, keys


def _distinct_rows(columns: pd.DataFrame) -> tuple[np.ndarray, list[dict]]:
    """Each row's index into the table's distinct rows, and those rows in order of appearance."""
    codes = columns.groupby(list(columns), sort=False).ngroup().to_numpy()
    _, first = np.unique(codes, return_index=True)
    return codes, columns.iloc[first].to_dict("records")
