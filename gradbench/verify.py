"""Reproducibility reviews: check every number a stored run states, re-running a sample of its configs.

`verify` checks, and prints what it checked (tables, columns, configs and rows):

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

import jax
import jaxlib
import numpy as np
import pandas as pd

from gradbench import results
from gradbench.analysis import classify
from gradbench.analysis import compare as comparing
from gradbench.batch.runner import measure_configs, with_theory
from gradbench.errors import SpecError
from gradbench.schema import THEORY_COLUMNS
from gradbench.sweep import grid
from gradbench.sweep import spec as spec_module

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


def default_tolerance(manifest: dict) -> float:
    """The gradient tolerance (log10) for re-running the run of `manifest` here."""
    same_device = (
        manifest.get("backend") == jax.default_backend()
        and manifest.get("device_kind") == jax.devices()[0].device_kind
    )
    return TOLERANCE[(same_device, manifest.get("dtype", "float32"))]


def same_training_setup(manifest: dict) -> bool:
    """Whether re-training here uses the chunk shapes and compiled code of the stored run."""
    devices = manifest.get("local_device_count", manifest.get("device_count"))
    return (
        manifest.get("backend") == jax.default_backend()
        and manifest.get("device_kind") == jax.devices()[0].device_kind
        and devices == len(jax.local_devices())
        and manifest.get("jax_version") == jax.__version__
        and manifest.get("jaxlib_version") == jaxlib.__version__
    )


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


def verify(
    run_dir,
    *,
    sample: int | None = None,
    seed: int = 0,
    tolerance: float | None = None,
    train_tolerance: float | None = None,
    allow_imports: bool = False,
    progress: bool = False,
) -> Verification:
    """Checks a stored run against its spec, and re-runs `sample` of its configs (module docstring).

    Args:
        run_dir: a run directory written by `gradbench run` or `merge`.
        sample: how many configs to re-run, chosen at random with `seed`; None = all when the run has
            at most 512 configs, else 256.
        seed: the seed of the sample.
        tolerance: for the gradient statistics, in log10; None = the module's documented defaults.
        train_tolerance: for training losses and norms, in log10; None = 1e-6 on the stored run's
            setup, elsewhere only what does not depend on the trajectory is compared.
        allow_imports: permit activations given as "package.module:function".
        progress: print progress to stderr.

    Returns:
        The `Verification`; `.ok` is the verdict.

    Raises:
        SpecError: not a run directory, an edited spec.toml, a bad `sample`, or training tables
            missing from a run whose spec trains.
    """
    stored = results.load(run_dir)
    spec = spec_module.parse(
        stored.spec_text, source=f"{run_dir}/spec.toml", allow_imports=allow_imports
    )
    if spec.sha256 != stored.manifest.get("spec_sha256"):
        raise SpecError(
            f"{run_dir}/spec.toml",
            "<edited>",
            "the spec.toml the run was made from (sha256 in manifest.json)",
        )
    configs = grid.expand(spec)
    n = len(configs)
    if sample is None:
        sample = n if n <= ALL_UP_TO else DEFAULT_SAMPLE
    if sample < 1:
        raise SpecError("--sample", sample, "a positive number of configs")
    chosen = configs
    if sample < n:
        chosen = configs.iloc[np.sort(np.random.default_rng(seed).choice(n, sample, replace=False))]
    stored_tables = comparing.run_tables(stored)
    if spec.train is not None:
        missing = [name for name in INITIAL_TRAINING if stored_tables[name] is None]
        if missing:
            raise SpecError(
                str(run_dir),
                f"<no {', '.join(missing)} tables>",
                "a run directory written by gradbench run: its spec has a [train] section, so "
                "data/training.parquet, data/training_layers.parquet and the summary's outcome "
                "columns belong to it",
            )

    theory = with_theory(configs)[["config_id", *THEORY_COLUMNS]]  # of the config values only
    recomputed = _summary(configs, stored.layers, spec.threshold, theory)
    same = comparing.Tolerance(RECOMPUTED_TOLERANCE, RECOMPUTED_TOLERANCE)
    sections = [
        (
            "configs: the stored tables against the expansion of spec.toml",
            _configs(stored, configs),
        ),
        (
            f"every config ({n}): the summary recomputed from the stored layers",
            comparing.compare(
                {"summary": stored.summary},
                {"summary": recomputed},
                tolerance=same,
                complete=True,
            ),
        ),
    ]
    title, rerun, notes = _rerun(
        spec,
        configs,
        chosen,
        stored_tables,
        theory=theory,
        same_setup=same_training_setup(stored.manifest),
        tolerance=tolerance if tolerance is not None else default_tolerance(stored.manifest),
        train_tolerance=train_tolerance,
        allow_imports=allow_imports,
        progress=progress,
    )
    sections.append((title, rerun))
    labels = comparing.config_labels(configs)
    for (_, comparison), sides in zip(sections, SIDES, strict=True):
        comparison.labels, comparison.sides = labels, sides
    return Verification(sections, notes)


def _rerun(
    spec: spec_module.SweepSpec,
    configs: pd.DataFrame,
    chosen: pd.DataFrame,
    stored_tables: dict,
    *,
    theory: pd.DataFrame,
    same_setup: bool,
    tolerance: float,
    train_tolerance: float | None,
    allow_imports: bool,
    progress: bool,
) -> tuple[str, comparing.Comparison, list[str]]:
    """Check 3 of the module docstring: (title, comparison, notes)."""
    layers, _ = measure_configs(spec, chosen, allow_imports=allow_imports, progress=progress)
    rerun = {"layers": layers, "summary": _summary(chosen, layers, spec.threshold, theory)}
    title = f"re-run of {len(chosen)} of {len(configs)} configs"
    notes = []
    trained = tolerance
    if spec.train is not None:
        from gradbench.training import train

        training = train.train_configs(
            spec, configs, allow_imports=allow_imports, progress=progress, only=chosen["config_id"]
        )
        rerun |= {
            "training": training.steps,
            "training_layers": training.layers,
            "outcomes": training.outcomes,
        }
        title += f" and re-training of the {len(training.outcomes)} configs of their chunks"
        if train_tolerance is not None:
            trained = train_tolerance
        elif same_setup:
            trained = TRAINING_TOLERANCE
        else:
            notes.append(
                "this setup (backend, device kind, device count, jax and jaxlib versions) differs "
                "from the stored run's, so training values that depend on the trajectory were not "
                "compared: training amplifies rounding differences (see `gradbench.verify`); "
                "--train-tolerance T compares every value within T"
            )
    stored = {}
    for name, table in rerun.items():
        stored[name] = stored_tables[name][
            stored_tables[name]["config_id"].isin(table["config_id"])
        ]
    if notes:
        stored, rerun = _initial_only(stored), _initial_only(rerun)
    comparison = comparing.compare(
        stored, rerun, tolerance=comparing.Tolerance(tolerance, trained), complete=True
    )
    return title, comparison, notes


def _configs(stored: results.Run, configs: pd.DataFrame) -> comparing.Comparison:
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


def _summary(configs, layers, threshold: float, theory: pd.DataFrame) -> pd.DataFrame:
    """The summary `gradbench run` writes, from `layers`, with the theory columns given."""
    summary = classify.summarise(configs, layers, threshold)
    return summary.merge(theory, on="config_id", how="left", validate="1:1")


def _initial_only(tables: dict) -> dict:
    """The re-run tables without what depends on the training trajectory (`INITIAL_TRAINING`)."""
    kept = dict(tables)
    for name, columns in INITIAL_TRAINING.items():
        table = tables[name]
        if "step" in table:
            table = table[table["step"] == 0]
        kept[name] = table[["config_id", *(k for k in ("step", "layer") if k in table), *columns]]
    return kept
