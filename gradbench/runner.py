"""Orchestration only: spec -> groups -> chunks -> kernel calls -> tables -> run directory. No maths here."""

from __future__ import annotations

import contextlib
import datetime
import os
import shutil
import time
from dataclasses import dataclass
from pathlib import Path

import jax
import jax.numpy as jnp
import jaxlib
import numpy as np
import pandas as pd

from gradbench import __version__, classify, grid, measure, results
from gradbench import spec as spec_module
from gradbench.kernel import Chunk, make_kernel
from gradbench.progress import Progress
from gradbench.spec import SweepSpec

# Device memory one chunk may use for its saved activations, when the sweep does not set chunk_size.
CHUNK_BYTES = 1 << 29
MAX_CHUNK = 2048


@dataclass(frozen=True)
class ChunkPlan:
    """Row positions (into a group's config table) of one chunk, laid out (replicates, configs).

    Cells past the group's end repeat a real config; `real` marks the cells whose results are kept.
    """

    rows: np.ndarray  # (R, C) int
    real: np.ndarray  # (R, C) bool


def chunk_capacity(static: grid.StaticKey, override: int | None) -> int:
    """Configs per chunk: the sweep's chunk_size, or what fits CHUNK_BYTES of saved activations."""
    if override:
        return override
    per_config = jnp.dtype(static.dtype).itemsize * static.batch * static.width * static.depth * 4
    return int(min(MAX_CHUNK, max(1, CHUNK_BYTES // per_config)))


def plan_chunks(replicates: np.ndarray, capacity: int) -> list[ChunkPlan]:
    """Tiles a group's configs (sorted by replicate) into chunks of one shape.

    Each chunk holds up to C configs of each of R replicates, so the configs of a replicate row share
    their draws. Replicates with fewer configs (a sampled re-run) are padded like the group's end.
    """
    reps, starts, counts = np.unique(replicates, return_index=True, return_counts=True)
    per_rep = int(counts.max())
    c = min(per_rep, capacity)
    r = max(1, min(len(reps), capacity // c))
    column = np.arange(per_rep)
    table = starts[:, None] + np.minimum(column[None, :], counts[:, None] - 1)
    filled = column[None, :] < counts[:, None]
    plans = []
    for i in range(0, len(reps), r):
        rows = np.minimum(np.arange(i, i + r), len(reps) - 1)
        for j in range(0, per_rep, c):
            cols = np.minimum(np.arange(j, j + c), per_rep - 1)
            real = filled[np.ix_(rows, cols)] & (np.arange(i, i + r) < len(reps))[:, None]
            real &= (np.arange(j, j + c) < per_rep)[None, :]
            plans.append(ChunkPlan(table[np.ix_(rows, cols)], real))
    return plans


def chunk_inputs(members: pd.DataFrame, plan: ChunkPlan, dtype) -> Chunk:
    def cells(column, kind):
        return jnp.asarray(members[column].to_numpy()[plan.rows], kind)

    return Chunk(
        replicate=jnp.asarray(members["replicate"].to_numpy()[plan.rows[:, 0]], jnp.int32),
        sigma_w=cells("sigma_w", dtype),
        sigma_b=cells("sigma_b", dtype),
        depth=cells("depth", jnp.int32),
    )


def layer_table(members: pd.DataFrame, plan: ChunkPlan, raw, spec: SweepSpec) -> pd.DataFrame:
    """Long-form per-layer rows of the real configs of one chunk."""
    depth = members["depth"].to_numpy()[plan.rows]
    stats = measure.assemble(raw.tags, raw.forward, depth, measure=spec.measure)
    n_layers = stats["flag"].shape[-1]
    keep = plan.real[..., None] & (np.arange(n_layers) < depth[..., None])
    ids = members["config_id"].to_numpy()[plan.rows]
    table = {
        "config_id": np.broadcast_to(ids[..., None], keep.shape)[keep],
        "layer": np.broadcast_to(np.arange(1, n_layers + 1), keep.shape)[keep],
    }
    for name in measure.STATS:
        table[name] = stats[name][keep]
    with np.errstate(over="ignore"):
        table["q"] = np.power(10.0, table["log10_q"])
    table["flag"] = np.asarray(measure.FLAGS)[stats["flag"][keep]]
    return pd.DataFrame(table)


def run(
    sweep: SweepSpec | str | os.PathLike,
    out: str | os.PathLike | None = None,
    *,
    allow_imports: bool = False,
    progress: bool = True,
    report: bool = True,
) -> results.Run:
    """Runs a sweep and writes its run directory (default `reports/<name>/`).

    Args:
        sweep: a SweepSpec, a path to a sweep file, or the name of a built-in sweep.
        out: the run directory; replaced only once the new run is complete.
        allow_imports: permit activations given as "package.module:function".
        progress: print progress to stderr.
        report: also write the HTML/Markdown report.

    Returns:
        The `Run` (tables in memory, `path` = the run directory).
    """
    spec = (
        sweep
        if isinstance(sweep, SweepSpec)
        else spec_module.load(sweep, allow_imports=allow_imports)
    )
    if spec.imports and not allow_imports:
        spec_module.parse(spec.text, source=spec.source)  # raises the refusal with its message
    out_path = Path(out) if out is not None else Path("reports") / spec.name
    results.check_writable(out_path)

    configs = grid.expand(spec)
    started = datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds")
    layers, group_facts = measure_configs(
        spec, configs, allow_imports=allow_imports, progress=progress
    )
    summary = classify.summarise(configs, layers, spec.threshold)
    manifest = build_manifest(spec, configs, group_facts, started)
    staged = results.staging_dir(out_path)
    try:
        run_obj = results.Run(staged, configs, layers, summary, manifest, spec.text)
        run_obj.write_data()
        if report:
            from gradbench import report as report_module

            report_module.write_report(run_obj)
        run_obj.path = results.publish(staged, out_path)
    except BaseException:
        shutil.rmtree(staged, ignore_errors=True)
        raise
    return run_obj


def measure_configs(
    spec: SweepSpec, configs: pd.DataFrame, *, allow_imports: bool = False, progress: bool = False
) -> tuple[pd.DataFrame, list[dict]]:
    """Per-layer table of any subset of a sweep's configs, and facts about each compile group.

    Common random numbers make a config's numbers independent of which other configs run beside it, so
    a sample re-run (gradbench verify) measures the same thing as the full sweep.
    """
    bar = Progress(len(configs), enabled=progress)
    parts, group_facts = [], []
    with jax.enable_x64(True) if spec.dtype == "float64" else contextlib.nullcontext():
        for static, members in grid.groups(configs, spec):
            parts.append(run_group(static, members, spec, allow_imports, bar, group_facts))
    return pd.concat(parts, ignore_index=True), group_facts


def run_group(static, members, spec, allow_imports, bar: Progress, facts: list) -> pd.DataFrame:
    """Compiles the group's kernel once and runs every chunk through it."""
    capacity = chunk_capacity(static, spec.chunk_size)
    plans = plan_chunks(members["replicate"].to_numpy(), capacity)
    dtype = jnp.dtype(static.dtype)
    kernel = make_kernel(static, allow_imports)
    seed = jnp.asarray(spec.seed, jnp.uint32)

    t0 = time.perf_counter()
    compiled = kernel.lower(seed, chunk_inputs(members, plans[0], dtype)).compile()
    compile_s = time.perf_counter() - t0

    t0 = time.perf_counter()
    tables = []
    for plan in plans:
        raw = jax.device_get(compiled(seed, chunk_inputs(members, plan, dtype)))
        tables.append(layer_table(members, plan, raw, spec))
        bar.update(int(plan.real.sum()), static.label)
    facts.append(
        {
            "group": static.label,
            "configs": len(members),
            "depth_bucket": static.depth,
            "chunks": len(plans),
            "chunk_shape": list(plans[0].rows.shape),
            "compile_seconds": round(compile_s, 3),
            "run_seconds": round(time.perf_counter() - t0, 3),
        }
    )
    return pd.concat(tables, ignore_index=True)


def build_manifest(spec: SweepSpec, configs: pd.DataFrame, groups: list, started: str) -> dict:
    devices = jax.devices()
    return {
        "schema_version": results.SCHEMA_VERSION,
        "gradbench_version": __version__,
        "name": spec.name,
        "spec_sha256": spec.sha256,
        **results.git_facts(),
        "jax_version": jax.__version__,
        "jaxlib_version": jaxlib.__version__,
        "backend": jax.default_backend(),
        "device_kind": devices[0].device_kind,
        "device_count": len(devices),
        "process_count": jax.process_count(),
        "x64": spec.dtype == "float64",
        "xla_flags": os.environ.get("XLA_FLAGS", ""),
        "dtype": spec.dtype,
        "measure": spec.measure,
        "loss": spec.loss,
        "chunk_size": spec.chunk_size,
        "started": started,
        "finished": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
        "n_configs": len(configs),
        "threshold": spec.threshold,
        "axes": {
            name: {"values": list(axis.values), "scale": axis.scale}
            for name, axis in spec.axes.items()
            if len(axis.values) > 1
        },
        "sigma_w_given": spec.sigma_w_given,
        "sigma_b_given": spec.sigma_b_given,
        "groups": groups,
    }
