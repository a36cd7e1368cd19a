"""Reproducibility reviews: re-run (a sample of) a stored run's configs and compare every statistic.

Tolerances, in log10 of each statistic (a relative error of 2.3e-4 is 1e-4 in log10):
- same backend and device kind as the stored run: float32 1e-3, float64 1e-9 (the chunk layout and
  the processor's vector instructions may change XLA's summation order; measured differences on the
  same machine are below 1e-6);
- another backend or device kind: float32 5e-3, float64 1e-6 (other kernels, other rounding; in the
  chaotic phase rounding differences grow by sqrt(chi_1) per layer).
"""

from __future__ import annotations

import jax
import numpy as np

from gradbench import classify, results
from gradbench import spec as spec_module
from gradbench.compare import Comparison, compare
from gradbench.errors import SpecError
from gradbench.runner import measure_configs

ALL_UP_TO = 512  # runs with at most this many configs are verified in full by default
DEFAULT_SAMPLE = 256
TOLERANCE = {
    (True, "float32"): 1e-3,
    (True, "float64"): 1e-9,
    (False, "float32"): 5e-3,
    (False, "float64"): 1e-6,
}


def default_tolerance(manifest: dict) -> float:
    same_device = (
        manifest.get("backend") == jax.default_backend()
        and manifest.get("device_kind") == jax.devices()[0].device_kind
    )
    return TOLERANCE[(same_device, manifest.get("dtype", "float32"))]


def verify(
    run_dir,
    *,
    sample: int | None = None,
    seed: int = 0,
    tolerance: float | None = None,
    allow_imports: bool = False,
    progress: bool = False,
) -> Comparison:
    """Re-runs `sample` configs of a stored run (all of a small run by default) and compares them.

    Args:
        run_dir: a run directory written by `gradbench run`.
        sample: how many configs to re-run, chosen at random with `seed`; None = all when the run has at
            most 512 configs, else 256.
        tolerance: in log10; None = the module's documented defaults.

    Returns:
        The `Comparison` of stored (A) against re-run (B); `.ok` is the verdict.
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
    configs = stored.configs
    n = len(configs)
    if sample is None:
        sample = n if n <= ALL_UP_TO else DEFAULT_SAMPLE
    if sample < 1:
        raise SpecError("--sample", sample, "a positive number of configs")
    if sample < n:
        chosen = np.random.default_rng(seed).choice(n, size=sample, replace=False)
        configs = configs.iloc[np.sort(chosen)]
    layers, _ = measure_configs(spec, configs, allow_imports=allow_imports, progress=progress)
    summary = classify.summarise(configs, layers, spec.threshold)
    ids = set(configs["config_id"])
    return compare(
        stored.layers[stored.layers["config_id"].isin(ids)],
        stored.summary[stored.summary["config_id"].isin(ids)],
        layers,
        summary,
        tolerance=tolerance if tolerance is not None else default_tolerance(stored.manifest),
    )
