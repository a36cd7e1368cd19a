"""The committed gallery: a current report of every built-in sweep, made from a clean tree, that
reproduces (gradbench verify on a sample); and `make reports`, which regenerates it."""

import json
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from gradbench import results
from gradbench.pipeline import verify
from gradbench.sweep.spec import built_in_sweeps

ROOT = Path(__file__).resolve().parent.parent
BUILT_IN = built_in_sweeps()


@pytest.mark.parametrize("name", list(BUILT_IN))
def test_every_built_in_sweep_has_a_current_committed_report(name):
    run_dir = ROOT / "reports" / name
    assert (run_dir / "report.md").is_file() and (run_dir / "index.html").is_file()
    stored = results.load(run_dir)
    assert stored.spec_text == BUILT_IN[name].read_text(), "regenerate it: make reports"
    assert len(stored.summary) == stored.manifest["n_configs"]
    for figure in (run_dir / "figures").glob("*.png"):
        assert figure.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


@pytest.mark.parametrize("name", list(BUILT_IN))
def test_committed_report_was_made_from_a_clean_tree(name):
    """Its provenance names a commit that holds exactly the code that made it."""
    manifest = json.loads((ROOT / "reports" / name / "manifest.json").read_text())
    assert re.fullmatch(r"[0-9a-f]{40}", manifest["git_commit"] or "")
    assert manifest["git_dirty"] is False, "regenerate the gallery from a clean tree: make reports"


@pytest.mark.slow
@pytest.mark.parametrize("name", list(BUILT_IN))
def test_committed_report_reproduces(name):
    """Four random configs of each committed run are re-run and match within verify's tolerance."""
    outcome = verify(ROOT / "reports" / name, sample=4, seed=1)
    assert outcome.ok, outcome.render()


def test_make_run_writes_to_a_directory_git_ignores():
    """`make run` must leave the tree clean: its run directory is ignored, not the committed gallery."""
    dry_run = subprocess.run(
        ["make", "--dry-run", "run"], cwd=ROOT, capture_output=True, text=True, timeout=60
    )
    (command,) = [line.split() for line in dry_run.stdout.splitlines() if "gradbench run" in line]
    assert "--out" in command, "without --out, gradbench writes reports/<name>/"
    out = command[command.index("--out") + 1]
    ignored = subprocess.run(["git", "check-ignore", "--quiet", f"{out}/manifest.json"], cwd=ROOT)
    assert ignored.returncode == 0, f"{out} is not ignored by git"


def test_make_reports_refuses_a_dirty_tree_and_changes_nothing(tmp_path):
    """In a throwaway checkout: an untracked file, then an edited tracked one, each make it refuse."""
    checkout = tmp_path / "checkout"
    (checkout / "tools").mkdir(parents=True)
    shutil.copy(ROOT / "tools" / "regenerate_gallery.py", checkout / "tools")
    shutil.copytree(ROOT / "gradbench" / "sweeps", checkout / "gradbench" / "sweeps")
    (checkout / "reports" / "smoke").mkdir(parents=True)
    (checkout / "reports" / "smoke" / "manifest.json").write_text('{"git_dirty": true}\n')
    git = ["git", "-C", str(checkout), "-c", "user.name=test", "-c", "user.email=test@invalid"]
    for step in (["init", "--quiet"], ["add", "."], ["commit", "--quiet", "-m", "gallery"]):
        subprocess.run(git + step, check=True, capture_output=True, timeout=60)
    before = _snapshot(checkout)

    def make_reports():
        command = [sys.executable, str(checkout / "tools" / "regenerate_gallery.py"), "smoke"]
        return subprocess.run(command, capture_output=True, text=True, timeout=60)

    (checkout / "notes.txt").write_text("not committed\n")
    refused = make_reports()
    assert refused.returncode == 2
    assert "not clean" in refused.stderr and "?? notes.txt" in refused.stderr
    (checkout / "notes.txt").unlink()
    (checkout / "gradbench" / "sweeps" / "smoke.toml").write_text("# edited\n")
    refused = make_reports()
    assert refused.returncode == 2 and " M gradbench/sweeps/smoke.toml" in refused.stderr
    (checkout / "gradbench" / "sweeps" / "smoke.toml").write_bytes(
        before["gradbench/sweeps/smoke.toml"]
    )
    assert _snapshot(checkout) == before  # nothing run, nothing staged, reports/ untouched


def _snapshot(checkout: Path) -> dict[str, bytes]:
    return {
        str(path.relative_to(checkout)): path.read_bytes()
        for path in checkout.rglob("*")
        if path.is_file() and ".git" not in path.relative_to(checkout).parts
    }
