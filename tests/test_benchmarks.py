"""The benchmark harness runs end to end in quick mode (tiny sizes, no timing assertions): it cannot rot.

`python -m benchmarks --quick` runs in a subprocess, as a user runs it, the whole-process table of
`benchmarks.end_to_end` included. PyTorch is an optional extra: without it the PyTorch peers must be
reported skipped, with the reason, and the rest must run.
"""

import importlib.util
import json
import math
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from gradbench import cli
from gradbench.sweep import grid
from gradbench.sweep import spec as gradbench_spec

ROOT = Path(__file__).resolve().parent.parent
HAVE_TORCH = importlib.util.find_spec("torch") is not None
torch = importlib.import_module("torch") if HAVE_TORCH else None
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
        timeout=1200,  # the suite and the end-to-end table: each a few minutes on a quiet 2-core CI
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


def test_end_to_end_times_every_case_of_every_quick_sweep(quick):
    from benchmarks.end_to_end import CASES, GRADBENCH_CASES, QUICK

    results, markdown = quick
    e2e = results["end_to_end"]
    assert e2e["mode"] == "quick" and e2e["settings"]["repeats"] == 1
    names = [gradbench_spec.load(s).name for s in QUICK.sweeps]
    assert list(e2e["sweeps"]) == names
    for sweep, name in zip(QUICK.sweeps, names, strict=True):
        spec = gradbench_spec.load(sweep)
        configs = grid.expand(spec)
        record = e2e["sweeps"][name]
        assert record["configs"] == len(configs) and record["networks"] == len(configs)
        assert set(record["cases"]) == set(CASES)
        for case, timing in record["cases"].items():
            if case.startswith("torch") and not HAVE_TORCH:
                assert timing["status"] == "skipped" and "PyTorch" in timing["reason"]
                continue
            assert timing["status"] == "ok", (name, case, timing.get("reason"))
            assert len(timing["times"]) == 1 and timing["seconds"] == timing["times"][0] > 0
        for case in GRADBENCH_CASES:
            (call,) = record["cases"][case]["calls"]
            assert call["compile_groups"] == configs["group"].nunique()
            phases = call["phase_seconds"]
            assert {"compile", "import_other"} <= set(phases)
            assert sum(phases.values()) == pytest.approx(call["seconds"], rel=1e-9)
            assert 0 < phases["compile"] < call["seconds"]
        if HAVE_TORCH:
            for case in ("torch", "torch_1t"):
                (call,) = record["cases"][case]["calls"]
                assert call["networks"] == len(configs)
                assert 0 < call["loop_seconds"] < call["seconds"]
            assert record["cases"]["torch_1t"]["calls"][0]["threads"] == 1
        assert name in markdown


def test_end_to_end_ratios_are_recomputed_from_the_timings(quick):
    results, markdown = quick
    for record in results["end_to_end"]["sweeps"].values():
        seconds = {c: t["seconds"] for c, t in record["cases"].items() if t["status"] == "ok"}
        ratios = record["ratios"]
        for cold_or_warm in ("cold", "warm"):
            extra = seconds[f"{cold_or_warm}_report"] - seconds[cold_or_warm]
            assert ratios[f"report_extra_{cold_or_warm}_seconds"] == pytest.approx(extra, rel=1e-12)
            if HAVE_TORCH:
                peer = min(seconds["torch"], seconds["torch_1t"])
                expected = seconds[cold_or_warm] / peer
                assert ratios[f"{cold_or_warm}_over_torch"] == pytest.approx(expected, rel=1e-12)
            else:
                assert f"{cold_or_warm}_over_torch" not in ratios
    targets = results["end_to_end"]["targets"]
    assert all(not t["assessed"] for t in targets)  # quick mode asserts no timing
    assert {t["name"] for t in targets} >= {
        "activations/cold_over_torch",
        "activations/warm_over_torch",
        "vanishing-vs-exploding/cold_over_torch",
        "vanishing-vs-exploding/report_extra_warm_seconds",
        "tanh-10k/cold_over_torch",
    }
    assert "## End to end" in markdown and "| gradbench / PyTorch, cold |" in markdown


def test_ten_thousand_config_sweep_is_the_issues():
    from benchmarks.end_to_end import FULL, SWEEPS

    spec = gradbench_spec.load(SWEEPS / "tanh-10k.toml")
    configs = grid.expand(spec)
    assert len(configs) == 10_000 and configs["group"].nunique() == 1
    assert configs["sigma_w2"].nunique() == 1000 and configs["sigma_b2"].nunique() == 10
    assert np.allclose(sorted(configs["sigma_b2"].unique()), np.linspace(0.0, 0.3, 10))
    assert set(
        configs[["activation", "width", "batch", "depth", "replicate"]].itertuples(False)
    ) == {("tanh", 64, 32, 32, 0)}
    assert set(FULL.sweeps) >= {*gradbench_spec.built_in_sweeps(), str(SWEEPS / "tanh-10k.toml")}


LINEAR_SWEEP = """
name = "torch-agreement"
seed = 0
[model]
width = 64
batch = 32
[axes]
activation = "linear"
init = ["gaussian", "uniform"]
sigma_w2 = [0.5, 2.0]
sigma_b2 = [0.0, 0.1]
depth = 6
replicate = { count = 8 }
"""


@pytest.mark.skipif(not HAVE_TORCH, reason="PyTorch is not installed")
def test_torch_program_computes_gradbenchs_statistics(tmp_path):
    """Same distributions, not the same draws: means over replicates agree, and with the linear law.

    For a linear net with x, u ~ N(0, 1) and W_out ~ N(0, 1 / width), E ||dJ/dz_l||^2 =
    (width / batch) sigma_w^2^(L - l) and q_l = sigma_w^2 q_(l-1) + sigma_b^2 with q_0 = 1.
    """
    from benchmarks import networks_file, torch_sweep
    from benchmarks.end_to_end import write_networks

    sweep = tmp_path / "sweep.toml"
    sweep.write_text(LINEAR_SWEEP)
    out = tmp_path / "run"
    assert cli.main(["run", str(sweep), "--out", str(out), "--no-report", "--quiet"]) == 0
    configs = pd.read_parquet(out / "data" / "configs.parquet")
    layers = pd.read_parquet(out / "data" / "layers.parquet").merge(configs, on="config_id")

    networks = tmp_path / "networks.json"
    assert write_networks(gradbench_spec.load(sweep), networks) == len(configs) == 64
    document = json.loads(networks.read_text())
    stats = torch_sweep.layer_statistics(document["columns"], document["seed"])
    assert all(s.shape == (4, 6) and np.isfinite(s).all() for s in stats)
    rows = pd.DataFrame(document["columns"]).loc[np.repeat(np.arange(len(stats)), 6)]
    rows["layer"] = np.tile(np.arange(1, 7), len(stats))
    rows[list(networks_file.STATS)] = np.concatenate([s.T for s in stats])

    # Per network kind, the mean over layers and replicates (one replicate's ||dJ/db_l|| is the
    # norm of a single width-vector, too noisy to compare layer by layer).
    kinds = ["init_family", "sigma_w2", "sigma_b2"]
    theirs = rows.groupby(kinds)[list(networks_file.STATS)].mean()
    ours = layers.groupby(kinds)[list(networks_file.STATS)].mean().loc[theirs.index]
    assert np.abs(theirs.to_numpy() - ours.to_numpy()).max() < 0.15  # log10 units

    law = rows.groupby([*kinds, "layer"])[["log10_delta", "log10_q"]].mean()
    sigma_w2, sigma_b2, layer = (
        law.index.get_level_values(k).to_numpy() for k in kinds[1:] + ["layer"]
    )
    law_delta = 0.5 * np.log10(64 / 32 * sigma_w2 ** (6 - layer))
    law_q = sigma_w2**layer + sigma_b2 * (1 - sigma_w2**layer) / (1 - sigma_w2)  # sigma_w^2 != 1
    assert np.abs(law["log10_delta"].to_numpy() - law_delta).max() < 0.1
    assert np.abs(law["log10_q"].to_numpy() - np.log10(law_q)).max() < 0.1


def test_networks_file_reads_old_files_as_mlps_and_the_architecture_sweeps(tmp_path):
    from benchmarks import networks_file
    from benchmarks.end_to_end import write_networks

    old = {"depth": [4, 8], "width": [16, 16]}  # written before the architecture columns
    assert networks_file.column(old, "architecture") == ["mlp", "mlp"]
    assert networks_file.column(old, "alpha") == [None, None]
    mlp = {"architecture": ["mlp"], "task": ["teacher"], "optimizer": ["sgd"], "clip": ["none"]}
    assert "not mlp" in networks_file.untrainable({"columns": mlp})
    for name in ("residual", "recurrent"):
        spec = gradbench_spec.load(name)
        configs = grid.expand(spec)
        # One row per network: 1/sqrt(depth) at depth 4 is the fixed alpha 0.5's network; the
        # recurrent sweep trains each network with each clip setting.
        twins = (configs["branch_scale"] == "1/sqrt(depth)") & (configs["depth"] == 4)
        networks = len(configs) // configs["clip"].nunique() if spec.train else len(configs)
        assert write_networks(spec, tmp_path / "networks.json") == networks - twins.sum()
        training = json.loads((tmp_path / "networks.json").read_text()).get("training")
        assert networks_file.untrainable(training) is None
        assert (training and len(training["columns"]["clip"])) == (spec.train and len(configs))


ARCHITECTURE_SWEEP = """
name = "torch-architectures"
seed = 3
model = { width = 16, batch = 4, branch_scale = 0.7, input_scale = 0.8 }
[axes]
architecture = ["resmlp", "rnn"]
norm = ["none", "layernorm", "rmsnorm"]
norm_position = ["pre", "post"]
branch_layers = [1, 2]
activation = ["tanh", "relu"]
sigma_w2 = 1.5
sigma_b2 = 0.1
depth = 3
"""


def _gradbench_run(tmp_path, sweep: str):
    (tmp_path / "sweep.toml").write_text(sweep)
    out = tmp_path / "run"
    assert cli.main(["run", str(tmp_path / "sweep.toml"), "--out", str(out), "--no-report"]) == 0
    return out


def _tensor(array):
    return torch.from_numpy(np.array(array, np.float32))


def _load_gradbench_draws(net, config, *, training=False):
    """Sets a torch_nets module's weights to gradbench's draws of `config` (a configs row) and
    returns its inputs (x, or the rnn's sequence) and probe u. `training`: the trained rnn's
    parameters, U from Z_U's first 2 columns (Var input_scale^2 / 2) and W_out's first row."""
    from gradbench.engine import model

    key = model.replicate_key(int(config["seed"]), int(config["replicate"]))
    width, batch = int(config["width"]), int(config["batch"])
    shared = model.shared_draws(key, batch, width)

    def dense(linear, index):
        z, beta = model.layer_draws(key, index, width, config["init_family"])
        linear.weight.copy_(math.sqrt(config["sigma_w2"] / width) * _tensor(z))
        linear.bias.copy_(math.sqrt(config["sigma_b2"]) * _tensor(beta))

    with torch.no_grad():
        net.readout.weight.copy_(_tensor(shared.readout[:1] if training else shared.readout))
        if config["architecture"] == "resmlp":
            for block, linears in enumerate(net.blocks):
                for k, linear in enumerate(linears):
                    dense(linear, model.dense_index("resmlp", block, k, len(linears)))
            net.alpha = float(config["alpha"])
            return _tensor(shared.x), _tensor(shared.probe)
        dense(net.recurrent, model.dense_index("rnn", 0))
        inputs = 2 if training else width
        z_u = model.input_weight_draw(key, width, inputs)
        net.input.weight.copy_(config["input_scale"] / math.sqrt(inputs) * _tensor(z_u))
        steps = range(int(config["depth"]))
        xs = torch.stack([_tensor(model.sequence_draw(key, t, batch, width)) for t in steps])
        return xs, _tensor(shared.probe)


@pytest.mark.skipif(not HAVE_TORCH, reason="PyTorch is not installed")
def test_torch_resmlp_and_rnn_compute_gradbenchs_statistics_on_its_draws(tmp_path):
    """Fed gradbench's own draws, the PyTorch program's plain autograd reproduces every row of
    gradbench's layers table (log domain, hand-written backward pass) for every block variant."""
    from benchmarks import torch_sweep
    from benchmarks.networks_file import RNN_STATS

    out = _gradbench_run(tmp_path, ARCHITECTURE_SWEEP)
    configs = pd.read_parquet(out / "data" / "configs.parquet")
    assert set(configs["architecture"]) == {"resmlp", "rnn"} and len(configs) == 22
    ours = []
    for config in configs.to_dict("records"):
        net = torch_sweep.build(*torch_sweep.structure(config))
        table = torch_sweep.layer_table([net.measure(*_load_gradbench_draws(net, config))])
        ours.append(pd.DataFrame(table).assign(config_id=config["config_id"]))
    theirs = pd.read_parquet(out / "data" / "layers.parquet")
    both = pd.concat(ours).merge(theirs, on=["config_id", "layer", "sublayer"], validate="1:1")
    assert len(both) == len(theirs)
    for name in RNN_STATS:
        a, b = both[f"{name}_x"].to_numpy(), both[f"{name}_y"].to_numpy()
        assert (np.isnan(a) == np.isnan(b)).all(), name
        assert np.nanmax(np.abs(a - b)) < 1e-4, name  # log10 units; float32 both sides


TRAINING_SWEEP = """
name = "torch-training"
seed = 5
model = { architecture = "rnn", width = 16, batch = 4, input_scale = 0.9 }
[axes]
activation = "tanh"
sigma_w = 0.8
sigma_b2 = 0.01
depth = 6
[train]
optimizer = "sgd"
lr = 0.1
steps = 12
log_every = 4
task = "adding"
samples = 16
clip = ["none", "global_norm"]
clip_threshold = { global_norm = [0.05, 3.0] }
"""


@pytest.mark.skipif(not HAVE_TORCH, reason="PyTorch is not installed")
def test_torch_training_records_gradbenchs_training_tables_on_its_draws_and_data(tmp_path):
    """Same initial network and adding data: torch.optim.SGD with clip_grad_norm_ follows gradbench's
    optax runs and records the same tables (a stable net: float32 rounding parts chaotic ones)."""
    from benchmarks import torch_nets, torch_training
    from benchmarks.networks_file import TRAIN_STATS
    from gradbench.training import datasets

    out = _gradbench_run(tmp_path, TRAINING_SWEEP)
    training = pd.read_parquet(out / "data" / "training.parquet")
    layers = pd.read_parquet(out / "data" / "training_layers.parquet")
    fractions = set()
    for config in pd.read_parquet(out / "data" / "configs.parquet").to_dict("records"):
        net = torch_nets.RNN(config["activation"], int(config["width"]), inputs=2, outputs=1)
        net.draw = lambda *_, net=net, c=config: _load_gradbench_draws(net, c, training=True)
        task = datasets.make_task("adding", seed=5, samples=16, width=0, outputs=1, length=6)
        data = (_tensor(task.x).transpose(0, 1).contiguous(), _tensor(task.target))
        record = torch_training.train(net, data, config, 4, torch.Generator())
        theirs = training[training["config_id"] == config["config_id"]].sort_values("step")
        assert record["step"].tolist() == theirs["step"].tolist() == [0, 4, 8, 12]
        for name in TRAIN_STATS:
            assert np.allclose(record[name], theirs[name], atol=2e-5, equal_nan=True), name
        fractions |= set(theirs["clipped_fraction"].dropna())
        per_step = layers[layers["config_id"] == config["config_id"]]
        grad_w = per_step.pivot(index="step", columns="layer", values="log10_grad_w")
        assert np.allclose(record["grad_w"], grad_w, atol=2e-5, equal_nan=True)
    assert {0.0, 1.0} <= fractions  # no clipping, and clipping at every step


@pytest.mark.skipif(not HAVE_TORCH, reason="PyTorch is not installed")
def test_torch_orthogonal_linear_rnn_loses_exactly_sigma_w_a_step():
    """W = sigma_w Q: dJ/dz_t = W^T dJ/dz_{t+1} has exactly sigma_w times its norm, the top step's
    signal is u W_out / batch, and the per-step contributions sum to autograd's dJ/dW."""
    from benchmarks.torch_nets import RNN

    g = torch.Generator().manual_seed(1)
    net = RNN("linear", 16)
    config = {"init_family": "orthogonal", "sigma_w2": 1.3**2, "sigma_b2": 0.05}
    net.draw({**config, "input_scale": 0.7}, g)
    xs, u = torch.randn(12, 4, 16, generator=g), torch.randn(4, 16, generator=g)
    delta, grad_w, _, _, grad_w_sum = net.measure(xs, u)
    assert np.allclose(np.diff(delta), -np.log10(1.3), atol=2e-6)
    top = torch.linalg.norm(u @ net.readout.weight.detach() / 4).item()
    assert delta[-1] == pytest.approx(np.log10(top), abs=2e-6)
    assert np.isnan(grad_w[0]) and np.isfinite(grad_w[1:]).all()  # h_0 = 0
    whole = torch.linalg.norm(net.recurrent.weight.grad).item()
    assert grad_w_sum[0] == pytest.approx(np.log10(whole), abs=2e-6)


@pytest.mark.skipif(not HAVE_TORCH, reason="PyTorch is not installed")
def test_torch_resmlp_with_a_tiny_branch_scale_is_the_identity():
    """alpha -> 0: every block passes h = x and dJ/dh = g = u W_out / batch through, and its dense
    layer sees dJ/dz = alpha g, dJ/dW = alpha g^T phi(x), dJ/db = alpha sum_b g."""
    from benchmarks.torch_nets import ResMLP

    g, alpha = torch.Generator().manual_seed(2), 1e-6
    net = ResMLP("tanh", 5, 16, 1, "none", "none")
    net.draw({"init_family": "gaussian", "sigma_w2": 2.0, "sigma_b2": 0.1, "alpha": alpha}, g)
    x, u = torch.randn(4, 16, generator=g), torch.randn(4, 16, generator=g)
    stats = net.measure(x, u)  # (stat, block, sublayer)
    signal = u @ net.readout.weight.detach() / 4
    dense = [signal, signal.T @ torch.tanh(x), signal.sum(0)]
    for k, expected in enumerate(alpha * torch.linalg.norm(d).item() for d in dense):
        assert np.allclose(stats[k, :, 1], np.log10(expected), atol=1e-5), k
    assert np.allclose(stats[0, :, 0], np.log10(torch.linalg.norm(signal).item()), atol=1e-5)
    assert np.allclose(stats[3, :, 0], np.log10(x.square().mean().item()), atol=1e-5)
    assert np.array_equal(stats[1:3, :, 0], stats[1:3, :, 1])  # one dense layer: the branch's


@pytest.mark.skipif(not HAVE_TORCH, reason="PyTorch is not installed")
def test_torch_adding_problem_is_the_tasks():
    """Values ~ U(0, 1); two markers, one in each half [0, T // 2), [T // 2, T); the target is
    the marked values' sum. (The records of training runs: the test against gradbench above.)"""
    from benchmarks import torch_training

    x, target = torch_training.adding_problem(256, 9, torch.Generator().manual_seed(3))
    values, markers = x[:, :, 0], x[:, :, 1]  # (steps, samples)
    assert set(markers.unique().tolist()) == {0.0, 1.0} and 0 <= values.min() < values.max() < 1
    assert (markers[:4].sum(0) == 1).all() and (markers[4:].sum(0) == 1).all()
    assert markers[:4].any(1).all() and markers[4:].any(1).all()  # every step can be marked
    assert torch.allclose(target[:, 0], (values * markers).sum(0))
