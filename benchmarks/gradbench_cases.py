"""gradbench through its public API, end to end: cold (first call after clearing caches), then warm."""

from __future__ import annotations

import itertools
import shutil
import statistics
import tempfile
from pathlib import Path

import jax

import gradbench
from benchmarks.sweep import Sweep
from gradbench.sweep import spec as gradbench_spec


def forget_compilations() -> None:
    """Drops every compiled kernel, so that the next run compiles as in a fresh process."""
    jax.clear_caches()
    try:  # gradbench also memoises its jitted kernels per KernelKey
        from gradbench.engine.kernel import make_kernel
    except ImportError:
        return
    getattr(make_kernel, "cache_clear", lambda: None)()


def persistent_cache_dir() -> str | None:
    """A persistent compilation cache would make 'cold' runs warm; it is reported in the results."""
    try:
        return jax.config.jax_compilation_cache_dir or None
    except AttributeError:
        return None


def prepare_end_to_end(params: tuple[Sweep, Path]):
    """`run(spec)` into a fresh directory per call.

    The first call compiles when this shape has not been compiled in the process before (call
    `forget_compilations` first to be sure).
    """
    sweep, workdir = params
    spec = gradbench_spec.parse(sweep.spec_text())
    counter = itertools.count()

    def closure() -> list[dict]:
        out = workdir / f"run-{next(counter)}"
        result = gradbench.run(spec, out=out, progress=False, report=False)
        return result.manifest["groups"]

    return closure


def run_facts(groups_per_call: list[list[dict]]) -> dict:
    """What the manifests say about the calls of `prepare_end_to_end`'s closure (warm-up first).

    `chunk_seconds` is the manifest's run_seconds: the kernel calls and their per-chunk tables, the
    part of the end-to-end time that is not compilation, expansion, summaries or writing.
    """

    def total(groups: list[dict], key: str) -> float:
        return float(sum(g[key] for g in groups))

    warm = groups_per_call[1:] or groups_per_call
    return {
        "cold_compile_seconds": total(groups_per_call[0], "compile_seconds"),
        "warm_compile_seconds": statistics.median(total(g, "compile_seconds") for g in warm),
        "chunk_seconds": statistics.median(total(g, "run_seconds") for g in warm),
        "chunk_shape": groups_per_call[0][0]["chunk_shape"],
        "chunks": int(total(groups_per_call[0], "chunks")),
    }


def prepare_compile(sweep: Sweep):
    """A cold run of a one-config sweep; the manifest's compile_seconds is the compile time."""
    spec = gradbench_spec.parse(sweep.spec_text(name=f"compile-L{sweep.depth}"))

    def closure() -> float:
        forget_compilations()
        workdir = Path(tempfile.mkdtemp(prefix="gradbench-compile-"))
        try:
            result = gradbench.run(spec, out=workdir / "run", progress=False, report=False)
        finally:
            shutil.rmtree(workdir, ignore_errors=True)
        return sum(g["compile_seconds"] for g in result.manifest["groups"])

    return closure


def run_sweep(spec_text: str, out: Path):
    """Runs a sweep given as TOML text and returns gradbench's `Run` (tables in memory)."""
    return gradbench.run(gradbench_spec.parse(spec_text), out=out, progress=False, report=False)
