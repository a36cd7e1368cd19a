"""The file `benchmarks.end_to_end` hands the PyTorch program: a sweep's networks, one row each.

Imports nothing, so that both sides can read it: `end_to_end` (which imports gradbench and JAX) writes
it, `torch_sweep` (which must import neither) reads it, and the harness runs where torch is absent.
The file is JSON, `{"seed": int, "columns": {name: [value per network]}, "training": ...}`:

- `columns`: gradbench's config table restricted to `COLUMNS`, training runs merged (one row per
  measured network). A file written before the architecture columns existed lacks them: `column`
  reads them as `DEFAULTS` (the MLP), so old files still read.
- `training`: absent or null for a sweep without a [train] section; else `{"log_every": int,
  "columns": {...}}` with one row per training run, `COLUMNS` and `TRAIN_COLUMNS`.

`STATS` names what is measured per layer of every architecture, `RNN_STATS` the RNN's, `TRAIN_STATS`
what is recorded per logged training step (gradbench's training.parquet columns of the same names).
"""

COLUMNS = ("activation", "init_family", "sigma_w2", "sigma_b2", "depth", "width", "batch")
COLUMNS += ("replicate",)
COLUMNS += ("architecture", "branch_layers", "norm", "norm_position", "alpha", "input_scale")
# What a column reads as in a file that lacks it (an MLP); alpha is None (JSON null) outside resmlp.
DEFAULTS = {
    "architecture": "mlp",
    "branch_layers": 0,
    "norm": "none",
    "norm_position": "none",
    "alpha": None,
    "input_scale": 1.0,
}
TRAIN_COLUMNS = ("optimizer", "lr", "clip", "clip_threshold", "task", "steps", "samples")
TRAIN_COLUMNS += ("train_batch",)

STATS = ("log10_delta", "log10_grad_w", "log10_grad_b", "log10_q")
RNN_STATS = (*STATS, "log10_grad_w_sum")
TRAIN_STATS = (
    "loss",
    "log10_grad_norm",
    "log10_clipped_norm",
    "log10_update_norm",
    "log10_grad_w_first",
    "log10_grad_w_last",
    "clipped_fraction",
    "log10_grad_norm_max",
    "log10_clipped_norm_max",
    "log10_update_norm_max",
)

# What the PyTorch program trains: the rnn on the adding problem (the recurrent sweep's [train]).
TRAINABLE = {
    "architecture": ("rnn",),
    "task": ("adding",),
    "optimizer": ("sgd", "momentum", "adam"),
    "clip": ("none", "global_norm", "value"),
}


def column(columns: dict, name: str) -> list:
    """The values of column `name`, its `DEFAULTS` value per row where the file has no such column."""
    if name in columns:
        return columns[name]
    n = len(columns["depth"])
    return [DEFAULTS[name]] * n


def untrainable(training: dict | None) -> str | None:
    """Why the PyTorch program cannot train these runs (a `training` entry), or None when it can."""
    if not training:
        return None
    for name, allowed in TRAINABLE.items():
        found = sorted(set(column(training["columns"], name)) - set(allowed))
        if found:
            return (
                f"the PyTorch program trains {name} {', '.join(allowed)} only, "
                f"not {', '.join(map(str, found))}"
            )
    return None
