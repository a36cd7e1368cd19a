"""The `gradbench` command: parses arguments, calls the library, maps errors to exit codes.

Exit status: 0 ok, 2 bad input (a `SpecError`: the message names the field, the value and what is
allowed), 3 `verify` found values that do not reproduce, 1 internal failure.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import tomllib
import traceback
from pathlib import Path

from gradbench.errors import SpecError

EXIT_OK, EXIT_FAILURE, EXIT_BAD_INPUT, EXIT_MISMATCH = 0, 1, 2, 3


class _Parser(argparse.ArgumentParser):
    def error(self, message):  # argparse's own errors are bad input too
        self.print_usage(sys.stderr)
        self.exit(EXIT_BAD_INPUT, f"gradbench: error: {message}\n")


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="gradbench", description=__doc__.splitlines()[0])
    commands = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)

    run = commands.add_parser(
        "run", help="run sweeps (files or built-in names) and write their reports"
    )
    run.add_argument("specs", nargs="+", metavar="SPEC")
    run.add_argument("--out", help="run directory (one SPEC only; default reports/<name>)")
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

    merge = commands.add_parser("merge", help="assemble --shard parts into one run directory")
    merge.add_argument("parts", nargs="+", metavar="DIR")
    merge.add_argument("--out", required=True, help="run directory to write")
    merge.add_argument("--no-report", action="store_true")

    report = commands.add_parser(
        "report", help="re-render the report of a run directory (no JAX work)"
    )
    report.add_argument("run_dir", metavar="RUN_DIR")

    theory = commands.add_parser("theory", help="mean-field q*, chi_1, depth scales, edge of chaos")
    theory.add_argument("--activation", required=True)
    theory.add_argument("--sigma-b2", type=_finite_float, default=0.0)
    theory.add_argument("--sigma-w2", type=_finite_float, default=None)
    theory.add_argument("--json", action="store_true", help="print JSON for scripts")

    verify = commands.add_parser(
        "verify", help="re-run a stored run's configs and compare every value"
    )
    verify.add_argument("run_dir", metavar="RUN_DIR")
    verify.add_argument(
        "--sample", type=int, help="configs to re-run (default: all if <= 512, else 256)"
    )
    verify.add_argument("--seed", type=int, default=0, help="seed of the sample")
    verify.add_argument(
        "--tolerance", type=_finite_float, help="log10 tolerance (default: see docs)"
    )
    verify.add_argument("--allow-imports", action="store_true")

    compare = commands.add_parser("compare", help="config-by-config differences of two runs")
    compare.add_argument("run_a", metavar="RUN_A")
    compare.add_argument("run_b", metavar="RUN_B")
    compare.add_argument(
        "--tolerance", type=_finite_float, default=1e-3, help="log10 (default 1e-3)"
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
        return COMMANDS[args.command](args)
    except SpecError as exc:
        print(f"gradbench: error: {exc}", file=sys.stderr)
        return EXIT_BAD_INPUT
    except KeyboardInterrupt:
        print("gradbench: interrupted", file=sys.stderr)
        return EXIT_FAILURE
    except Exception:
        traceback.print_exc()
        print(
            "gradbench: internal error (the traceback above belongs in a bug report)",
            file=sys.stderr,
        )
        return EXIT_FAILURE


def cmd_run(args) -> int:
    from gradbench import spec as spec_module
    from gradbench.runner import run

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
    for spec in specs:
        result = run(
            spec,
            args.out,
            allow_imports=args.allow_imports,
            progress=not args.quiet,
            report=not args.no_report,
            fresh=args.fresh,
            shard=args.shard,
        )
        if result is None:
            print(f"{spec.name}: this process's chunks are written")
            continue
        counts = result.summary["regime"].value_counts().to_dict()
        print(f"{spec.name}: {len(result.summary)} configs {counts} -> {result.path}")
    return EXIT_OK


def cmd_merge(args) -> int:
    from gradbench.runner import merge

    result = merge(args.parts, args.out, report=not args.no_report)
    print(f"{result.manifest['name']}: {len(result.summary)} configs merged -> {result.path}")
    return EXIT_OK


def cmd_report(args) -> int:
    from gradbench import report, results

    run = results.load(args.run_dir)
    path = report.write_report(run)
    print(f"report written: {path}")
    return EXIT_OK


def cmd_verify(args) -> int:
    from gradbench.verify import verify

    result = verify(
        args.run_dir,
        sample=args.sample,
        seed=args.seed,
        tolerance=args.tolerance,
        allow_imports=args.allow_imports,
        progress=True,
    )
    print(result.render())
    print("verify: PASS" if result.ok else "verify: FAIL")
    return EXIT_OK if result.ok else EXIT_MISMATCH


def cmd_compare(args) -> int:
    from gradbench import results
    from gradbench.compare import compare

    a, b = results.load(args.run_a), results.load(args.run_b)
    print(compare(a.layers, a.summary, b.layers, b.summary, tolerance=args.tolerance).render())
    return EXIT_OK


def cmd_theory(args) -> int:
    from gradbench import registry, theory

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
    from gradbench.spec import SWEEPS_DIR

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
    print("losses:")
    for name, text in registry.LOSSES.items():
        print(f"  {name:<18} {text}")
    print("architectures:\n  mlp                fully connected, lax.scan over layers")
    print(f"built-in sweeps ({SWEEPS_DIR}):")
    for path in sorted(SWEEPS_DIR.glob("*.toml")):
        print(f"  {path.stem:<24} {_description(path)}")
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
