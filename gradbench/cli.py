"""The `gradbench` command: parses arguments, calls the library, maps errors to exit codes.

Exit status, for every command: 0 ok; 1 internal failure (a bug: the traceback belongs in a report);
2 bad input (a `SpecError`: the message names the file, key or path, the value given and what is
allowed, and nothing is written); 3 mismatches found (`verify`, `compare`); 130 interrupted (Ctrl-C or
SIGTERM; `run` says how many chunks are saved and the command that resumes).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import math
import shlex
import signal
import sys
import threading
import tomllib
import traceback
from pathlib import Path

from gradbench import __version__
from gradbench.errors import SpecError

EXIT_OK, EXIT_FAILURE, EXIT_BAD_INPUT, EXIT_MISMATCH, EXIT_INTERRUPTED = 0, 1, 2, 3, 130

EPILOG = """\
SPEC     a sweep file (.toml), or the name of a built-in sweep (gradbench list shows them)
RUN_DIR  a directory written by gradbench run or merge (spec.toml, manifest.json, data/, ...)

--out may replace only an absent or empty directory or a run directory of the same sweep (one of
another sweep with --overwrite); everything else is refused before any work: gradbench never
deletes what it did not write. Sweep files and run directories never execute code unless
--allow-imports is given.

exit status: 0 ok, 1 internal failure, 2 bad input (the message says what and where),
3 mismatches found (verify, compare), 130 interrupted (Ctrl-C, SIGTERM)
"""
SPEC_HELP = "a sweep file (.toml) or the name of a built-in sweep (see gradbench list)"
RUN_DIR_HELP = "a run directory written by gradbench run or merge"
OUT_REPLACES = (
    "it may be absent, empty or a run directory of the same sweep, which is replaced once the new "
    "run is complete; anything else is refused"
)


class _Parser(argparse.ArgumentParser):
    def error(self, message):  # argparse's own errors are bad input too
        self.print_usage(sys.stderr)
        self.exit(EXIT_BAD_INPUT, f"gradbench: error: {message}\n")


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(
        prog="gradbench",
        description="Measures where gradients vanish or explode, for whole grids of networks at once.",
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--version", action="version", version=f"gradbench {__version__}")
    commands = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)

    run = commands.add_parser(
        "run",
        help="run sweeps (files or built-in names) and write their reports",
        description="Runs each SPEC and writes its run directory. A run interrupted by Ctrl-C\n"
        "resumes from its saved chunks when the same command runs again.",
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    run.add_argument("specs", nargs="+", metavar="SPEC", help=SPEC_HELP)
    run.add_argument(
        "--out",
        metavar="RUN_DIR",
        help=f"run directory to write (one SPEC only; default runs/<name>): {OUT_REPLACES}; "
        "with --shard, the shard's own directory of chunks",
    )
    run.add_argument(
        "--overwrite",
        action="store_true",
        help="let --out replace a run directory of a different sweep",
    )
    run.add_argument(
        "--allow-imports", action="store_true", help="allow 'module:function' activations"
    )
    run.add_argument("--no-report", action="store_true", help="write the data only")
    run.add_argument("--quiet", action="store_true", help="no progress output")
    run.add_argument(
        "--resume", action="store_true", help="skip finished chunks (the default; explicit)"
    )
    run.add_argument(
        "--fresh", action="store_true", help="discard finished chunks of an interrupted run"
    )
    run.add_argument(
        "--shard", type=_shard, metavar="I/N", help="run the I-th of N parts into --out, for merge"
    )
    hosts = run.add_argument_group("several hosts (jax.distributed; omit all to run on one host)")
    hosts.add_argument(
        "--distributed", action="store_true", help="initialise from the cluster environment"
    )
    hosts.add_argument("--coordinator", metavar="HOST:PORT", help="address of process 0")
    hosts.add_argument("--num-processes", type=int)
    hosts.add_argument("--process-id", type=int)

    merge = commands.add_parser(
        "merge",
        help="assemble --shard parts into one run directory",
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    merge.add_argument(
        "parts", nargs="+", metavar="DIR", help="the --out directories of gradbench run --shard"
    )
    merge.add_argument(
        "--out", required=True, metavar="RUN_DIR", help=f"run directory to write: {OUT_REPLACES}"
    )
    merge.add_argument(
        "--overwrite",
        action="store_true",
        help="let --out replace a run directory of a different sweep",
    )
    merge.add_argument(
        "--allow-imports",
        action="store_true",
        help="allow 'module:function' activations in the shards' spec.toml",
    )
    merge.add_argument("--no-report", action="store_true", help="write the data only")

    report = commands.add_parser(
        "report",
        help="re-render the report of a run directory (no JAX work)",
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    report.add_argument("run_dir", metavar="RUN_DIR", help=RUN_DIR_HELP)

    theory = commands.add_parser(
        "theory",
        help="mean-field q*, chi_1, depth scales, edge of chaos; --gains for every activation",
        description="One activation's mean-field theory (--activation), or the edge of chaos of\n"
        "every registered activation with its PyTorch-style gain (--gains).",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    what = theory.add_mutually_exclusive_group(required=True)
    what.add_argument("--activation", help="a registered activation (gradbench list shows them)")
    what.add_argument(
        "--gains",
        action="store_true",
        help="for every registered activation, the sigma_w^2 with chi_1 = 1 at --sigma-b2 and the "
        "gain sqrt(sigma_w^2) (std(W_ij) = gain / sqrt(fan_in), as torch.nn.init's gains)",
    )
    theory.add_argument(
        "--sigma-b2", type=_finite_float, default=0.0, help="bias variance (default 0)"
    )
    theory.add_argument(
        "--sigma-w2",
        type=_finite_float,
        default=None,
        help="with --activation: the fixed points and depth scales at this sigma_w^2",
    )
    theory.add_argument("--json", action="store_true", help="print JSON for scripts")

    verify = commands.add_parser(
        "verify",
        help="check a stored run against its spec and re-run (a sample of) its configs",
        description="Checks the stored tables against the spec's expansion and the summary of\n"
        "every config against its stored layers, then re-runs (and re-trains) a sample of\n"
        "configs and compares every value within stated tolerances. Prints what it checked;\n"
        "exit status 3 on any mismatch.",
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    verify.add_argument("run_dir", metavar="RUN_DIR", help=RUN_DIR_HELP)
    verify.add_argument(
        "--sample", type=int, help="configs to re-run (default: all if <= 512, else 256)"
    )
    verify.add_argument("--seed", type=int, default=0, help="seed of the sample")
    verify.add_argument(
        "--tolerance",
        type=_finite_float,
        help="log10 tolerance of the gradient statistics (default: 1e-3 float32, 1e-9 float64 "
        "on the run's backend and device kind, else 5e-3 and 1e-6)",
    )
    verify.add_argument(
        "--train-tolerance",
        type=_finite_float,
        help="log10 tolerance of training losses and norms (default: 1e-6 on the run's backend, "
        "device kind and count and jax version; elsewhere only step 0 and the outcome flags)",
    )
    verify.add_argument("--allow-imports", action="store_true")

    compare = commands.add_parser(
        "compare",
        help="config-by-config differences of two runs",
        description="Compares every table both runs hold (layers, summary, training) over the\n"
        "configs they share, naming configs by their axis values. Exit status 3 on mismatches\n"
        "beyond tolerance or changed regimes, 2 when the runs share no config.",
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    compare.add_argument("run_a", metavar="RUN_A", help=RUN_DIR_HELP)
    compare.add_argument("run_b", metavar="RUN_B", help=RUN_DIR_HELP)
    compare.add_argument(
        "--tolerance", type=_finite_float, default=1e-3, help="log10 (default 1e-3)"
    )
    compare.add_argument(
        "--train-tolerance",
        type=_finite_float,
        help="log10 tolerance of training losses and norms (default: --tolerance)",
    )

    commands.add_parser("list", help="activations, inits, losses and built-in sweeps")
    return parser


def _shard(text: str) -> tuple[int, int]:
    index, sep, count = text.partition("/")
    if not (sep and index.isdigit() and count.isdigit() and int(index) < int(count)):
        raise argparse.ArgumentTypeError(f"got {text!r}; allowed: I/N with 0 <= I < N, e.g. 0/4")
    return int(index), int(count)


def _finite_float(text: str) -> float:
    value = float(text)
    if not math.isfinite(value) or value < 0:
        raise argparse.ArgumentTypeError(f"got {text!r}; allowed: a finite number >= 0")
    return value


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        with _sigterm_interrupts():
            return COMMANDS[args.command](args)
    except SpecError as exc:
        print(f"gradbench: error: {exc}", file=sys.stderr)
        return EXIT_BAD_INPUT
    except KeyboardInterrupt:
        print("gradbench: interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED
    except Exception:
        traceback.print_exc()
        print(
            "gradbench: internal error (the traceback above belongs in a bug report)",
            file=sys.stderr,
        )
        return EXIT_FAILURE


@contextlib.contextmanager
def _sigterm_interrupts():
    """SIGTERM (how batch systems stop a job) interrupts a command the way Ctrl-C does."""
    if threading.current_thread() is not threading.main_thread():
        yield  # signal handlers belong to the main thread
        return
    previous = signal.signal(signal.SIGTERM, _raise_keyboard_interrupt)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def _raise_keyboard_interrupt(signum, frame):
    raise KeyboardInterrupt(signal.Signals(signum).name)


def cmd_run(args) -> int:
    from gradbench.batch.parts import Interrupted
    from gradbench.pipeline import run, run_shard
    from gradbench.sweep import spec as spec_module

    if args.out and len(args.specs) > 1:
        raise SpecError("--out", args.out, "--out with a single SPEC only")
    if args.shard and not args.out:
        raise SpecError(
            "--shard", f"{args.shard[0]}/{args.shard[1]}", "--shard together with --out DIR"
        )
    # Validate every sweep before running any, so a typo in the last one costs nothing.
    specs = [spec_module.load(s, allow_imports=args.allow_imports) for s in args.specs]
    if args.distributed or args.coordinator:
        import jax

        jax.distributed.initialize(
            coordinator_address=args.coordinator,
            num_processes=args.num_processes,
            process_id=args.process_id,
        )
    for spec_arg, spec in zip(args.specs, specs, strict=True):
        try:
            if args.shard:
                run_shard(
                    spec,
                    args.out,
                    args.shard,
                    allow_imports=args.allow_imports,
                    progress=not args.quiet,
                    fresh=args.fresh,
                )
                result = None
            else:
                result = run(
                    spec,
                    args.out,
                    allow_imports=args.allow_imports,
                    progress=not args.quiet,
                    report=not args.no_report,
                    fresh=args.fresh,
                    overwrite=args.overwrite,
                )
        except Interrupted as stop:
            print(f"gradbench: interrupted: {stop}", file=sys.stderr)
            print(f"resume with: {_resume_command(args, spec_arg)}", file=sys.stderr)
            return EXIT_INTERRUPTED
        if result is None:
            print(f"{spec.name}: this process's chunks are written")
            continue
        counts = result.summary["regime"].value_counts().to_dict()
        print(f"{spec.name}: {len(result.summary)} configs {counts} -> {result.path}")
    return EXIT_OK


def _resume_command(args, spec_arg: str) -> str:
    """The `gradbench run` command that continues an interrupted run of `spec_arg`: the same one,
    for that SPEC only and without `--fresh` (which would discard the saved chunks)."""
    words = ["gradbench", "run", spec_arg]
    if args.out:
        words += ["--out", args.out]
    if args.shard:
        words += ["--shard", f"{args.shard[0]}/{args.shard[1]}"]
    switches = {
        "--overwrite": args.overwrite,
        "--allow-imports": args.allow_imports,
        "--no-report": args.no_report,
        "--quiet": args.quiet,
        "--distributed": args.distributed,
    }
    words += [switch for switch, on in switches.items() if on]
    options = {
        "--coordinator": args.coordinator,
        "--num-processes": args.num_processes,
        "--process-id": args.process_id,
    }
    for option, value in options.items():
        if value is not None:
            words += [option, str(value)]
    return shlex.join(words)


def cmd_merge(args) -> int:
    from gradbench.pipeline import merge

    result = merge(
        args.parts,
        args.out,
        report=not args.no_report,
        allow_imports=args.allow_imports,
        overwrite=args.overwrite,
    )
    print(f"{result.manifest['name']}: {len(result.summary)} configs merged -> {result.path}")
    return EXIT_OK


def cmd_report(args) -> int:
    from gradbench import report, results

    run = results.load(args.run_dir)
    path = report.write_report(run)
    print(f"report written: {path}")
    return EXIT_OK


def cmd_verify(args) -> int:
    from gradbench.pipeline import verify

    result = verify(
        args.run_dir,
        sample=args.sample,
        seed=args.seed,
        tolerance=args.tolerance,
        train_tolerance=args.train_tolerance,
        allow_imports=args.allow_imports,
        progress=True,
    )
    print(result.render())
    print("verify: PASS" if result.ok else "verify: FAIL")
    return EXIT_OK if result.ok else EXIT_MISMATCH


def cmd_compare(args) -> int:
    from gradbench.analysis.compare import Tolerance, compare_runs

    training = args.train_tolerance if args.train_tolerance is not None else args.tolerance
    result = compare_runs(args.run_a, args.run_b, tolerance=Tolerance(args.tolerance, training))
    print(result.render())
    print("compare: SAME within tolerance" if result.ok else "compare: DIFFERENT")
    return EXIT_OK if result.ok else EXIT_MISMATCH


def cmd_theory(args) -> int:
    from gradbench import registry, theory

    if args.gains:
        if args.sigma_w2 is not None:
            raise SpecError(
                "--sigma-w2",
                args.sigma_w2,
                "no --sigma-w2 with --gains (the table finds sigma_w^2)",
            )
        table = theory.gains(args.sigma_b2)
        print(
            json.dumps(_strict_json(table), indent=2) if args.json else theory.format_gains(table)
        )
        return EXIT_OK
    registry.activation(args.activation)  # a clear error for unknown names
    described = theory.describe(args.activation, sigma_b2=args.sigma_b2, sigma_w2=args.sigma_w2)
    print(
        json.dumps(_strict_json(described), indent=2)
        if args.json
        else theory.format_description(described)
    )
    return EXIT_OK


def _strict_json(value):
    """JSON has no Infinity or NaN: write them as the strings "inf", "-inf" and null."""
    if isinstance(value, dict):
        return {k: _strict_json(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_strict_json(v) for v in value]
    if isinstance(value, float) and not math.isfinite(value):
        return None if math.isnan(value) else ("inf" if value > 0 else "-inf")
    return value


def cmd_list(args) -> int:
    from gradbench import registry
    from gradbench.sweep.spec import SWEEPS_DIR, built_in_sweeps

    print("activations:")
    for a in registry.ACTIVATIONS.values():
        print(f"  {a.name:<18} {a.description}")
    print("  module:function    your own (needs --allow-imports)")
    print("init families (sweep sigma_w or sigma_w2):")
    for f in registry.INIT_FAMILIES.values():
        print(f"  {f.name:<18} {f.description}")
    print("init presets (fix sigma_w^2):")
    for p in registry.INIT_PRESETS.values():
        print(f"  {p.name:<18} {p.family}, sigma_w^2 = {p.sigma_w2:.4g}: {p.description}")
    named = {
        "losses ([model] loss)": registry.LOSSES,
        "architectures (architecture, in [model] or [axes])": registry.ARCHITECTURES,
        "optimizers ([train] optimizer)": registry.OPTIMIZERS,
        "clipping rules ([train] clip)": registry.CLIP_RULES,
        "training tasks ([train] task)": registry.TASKS,
    }
    for heading, entries in named.items():
        print(f"{heading}:")
        for entry in entries.values():
            print(f"  {entry.name:<18} {entry.description}")
            for key, default in getattr(entry, "settings", {}).items():
                print(f"    {key:<16} default {default!r}")
    print(f"built-in sweeps ({SWEEPS_DIR}):")
    for name, path in built_in_sweeps().items():
        print(f"  {name:<24} {_description(path)}")
    return EXIT_OK


def _description(path: Path) -> str:
    try:
        return tomllib.loads(path.read_text()).get("description", "")
    except (OSError, tomllib.TOMLDecodeError):
        return "(unreadable)"


COMMANDS = {
    "run": cmd_run,
    "report": cmd_report,
    "theory": cmd_theory,
    "merge": cmd_merge,
    "verify": cmd_verify,
    "compare": cmd_compare,
    "list": cmd_list,
}
