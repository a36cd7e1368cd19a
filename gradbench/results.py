"""Run directories: tidy tables in parquet plus a manifest, written atomically, read without code execution.

Layout and columns: docs/results.md. Loading needs neither JAX nor any kernel. A new run may replace
`--out` only where that is absent, an empty directory or a run directory gradbench wrote (a different
sweep's only with `overwrite`): `check_out` refuses everything else before any computation, and
`publish` checks again before it removes the run it replaces.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd
import pyarrow as pa

from gradbench.errors import SpecError
from gradbench.schema import RUN_TABLES as TABLES
from gradbench.schema import TABLES as ALL_TABLES
from gradbench.schema import TRAINING_TABLES

# Everything gradbench writes into a run directory. A directory holding anything else is not one, and
# no command replaces it.
RUN_FILES = frozenset({"spec.toml", "manifest.json", "index.html", "report.md"})
RUN_FOLDERS = {"data": frozenset({".parquet"}), "figures": frozenset({".png", ".svg"})}

# A run directory replaces `--out` as a whole, so `--out` must never hold the system, the user's home
# or the sweep being run.
SYSTEM_DIRECTORIES = (
    "/bin", "/boot", "/dev", "/etc", "/lib", "/lib32", "/lib64", "/libx32", "/proc", "/run",
    "/sbin", "/sys", "/usr", "/System", "/Library",
)  # fmt: skip
SHOWN_ENTRIES = 5  # foreign entries named in a refusal
NOT_A_RUN_ALLOWED = (
    "an absent or empty directory, or a run directory written by gradbench (a new run replaces it "
    "as a whole): choose another --out, or move those files away"
)


@dataclass
class Run:
    """A run directory in memory: its tables (`gradbench.schema.TABLES`), manifest and sweep file.

    `training` and `training_layers` belong to sweeps with a [train] section and are None otherwise.
    `load` reads back exactly what `write_data` wrote.
    """

    path: Path
    configs: pd.DataFrame
    layers: pd.DataFrame
    summary: pd.DataFrame
    manifest: dict = field(default_factory=dict)
    spec_text: str = ""
    training: pd.DataFrame | None = None
    training_layers: pd.DataFrame | None = None

    def tables(self) -> dict[str, pd.DataFrame]:
        """The tables this run holds, by name, in `gradbench.schema.TABLES` order."""
        return {t: getattr(self, t) for t in ALL_TABLES if getattr(self, t) is not None}

    def write_data(self) -> None:
        """Writes spec.toml, manifest.json and data/<table>.parquet into `self.path`."""
        data = self.path / "data"
        data.mkdir(parents=True, exist_ok=True)
        (self.path / "spec.toml").write_text(self.spec_text)
        write_manifest(self.path, self.manifest)
        for name, table in self.tables().items():
            table.to_parquet(data / f"{name}.parquet", index=False)


def write_manifest(directory: Path, manifest: dict) -> None:
    (directory / "manifest.json").write_text(json.dumps(manifest, indent=2) + "\n")


def load(path: str | Path) -> Run:
    """Reads a run directory back (parquet and JSON only)."""
    path = Path(path)
    missing = [
        p
        for p in ("manifest.json", *(f"data/{t}.parquet" for t in TABLES))
        if not (path / p).is_file()
    ]
    if missing:
        raise SpecError(
            str(path), f"<missing {', '.join(missing)}>", "a run directory written by gradbench run"
        )
    manifest = _read_manifest(path / "manifest.json")
    tables = {t: _read_table(path / "data" / f"{t}.parquet") for t in TABLES}
    for name in TRAINING_TABLES:
        if (path / "data" / f"{name}.parquet").is_file():
            tables[name] = _read_table(path / "data" / f"{name}.parquet")
    spec_file = path / "spec.toml"
    try:
        spec_text = spec_file.read_text() if spec_file.is_file() else ""
    except (OSError, UnicodeDecodeError) as exc:
        raise SpecError(str(spec_file), f"<unreadable: {exc}>", _INTACT) from None
    return Run(path=path, manifest=manifest, spec_text=spec_text, **tables)


_INTACT = (
    "the file as gradbench run wrote it (truncated or corrupt: restore it, or run the sweep again)"
)
_UNREADABLE_PARQUET = (OSError, ValueError, pa.ArrowException)


def _read_manifest(path: Path) -> dict:
    try:
        manifest = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise SpecError(str(path), f"<unreadable: {exc}>", _INTACT) from None
    if not isinstance(manifest, dict):
        raise SpecError(str(path), f"<a JSON {type(manifest).__name__}>", _INTACT)
    return manifest


def _read_table(path: Path) -> pd.DataFrame:
    try:
        return pd.read_parquet(path)
    except _UNREADABLE_PARQUET as exc:
        raise SpecError(str(path), f"<unreadable parquet: {exc}>", _INTACT) from None


def run_manifest(path: Path) -> dict | None:
    """The manifest of the gradbench run directory `path`, or None where `path` is not one.

    A run directory has a manifest.json that gradbench wrote and nothing that gradbench does not write
    (`RUN_FILES`, and `RUN_FOLDERS` holding their kinds of file only).
    """
    if foreign_entries(path):
        return None
    try:
        manifest = json.loads((path / "manifest.json").read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError):
        return None
    if not isinstance(manifest, dict) or not {"schema_version", "spec_sha256"} <= manifest.keys():
        return None
    return manifest


def foreign_entries(path: Path) -> list[str]:
    """The entries of directory `path` that gradbench does not write into a run directory."""
    found = []
    for entry in sorted(path.iterdir()):
        suffixes = RUN_FOLDERS.get(entry.name)
        if entry.is_symlink():
            found.append(entry.name)
        elif entry.name in RUN_FILES and entry.is_file():
            continue
        elif suffixes is not None and entry.is_dir():
            found += [
                f"{entry.name}/{inner.name}"
                for inner in sorted(entry.iterdir())
                if inner.is_symlink() or not inner.is_file() or inner.suffix not in suffixes
            ]
        else:
            found.append(entry.name + ("/" if entry.is_dir() else ""))
    return found


def check_out(
    out: Path, *, name: str, overwrite: bool = False, protected: tuple[Path, ...] = ()
) -> None:
    """Refuses, before any computation, an `out` that a new run of sweep `name` may not replace.

    Args:
        out: the run directory to write (`--out`).
        name: the sweep's name; a run directory of another sweep is replaced only with `overwrite`.
        overwrite: permit replacing a run directory of a different sweep.
        protected: paths `out` must not contain (the sweep file, the shards being merged).

    Raises:
        SpecError: `out` is a file, holds something gradbench did not write, is a system or home
            directory, contains the working directory or a protected path, or cannot be created.
    """
    where = f"--out {out}"
    resolved = Path(out).resolve()
    check_location(where, resolved, protected)
    if resolved.exists():
        if not resolved.is_dir():
            raise SpecError(
                where, "<an existing file>", "a directory path (a file of that name exists)"
            )
        if any(resolved.iterdir()):
            manifest = run_manifest(resolved)
            if manifest is None:
                raise SpecError(where, f"<{_not_a_run(resolved)}>", NOT_A_RUN_ALLOWED)
            if manifest.get("name") != name and not overwrite:
                raise SpecError(
                    where,
                    f"<the run directory of sweep {manifest.get('name')!r}>",
                    f"a run directory of sweep {name!r}, or --overwrite (overwrite=True in Python) "
                    "to replace the other sweep's run",
                )
    check_creatable(where, resolved)


def _not_a_run(path: Path) -> str:
    foreign = foreign_entries(path)
    if foreign:
        return f"a directory holding {_listing(foreign)}, which gradbench did not write"
    return "a directory without the manifest.json of a gradbench run"


def check_location(where: str, resolved: Path, protected: tuple[Path, ...] = ()) -> None:
    """Refuses a system directory, the home directory, and any directory that holds the current
    directory or one of `protected`: gradbench replaces or writes into `resolved` as a whole."""
    for system in {Path(p).resolve() for p in SYSTEM_DIRECTORIES}:
        if resolved == system or system in resolved.parents:
            raise SpecError(where, f"<a path under {system}>", "a directory outside system folders")
    held = {Path.cwd(): "the current directory"}
    with contextlib.suppress(RuntimeError, KeyError):  # no home directory known: nothing to guard
        held[Path.home().resolve()] = "your home directory"
    held.update({Path(p).resolve(): "" for p in protected})
    for path, what in held.items():
        if resolved == path or resolved in path.parents:
            named = f"{what} ({path})" if what else str(path)
            raise SpecError(
                where,
                f"<{'it is' if resolved == path else 'a directory holding'} {named}>",
                "a directory of its own, e.g. runs/<name> (a run directory is replaced as a whole)",
            )


def check_creatable(where: str, resolved: Path) -> None:
    """Refuses a `resolved` path that cannot be created (or renamed into place)."""
    existing = resolved.parent
    while not existing.exists():
        existing = existing.parent
    if not existing.is_dir():
        raise SpecError(
            where, f"<{existing} is a file>", "a location you can write to (a file is not writable)"
        )
    try:  # os.access says yes to root on read-only and virtual file systems: try it instead
        probe = tempfile.mkdtemp(prefix=".gradbench-probe-", dir=existing)
    except OSError as exc:
        raise SpecError(
            where,
            f"<{existing} is not writable: {exc.strerror}>",
            "a location you can write to",
        ) from None
    os.rmdir(probe)


def _listing(entries: list[str]) -> str:
    shown = ", ".join(entries[:SHOWN_ENTRIES])
    more = len(entries) - SHOWN_ENTRIES
    return f"{shown} and {more} more" if more > 0 else shown


def staging_dir(out: Path) -> Path:
    """A fresh directory beside `out`, so that the final rename stays on one file system."""
    parent = out.resolve().parent
    parent.mkdir(parents=True, exist_ok=True)
    staged = Path(tempfile.mkdtemp(prefix=f".{out.name}.", suffix=".partial", dir=parent))
    umask = os.umask(0)
    os.umask(umask)
    staged.chmod(0o777 & ~umask)  # mkdtemp makes it private; a run directory is meant to be shared
    return staged


def publish(staged: Path, out: Path) -> Path:
    """Moves a complete staged run into place; an earlier run at `out` is removed only at the end.

    `check_out` approved `out` before the run started; it is checked again here, because a long run
    leaves time for someone to put files there.

    Raises:
        SpecError: `out` now holds something that is not a gradbench run directory.
    """
    out = out.resolve()
    old = None
    if out.exists():
        if not out.is_dir() or (any(out.iterdir()) and run_manifest(out) is None):
            raise SpecError(
                f"--out {out}",
                f"<{_not_a_run(out) if out.is_dir() else 'a file'}, since the run started>",
                f"{NOT_A_RUN_ALLOWED}; then run the same command again: its saved chunks are reused",
            )
        old = out.with_name(f".{out.name}.replaced-{os.getpid()}")
        out.rename(old)
    staged.rename(out)
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)
    return out
