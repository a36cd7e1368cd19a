"""Reports of residual and recurrent runs, from synthetic tables (no JAX, no sweep): growth laws
recovered from known r(L), names without not-applicable settings, the theory and Pascanu findings
against direct pandas computations, and by-layer figures that read only whole layers."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from gradbench import plots
from gradbench.analysis import depth_law
from gradbench.notation import fmt
from gradbench.plots.facet_maps import facet_label
from gradbench.report import depth_laws, findings, predictions, write_report
from gradbench.report.architectures import opening_paragraph
from gradbench.report.training import gradient_view
from gradbench.results import Run

T = 2.0
DEPTHS = np.array([4, 16, 64, 256])
# mlp: exponential, a factor per layer; resmlp alpha = 0.5: polynomial, an exponent; alpha =
# 1/sqrt(depth): flat, r = 0.1 sigma_w^2 (1 - 1/L) (bounded by 0.2 at sigma_w^2 = 2).
FAMILIES = [("mlp", "none", 0), ("resmlp", "0.5", 1), ("resmlp", "1/sqrt(depth)", 1)]
SIGMAS = (1.0, 2.0)


def true_r(architecture: str, branch_scale: str, sigma_w2: float, depth) -> np.ndarray:
    depth = np.asarray(depth, dtype=float)
    if architecture == "mlp":
        return (depth - 1) * np.log10(np.sqrt(sigma_w2 / 1.5))  # factor sqrt(s/1.5) per layer
    if branch_scale == "0.5":
        return 0.2 + 0.4 * sigma_w2 * np.log10(depth)  # ||delta_1|| / ||delta_L|| ~ L^(0.4 s)
    return 0.1 * sigma_w2 * (1 - 1 / depth)


def residual_summary(seed: int = 0) -> pd.DataFrame:
    """mlp and resmlp configs x activation x sigma_w2 x depth x 2 replicates, with the
    architecture columns as a run writes them (NOT_APPLICABLE values in the MLP's rows)."""
    rng = np.random.default_rng(seed)
    rows = []
    for architecture, branch_scale, branch_layers in FAMILIES:
        for activation in ("relu", "tanh"):
            for sigma_w2 in SIGMAS:
                for depth in DEPTHS:
                    r = float(true_r(architecture, branch_scale, sigma_w2, depth))
                    for replicate in (0, 1):
                        alpha = np.nan
                        if architecture == "resmlp":
                            alpha = 0.5 if branch_scale == "0.5" else 1 / np.sqrt(depth)
                        rows.append({
                            "config_id": f"c{len(rows):04d}", "activation": activation,
                            "init": "gaussian", "init_family": "gaussian",
                            "sigma_w2": sigma_w2, "sigma_w": np.sqrt(sigma_w2),
                            "sigma_b2": 0.0, "sigma_b": 0.0, "depth": int(depth), "width": 64,
                            "batch": 8, "replicate": replicate, "architecture": architecture,
                            "branch_layers": branch_layers, "norm": "none",
                            "norm_position": "none", "branch_scale": branch_scale,
                            "alpha": alpha, "input_scale": 1.0, "loss": "probe",
                            "dtype": "float32", "measure": "log", "seed": 0,
                            "log10_delta_ratio": r + rng.normal(0, 0.005),
                            "log10_grad_w_ratio": 0.0, "delta_growth": r / (depth - 1),
                            "predicted_log10_delta_ratio": r + (0.5 if branch_layers else 0.0),
                            "chi1": 10 ** (2 * r / (depth - 1)), "threshold": T,
                            "regime": "vanishing" if r < -T else "exploding" if r > T else "stable",
                        })  # fmt: skip
    return pd.DataFrame(rows)


@pytest.fixture(scope="module")
def summary():
    return residual_summary()


# ---- the depth-law fit ---------------------------------------------------------------------------


@pytest.mark.parametrize("factor", [1.41, 0.5, 1.012])
def test_an_exponential_r_is_recovered_with_its_factor_per_layer(factor):
    depth = np.array([4, 8, 16, 32, 64, 128, 256])
    noise = np.random.default_rng(1).normal(0, 0.01, depth.size)
    law = depth_law.fit_depth_law(depth, 0.3 + (depth - 1) * np.log10(factor) + noise)
    assert law.law == depth_law.EXPONENTIAL
    assert law.factor == pytest.approx(factor, rel=2e-4)
    assert (law.depth_min, law.depth_max, law.depths) == (4, 256, 7)


@pytest.mark.parametrize("exponent", [0.5, 0.27, -0.7])
def test_a_power_law_is_polynomial_with_its_exponent(exponent):
    depth = np.array([10, 25, 50, 100, 200])
    law = depth_law.fit_depth_law(depth, 0.3 + exponent * np.log10(depth) + [0, 0.01, -0.01, 0, 0])
    assert law.law == depth_law.POLYNOMIAL
    assert law.slope == pytest.approx(exponent, abs=0.02)
    # the power law itself, not a line in L, is the better fit: the residual is the noise's
    assert law.rms < 0.01


def test_a_bounded_r_is_flat_with_its_bound_and_nan_depths_are_left_out():
    depth = np.array([4, 16, 64, 256, 512])
    r = 0.42 * (1 - 1 / depth)
    r[-1] = np.nan
    law = depth_law.fit_depth_law(depth, r)
    assert law.law == depth_law.FLAT and np.isnan(law.slope)
    assert law.bound == pytest.approx(0.42 * (1 - 1 / 256))
    assert law.depth_max == 256 and law.depths == 4
    # just beyond the bound, the same shape is a law that grows (here toward a constant: the
    # smaller residual decides between the two lines)
    grown = depth_law.fit_depth_law(depth[:4], 2 * depth_law.FLAT_BOUND * (1 - 1 / depth[:4]))
    assert grown.law in (depth_law.EXPONENTIAL, depth_law.STRETCHED, depth_law.POLYNOMIAL)


def test_a_square_root_law_is_a_stretched_exponential_with_its_rate():
    """tanh residual nets without a norm: the branch's slope fades as the stream grows, and
    r ~ b sqrt(L) (Yang & Schoenholz 2017), neither a line in L nor in log10 L."""
    depth = np.array([4, 8, 16, 32, 64, 128, 256])
    law = depth_law.fit_depth_law(
        depth, -0.2 + 0.35 * np.sqrt(depth) + [0, 0.01, -0.01, 0, 0, 0.01, 0]
    )
    assert law.law == depth_law.STRETCHED
    assert law.slope == pytest.approx(0.35, abs=0.005) and law.rms < 0.01
    assert depth_laws.rate_text(law, "resmlp") == "∝ 10^(0.35 √L)"


def test_theory_bounds_at_rounding_level_read_as_zero():
    assert depth_laws.bound_text(3.7e-14) == "r = 0 to rounding"
    assert depth_laws.bound_text(0.42) == "|r| ≤ 0.42"


def test_fewer_than_three_depths_have_no_law():
    assert depth_law.fit_depth_law([4, 16, 16], [1.0, 2.0, 2.1]) is None
    assert depth_law.fit_depth_law([4, 16, 64], [1.0, np.nan, 3.0]) is None


def test_growth_findings_state_each_family_law_and_theory(summary):
    facets = findings.finding_facets(summary, "sigma_w2")
    assert facets == [
        "activation",
        "architecture",
        "branch_scale",
    ]  # branch_layers: by architecture
    found = depth_laws.growth_findings(summary, facets, "sigma_w2")
    by = {f.facet.get("branch_scale", f.facet.get("architecture")): f for f in found if f.facet}
    mlp, half, scaled = by["none"], by["0.5"], by["1/sqrt(depth)"]
    assert mlp.text.startswith("mlp (4 series): exponential in 4")
    assert mlp.numbers["measured_exponential"] == 4 and mlp.numbers["same_law"] == 4
    assert half.text.startswith("resmlp, α = 0.5 (4 series): polynomial in 4")
    assert scaled.text.startswith("resmlp, α = 1/sqrt(depth) (4 series): flat in 4")
    # every series' rate is its generating law's
    for s in depth_laws.depth_series(summary, facets, "sigma_w2"):
        sigma = s.values["sigma_w2"]
        if s.values["architecture"] == "mlp":
            assert s.measured.factor == pytest.approx(np.sqrt(sigma / 1.5), rel=1e-4)
            assert s.theory.factor == pytest.approx(np.sqrt(sigma / 1.5), rel=1e-12)
            assert depth_laws.law_text(s.measured, "mlp").endswith(" per layer")
        elif s.values["branch_scale"] == "0.5":
            assert s.measured.slope == pytest.approx(0.4 * sigma, abs=5e-3)
            assert depth_laws.law_text(s.measured, "resmlp").startswith("polynomial: ∝ L^")
        else:
            assert s.measured.bound == pytest.approx(0.1 * sigma * (1 - 1 / 256), abs=0.02)
    agreement = next(f for f in found if f.kind == "depth_law_agreement")
    assert agreement.numbers["same_law"] == 12 - 4  # theory's +0.5: alpha = 1/sqrt(L) is not flat
    assert depth_laws.growth_findings(summary[summary["depth"] <= 16], facets, "sigma_w2") == []


# ---- names without not-applicable settings ----------------------------------------------------


def test_facet_names_leave_out_settings_that_do_not_apply(summary):
    facets = findings.finding_facets(summary, "sigma_w2")
    name = lambda *key: findings.facet_name(summary, facets, key)  # noqa: E731
    assert name("relu", "mlp", "none") == "relu/gaussian, mlp"
    assert name("relu", "resmlp", "0.5") == "relu/gaussian, resmlp, α = 0.5"
    assert facet_label(facets, ("tanh", "resmlp", "1/sqrt(depth)")) == (
        "tanh, resmlp, α = 1/sqrt(depth)"
    )
    for f in findings.findings(summary, T, scale="sigma_w2"):
        assert "none" not in f.text and "branch_layers" not in f.text, f.text
    table = findings.cell_table(summary, facets)
    assert table.loc[table["architecture"] == "mlp", "α"].eq("").all()
    # a single architecture: norms by placement, the position of no norm left out
    norms = pd.DataFrame({
        "activation": ["relu"] * 3, "init": ["gaussian"] * 3, "architecture": ["resmlp"] * 3,
        "norm": ["none", "layernorm", "rmsnorm"], "norm_position": ["none", "pre", "post"],
        "branch_layers": [1, 2, 2], "branch_scale": ["1.0"] * 3,
    })  # fmt: skip
    cols = ["norm", "norm_position", "branch_layers"]
    names = [findings.facet_name(norms, cols, tuple(r)) for r in norms[cols].to_numpy()]
    assert names == [
        "relu/gaussian, no norm, 1 branch layer",
        "relu/gaussian, pre-layernorm, 2 branch layers",
        "relu/gaussian, post-rmsnorm, 2 branch layers",
    ]
    assert findings.facet_name(norms, ["branch_scale"], ("1.0",)) == "relu/gaussian, α = 1"


def test_the_opening_paragraph_says_what_r_compares_per_architecture(summary):
    text = opening_paragraph(summary, T)
    assert "for mlp, the backward signal ‖∂J/∂z_l‖" in text
    assert "for resmlp, the residual stream's backward signal ‖∂J/∂h_{l−1}‖" in text
    rnn = summary.assign(architecture="rnn")
    assert "‖∂J/∂z_t‖ at step 1 and at step T" in opening_paragraph(rnn, T)
    mlp = summary.assign(architecture="mlp")
    assert "‖∂J/∂z_l‖ at the first and the last hidden layer; a config" in opening_paragraph(mlp, T)


# ---- measured r against theory, and the Pascanu bound ------------------------------------------


def test_prediction_findings_equal_a_direct_computation(summary):
    facets = findings.finding_facets(summary, "sigma_w2")
    found = predictions.prediction_findings(summary, facets, "sigma_w2")
    assert len(found) == len(FAMILIES)
    cells = summary.groupby([*facets, "sigma_w2", "depth"])[
        ["log10_delta_ratio", "predicted_log10_delta_ratio"]
    ].mean().reset_index()  # fmt: skip
    cells["off"] = (cells["log10_delta_ratio"] - cells["predicted_log10_delta_ratio"]).abs()
    cells["within"] = cells["off"] <= (cells["depth"] - 1) / 2 * np.log10(1.05)
    for f in found:
        part = cells
        for column, value in f.facet.items():
            part = part[part[column] == value]
        worst = part.loc[part["off"].idxmax()]
        assert f.numbers["cells"] == len(part) == 16
        assert f.numbers["median_off"] == pytest.approx(part["off"].median(), rel=1e-12)
        assert f.numbers["agreeing"] == int(part["within"].sum())
        assert f.numbers["worst_measured"] == pytest.approx(worst["log10_delta_ratio"])
        assert f"depth {int(worst['depth'])}" in f.text and fmt(f.numbers["median_off"]) in f.text
    # residual predictions are 0.5 off: within tolerance where (L - 1)/2 log10 1.05 > 0.5
    assert {f.facet["branch_scale"]: f.numbers["agreeing"] for f in found}["0.5"] == 4 * 2


def rnn_summary() -> pd.DataFrame:
    """rnn configs: r a random margin below Pascanu's bound, one violation, one r lost."""
    rng = np.random.default_rng(5)
    grid = pd.MultiIndex.from_product(
        [["tanh"], ["gaussian", "orthogonal"], [0.25, 1.0, 2.25], [10, 50, 100]],
        names=["activation", "init", "sigma_w2", "depth"],
    ).to_frame(index=False)
    s_max = np.sqrt(grid["sigma_w2"]) * np.where(grid["init"] == "gaussian", 2.0, 1.0)
    bound = (grid["depth"] - 1) * np.log10(s_max)
    r = bound - rng.uniform(0.01, 5.0, len(grid))
    r[3] = bound[3] + 0.5  # a violation
    r[5] = bound[5] + 1e-4  # on the bound, to float32 rounding (orthogonal linear RNNs)
    r[7] = np.nan  # underflow
    return grid.assign(
        architecture="rnn", replicate=0, init_family=grid["init"], log10_delta_ratio=r,
        pascanu_log10_bound=bound, predicted_log10_delta_ratio=bound - 1.0,
        regime=np.where(r < -T, "vanishing", np.where(r > T, "exploding", "stable")),
    )  # fmt: skip


def test_pascanu_findings_equal_a_direct_computation():
    s = rnn_summary()
    first, proved = predictions.pascanu_findings(s, ["activation", "init"], "sigma_w2", T)
    measured = s.dropna(subset=["log10_delta_ratio"])
    margin = measured["pascanu_log10_bound"] - measured["log10_delta_ratio"]
    assert first.numbers["configs"] == len(measured) == len(s) - 1
    assert first.numbers["satisfied"] == int((margin >= -1e-3).sum()) == len(measured) - 1
    assert first.numbers["tight"] == int((margin.abs() <= 1e-3).sum()) == 1
    assert first.numbers["median_margin"] == pytest.approx(margin.median(), rel=1e-12)
    assert first.numbers["without_r"] == 1
    violation = s.iloc[3]
    assert f"T = {violation['depth']}" in first.text and "violated by" in first.text
    below = s[s["pascanu_log10_bound"] < -T]
    assert proved.numbers["proved"] == len(below) > 0
    assert proved.numbers["proved_vanishing"] == int((below["regime"] == "vanishing").sum())
    assert proved.numbers["vanishing"] == int((s["regime"] == "vanishing").sum())
    assert (below["init"] == "orthogonal").all() and "tanh/orthogonal at σ_w² = 0.25" in proved.text
    # without the bound's column (a run from before it existed) there is nothing to say
    assert predictions.pascanu_findings(s.drop(columns="pascanu_log10_bound"), [], None, T) == []


def test_chi1_cells_never_average_different_architectures(summary):
    table = predictions.chi1_cells(summary)
    assert len(table) == summary.groupby(
        ["architecture", "branch_scale", "activation", "sigma_w2", "depth"]
    ).ngroups  # fmt: skip
    mlp = table[(table["architecture"] == "mlp") & (table["depth"] == 256)]
    expect = summary[(summary["architecture"] == "mlp") & (summary["depth"] == 256)]
    expect = expect.groupby(["activation", "sigma_w2"])["delta_growth"].mean()
    np.testing.assert_allclose(np.sort(mlp["measured"]), np.sort(10 ** (2 * expect)), rtol=1e-12)


# ---- by-layer figures read whole layers only ----------------------------------------------------


def residual_layers(summary: pd.DataFrame) -> pd.DataFrame:
    """Per config, sublayer 0 with log10_delta falling linearly to r, and a branch's dense layer
    (sublayer 1) a hundred orders of magnitude away, which no layer figure may show."""
    frames = []
    for c in summary.itertuples():
        ell = np.arange(1, c.depth + 1)
        whole = c.log10_delta_ratio * (c.depth - ell) / (c.depth - 1)
        for sub, offset in ((0, 0.0), *(((1, 100.0),) if c.branch_layers else ())):
            frames.append(pd.DataFrame({
                "config_id": c.config_id, "layer": ell, "sublayer": sub,
                "log10_delta": whole + offset, "log10_grad_w": whole + offset,
                "log10_grad_b": whole, "log10_q": 0.0 * ell + offset, "log10_grad_w_sum": np.nan,
                "q": 10.0 ** (0.0 * ell + offset), "flag": "ok",
            }))  # fmt: skip
    return pd.concat(frames, ignore_index=True)


def test_layer_figures_draw_only_sublayer_0(summary):
    resmlp = summary[(summary["branch_scale"] == "0.5") & (summary["depth"] <= 16)]
    configs = resmlp.drop(columns=["log10_delta_ratio", "regime"])
    layers = residual_layers(resmlp)
    fig = plots.layer_profiles(layers, configs, hue="sigma_w2", facet="activation")
    whole = layers[layers["sublayer"] == 0].merge(configs, on="config_id")
    whole = whole[(whole["depth"] == 16) & (whole["activation"] == "relu")]
    expect = whole.groupby(["sigma_w2", "layer"])["log10_delta"].mean()
    lines = [ln for ln in fig.axes[0].get_lines() if len(ln.get_xdata()) == 16]
    assert len(lines) == len(SIGMAS)
    for line, sigma in zip(lines, SIGMAS, strict=True):
        np.testing.assert_allclose(line.get_ydata(), expect.loc[sigma].to_numpy(), atol=1e-12)
    assert max(np.max(ln.get_ydata()) for ln in lines) < 50  # no dense-layer row among them
    maps = plots.layer_map(layers, configs, facet=["activation"], hue="sigma_w2", value="log10_q")
    meshes = [ax.collections[0] for ax in maps.axes if ax.get_label() != "<colorbar>"]
    assert meshes and all(np.ma.masked_invalid(m.get_array()).max() < 50 for m in meshes)
    run = Run(Path("."), configs, layers, resmlp)
    assert set(gradient_view(run).layers["sublayer"]) == {0}


def test_depth_curves_draw_the_mean_r_and_theory_per_family(summary):
    part = summary[(summary["activation"] == "relu") & (summary["sigma_w2"] == 2.0)]
    hue = ["architecture", "branch_scale"]
    fig = plots.depth_curves(part, threshold=T, hue=hue)
    (ax,) = [a for a in fig.axes if a.get_lines()]
    theory = [ln for ln in ax.get_lines() if ln.get_gid() == "theory"]
    measured = [ln for ln in ax.get_lines() if ln.get_gid() != "theory"]
    means = part.groupby([*hue, "depth"])[["log10_delta_ratio", "predicted_log10_delta_ratio"]]
    means = means.mean()
    assert len(measured) == len(theory) == len(FAMILIES)
    for line, prediction, (_, expect) in zip(
        measured, theory, means.groupby(level=[0, 1]), strict=True
    ):
        np.testing.assert_allclose(line.get_xdata(), DEPTHS)
        np.testing.assert_allclose(line.get_ydata(), expect["log10_delta_ratio"], rtol=1e-12)
        np.testing.assert_allclose(
            prediction.get_ydata(), expect["predicted_log10_delta_ratio"], rtol=1e-12
        )
    labels = [t.get_text() for t in fig.legends[0].get_texts()]
    assert labels[:3] == ["mlp", "resmlp, α = 0.5", "resmlp, α = 1/sqrt(depth)"]


def test_a_residual_report_has_growth_and_theory_sections(summary, tmp_path):
    summary = summary[(summary["activation"] == "relu") & (summary["depth"] <= 64)]
    configs = summary.drop(columns=["log10_delta_ratio", "regime", "chi1"])
    manifest = {"name": "residual", "threshold": T, "n_configs": len(summary)}
    run = Run(tmp_path, configs, residual_layers(summary), summary, manifest=manifest)
    write_report(run)
    md = (tmp_path / "report.md").read_text(encoding="utf-8")
    facets = findings.finding_facets(summary, "sigma_w2")
    expected = [
        *depth_laws.growth_findings(summary, facets, "sigma_w2"),
        *predictions.prediction_findings(summary, facets, "sigma_w2"),
    ]
    for f in expected:
        assert f.text.replace("_", "\\_").replace("|", "\\|") in md, f.text
    assert "## Growth with depth" in md and "## Measured r against theory" in md
    assert (tmp_path / "figures" / "depth_growth.png").stat().st_size > 5_000
    text = md.split("## What was run")[0]
    assert "= none" not in text and "branch\\_layers = " not in text


TEXT_MODULES = ("architectures", "depth_laws", "predictions")


def test_the_new_text_modules_import_neither_matplotlib_nor_jax():
    modules = [f"gradbench.report.{m}" for m in TEXT_MODULES] + ["gradbench.analysis.depth_law"]
    code = f"import sys\nimport {', '.join(modules)}\n" + textwrap.dedent("""
        assert "matplotlib" not in sys.modules and "jax" not in sys.modules
    """)
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr


def test_the_depth_scale_rule_speaks_about_mlps_only():
    from gradbench.report.training import has_depth_scale

    s = pd.DataFrame(
        {"architecture": ["mlp", "mlp", "rnn", "resmlp"], "xi_c": [3.0, np.nan, 5.0, np.nan]}
    )
    assert has_depth_scale(s).tolist() == [True, False, False, False]


def test_clipped_runs_that_diverge_before_any_update_are_counted_apart():
    from gradbench.report.training import _before_any_update

    clipped = pd.DataFrame(
        {
            "diverged": [True, True, True, False],
            "diverged_step": [0, 0, 3, -1],
            "loss_initial": [np.inf, 1.0, 2.0, 1.0],
        }
    )
    found = _before_any_update(clipped)
    assert found.numbers == {"count": 2, "runs": 4, "forward": 1}
    assert "2 of the 4 clipped runs diverged at step 0" in found.text
    assert _before_any_update(clipped.iloc[2:]).text == ""
