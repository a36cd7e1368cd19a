"""What a run records about itself (manifest.json): the sweep, the machine, JAX and the compile groups.

Written by the process that assembles a run; `gradbench.analysis.verification` compares a stored
run's setup (`setup()`'s keys) with the machine that re-runs it.
"""

from __future__ import annotations

import datetime
import os
import subprocess
from pathlib import Path

import jax
import jaxlib
import pandas as pd

from gradbench import __version__
from gradbench.schema import SCHEMA_VERSION
from gradbench.sweep.spec import SweepSpec


def setup() -> dict:
    """This process's backend, devices and JAX versions, as a manifest records them."""
    return {
        "backend": jax.default_backend(),
        "device_kind": jax.devices()[0].device_kind,
        "local_device_count": len(jax.local_devices()),
        "jax_version": jax.__version__,
        "jaxlib_version": jaxlib.__version__,
    }


def build_manifest(spec: SweepSpec, configs: pd.DataFrame, groups: list, started: str) -> dict:
    """The run's manifest.json: the sweep, this machine and its JAX, the swept axes and the facts
    of every compile group (docs/results.md)."""
    here = setup()
    manifest = {
        "schema_version": SCHEMA_VERSION,
        "gradbench_version": __version__,
        "name": spec.name,
        "spec_sha256": spec.sha256,
        **git_facts(),
        "jax_version": here["jax_version"],
        "jaxlib_version": here["jaxlib_version"],
        "backend": here["backend"],
        "device_kind": here["device_kind"],
        "device_count": len(jax.devices()),
        "local_device_count": here["local_device_count"],
        "process_count": jax.process_count(),
        "x64": spec.dtype == "float64",
        "xla_flags": os.environ.get("XLA_FLAGS", ""),
        "dtype": spec.dtype,
        "measure": spec.measure,
        "loss": spec.loss,
        "chunk_size": spec.chunk_size,
        "started": started,
        "finished": now(),
        "n_configs": len(configs),
        "threshold": spec.threshold,
        "axes": spec.swept_axes(),
        "sigma_w_given": spec.sigma_w_given,
        "sigma_b_given": spec.sigma_b_given,
        "groups": groups,
    }
    if spec.jacobian:
        manifest["jacobian_probes"] = spec.jacobian_probes
    return manifest


def now() -> str:
    """The time now, UTC, to the second (ISO 8601)."""
    return datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds")


def git_facts() -> dict:
    """The commit and dirty flag of the gradbench checkout (None where it is not a git checkout)."""
    root = Path(__file__).resolve().parents[2]

    def git(*args):
        result = subprocess.run(
            ["git", *args], cwd=root, capture_output=True, text=True, timeout=10
        )
        return result.stdout.strip() if result.returncode == 0 else None

    try:
        commit = git("rev-parse", "HEAD")
        status = git("status", "--porcelain", "--untracked-files=no")
    except (OSError, subprocess.TimeoutExpired):
        commit = status = None
    return {"git_commit": commit, "git_dirty": None if status is None else bool(status)}
