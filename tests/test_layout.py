"""The shape of the package: stages import upstream only, and the reading half never imports JAX.

A stored run is re-read, compared and re-reported without compiling anything, so analysis, plots,
report, results, schema and notation must work where JAX is not imported at all. And a change to one
stage can only break the stages after it: no module imports a later stage, except the composition
modules (pipeline, cli) and the package's lazy front door.
"""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "gradbench"

# Upstream first. Modules of one stage may import each other; a module imports only earlier stages.
STAGES = [
    {"errors", "schema", "notation"},
    {"registry"},
    {"sweep"},
    {"engine"},
    {"batch"},
    {"results"},
    {"training"},
    {"theory"},
    {"analysis"},
    {"plots"},
    {"report"},
]
COMPOSITION = {"pipeline", "cli", "__main__", "__init__"}
READING_HALF = ["analysis", "plots", "report", "results", "schema", "notation"]


def _modules() -> list[str]:
    names = []
    for path in sorted(PACKAGE.rglob("*.py")):
        parts = path.relative_to(PACKAGE).with_suffix("").parts
        if parts[-1] == "__init__" and len(parts) > 1:
            parts = parts[:-1]
        names.append("gradbench." + ".".join(parts) if parts != ("__init__",) else "gradbench")
    return names


def _stage(module: str) -> int | None:
    top = module.split(".")[1] if "." in module else "__init__"
    for i, stage in enumerate(STAGES):
        if top in stage:
            return i
    return None


def _imports(path: Path) -> set[str]:
    """Every gradbench module `path` imports, at the top or inside a function."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found |= {a.name for a in node.names if a.name.startswith("gradbench")}
        elif isinstance(node, ast.ImportFrom) and (node.module or "").startswith("gradbench"):
            found.add(node.module)
            found |= {f"{node.module}.{a.name}" for a in node.names}  # submodules imported by name
    return {m for m in found if m == "gradbench" or m in set(_modules()) or _stage(m) is not None}


def test_every_module_belongs_to_a_stage():
    tops = {m.split(".")[1] for m in _modules() if "." in m}
    assert tops - set().union(*STAGES) - COMPOSITION == set()


def test_stages_import_upstream_only():
    backwards = []
    for path in sorted(PACKAGE.rglob("*.py")):
        parts = path.relative_to(PACKAGE).parts
        if parts[0].removesuffix(".py") in COMPOSITION:
            continue
        module = "gradbench." + ".".join(p.removesuffix(".py") for p in parts)
        mine = _stage(module)
        for imported in _imports(path):
            theirs = _stage(imported)
            if theirs is not None and theirs > mine:
                backwards.append(f"{module} imports {imported}")
    assert backwards == []


def test_the_stage_test_sees_a_backward_import(tmp_path):
    """The check above reads function-level imports too (they are where a back edge would hide)."""
    path = tmp_path / "probe.py"
    path.write_text(
        "def f():\n    from gradbench.report import findings\n    import gradbench.plots\n"
    )
    assert {"gradbench.report.findings", "gradbench.plots"} <= _imports(path)


@pytest.mark.parametrize("stage", READING_HALF)
def test_the_reading_half_imports_no_jax(stage):
    modules = [
        m for m in _modules() if m == f"gradbench.{stage}" or m.startswith(f"gradbench.{stage}.")
    ]
    code = (
        "import importlib, sys\n"
        f"for m in {modules!r}: importlib.import_module(m)\n"
        "print(sorted(k for k in ('jax', 'jaxlib', 'optax') if k in sys.modules))\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "[]", f"importing {modules} imported {done.stdout.strip()}"


def test_modules_stay_readable_in_one_sitting():
    long = {
        str(p.relative_to(PACKAGE)): n
        for p in PACKAGE.rglob("*.py")
        if (n := len(p.read_text().splitlines())) > 500
    }
    assert long == {}
