"""The sweeps shipped with gradbench (`gradbench/sweeps/*.toml`), which `gradbench run <name>` and
`gradbench list` know by name.

They are package data, so that a wheel install has them too.
"""

from __future__ import annotations

from importlib.resources import files
from importlib.resources.abc import Traversable

# A Path except for exotic (zipped) installs.
SWEEPS_DIR = files("gradbench") / "sweeps"


def built_in_sweeps() -> dict[str, Traversable]:
    """The sweep files shipped with gradbench, by name (`gradbench run <name>`), sorted by name."""
    entries = sorted(SWEEPS_DIR.iterdir(), key=lambda entry: entry.name)
    return {e.name.removesuffix(".toml"): e for e in entries if e.name.endswith(".toml")}
