"""gradbench as an installed package: the wheel carries the built-in sweeps (importlib.resources).

`.ci/run` also installs the wheel into a fresh virtual environment and runs a sweep from it; here the
wheel is only built (a few seconds) and imported unpacked, which needs no network.
"""

import importlib.resources
import os
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

from gradbench.sweep import spec

ROOT = Path(__file__).resolve().parent.parent
SOURCE_SWEEPS = ROOT / "gradbench" / "sweeps"


@pytest.fixture(scope="module")
def wheel(tmp_path_factory) -> Path:
    """A wheel built from a copy of the sources: an in-tree build would write build/ into the checkout."""
    source = tmp_path_factory.mktemp("source")
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(ROOT / name, source)
    shutil.copytree(
        ROOT / "gradbench", source / "gradbench", ignore=shutil.ignore_patterns("__pycache__")
    )
    dist = tmp_path_factory.mktemp("dist")
    build = [sys.executable, "-m", "pip", "wheel", "--quiet", "--no-deps", "--no-index"]
    build += ["--no-build-isolation", "-w", str(dist), str(source)]
    result = subprocess.run(build, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    (built,) = dist.glob("gradbench-*.whl")
    return built


def test_wheel_carries_every_built_in_sweep(wheel):
    with zipfile.ZipFile(wheel) as archive:
        shipped = {
            name: archive.read(name)
            for name in archive.namelist()
            if name.startswith("gradbench/sweeps/")
        }
    expected = {f"gradbench/sweeps/{p.name}": p.read_bytes() for p in SOURCE_SWEEPS.glob("*.toml")}
    assert "gradbench/sweeps/default.toml" in expected
    assert shipped == expected


def test_unpacked_wheel_lists_its_built_in_sweeps_outside_the_checkout(wheel, tmp_path):
    """`gradbench list` run from the wheel's files alone, as after a (non-editable) pip install."""
    site = tmp_path / "site-packages"
    with zipfile.ZipFile(wheel) as archive:
        archive.extractall(site)
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    result = subprocess.run(
        [sys.executable, "-m", "gradbench", "list"],
        cwd=elsewhere,
        env={**os.environ, "PYTHONPATH": str(site)},
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    header = next(i for i, line in enumerate(lines) if line.startswith("built-in sweeps"))
    assert f"({site / 'gradbench' / 'sweeps'})" in lines[header]
    listed = [line.split()[0] for line in lines[header + 1 :]]
    assert listed == sorted(p.stem for p in SOURCE_SWEEPS.glob("*.toml"))


def test_built_in_names_resolve_through_importlib_resources(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    resolved = spec.resolve_path("default")
    assert resolved == importlib.resources.files("gradbench") / "sweeps" / "default.toml"
    # 3 activations x 16 sigma_w^2 x 3 depths x 2 replicates in the file
    assert spec.load("default").n_configs == 3 * 16 * 3 * 2
    # A run directory of that name does not hide the built-in sweep; a file of that name does.
    (tmp_path / "default").mkdir()
    assert spec.resolve_path("default") == resolved
    (tmp_path / "default").rmdir()
    (tmp_path / "default").write_text(
        'name = "mine"\n[axes]\nactivation = "tanh"\ninit = "lecun"\ndepth = 2\nwidth = 4\n'
    )
    assert spec.resolve_path("default") == Path("default")
    assert spec.load("default").name == "mine"
