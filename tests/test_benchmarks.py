"""The benchmark harness runs end to end in quick mode (tiny sizes, no timing assertions): it cannot rot.

`python -m benchmarks --quick` runs in a subprocess, as a user runs it. PyTorch is an optional
extra: without it the PyTorch peers must be reported skipped, with the reason, and the rest must run.
"""

import importlib.util
import json
import math
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
HAVE_TORCH = importlib.util.find_spec("torch") is not None
TORCH_PEERS = ("torch_loop", "torch_loop_1t", "torch_vmap")


@pytest.fixture(scope="module")
def quick(tmp_path_factory):
    out = tmp_path_factory.mktemp("bench")
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "benchmarks",
            "--quick",
            "--json",
            str(out / "bench.json"),
            "--markdown",
            str(out / "bench.md"),
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-4000:]
    return json.loads((out / "bench.json").read_text()), (out / "bench.md").read_text()


def expected_cases(settings: dict) -> set[str]:
    names = {"matmul"}
    for width in settings["widths"]:
        names |= {f"{case}/w{width}" for case in ("gradbench", "jax_loop", *TORCH_PEERS)}
    names |= {f"compile/L{depth}" for depth in (10, 100, 1000)}
    names |= {f"memory/L{depth}" for depth in (1000, 10_000)}
    return names


def test_every_case_is_reported(quick):
    results, _ = quick
    assert results["mode"] == "quick"
    assert set(results["cases"]) == expected_cases(results["settings"])


def test_timings_are_positive_and_finite(quick):
    results, _ = quick
    for name, case in results["cases"].items():
        if name.startswith(TORCH_PEERS) and not HAVE_TORCH:
            assert case["status"] == "skipped", name
            assert "PyTorch" in case["reason"], name
            continue
        assert case["status"] == "ok", (name, case.get("reason"))
        for value in [case["seconds"], *case["times"]]:
            assert math.isfinite(value) and value > 0, (name, value)
        if "per_config_seconds" in case:
            assert math.isfinite(case["per_config_seconds"]) and case["per_config_seconds"] > 0
    assert results["matmul_flops_per_s"] > 0
    assert results["cases"]["compile/L1000"]["compile_seconds"] > 0
    assert results["cases"]["memory/L10000"]["peak_rss_bytes"] > 0


def test_jax_peer_statistics_agree_with_gradbench(quick):
    """An independent computation (explicit weights, a loop, plain jax.grad) on gradbench's draws."""
    results, _ = quick
    assert set(results["crosscheck"]) == {"tanh", "relu"}
    for activation, check in results["crosscheck"].items():
        assert check["status"] == "ok", (activation, check.get("reason"))
        diffs = check["max_abs_diff_log10"]
        assert set(diffs) == {"log10_delta", "log10_grad_w", "log10_grad_b", "log10_q"}
        for stat, diff in diffs.items():
            assert diff < 1e-3, (activation, stat, diff)


def test_headline_figures_and_targets(quick):
    results, markdown = quick
    ratios = results["ratios"]
    for width in results["settings"]["widths"]:
        assert ratios[f"efficiency/w{width}"] > 0
        assert ratios[f"speedup_vs_jax_loop/w{width}"] > 0
    assert ratios["compile_ratio_deepest_vs_shallowest"] > 0
    assert all(not t["assessed"] for t in results["targets"])  # quick mode asserts no timing
    assert {t["name"].split("/")[0] for t in results["targets"]} >= {
        "efficiency",
        "speedup_vs_torch_loop",
        "speedup_vs_torch_vmap",
        "speedup_vs_jax_loop",
        "compile_ratio_deepest_vs_shallowest",
        "peak_memory_gb_deepest",
    }
    assert "| target |" in markdown and "gradbench/w" in markdown


def test_torch_peers_report_a_reason_when_torch_is_missing():
    probe = (
        "import sys; sys.modules['torch'] = None\n"
        "from benchmarks.torch_peers import unavailable\n"
        "print(unavailable())"
    )
    proc = subprocess.run(
        [sys.executable, "-c", probe], cwd=ROOT, capture_output=True, text=True, timeout=120
    )
    assert proc.returncode == 0, proc.stderr
    assert "PyTorch is not installed" in proc.stdout


def test_accelerator_benchmark_runs_and_computes_its_figures(tmp_path):
    out = tmp_path / "accelerator.json"
    proc = subprocess.run(
        [sys.executable, "-m", "benchmarks.accelerator", "--quick", "--json", str(out)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-4000:]
    facts = json.loads(out.read_text())
    s = facts["settings"]
    assert facts["configs_run"] == s["configs"]
    flops = 6 * s["batch"] * s["width"] ** 2 * s["depth"] * s["configs"]
    assert facts["flops"] == flops
    assert facts["chunk_seconds"] > 0 and facts["end_to_end_seconds"] >= facts["chunk_seconds"]
    for name, ceiling in facts["matmul_ceiling_flops_per_s"].items():
        assert math.isfinite(ceiling) and ceiling > 0
        expected = flops / facts["chunk_seconds"] / ceiling
        assert facts["efficiency"][name] == pytest.approx(expected, rel=1e-12)


def test_accelerator_grid_has_the_requested_config_count():
    from benchmarks.accelerator import Settings

    for configs in (1, 7, 12, 10**6):
        n_w, n_b = Settings(configs=configs).grid()
        assert n_w * n_b == configs and n_w >= n_b
    assert Settings(configs=10**6).grid() == (1000, 1000)
