"""Training dynamics: K optax steps of every config of a sweep with a [train] section, starting from
the very networks (same draws) whose gradients the sweep measured, and the tables of what happened.

- `network`: the networks' parameters from the common random numbers, and their forward pass.
- `trainer`: the compiled trainer of one group, K steps for every config of a chunk in one jit.
- `driver`: `train_configs`, which groups, chunks and shards a sweep's configs over the trainers.
- `tables`: the `Training` tables made of the trainers' records; the summary and manifest parts.
- `datasets`: the task data, generated in-process.

Tables and columns: docs/results.md.
"""

from gradbench.training.driver import train_configs
from gradbench.training.tables import Training, log_steps, manifest_entry, with_outcomes

__all__ = ["Training", "log_steps", "manifest_entry", "train_configs", "with_outcomes"]
