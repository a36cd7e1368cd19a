"""What the user waits for: `python -m benchmarks.end_to_end [--quick] [--json PATH] [--markdown PATH]`.

For each sweep (full mode: every built-in sweep and `sweeps/tanh-10k.toml`, 10^4 configs; quick mode:
two tiny ones), whole processes are timed, interleaved round by round so that all see the same
stretches of load:

- `gradbench run SWEEP --out DIR --no-report`, cold: `GRADBENCH_CACHE_DIR` is a fresh, empty
  directory, so every kernel compiles; then warm: the same command on the cache the cold run filled;
- the same pair with the report (`--skip-report` leaves this pair out);
- `python -m benchmarks.torch_sweep`, a plain PyTorch loop computing the same statistics on the same
  networks (mlp, resmlp, rnn; import of torch included, no JAX), with PyTorch's default threads and
  with one; the faster is the peer, as in `benchmarks.suite` (`--torch-one-thread`: one thread
  only, for long sweeps on a loaded machine, where the default threads are many times slower).

gradbench's own split comes from each run's manifest: per-phase seconds where the manifest has
`phase_seconds`, otherwise the groups' compile and kernel seconds; the rest of the process's wall
time is import and other host work. A sweep with a [train] section trains too: the PyTorch program
trains the same runs where it can (the rnn on the adding problem: `networks_file.TRAINABLE`), and
otherwise gradbench's times are reported without a peer or a ratio.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import math
import os
import shlex
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, replace
from pathlib import Path

from benchmarks.networks_file import COLUMNS, TRAIN_COLUMNS, untrainable
from gradbench.sweep import grid
from gradbench.sweep import spec as gradbench_spec

SCHEMA_VERSION = 1
ROOT = Path(__file__).resolve().parent.parent
SWEEPS = Path(__file__).resolve().parent / "sweeps"
GRADBENCH_CASES = ("cold", "cold_report", "warm", "warm_report")
TORCH_CASES = ("torch", "torch_1t")
CASES = GRADBENCH_CASES + TORCH_CASES
CACHE_ENV = "GRADBENCH_CACHE_DIR"
QUICK_XLA_FLAGS = "--xla_backend_optimization_level=0"  # as benchmarks.suite's quick mode

# (sweep, ratio or figure, comparison, threshold): issue 13's targets.
TARGETS = (
    ("activations", "cold_over_torch", "<=", 3.0),
    ("activations", "warm_over_torch", "<=", 1.5),
    ("activations", "report_extra_cold_seconds", "<=", 3.0),
    ("activations", "report_extra_warm_seconds", "<=", 3.0),
    ("vanishing-vs-exploding", "cold_over_torch", "<=", 3.0),
    ("vanishing-vs-exploding", "warm_over_torch", "<=", 1.5),
    ("vanishing-vs-exploding", "report_extra_cold_seconds", "<=", 3.0),
    ("vanishing-vs-exploding", "report_extra_warm_seconds", "<=", 3.0),
    ("tanh-10k", "cold_over_torch", "<=", 0.5),  # ">= 2x faster than the PyTorch loop"
)


@dataclass(frozen=True)
class Settings:
    """What one run measures: `sweeps` are built-in names or sweep files, each timed `repeats` rounds."""

    mode: str
    sweeps: tuple[str, ...]
    repeats: int
    timeout_s: float
    report_runs: bool = True  # time the cold and warm runs with the report too
    torch_default_threads: bool = True  # time the PyTorch program with its default threads too


def built_in_names() -> list[str]:
    """The built-in sweeps' names, wherever this gradbench keeps them."""
    listing = getattr(gradbench_spec, "built_in_sweeps", None)
    if listing is not None:
        return sorted(listing())
    return sorted(path.stem for path in Path(str(gradbench_spec.SWEEPS_DIR)).glob("*.toml"))


FULL = Settings("full", (*built_in_names(), str(SWEEPS / "tanh-10k.toml")), 2, 1800.0)
QUICK = Settings("quick", ("smoke", str(SWEEPS / "tanh-quick.toml")), 1, 300.0)


def torch_unavailable() -> str | None:
    """Why the PyTorch program cannot run here (found without importing torch), or None."""
    if importlib.util.find_spec("torch") is None:
        return "PyTorch is not installed; install the extra: pip install -e '.[bench]'"
    return None


def gradbench_command() -> list[str]:
    """`gradbench`, the console script next to this interpreter, as a user runs it."""
    script = Path(sys.executable).parent / "gradbench"
    return [str(script)] if script.is_file() else [sys.executable, "-m", "gradbench"]


def _json_column(frame, name: str) -> list:
    """A column's values for JSON: NaN (a setting an architecture does not have) becomes null."""
    return [None if isinstance(v, float) and math.isnan(v) else v for v in frame[name].tolist()]


def write_networks(spec: gradbench_spec.SweepSpec, path: Path) -> int:
    """Writes the sweep's networks (one row per config, training runs merged) and, for a sweep
    with a [train] section, its training runs, for torch_sweep (`benchmarks.networks_file`)."""
    configs = grid.expand(spec)
    present = [c for c in COLUMNS if c in configs]  # a gradbench without architectures lacks some
    networks = configs[present].drop_duplicates(ignore_index=True)
    document = {"seed": spec.seed, "columns": {c: _json_column(networks, c) for c in present}}
    if spec.train is not None:
        runs = configs[[*present, *TRAIN_COLUMNS]]
        document["training"] = {
            "log_every": spec.train.log_every,
            "columns": {c: _json_column(runs, c) for c in runs.columns},
        }
    path.write_text(json.dumps(document, allow_nan=False))
    return len(networks)


def timed_process(command: list[str], env: dict, timeout_s: float) -> tuple[float, str]:
    """Runs a command to its end; returns its wall seconds and its standard output."""
    start = time.perf_counter()
    proc = subprocess.run(
        command, cwd=ROOT, env=env, capture_output=True, text=True, timeout=timeout_s
    )
    wall = time.perf_counter() - start
    if proc.returncode != 0:
        raise RuntimeError(
            f"{shlex.join(command)} exited {proc.returncode}: {proc.stderr.strip()[-800:]}"
        )
    return wall, proc.stdout


def manifest_split(manifest: dict, wall: float) -> dict:
    """Compile count and seconds, the other phases, and the rest of the wall time (import/other)."""
    groups = list(manifest["groups"])
    groups += manifest.get("training", {}).get("groups", [])
    split = {
        "compile_groups": len(manifest["groups"]),
        "compiles": sum(g.get("compiles", int(g.get("compile_seconds", 0) > 0)) for g in groups),
        "cache_hits": sum(g.get("cache_hits", 0) for g in groups),
    }
    phases = manifest.get("phase_seconds")
    if phases:
        seconds = {name: float(value) for name, value in phases.items()}
    else:
        seconds = {
            "compile": sum(float(g.get("compile_seconds", 0.0)) for g in groups),
            "kernel": sum(float(g.get("run_seconds", 0.0)) for g in groups),
        }
    seconds["import_other"] = wall - sum(seconds.values())
    split["phase_seconds"] = seconds
    split["phases_from"] = "phase_seconds" if phases else "groups"
    return split


class SweepRun:
    """The processes of one sweep: its networks file, fresh caches, run directories and env."""

    def __init__(self, sweep: str, workdir: Path, timeout_s: float):
        self.sweep = sweep
        self.spec = gradbench_spec.load(sweep)
        self.workdir = workdir / self.spec.name
        self.workdir.mkdir(parents=True)
        self.networks_file = self.workdir / "networks.json"
        self.networks = write_networks(self.spec, self.networks_file)
        self.configs = len(grid.expand(self.spec))  # settings an architecture lacks are merged
        self.untrainable = untrainable(json.loads(self.networks_file.read_text()).get("training"))
        self.timeout_s = timeout_s
        self.runs = 0

    def env(self, cache: Path | None = None) -> dict:
        env = {k: v for k, v in os.environ.items() if k != "JAX_COMPILATION_CACHE_DIR"}
        env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), env.get("PYTHONPATH")]))
        if cache is not None:
            env[CACHE_ENV] = str(cache)
        return env

    def fresh_cache(self) -> Path:
        self.runs += 1
        cache = self.workdir / f"cache-{self.runs}"
        cache.mkdir()
        return cache

    def gradbench(self, cache: Path, *, report: bool) -> dict:
        self.runs += 1
        out = self.workdir / f"run-{self.runs}"
        command = [*gradbench_command(), "run", self.sweep, "--out", str(out), "--quiet"]
        command += [] if report else ["--no-report"]
        wall, _ = timed_process(command, self.env(cache), self.timeout_s)
        manifest = json.loads((out / "manifest.json").read_text())
        shutil.rmtree(out, ignore_errors=True)
        return {"seconds": wall, **manifest_split(manifest, wall)}

    def torch(self, threads: int | None) -> dict:
        self.runs += 1
        command = [sys.executable, "-m", "benchmarks.torch_sweep", str(self.networks_file)]
        command += ["--out", str(self.workdir / f"torch-{self.runs}.npz")]
        command += ["--threads", str(threads)] if threads else []
        wall, stdout = timed_process(command, self.env(), self.timeout_s)
        return {"seconds": wall, **json.loads(stdout.strip().splitlines()[-1])}


def run_sweep(run: SweepRun, settings: Settings, log: Callable[[str], None]) -> dict:
    """Every case of one sweep, `settings.repeats` interleaved rounds; a failing case is recorded,
    not fatal. Cases `settings` leaves out (`report_runs`, `torch_default_threads`) are skipped,
    with the option that left them out as their reason."""
    trains = run.spec.train is not None
    skipped: dict[str, str] = {}  # case -> why it is not run
    torch_reason = torch_unavailable()
    if torch_reason is None and run.untrainable:
        torch_reason = f"the sweep trains; {run.untrainable}"
    if torch_reason:
        skipped.update(dict.fromkeys(TORCH_CASES, torch_reason))
    if not settings.report_runs:
        skipped.update(dict.fromkeys(("cold_report", "warm_report"), "not timed (--skip-report)"))
    if not settings.torch_default_threads:
        skipped.setdefault("torch", "not timed (--torch-one-thread)")
    calls: dict[str, list[dict]] = {case: [] for case in CASES}
    failures: dict[str, str] = {}

    def attempt(case: str, body: Callable[..., dict], *args, **kwargs) -> None:
        if case in failures or case in skipped:
            return
        try:
            calls[case].append(body(*args, **kwargs))
            log(f"{run.spec.name}/{case}: {calls[case][-1]['seconds']:.1f} s")
        except Exception as exc:  # a broken case must not hide the others
            failures[case] = f"{type(exc).__name__}: {exc}"
            log(f"{run.spec.name}/{case}: failed ({failures[case][:300]})")

    for _ in range(settings.repeats):
        # Cold runs fill their own fresh caches; the warm runs after them reuse those.
        plain, reported = run.fresh_cache(), run.fresh_cache()
        attempt("cold", run.gradbench, plain, report=False)
        attempt("torch", run.torch, None)
        attempt("cold_report", run.gradbench, reported, report=True)
        attempt("torch_1t", run.torch, 1)
        attempt("warm", run.gradbench, plain, report=False)
        attempt("warm_report", run.gradbench, reported, report=True)
    cases = {}
    for case in CASES:
        if case in failures:
            cases[case] = {"status": "failed", "reason": failures[case]}
        elif case in skipped:
            cases[case] = {"status": "skipped", "reason": skipped[case]}
        else:
            times = [c["seconds"] for c in calls[case]]
            cases[case] = {"status": "ok", "seconds": statistics.median(times), "times": times}
            cases[case]["calls"] = calls[case]
    return {
        "sweep": run.sweep,
        "configs": run.configs,
        "networks": run.networks,
        "trains": trains,
        "cases": cases,
        "ratios": ratios(cases),
    }


def ratios(cases: dict) -> dict:
    """gradbench over the faster PyTorch process, cold and warm, and what the report adds."""

    def seconds(case: str) -> float | None:
        return cases[case]["seconds"] if cases[case]["status"] == "ok" else None

    out = {}
    torch_times = [t for t in map(seconds, TORCH_CASES) if t is not None]
    best = min(torch_times) if torch_times else None
    for case in ("cold", "warm"):
        if best is not None and seconds(case) is not None:
            out[f"{case}_over_torch"] = seconds(case) / best
        if seconds(case) is not None and seconds(f"{case}_report") is not None:
            out[f"report_extra_{case}_seconds"] = seconds(f"{case}_report") - seconds(case)
    return out


def targets(sweeps: dict, *, assessed: bool) -> list[dict]:
    """The issue's targets, met or missed, with the gap; only full mode's timings are assessed."""
    rows = []
    for sweep, figure, op, threshold in TARGETS:
        value = sweeps.get(sweep, {}).get("ratios", {}).get(figure)
        met = None if value is None else (value <= threshold if op == "<=" else value >= threshold)
        gap = "-"
        if value is not None and not met:
            gap = (
                f"{value - threshold:+.3g}"
                if figure.endswith("seconds")
                else f"{value / threshold:.2f}x"
            )
        rows.append(
            {
                "name": f"{sweep}/{figure}",
                "op": op,
                "target": threshold,
                "value": value,
                "met": met,
                "gap": gap,
                "assessed": assessed,
            }
        )
    return rows


def run_all(settings: Settings, log: Callable[[str], None] = print, command: str = "") -> dict:
    """Times every sweep of `settings` and returns the JSON document."""
    workdir = Path(tempfile.mkdtemp(prefix="gradbench-end-to-end-"))
    load_start = [round(x, 2) for x in os.getloadavg()]
    sweeps = {}
    try:
        for sweep in settings.sweeps:
            start = time.perf_counter()
            run = SweepRun(sweep, workdir, settings.timeout_s)
            sweeps[run.spec.name] = run_sweep(run, settings, log)
            log(f"{run.spec.name}: done ({time.perf_counter() - start:.0f} s)")
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    return {
        "schema_version": SCHEMA_VERSION,
        "mode": settings.mode,
        "command": command,
        "settings": asdict(settings),
        "load_start": load_start,
        "load_end": [round(x, 2) for x in os.getloadavg()],
        "xla_flags": os.environ.get("XLA_FLAGS", ""),
        "sweeps": sweeps,
        "targets": targets(sweeps, assessed=settings.mode == "full"),
    }


def main(argv: list[str] | None = None) -> int:
    from benchmarks import end_to_end_report

    parser = argparse.ArgumentParser(prog="python -m benchmarks.end_to_end", description=__doc__)
    parser.add_argument("--quick", action="store_true", help="two tiny sweeps, one round (CI)")
    parser.add_argument("--json", type=Path, help="write every timing as JSON here")
    parser.add_argument("--markdown", type=Path, help="write the tables as Markdown here")
    parser.add_argument(
        "--sweep",
        action="append",
        metavar="NAME",
        help="full mode on these sweeps only (repeatable): a built-in name, tanh-10k, or a file",
    )
    parser.add_argument("--repeats", type=int, help="rounds per sweep (default: full 2, quick 1)")
    parser.add_argument(
        "--skip-report",
        action="store_true",
        help="time the cold and warm runs without the report only (for long sweeps)",
    )
    parser.add_argument(
        "--torch-one-thread",
        action="store_true",
        help="time the PyTorch program with one thread only, not with its default threads too",
    )
    args = parser.parse_args(argv)
    if args.quick:
        flags = os.environ.get("XLA_FLAGS", "")
        os.environ["XLA_FLAGS"] = f"{flags} {QUICK_XLA_FLAGS}".strip()  # the children inherit it
    command = "python -m benchmarks.end_to_end " + shlex.join(
        sys.argv[1:] if argv is None else argv
    )

    def log(line: str) -> None:
        print(line, file=sys.stderr, flush=True)

    settings = QUICK if args.quick else FULL
    if args.sweep:
        named = {Path(s).stem: s for s in settings.sweeps}
        settings = replace(settings, sweeps=tuple(named.get(s, s) for s in args.sweep))
    if args.repeats:
        settings = replace(settings, repeats=args.repeats)
    if args.skip_report:
        settings = replace(settings, report_runs=False)
    if args.torch_one_thread:
        settings = replace(settings, torch_default_threads=False)
    results = run_all(settings, log=log, command=command.strip())
    print(end_to_end_report.markdown(results))
    if args.json:
        args.json.write_text(json.dumps(results, indent=2, allow_nan=False) + "\n")
    if args.markdown:
        args.markdown.write_text(end_to_end_report.markdown(results) + "\n")
    return 1 if end_to_end_report.failures(results) else 0


if __name__ == "__main__":
    raise SystemExit(main())
