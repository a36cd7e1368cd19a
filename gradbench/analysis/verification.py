"""What a reproducibility review checks, and within which tolerances (pure pandas; no JAX).

`gradbench.pipeline.verify` runs the checks, and prints what it checked (tables, columns, configs, rows):

1. *configs*: `configs.parquet` and the summary's config columns equal, exactly, the expansion of the
   stored `spec.toml` (which must be the one the manifest's sha256 names); no config is missing or extra.
2. *every config*: the summary's measured columns (ratios, growth rates, first and last values, flags,
   regimes) recomputed from the stored `layers.parquet`, and its theory columns (`chi1`, `q_star`,
   `xi_c`, predicted r) from the config values: within 1e-9 (the same code on the same float64
   values), theory columns within `gradbench.analysis.compare.THEORY_TOLERANCE`.
3. *re-run*: the sampled configs measured again from the spec: `layers.parquet` and the summary
   columns of 2 against the re-run. A run with a `[train]` section re-trains the training chunks that
   hold the sampled configs, in the sweep's own chunk shapes, and compares `training.parquet`,
   `training_layers.parquet` and the summary's outcome columns of every re-trained config.

Tolerances (`gradbench.analysis.compare` says which column is compared how; ratios and growth rates get twice
the log10 tolerance, flags, booleans, regimes and `diverged_step` none):

- Gradient statistics, in log10. On the stored run's backend and device kind: float32 1e-3, float64
  1e-9 (a sampled config runs in a chunk of another shape, and the chunk layout and the processor's
  vector instructions may change XLA's summation order; measured on one machine: below 1e-6). On
  another: float32 5e-3, float64 1e-6 (other kernels, other rounding; in the chaotic phase rounding
  differences grow by sqrt(chi_1) per layer).
- Training, in log10 (losses: relative, 10^t - 1): 1e-6 where the backend, device kind, device count
  and jax and jaxlib versions are those of the stored run. There a config re-trained in its own chunk
  repeats its numbers bit for bit (measured on the CPU that made the committed reports: re-training
  all 96 configs of `clipping` and 80 of the 120 of `trainability` reproduced every value exactly).
  Trained in a chunk of another shape, it does not: a trainer compiled for another shape rounds
  differently, and gradient descent with a step too large for the network's curvature (exploding
  and chaotic-phase nets) amplifies a rounding difference by orders of magnitude within tens of
  steps. Measured on one CPU, the `clipping` sweep trained in chunks of 16 instead of 48 gave
  gradient norms up to 10^8.6 apart and final losses up to 23 times apart (a tanh net at
  sigma_w^2 = 3 trained alone parts from its sweep's loss curve by step 10), while every `trained`,
  `diverged` and `diverged_step` agreed; the momentum-trained `trainability` sweep, in chunks of 16
  instead of 40, moved by at most 1e-7 in log10. So on another setup (where chunk shapes or compiled
  code differ) verify by default compares only what does not depend on the trajectory: step 0 of the
  training tables (the initial network's loss and gradients: within 1e-7 in log10 across chunk
  shapes) within the gradient tolerance, and the baseline loss, `trained`, `diverged` and
  `diverged_step` exactly; `train_tolerance` compares every value within it.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from gradbench import results
from gradbench.analysis import classify
from gradbench.analysis import compare as comparing

ALL_UP_TO = 512  # runs with at most this many configs are verified in full by default
DEFAULT_SAMPLE = 256
TOLERANCE = {
    (True, "float32"): 1e-3,
    (True, "float64"): 1e-9,
    (False, "float32"): 5e-3,
    (False, "float64"): 1e-6,
}
TRAINING_TOLERANCE = 1e-6  # same setup: re-trained chunks repeat their numbers bit for bit
RECOMPUTED_TOLERANCE = (
    1e-9  # summary recomputed from the stored layers by the same code: measured 0
)
SIDES = (("stored", "spec"), ("stored", "recomputed"), ("stored", "re-run"))  # per section
# What verify compares of a training run on another setup: nothing that depends on the trajectory.
INITIAL_TRAINING = {
    "training": [
        "loss", "log10_loss", "log10_grad_norm", "log10_clipped_norm", "log10_update_norm",
        "log10_grad_w_first", "log10_grad_w_last", "diverged",
    ],
    "training_layers": ["log10_grad_w", "log10_grad_b"],
    "outcomes": [
        "loss_initial", "loss_baseline", "log10_grad_norm_initial", "trained", "diverged",
        "diverged_step", "trained_below",
    ],
}  # fmt: skip


# What decides whether a re-run here may be held to the stored run's tolerances (`Setup.of`).
SETUP_KEYS = ("backend", "device_kind", "local_device_count", "jax_version", "jaxlib_version")


def default_tolerance(manifest: dict, here: dict) -> float:
    """The gradient tolerance (log10) for re-running the run of `manifest` on the setup `here`
    (`SETUP_KEYS`, as the manifest records them)."""
    same_device = all(manifest.get(k) == here[k] for k in ("backend", "device_kind"))
    return TOLERANCE[(same_device, manifest.get("dtype", "float32"))]


def same_training_setup(manifest: dict, here: dict) -> bool:
    """Whether re-training on `here` uses the chunk shapes and compiled code of the stored run."""
    stored = dict(manifest)
    stored.setdefault("local_device_count", manifest.get("device_count"))
    return all(stored.get(k) == here[k] for k in SETUP_KEYS)


OTHER_SETUP_NOTE = (
    "this setup (backend, device kind, device count, jax and jaxlib versions) differs from the "
    "stored run's, so training values that depend on the trajectory were not compared: training "
    "amplifies rounding differences (see `gradbench.analysis.verification`); --train-tolerance T "
    "compares every value within T"
)


def training_tolerance(given: float | None, same_setup: bool) -> float | None:
    """The tolerance for re-trained values: `given`, else `TRAINING_TOLERANCE` on the stored run's
    setup, else None: compare only what does not depend on the trajectory (`initial_only`)."""
    if given is not None:
        return given
    return TRAINING_TOLERANCE if same_setup else None


def rerun_check(
    stored: dict, rerun: dict, tolerance: float, trained: float | None
) -> comparing.Comparison:
    """The re-run tables against the stored rows of the same configs; `trained` as
    `training_tolerance` returns it (None: the initial values only, gradient tolerance)."""
    stored = {
        name: stored[name][stored[name]["config_id"].isin(table["config_id"])]
        for name, table in rerun.items()
    }
    if trained is None:
        stored, rerun = initial_only(stored), initial_only(rerun)
    limits = comparing.Tolerance(tolerance, tolerance if trained is None else trained)
    return comparing.compare(stored, rerun, tolerance=limits, complete=True)


def choose_sample(configs: pd.DataFrame, sample: int | None, seed: int) -> pd.DataFrame:
    """The configs to re-run: `sample` of them at random with `seed`, in sweep order; None = all
    when the run has at most `ALL_UP_TO` configs, else `DEFAULT_SAMPLE`."""
    n = len(configs)
    if sample is None:
        sample = n if n <= ALL_UP_TO else DEFAULT_SAMPLE
    if sample >= n:
        return configs
    return configs.iloc[np.sort(np.random.default_rng(seed).choice(n, sample, replace=False))]


@dataclass
class Verification:
    """The checks of one `verify`, in the order of the module docstring.

    Attributes:
        sections: (title, Comparison) per check.
        notes: what was not compared, and why.
    """

    sections: list[tuple[str, comparing.Comparison]]
    notes: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return all(c.ok for _, c in self.sections)

    @property
    def mismatches(self) -> pd.DataFrame:
        """Every section's mismatches, with a `section` column."""
        return pd.concat(
            [c.mismatches.assign(section=title) for title, c in self.sections], ignore_index=True
        )

    @property
    def largest(self) -> pd.DataFrame:
        """Every section's largest differences, with a `section` column."""
        return pd.concat(
            [c.largest.assign(section=title) for title, c in self.sections], ignore_index=True
        )

    def render(self, limit: int = 20) -> str:
        lines = []
        for title, comparison in self.sections:
            lines += [
                f"== {title}: {'ok' if comparison.ok else 'MISMATCH'}",
                comparison.render(limit),
            ]
        lines += [f"note: {note}" for note in self.notes]
        return "\n".join(lines)


def configs_check(stored: results.Run, configs: pd.DataFrame) -> comparing.Comparison:
    """configs.parquet and the summary's config columns against the spec's expansion, exactly."""
    kinds = dict.fromkeys([c for c in configs.columns if c != "config_id"], "exact")
    exact = comparing.Tolerance(0.0, 0.0, 0.0)
    return comparing.combine(
        [
            comparing.compare_table(name, table, configs, tolerance=exact, kinds=kinds)
            for name, table in (("configs", stored.configs), ("summary", stored.summary))
        ],
        complete=True,
    )


def recomputed_summary(configs, layers, threshold: float, theory: pd.DataFrame) -> pd.DataFrame:
    """The summary `gradbench run` writes, from `layers`, with the theory columns given."""
    summary = classify.summarise(configs, layers, threshold)
    return summary.merge(theory, on="config_id", how="left", validate="1:1")


def initial_only(tables: dict) -> dict:
    """The re-run tables without what depends on the training trajectory (`INITIAL_TRAINING`)."""
    kept = dict(tables)
    for name, columns in INITIAL_TRAINING.items():
        table = tables[name]
        if "step" in table:
            table = table[table["step"] == 0]
        kept[name] = table[["config_id", *(k for k in ("step", "layer") if k in table), *columns]]
    return kept
