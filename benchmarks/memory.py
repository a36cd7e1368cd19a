"""Peak memory of a gradbench run, in a subprocess watched so that it cannot take the machine down.

`python -m benchmarks.memory --depth D --width W --batch B --configs N` runs the sweep through the
public API and prints one JSON line: the peak resident set, the RSS after importing JAX and
gradbench (the floor every process pays), and the manifest's compile and run seconds. The parent
(`measure_peak`) polls the child's peak and kills it past a cap or a time limit.

The peak is the kernel's high-water mark VmHWM (Linux), which starts afresh at exec.
`resource.getrusage(...).ru_maxrss` is reported too, but it survives exec: a child spawned by a big
parent (this harness holds JAX and PyTorch) starts with the parent's RSS as its maxrss.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from benchmarks.sweep import Sweep


def _maxrss_bytes() -> int:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024  # Linux reports KiB


def _status_bytes(pid: int | str, field: str) -> int | None:
    """A memory field (VmRSS, VmHWM) of /proc/PID/status in bytes; None where there is none."""
    try:
        with open(f"/proc/{pid}/status") as status:
            for line in status:
                if line.startswith(field + ":"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError):
        pass
    return None


def worker(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.memory")
    for name in ("depth", "width", "batch", "configs"):
        parser.add_argument(f"--{name}", type=int, required=True)
    args = parser.parse_args(argv)

    import gradbench
    from gradbench.sweep import spec as gradbench_spec

    floor = _status_bytes("self", "VmRSS") or _maxrss_bytes()
    sweep = Sweep(width=args.width, batch=args.batch, depth=args.depth, configs=args.configs)
    spec = gradbench_spec.parse(sweep.spec_text(name=f"memory-L{args.depth}"))
    with tempfile.TemporaryDirectory(prefix="gradbench-memory-") as tmp:
        start = time.perf_counter()
        result = gradbench.run(spec, out=Path(tmp) / "run", progress=False, report=False)
        wall = time.perf_counter() - start
    groups = result.manifest["groups"]
    print(
        json.dumps(
            {
                "peak_rss_bytes": _status_bytes("self", "VmHWM") or _maxrss_bytes(),
                "ru_maxrss_bytes": _maxrss_bytes(),
                "import_rss_bytes": floor,
                "wall_seconds": wall,
                "compile_seconds": sum(g["compile_seconds"] for g in groups),
                "run_seconds": sum(g["run_seconds"] for g in groups),
                "chunk_shape": groups[0]["chunk_shape"],
                "chunks": sum(g["chunks"] for g in groups),
            }
        )
    )
    return 0


def measure_peak(sweep: Sweep, *, cap_bytes: int, timeout_s: float) -> dict:
    """Runs the worker for `sweep` in a subprocess; returns its JSON, or why it was stopped."""
    cmd = [sys.executable, "-m", "benchmarks.memory"]
    for name in ("depth", "width", "batch", "configs"):
        cmd += [f"--{name}", str(getattr(sweep, name))]
    root = Path(__file__).resolve().parent.parent
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join(filter(None, [str(root), os.environ.get("PYTHONPATH")])),
    }
    start = time.perf_counter()
    child = subprocess.Popen(
        cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env
    )
    watched_peak, stopped = 0, None
    while child.poll() is None:
        watched_peak = max(watched_peak, _status_bytes(child.pid, "VmHWM") or 0)
        elapsed = time.perf_counter() - start
        if watched_peak > cap_bytes:
            cap = cap_bytes / 2**30
            stopped = f"stopped: peak RSS passed the cap of {cap:.1f} GiB after {elapsed:.0f} s"
        elif elapsed > timeout_s:
            stopped = f"stopped: still running after the {timeout_s:.0f} s limit"
        if stopped:
            child.kill()
            break
        time.sleep(0.1)
    out, err = child.communicate()
    wall = time.perf_counter() - start
    if stopped or child.returncode != 0:
        reason = stopped or f"worker exited {child.returncode}: {err.strip()[-500:]}"
        return {"status": "failed", "reason": reason, "watched_peak_rss_bytes": watched_peak}
    facts = json.loads(out.strip().splitlines()[-1])
    return {
        "status": "ok",
        "seconds": wall,
        "times": [wall],
        "configs": sweep.configs,
        "watched_peak_rss_bytes": watched_peak,
        **facts,
    }


if __name__ == "__main__":
    raise SystemExit(worker())
