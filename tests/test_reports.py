"""The committed reports of the built-in sweeps are current and reproduce (gradbench verify on a sample)."""

from pathlib import Path

import pytest

from gradbench import results
from gradbench.verify import verify

ROOT = Path(__file__).resolve().parent.parent
BUILT_IN = sorted(p.stem for p in (ROOT / "sweeps").glob("*.toml"))


@pytest.mark.parametrize("name", BUILT_IN)
def test_every_built_in_sweep_has_a_current_committed_report(name):
    run_dir = ROOT / "reports" / name
    assert (run_dir / "report.md").is_file() and (run_dir / "index.html").is_file()
    stored = results.load(run_dir)
    assert stored.spec_text == (ROOT / "sweeps" / f"{name}.toml").read_text(), "re-run the sweep"
    assert len(stored.summary) == stored.manifest["n_configs"]
    for figure in (run_dir / "figures").glob("*.png"):
        assert figure.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


@pytest.mark.slow
@pytest.mark.parametrize("name", BUILT_IN)
def test_committed_report_reproduces(name):
    """Four random configs of each committed run are re-run and match within verify's tolerance."""
    outcome = verify(ROOT / "reports" / name, sample=4, seed=1)
    assert outcome.ok, outcome.render()
