"""Cost of log-domain measurement: the same sweep in `measure = "log"` and `"plain"`, float32, warm.

`python -m benchmarks.log_cost [--quick]` compiles both kernels, then times them interleaved (so both
see the same machine load) and prints the median ratio log / plain.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
from pathlib import Path

from gradbench.pipeline import run
from gradbench.sweep import spec as spec_module

SWEEP = """
name = "log-cost"
[model]
width = {width}
batch = 128
[axes]
activation = ["tanh"]
sigma_w2 = {{ linspace = [0.5, 4.0, {configs}] }}
depth = [32]
[run]
measure = "{measure}"
"""


def measure(width: int, configs: int, repeats: int) -> dict:
    specs = {
        m: spec_module.parse(SWEEP.format(width=width, configs=configs, measure=m))
        for m in ("log", "plain")
    }
    times = {m: [] for m in specs}
    with tempfile.TemporaryDirectory() as tmp:
        for m, spec in specs.items():  # warm-up: compiles
            run(spec, Path(tmp) / m, progress=False, report=False)
        for _ in range(repeats):
            for m, spec in specs.items():
                result = run(spec, Path(tmp) / m, progress=False, report=False)
                times[m].append(sum(g["run_seconds"] for g in result.manifest["groups"]))
    log, plain = statistics.median(times["log"]), statistics.median(times["plain"])
    return {
        "width": width,
        "configs": configs,
        "log_s": log,
        "plain_s": plain,
        "ratio": log / plain,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true")
    args = parser.parse_args()
    cases = [(16, 8, 2)] if args.quick else [(64, 256, 5), (256, 64, 5)]
    print("| width | configs | log s | plain s | log / plain |\n|---|---|---|---|---|")
    for width, configs, repeats in cases:
        r = measure(width, configs, repeats)
        print(
            f"| {r['width']} | {r['configs']} | {r['log_s']:.3f} | {r['plain_s']:.3f} | {r['ratio']:.2f} |"
        )


if __name__ == "__main__":
    main()
