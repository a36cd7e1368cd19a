"""The large-sweep benchmark for accelerators: one big sweep through `gradbench.run`, against the
same run's dense float32 and TF32 matmul ceilings.

`python -m benchmarks.accelerator [--configs N] [--json PATH]` runs a sweep of N configs (default
10^6: width 256, depth 64, batch 128, a sigma_w^2 x sigma_b^2 grid) once, cold, and reports the time
in chunks (kernel calls, copies to the host and per-chunk tables, compilation excluded), the
end-to-end time and the efficiency of the chunks against both ceilings. On a CPU the two ceilings are the
same product (XLA:CPU has no TF32). `--quick` runs tiny sizes, so that CI keeps it working.
"""

from __future__ import annotations

import argparse
import functools
import json
import math
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import jax

from benchmarks.suite import prepare_matmul
from benchmarks.timing import measure as measure_case
from gradbench.pipeline import run
from gradbench.sweep import spec as spec_module


@dataclass(frozen=True)
class Settings:
    configs: int
    width: int = 256
    depth: int = 64
    batch: int = 128
    matmul_n: int = 8192
    matmul_repeats: int = 10

    def grid(self) -> tuple[int, int]:
        """(sigma_w^2 points, sigma_b^2 points) whose product is `configs`, as square as it divides."""
        rows = max(d for d in range(1, math.isqrt(self.configs) + 1) if self.configs % d == 0)
        return self.configs // rows, rows

    def spec_text(self) -> str:
        n_w, n_b = self.grid()
        return (
            'name = "accelerator-bench"\n'
            f"[model]\nwidth = {self.width}\nbatch = {self.batch}\n"
            '[axes]\nactivation = "tanh"\n'
            f"sigma_w2 = {{ linspace = [0.5, 4.0, {n_w}] }}\n"
            f"sigma_b2 = {{ linspace = [0.0, 0.5, {n_b}] }}\n"
            f"depth = {self.depth}\n"
            '[run]\ndtype = "float32"\n'
        )

    def flops(self) -> float:
        """Forward, backward and weight-gradient products: 3 x 2 x batch x width^2 per layer."""
        return 6.0 * self.batch * self.width**2 * self.depth * self.configs


QUICK = Settings(configs=12, width=16, depth=4, batch=8, matmul_n=256, matmul_repeats=3)


def matmul_ceiling(n: int, repeats: int, precision: jax.lax.Precision) -> float:
    """Best FLOP/s of an n x n float32 product at the given precision."""
    timing = measure_case(
        functools.partial(prepare_matmul, precision=precision), n, repeats=repeats
    )
    return 2.0 * n**3 / min(timing.timed)


def measure(settings: Settings) -> dict:
    ceilings = {
        "float32": matmul_ceiling(
            settings.matmul_n, settings.matmul_repeats, jax.lax.Precision.HIGHEST
        ),
        "tf32": matmul_ceiling(
            settings.matmul_n, settings.matmul_repeats, jax.lax.Precision.DEFAULT
        ),
    }
    spec = spec_module.parse(settings.spec_text())
    with tempfile.TemporaryDirectory() as tmp:
        t0 = time.perf_counter()
        result = run(spec, Path(tmp) / "run", progress=False, report=False)
        end_to_end = time.perf_counter() - t0
    groups = result.manifest["groups"]
    chunks = sum(g["run_seconds"] for g in groups)
    device = jax.devices()[0]
    return {
        "settings": asdict(settings),
        "backend": device.platform,
        "device_kind": device.device_kind,
        "devices": jax.device_count(),
        "configs_run": len(result.configs),
        "matmul_ceiling_flops_per_s": ceilings,
        "compile_seconds": sum(g["compile_seconds"] for g in groups),
        "chunk_seconds": chunks,
        "end_to_end_seconds": end_to_end,
        "chunk_shapes": [g["chunk_shape"] for g in groups],
        "flops": settings.flops(),
        "chunk_flops_per_s": settings.flops() / chunks,
        "efficiency": {name: settings.flops() / chunks / c for name, c in ceilings.items()},
    }


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--configs", type=int, default=10**6)
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--json", type=Path)
    args = parser.parse_args(argv)
    settings = QUICK if args.quick else Settings(configs=args.configs)
    facts = measure(settings)
    for key, value in facts.items():
        print(f"{key:28s} {value}")
    if args.json:
        args.json.write_text(json.dumps(facts, indent=1))


if __name__ == "__main__":
    main()
