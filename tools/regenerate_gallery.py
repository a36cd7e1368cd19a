"""Regenerates the committed gallery, `reports/<name>/` for every built-in sweep, from a clean tree.

`make reports` runs it (`make reports SWEEPS="smoke default"` for some of them). A report records the
commit and dirty flag of the tree that made it, so the tree must be clean (no tracked changes, no
untracked files that git does not ignore). Every sweep runs into `runs/gallery/<name>/`, which git
ignores, so the tree stays clean while the later sweeps run; the new reports replace those under
`reports/` only when every sweep has finished and every manifest records the clean commit.

This script imports nothing of gradbench: it runs `python -m gradbench` with the checkout first on
the path, so that the checkout's own package makes the reports, whatever gradbench is installed.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
SWEEPS = ROOT / "gradbench" / "sweeps"
GALLERY = ROOT / "reports"
STAGING = ROOT / "runs" / "gallery"

EXIT_FAILED, EXIT_REFUSED, EXIT_INTERRUPTED = 1, 2, 130


class Refused(Exception):
    """The gallery cannot be regenerated as asked; nothing under reports/ was changed."""


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "names", nargs="*", metavar="NAME", help="built-in sweeps to regenerate (default: all)"
    )
    args = parser.parse_args(argv)
    started = time.perf_counter()
    try:
        names = _sweep_names(args.names)
        commit = _clean_commit()
        for name in names:
            target = GALLERY / name
            if target.exists() and not (target / "manifest.json").is_file():
                raise Refused(f"{target} is not a gradbench run directory (no manifest.json)")
        for name in names:
            _run_sweep(name)
        _check_provenance(names, commit)
        for name in names:
            _publish(STAGING / name, GALLERY / name)
    except Refused as exc:
        print(f"make reports: refused: {exc}", file=sys.stderr)
        return EXIT_REFUSED
    except KeyboardInterrupt:
        print("make reports: interrupted; reports/ is unchanged", file=sys.stderr)
        return EXIT_INTERRUPTED
    except subprocess.CalledProcessError as exc:
        print(
            f"make reports: `{' '.join(exc.cmd)}` failed (exit {exc.returncode}); "
            "reports/ is unchanged",
            file=sys.stderr,
        )
        return EXIT_FAILED
    minutes = (time.perf_counter() - started) / 60
    print(
        f"make reports: regenerated {len(names)} report(s) under reports/ ({', '.join(names)}) "
        f"from commit {commit[:12]}, clean, in {minutes:.1f} min; "
        "review `git status reports/` and commit them"
    )
    built_in = {path.stem for path in SWEEPS.glob("*.toml")}
    orphans = sorted(p.name for p in GALLERY.iterdir() if p.is_dir() and p.name not in built_in)
    for name in orphans:
        print(f"make reports: reports/{name} has no built-in sweep; left alone")
    return 0


def _sweep_names(requested: list[str]) -> list[str]:
    built_in = sorted(path.stem for path in SWEEPS.glob("*.toml"))
    unknown = sorted(set(requested) - set(built_in))
    if unknown:
        raise Refused(f"no built-in sweep {unknown}; allowed: {built_in}")
    return requested or built_in


def _git(*args: str) -> str:
    return subprocess.run(
        ["git", *args], cwd=ROOT, check=True, capture_output=True, text=True
    ).stdout


def _clean_commit() -> str:
    changes = _git("status", "--porcelain")
    if changes:
        raise Refused(
            "the tree is not clean, and every report would record it as dirty; commit, remove or "
            f"ignore these first:\n{changes}"
        )
    return _git("rev-parse", "HEAD").strip()


def _run_sweep(name: str) -> None:
    out = STAGING / name
    command = [
        sys.executable,
        "-m",
        "gradbench",
        "run",
        f"gradbench/sweeps/{name}.toml",
        "--out",
        str(out.relative_to(ROOT)),
        "--fresh",  # chunks left by an interrupted attempt may come from another commit
        "--quiet",
    ]
    print(f"make reports: {name}: python {' '.join(command[1:])}", flush=True)
    started = time.perf_counter()
    path = os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))
    subprocess.run(command, cwd=ROOT, env={**os.environ, "PYTHONPATH": path}, check=True)
    print(f"make reports: {name}: {time.perf_counter() - started:.0f} s", flush=True)


def _check_provenance(names: list[str], commit: str) -> None:
    """Every new report must record the clean commit the sweeps started from."""
    for name in names:
        manifest = json.loads((STAGING / name / "manifest.json").read_text())
        made_at = (manifest.get("git_commit"), manifest.get("git_dirty"))
        if made_at != (commit, False):
            raise Refused(
                f"{STAGING / name}/manifest.json records git_commit, git_dirty = {made_at}, not "
                f"({commit!r}, False): the tree changed while the sweeps ran; commit and re-run"
            )
    if _git("status", "--porcelain"):
        raise Refused("the tree changed while the sweeps ran; commit and re-run")


def _publish(staged: Path, target: Path) -> None:
    """Replaces `target` with `staged`. The old report is committed, so git still has it."""
    print(f"make reports: {staged.relative_to(ROOT)} -> {target.relative_to(ROOT)}")
    if target.exists():
        replaced = target.with_name(f".{target.name}.replaced")
        target.rename(replaced)
        staged.rename(target)
        shutil.rmtree(replaced)
    else:
        staged.rename(target)


if __name__ == "__main__":
    sys.exit(main())
