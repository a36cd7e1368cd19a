"""The plain PyTorch program that `benchmarks.end_to_end` races gradbench against, as a whole process.

`python -m benchmarks.torch_sweep CONFIGS.json [--threads N] [--out STATS.npz]` computes, for every
network listed in CONFIGS.json, what gradbench measures at initialisation for the probe loss
J = mean_b <u_b, W_out h_b>: per layer (mlp), residual block and dense layer (resmlp) or step (rnn)
the log10 norms of `benchmarks.torch_nets`. Where the file lists training runs (the recurrent
sweep's [train]), it then trains them as gradbench does (`benchmarks.torch_training`).

It is written the way a user would write it, favourably: one module per structure, visited in
order of structure, its weights re-initialised in place per config; hidden gradients kept with
`retain_grad`. It draws its own weights and data: same distributions as gradbench, not the same
numbers. Inputs x and probe directions u ~ N(0, 1) are drawn once per (replicate, batch, width),
as gradbench shares them within a replicate (the rnn's input sequence once per (replicate, batch,
width, T)).

It imports numpy and torch only, never JAX or gradbench, so the process pays what a PyTorch user's
pays. CONFIGS.json is `benchmarks.networks_file`'s format; `--out` writes the statistics as
gradbench's tables (`layer_table`, `training_tables`); the last line printed is a JSON object with
the loops' seconds.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
import torch

from benchmarks import torch_training
from benchmarks.networks_file import COLUMNS, RNN_STATS, TRAIN_STATS, column
from benchmarks.torch_nets import MLP, RNN, ResMLP


def rows_of(columns: dict) -> list[dict]:
    """One dict per network, with every `COLUMNS` entry (defaults where the file has none)."""
    values = {name: column(columns, name) for name in COLUMNS}
    return [{name: values[name][i] for name in COLUMNS} for i in range(len(values["depth"]))]


def structure(row: dict) -> tuple:
    """What a network's module depends on; configs of one structure differ in their draws only."""
    keys = ("architecture", "activation", "depth", "width", "branch_layers", "norm")
    return (*(row[k] for k in keys), row["norm_position"])


def build(architecture, activation, depth, width, branch_layers, norm, norm_position):
    if architecture == "mlp":
        return MLP(activation, depth, width)
    if architecture == "resmlp":
        return ResMLP(activation, depth, width, branch_layers, norm, norm_position)
    if architecture == "rnn":
        return RNN(activation, width)
    raise ValueError(f"architecture {architecture!r}: one of mlp, resmlp, rnn")


def layer_statistics(columns: dict[str, list], seed: int) -> list[np.ndarray]:
    """The statistics of every network, in the order of `columns`: (4, depth) for an mlp,
    (4, depth, 1 + branch_layers) for a resmlp, (5, depth) for an rnn (`torch_nets`)."""
    rows = rows_of(columns)
    g = torch.Generator().manual_seed(seed)
    nets: dict[tuple, object] = {}
    data: dict[tuple, tuple[torch.Tensor, torch.Tensor]] = {}
    out: list[np.ndarray | None] = [None] * len(rows)
    for i in sorted(range(len(rows)), key=lambda i: structure(rows[i])):
        row = rows[i]
        shape = structure(row)
        if shape not in nets:
            nets.clear()  # one structure at a time: its modules' memory is freed
            nets[shape] = build(*shape)
        depth, width, batch = int(row["depth"]), int(row["width"]), int(row["batch"])
        recurrent = row["architecture"] == "rnn"
        data_key = (int(row["replicate"]), batch, width, depth if recurrent else 0)
        if data_key not in data:
            x_shape = (depth, batch, width) if recurrent else (batch, width)
            data[data_key] = (
                torch.randn(*x_shape, generator=g),
                torch.randn(batch, width, generator=g),
            )
        nets[shape].draw(row, g)
        out[i] = nets[shape].measure(*data[data_key])
    return out


def layer_table(stats: list[np.ndarray]) -> dict[str, np.ndarray]:
    """The statistics as gradbench's layers table: one row per (network, layer, sublayer), the
    `RNN_STATS` columns NaN where an architecture has no such statistic."""
    parts = []
    for network, s in enumerate(stats):
        s = s if s.ndim == 3 else s[:, :, None]  # (stats, layers, sublayers)
        _, layers, sublayers = s.shape
        part = {
            "network": np.full(layers * sublayers, network),
            "layer": np.repeat(np.arange(1, layers + 1), sublayers),
            "sublayer": np.tile(np.arange(sublayers), layers),
        }
        for k, name in enumerate(RNN_STATS):
            part[name] = s[k].reshape(-1) if k < len(s) else np.full(layers * sublayers, np.nan)
        parts.append(part)
    return {name: np.concatenate([p[name] for p in parts]) for name in parts[0]}


def training_tables(records: list[dict]) -> dict[str, np.ndarray]:
    """The training records as gradbench's training and training_layers tables, prefixed
    `training_` and `training_layers_`; `run` is the row of the networks file's training entry."""
    out = {}
    steps = [len(r["step"]) for r in records]
    out["training_run"] = np.repeat(np.arange(len(records)), steps)
    for name in ("step", *TRAIN_STATS, "diverged"):
        out[f"training_{name}"] = np.concatenate([r[name] for r in records])
    layers = [r["grad_w"].shape[1] for r in records]
    cells = [s * n for s, n in zip(steps, layers, strict=True)]
    out["training_layers_run"] = np.repeat(np.arange(len(records)), cells)
    out["training_layers_step"] = np.concatenate(
        [np.repeat(r["step"], n) for r, n in zip(records, layers, strict=True)]
    )
    out["training_layers_layer"] = np.concatenate(
        [np.tile(np.arange(1, n + 1), s) for s, n in zip(steps, layers, strict=True)]
    )
    for name in ("grad_w", "grad_b"):
        out[f"training_layers_log10_{name}"] = np.concatenate(
            [r[name].reshape(-1) for r in records]
        )
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.torch_sweep", description=__doc__)
    parser.add_argument("configs", type=Path, help="the JSON file benchmarks.end_to_end writes")
    parser.add_argument("--threads", type=int, help="torch threads (default: PyTorch's own)")
    parser.add_argument("--out", type=Path, help="write the statistics here (.npz)")
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    document = json.loads(args.configs.read_text())
    seed = int(document["seed"])
    start = time.perf_counter()
    stats = layer_statistics(document["columns"], seed)
    measured = time.perf_counter()
    training = document.get("training")
    records = torch_training.training_runs(training, seed, column) if training else []
    trained = time.perf_counter()
    if args.out:
        tables = layer_table(stats)
        tables.update(training_tables(records) if records else {})
        np.savez(args.out, **tables)
    facts = {
        "networks": len(stats),
        "runs": len(records),
        "loop_seconds": trained - start,
        "statistics_seconds": measured - start,
        "training_seconds": trained - measured,
        "threads": torch.get_num_threads(),
    }
    print(json.dumps(facts))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
