"""Run directories: tidy tables in parquet plus a manifest, written atomically, read without code execution.

Layout and columns: docs/results.md. Loading needs neither JAX nor any kernel.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd

from gradbench.errors import SpecError

SCHEMA_VERSION = 1
TABLES = ("configs", "layers", "summary")


@dataclass
class Run:
    """A run directory in memory: `configs`, `layers`, `summary` DataFrames, `manifest`, `spec_text`."""

    path: Path
    configs: pd.DataFrame
    layers: pd.DataFrame
    summary: pd.DataFrame
    manifest: dict = field(default_factory=dict)
    spec_text: str = ""

    def write_data(self) -> None:
        """Writes spec.toml, manifest.json and data/*.parquet into `self.path`."""
        data = self.path / "data"
        data.mkdir(parents=True, exist_ok=True)
        (self.path / "spec.toml").write_text(self.spec_text)
        (self.path / "manifest.json").write_text(json.dumps(self.manifest, indent=2) + "\n")
        for name in TABLES:
            getattr(self, name).to_parquet(data / f"{name}.parquet", index=False)


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
    tables = {t: pd.read_parquet(path / "data" / f"{t}.parquet") for t in TABLES}
    spec_file = path / "spec.toml"
    return Run(
        path=path,
        manifest=json.loads((path / "manifest.json").read_text()),
        spec_text=spec_file.read_text() if spec_file.is_file() else "",
        **tables,
    )


def check_writable(out: Path) -> None:
    """Fails early, before any computation, when `out` cannot be created or replaced."""
    parent = out.resolve().parent
    existing = parent
    while not existing.exists():
        existing = existing.parent
    if out.exists() and not out.is_dir():
        raise SpecError("--out", str(out), "a directory path (a file of that name exists)")
    if not existing.is_dir() or not os.access(existing, os.W_OK | os.X_OK):
        raise SpecError(
            "--out", str(out), f"a location you can write to ({existing} is not writable)"
        )


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
    """Moves a complete staged run into place, replacing an earlier run at `out` only at the end."""
    out = out.resolve()
    old = None
    if out.exists():
        old = out.with_name(f".{out.name}.replaced-{os.getpid()}")
        out.rename(old)
    staged.rename(out)
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)
    return out


def git_facts() -> dict:
    """The commit and dirty flag of the gradbench checkout (None where it is not a git checkout)."""
    root = Path(__file__).resolve().parent.parent

    def git(*args):
        result = subprocess.run(
            ["git", *args], cwd=root, capture_output=True, text=True, timeout=10
        )
        return result.stdout.strip() if result.returncode == 0 else None

    try:
        commit = git("rev-parse", "HEAD")
        status = git("status", "--porcelain", "--untracked-files=no")
    except (OSError, subprocess.TimeoutExpired):
        commit = status = None
    return {"git_commit": commit, "git_dirty": None if status is None else bool(status)}
