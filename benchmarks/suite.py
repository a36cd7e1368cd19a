"""The benchmark run: settings (full and quick), the cases in order, JSON and Markdown output."""

from __future__ import annotations

import argparse
import functools
import json
import math
import os
import platform
import shlex
import shutil
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, replace
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np

from benchmarks import (
    end_to_end,
    end_to_end_report,
    gradbench_cases,
    jax_peer,
    memory,
    report,
    torch_peers,
)
from benchmarks.sweep import Sweep
from benchmarks.timing import Timing, failed, measure, measure_interleaved, record, skipped

SCHEMA_VERSION = 1


@dataclass(frozen=True)
class Settings:
    """What one run measures.

    Attributes:
        peer_configs: configs each per-config peer (JAX loop, PyTorch loop, vmap) is timed on; their
            per-config time is the median time divided by this (the loops are linear in configs).
        vmap_chunk: configs per `torch.func.vmap` call (memory grows with it, as with gradbench's
            chunks).
        memory_runs: (depth, width, batch, configs) of each peak-memory subprocess.
        memory_target_configs: the config count the memory target is stated for (the time is scaled
            to it).
    """

    mode: str
    widths: tuple[int, ...]
    batch: int
    depth: int
    configs: int
    peer_configs: int
    vmap_chunk: int
    repeats: int
    matmul_n: int
    matmul_repeats: int
    compile_depths: tuple[int, ...]
    compile_repeats: int
    memory_runs: tuple[tuple[int, int, int, int], ...]
    memory_target_configs: int
    memory_cap_bytes: int
    memory_timeout_s: float
    crosscheck: tuple[int, int, int] = (32, 16, 8)  # width, batch, depth

    def sweep(self, width: int) -> Sweep:
        return Sweep(width=width, batch=self.batch, depth=self.depth, configs=self.configs)


FULL = Settings(
    mode="full",
    widths=(64, 256),
    batch=128,
    depth=32,
    configs=256,
    peer_configs=32,
    vmap_chunk=32,
    repeats=3,
    matmul_n=2048,
    matmul_repeats=10,
    compile_depths=(10, 100, 1000),
    compile_repeats=1,
    memory_runs=((1000, 256, 64, 8), (10_000, 256, 64, 2)),
    memory_target_configs=64,
    memory_cap_bytes=14 * 2**30,
    memory_timeout_s=300.0,
)
QUICK = replace(
    FULL,
    mode="quick",
    widths=(8, 16),
    batch=4,
    depth=3,
    configs=4,
    peer_configs=2,
    vmap_chunk=2,
    repeats=1,
    matmul_n=256,
    matmul_repeats=3,
    compile_depths=(10, 100, 1000),
    compile_repeats=0,
    memory_runs=((1000, 8, 4, 2), (10_000, 8, 4, 2)),
    memory_cap_bytes=4 * 2**30,
    memory_timeout_s=120.0,
    crosscheck=(16, 8, 6),
)


QUICK_XLA_FLAGS = "--xla_backend_optimization_level=0"


def case_names(settings: Settings) -> list[str]:
    """Every case a run reports, in order."""
    names = ["matmul"]
    for width in settings.widths:
        names += [f"gradbench/w{width}", f"jax_loop/w{width}"]
    names += [f"compile/L{d}" for d in settings.compile_depths]
    names += [f"memory/L{run[0]}" for run in settings.memory_runs]
    for peer in ("torch_loop", "torch_loop_1t", "torch_vmap"):
        names += [f"{peer}/w{width}" for width in settings.widths]
    return names


def prepare_matmul(n: int, precision: jax.lax.Precision | None = None):
    """An n x n float32 product at `precision` (the backend's default if None)."""
    a = jax.random.normal(jax.random.key(1), (n, n), jnp.float32)
    b = jax.random.normal(jax.random.key(2), (n, n), jnp.float32)
    dot = jax.jit(functools.partial(jnp.dot, precision=precision))

    def closure() -> None:
        dot(a, b).block_until_ready()

    return closure


def matmul_case(settings: Settings) -> dict:
    n = settings.matmul_n
    return record(
        measure(prepare_matmul, n, repeats=settings.matmul_repeats), flops=2.0 * n**3, n=n
    )


def machine_facts() -> dict:
    model = platform.processor() or "unknown"
    try:
        with open("/proc/cpuinfo") as cpuinfo:
            model = next(
                line.split(":", 1)[1].strip() for line in cpuinfo if line.startswith("model name")
            )
    except (OSError, StopIteration):
        pass
    import jaxlib

    import gradbench

    versions = {
        "python": platform.python_version(),
        "jax": jax.__version__,
        "jaxlib": jaxlib.__version__,
        "numpy": np.__version__,
        "gradbench": gradbench.__version__,
    }
    if torch_peers.unavailable() is None:
        versions.update(torch_peers.versions())
    return {
        "cpu_model": model,
        "cpus": os.cpu_count(),
        "platform": platform.platform(),
        "backend": jax.default_backend(),
        "versions": versions,
        "xla_flags": os.environ.get("XLA_FLAGS", ""),
        "prng_impl": str(jax.config.jax_default_prng_impl),
        "persistent_compilation_cache": gradbench_cases.persistent_cache_dir(),
        "load_start": [round(x, 2) for x in os.getloadavg()],
    }


class Runner:
    """Runs cases in order and records each; a failing case is recorded, not fatal."""

    def __init__(self, log: Callable[[str], None]):
        self.cases: dict[str, dict] = {}
        self.log = log

    def __call__(self, name: str, body: Callable[[], dict]) -> dict:
        start = time.perf_counter()
        try:
            result = body()
        except Exception as exc:  # a broken case must not hide the others
            result = failed(exc)
        self.cases[name] = result
        self.log(f"{name}: {result['status']} ({time.perf_counter() - start:.1f} s)")
        return result


def run_suite(settings: Settings, log: Callable[[str], None] = print, command: str = "") -> dict:
    """Runs every case and returns the results (the JSON document)."""
    machine = machine_facts()
    runner = Runner(log)
    workdir = Path(tempfile.mkdtemp(prefix="gradbench-bench-"))

    first_matmul = runner("matmul", lambda: matmul_case(settings))

    crosschecks = {}
    width, batch, depth = settings.crosscheck
    for activation, sigma_w2, sigma_b2 in (("tanh", 1.5, 0.05), ("relu", 2.0, 0.0)):
        start = time.perf_counter()
        try:
            diffs = jax_peer.crosscheck(
                activation,
                width=width,
                batch=batch,
                depth=depth,
                sigma_w2=sigma_w2,
                sigma_b2=sigma_b2,
            )
            crosschecks[activation] = {"status": "ok", "max_abs_diff_log10": diffs}
        except Exception as exc:
            crosschecks[activation] = failed(exc)
        took = time.perf_counter() - start
        log(f"crosscheck/{activation}: {crosschecks[activation]} ({took:.1f} s)")

    # The cases of the headline ratios, timed interleaved (see `benchmarks.timing`).
    reason = torch_peers.unavailable()
    timed, meta = [], {}
    for width in settings.widths:
        sweep = settings.sweep(width)
        timed.append((f"gradbench/w{width}", gradbench_cases.prepare_end_to_end, (sweep, workdir)))
        meta[f"gradbench/w{width}"] = dict(
            configs=sweep.configs,
            flops=sweep.flops(),
            note="first call cold",
        )
    peers = [
        ("jax_loop", jax_peer.prepare_loop, lambda sweep, n: (sweep, n)),
        ("torch_loop", torch_peers.prepare_loop, lambda sweep, n: (sweep, n, None)),
        ("torch_loop_1t", torch_peers.prepare_loop, lambda sweep, n: (sweep, n, 1)),
        ("torch_vmap", torch_peers.prepare_vmap, lambda sweep, n: (sweep, n, settings.vmap_chunk)),
    ]
    for peer, prepare, params in peers:
        for width in settings.widths:
            sweep = settings.sweep(width)
            n = len(sweep.subset(settings.peer_configs))
            name = f"{peer}/w{width}"
            if peer.startswith("torch") and reason:
                runner.cases[name] = skipped(reason)
                log(f"{name}: skipped ({reason})")
                continue
            timed.append((name, prepare, params(sweep, n)))
            note = {"jax_loop": "first call compiles", "torch_loop_1t": "1 thread"}.get(peer, "")
            meta[name] = dict(configs=n, flops=sweep.flops(n), note=note)
    # The ceiling is measured in every round too: a shared machine has quiet and busy stretches.
    timed.append(("matmul/in-rounds", prepare_matmul, settings.matmul_n))
    gradbench_cases.forget_compilations()  # so that gradbench's first calls are cold
    in_rounds = None
    for name, timing in measure_interleaved(timed, repeats=settings.repeats, log=log).items():
        if name == "matmul/in-rounds":
            in_rounds = timing if isinstance(timing, Timing) else None
            continue
        if isinstance(timing, Exception):
            runner.cases[name] = failed(timing)
            continue
        if name.startswith("gradbench/"):
            meta[name].update(gradbench_cases.run_facts(timing.results))
        runner.cases[name] = record(timing, **meta[name])

    for depth in settings.compile_depths:
        sweep = Sweep(width=max(settings.widths), batch=settings.batch, depth=depth, configs=1)

        def compile_case(sweep=sweep) -> dict:
            timing = measure(
                gradbench_cases.prepare_compile, sweep, repeats=settings.compile_repeats
            )
            compile_s = float(np.median(timing.results))  # every call is cold, the warm-up too
            return record(
                timing, compile_seconds=compile_s, compile_all=timing.results, width=sweep.width
            )

        runner(f"compile/L{depth}", compile_case)

    for depth, width, batch, configs in settings.memory_runs:
        sweep = Sweep(width=width, batch=batch, depth=depth, configs=configs)

        def memory_case(sweep=sweep) -> dict:
            out = memory.measure_peak(
                sweep, cap_bytes=settings.memory_cap_bytes, timeout_s=settings.memory_timeout_s
            )
            if out["status"] == "ok":
                scale = settings.memory_target_configs / sweep.configs
                out["estimated_seconds_at_target_configs"] = (
                    out["compile_seconds"] + out["run_seconds"] * scale
                )
                out["target_configs"] = settings.memory_target_configs
                out.update(width=sweep.width, batch=sweep.batch, depth=sweep.depth)
            return out

        runner(f"memory/L{depth}", memory_case)

    last_matmul = matmul_case(settings)
    # The ceiling is the best rate seen at the start or the end of the run: on a shared machine the
    # median of a 0.1-0.3 s product is depressed by other processes, the best call is not.
    ok = [c for c in (first_matmul, last_matmul) if c.get("status") == "ok"]
    rates = [c["best_gflops_per_s"] * 1e9 for c in ok]
    if in_rounds is not None:
        rates.append(2.0 * settings.matmul_n**3 / min(in_rounds.timed))
    if first_matmul.get("status") == "ok":
        first_matmul["end_of_run"] = {
            k: last_matmul[k] for k in ("gflops_per_s", "best_gflops_per_s", "times")
        }
        if in_rounds is not None:
            first_matmul["in_rounds_times"] = in_rounds.timed
    machine["load_end"] = [round(x, 2) for x in os.getloadavg()]
    shutil.rmtree(workdir, ignore_errors=True)

    results = {
        "schema_version": SCHEMA_VERSION,
        "mode": settings.mode,
        "command": command,
        "settings": asdict(settings),
        "sweep": (
            f"tanh, sigma_w2 linspace[0.5, 4.0] x {settings.configs}, sigma_b2 = 0,"
            f" batch {settings.batch}, depth {settings.depth}, widths {list(settings.widths)}, float32"
        ),
        "machine": machine,
        "matmul_flops_per_s": max(rates) if rates else None,
        "cases": {
            name: runner.cases[name] for name in case_names(settings) if name in runner.cases
        },
        "crosscheck": crosschecks,
    }
    results["ratios"] = report.ratios(
        results, settings.widths, settings.compile_depths, [r[0] for r in settings.memory_runs]
    )
    results["targets"] = report.targets(
        results["ratios"], settings.widths, assessed=settings.mode == "full"
    )
    return results


def _finite(value):
    """JSON without NaN/Infinity (which strict parsers reject)."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: _finite(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_finite(v) for v in value]
    return value


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks", description=__doc__)
    parser.add_argument(
        "--quick", action="store_true", help="tiny sizes (CI): checks the harness runs"
    )
    parser.add_argument("--json", type=Path, help="write the results as JSON here")
    parser.add_argument("--markdown", type=Path, help="write the tables as Markdown here")
    parser.add_argument(
        "--no-end-to-end",
        action="store_true",
        help="skip the whole-process table of benchmarks.end_to_end (every built-in sweep, cold and"
        " warm, against a PyTorch process)",
    )
    args = parser.parse_args(argv)
    settings = QUICK if args.quick else FULL
    if args.quick:
        # Quick mode checks that the harness runs, not its speed: XLA may skip backend optimisation,
        # which halves every compilation (set before JAX starts its backend; subprocesses inherit).
        flags = os.environ.get("XLA_FLAGS", "")
        os.environ["XLA_FLAGS"] = f"{flags} {QUICK_XLA_FLAGS}".strip()
    command = "python -m benchmarks " + shlex.join(sys.argv[1:] if argv is None else argv)

    def log(line: str) -> None:
        print(line, file=sys.stderr, flush=True)

    results = _finite(run_suite(settings, log=log, command=command.strip()))
    tables = [report.markdown(results)]
    if not args.no_end_to_end:
        whole = end_to_end.QUICK if args.quick else end_to_end.FULL
        results["end_to_end"] = _finite(end_to_end.run_all(whole, log=log, command=command.strip()))
        tables.append("## End to end\n\n" + end_to_end_report.markdown(results["end_to_end"]))
    print(report.console(results))
    if "end_to_end" in results:
        print("\n" + end_to_end_report.markdown(results["end_to_end"]))
    if args.json:
        args.json.write_text(json.dumps(results, indent=2) + "\n")
    if args.markdown:
        args.markdown.write_text("\n\n".join(tables) + "\n")
    broken = [n for n, c in results["cases"].items() if c["status"] == "failed"]
    broken += [f"crosscheck/{a}" for a, c in results["crosscheck"].items() if c["status"] != "ok"]
    if "end_to_end" in results:
        broken += [f"end_to_end/{n}" for n in end_to_end_report.failures(results["end_to_end"])]
    if broken:
        print(f"failed: {', '.join(broken)}", file=sys.stderr)
    return 1 if broken else 0
