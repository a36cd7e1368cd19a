"""Figures from synthetic run tables that follow docs/results.md (no JAX, no sweep)."""

from __future__ import annotations

import json
import xml.etree.ElementTree as ET
from types import SimpleNamespace

import numpy as np
import pandas as pd
import pytest
from matplotlib.collections import PatchCollection
from matplotlib.contour import ContourSet
from matplotlib.figure import Figure

from gradbench import notation, plots, schema
from gradbench.plots.scales import power_label

T = 2.0
SIGMAS = np.linspace(0.5, 4.0, 8)
DEPTHS = (4, 8, 16)
CHI_SLOPE = {"relu": 0.5, "tanh": 0.55}  # synthetic chi_1 = slope x sigma_w^2


def synthetic_tables(seed: int = 0, replicates: int = 3):
    """configs, layers, summary for activation x sigma_w2 x depth x replicate.

    log10 ||delta_l|| falls by 0.5 log10(chi_1) per layer towards the input, plus noise; the summary
    is computed from the layers as the engine would. One tanh config is non-finite, one relu config
    underflowed (r NaN, regime vanishing).
    """
    rng = np.random.default_rng(seed)
    axes = [("relu", "tanh"), SIGMAS, DEPTHS, range(replicates)]
    names = ["activation", "sigma_w2", "depth", "replicate"]
    configs = pd.MultiIndex.from_product(axes, names=names).to_frame(index=False)
    configs.insert(0, "config_id", [f"c{i:04d}" for i in range(len(configs))])
    configs = configs.assign(
        group=configs["activation"] + "-d16", init="gaussian", init_family="gaussian",
        architecture="mlp", sigma_w=np.sqrt(configs["sigma_w2"]), sigma_b2=0.0, sigma_b=0.0,
        width=64, batch=8, loss="probe", dtype="float32", measure="plain", seed=0,
    )  # fmt: skip
    layers, rows = [], []
    for c in configs.itertuples():
        chi1 = CHI_SLOPE[c.activation] * c.sigma_w2
        g = 0.5 * np.log10(chi1) + rng.normal(0, 0.01)
        ell = np.arange(1, c.depth + 1)
        ld = g * (c.depth - ell) + rng.normal(0, 0.02, c.depth) - 1.0
        lw = rng.normal(0, 0.05, c.depth) - 0.5
        lq = 0.1 * np.log10(chi1) * ell
        flag = np.full(c.depth, "ok", dtype=object)
        last = c.sigma_w2 == SIGMAS[-1] and c.depth == 16
        nonfinite = c.activation == "tanh" and last and c.replicate == 0
        underflow = c.activation == "relu" and c.sigma_w2 == SIGMAS[0] and c.depth == 16
        underflow = underflow and c.replicate == 1
        if nonfinite:
            ld[:], lw[:], lq[:], flag[:] = np.nan, np.nan, np.nan, "nonfinite"
        if underflow:
            ld[0] = lw[0] = np.nan
            flag[0] = "underflow"
        layers.append(pd.DataFrame({
            "config_id": c.config_id, "layer": ell, "log10_delta": ld, "log10_grad_w": lw,
            "log10_grad_b": ld, "log10_q": lq, "q": 10.0**lq, "flag": flag,
        }))  # fmt: skip
        ok = np.isfinite(ld)
        slope = np.polyfit((c.depth - ell)[ok], ld[ok], 1)[0] if not nonfinite else np.nan
        r = ld[0] - ld[-1]
        regime = "vanishing" if r < -T else "exploding" if r > T else "stable"
        regime = "nonfinite" if nonfinite else "vanishing" if underflow else regime
        rows.append({
            "log10_delta_ratio": r, "log10_grad_w_ratio": lw[0] - lw[-1],
            "log10_grad_b_ratio": r, "delta_growth": slope,
            "grad_w_growth": np.nan if nonfinite else 0.0, "log10_delta_first": ld[0],
            "log10_delta_last": ld[-1], "log10_grad_w_first": lw[0], "log10_grad_w_last": lw[-1],
            "log10_q_last": lq[-1], "nonfinite": nonfinite, "underflow": underflow,
            "threshold": T, "regime": regime, "chi1": chi1,
            "predicted_log10_delta_ratio": 0.5 * np.log10(chi1) * (c.depth - 1),
        })  # fmt: skip
    summary = pd.concat([configs, pd.DataFrame(rows)], axis=1)
    return configs, pd.concat(layers, ignore_index=True), summary


def synthetic_manifest(summary: pd.DataFrame) -> dict:
    return {
        "schema_version": 1,
        "gradbench_version": "0.1.0",
        "spec_sha256": "ab" * 32,
        "name": "synthetic <demo>",
        "git_commit": "deadbeef",
        "git_dirty": False,
        "jax_version": "0.4.30",
        "jaxlib_version": "0.4.30",
        "backend": "cpu",
        "device_kind": "cpu",
        "device_count": 1,
        "process_count": 1,
        "x64": False,
        "xla_flags": "",
        "chunk_size": 64,
        "started": "2025-01-01T00:00:00",
        "finished": "2025-01-01T00:01:00",
        "n_configs": len(summary),
        "threshold": T,
        "axes": {
            "activation": {"values": ["relu", "tanh"], "scale": "linear"},
            "sigma_w2": {"values": [float(s) for s in SIGMAS], "scale": "linear"},
            "depth": {"values": list(DEPTHS), "scale": "linear"},
            "replicate": {
                "values": sorted(summary["replicate"].unique().tolist()),
                "scale": "linear",
            },
        },
        "groups": [
            {
                "key": "relu-d16",
                "configs": len(summary) // 2,
                "depth_bucket": 16,
                "compile_seconds": 1.5,
                "run_seconds": 2.0,
                "chunks": 1,
            },
            {
                "key": "tanh-d16",
                "configs": len(summary) // 2,
                "depth_bucket": 16,
                "compile_seconds": 1.25,
                "run_seconds": 3.0,
                "chunks": 1,
            },
        ],
    }


SPEC = """name = "synthetic <demo>"
seed = 0
[model]
width = 64
batch = 8
[axes]
activation = ["relu", "tanh"]
sigma_w2 = { linspace = [0.5, 4.0, 8] }
depth = [4, 8, 16]
replicate = { count = 3 }
"""


INITS = ("he", "lecun", "torch-default", "xavier")  # with 2 activations: 8 facets > MAX_PANELS


def many_facet_tables():
    """The synthetic tables once per init preset: activation x init = 8 facets.

    Each init shifts every log10 norm of the backward signal by its index / 10 at layer 1,
    falling linearly to 0 at the last layer, so the facets differ in r by exactly that amount.
    """
    configs, layers, summary = synthetic_tables()
    depth = layers["config_id"].map(configs.set_index("config_id")["depth"])
    out = []
    for k, init in enumerate(INITS):
        shift = 0.1 * k * (depth - layers["layer"]) / (depth - 1)
        out.append((
            configs.assign(config_id=configs["config_id"] + init, init=init),
            layers.assign(config_id=layers["config_id"] + init,
                          log10_delta=layers["log10_delta"] + shift),
            summary.assign(config_id=summary["config_id"] + init, init=init,
                           log10_delta_ratio=summary["log10_delta_ratio"] + 0.1 * k),
        ))  # fmt: skip
    return tuple(pd.concat(tables, ignore_index=True) for tables in zip(*out, strict=True))


def write_synthetic_run(directory, summary_columns_drop=(), *, many_facets=False):
    """A run directory as the engine writes it; returns a run-like namespace.

    With `many_facets`, the run of `many_facet_tables` (init is a swept axis too).
    """
    configs, layers, summary = many_facet_tables() if many_facets else synthetic_tables()
    summary = summary.drop(columns=list(summary_columns_drop))
    data = directory / "data"
    data.mkdir(parents=True, exist_ok=True)
    configs.to_parquet(data / "configs.parquet")
    layers.to_parquet(data / "layers.parquet")
    summary.to_parquet(data / "summary.parquet")
    manifest = synthetic_manifest(summary)
    if many_facets:
        manifest["axes"]["init"] = {"values": list(INITS), "scale": "linear"}
    (directory / "manifest.json").write_text(json.dumps(manifest))
    (directory / "spec.toml").write_text(SPEC)
    return SimpleNamespace(
        path=directory,
        configs=configs,
        layers=layers,
        summary=summary,
        manifest=manifest,
        spec_text=SPEC,
    )


@pytest.fixture(scope="module")
def tables():
    return synthetic_tables()


def panels(fig):
    return [ax for ax in fig.axes if ax.get_label() != "<colorbar>"]


def tagged(ax, gid, kind=PatchCollection):
    return [c for c in ax.collections if isinstance(c, kind) and c.get_gid() == gid]


def test_phase_diagram_facets_contours_colourbar_and_marks(tables):
    _, _, summary = tables
    fig = plots.phase_diagram(summary, "sigma_w2", "depth", threshold=T, facet="activation")
    axes = panels(fig)
    assert len(axes) == 2
    assert [ax.get_title() for ax in axes] == ["activation = relu", "activation = tanh"]
    assert any(ax.get_label() == "<colorbar>" for ax in fig.axes)
    for ax in axes:
        (cs,) = tagged(ax, "threshold", ContourSet)
        assert list(cs.levels) == [-T, T]
    relu, tanh = axes
    # tanh cell (4.0, 16) had a NaN replicate: black; relu cell (0.5, 16) underflowed: hatched
    assert sum(len(c.get_paths()) for c in tagged(tanh, "nonfinite")) == 1
    assert not tagged(relu, "nonfinite")
    (hatched,) = tagged(relu, "unmeasured")
    assert len(hatched.get_paths()) == 1 and hatched.get_hatch() == "///"
    legend = {t.get_text() for t in fig.legends[0].get_texts()}
    assert "NaN/Inf in a replicate" in legend and "not measurable (underflow or zero)" in legend
    # theory overlay from the chi1 and predicted columns
    assert tagged(relu, "theory", ContourSet)
    assert "theory χ₁ = 1" in legend
    # colours: finite cells carry the mean over replicates
    mesh = relu.collections[0]
    z = np.ma.masked_invalid(mesh.get_array()).reshape(len(DEPTHS), len(SIGMAS))
    sub = summary[(summary.activation == "relu") & (summary.depth == 8)]
    expect = sub.groupby("sigma_w2")["log10_delta_ratio"].mean().to_numpy()
    np.testing.assert_allclose(z[1], expect)
    assert z.mask[2, 0]  # the underflowed cell has no colour


def test_phase_diagram_without_theory_or_nonfinite(tables):
    _, _, summary = tables
    clean = summary[summary.regime != "nonfinite"].drop(
        columns=["chi1", "predicted_log10_delta_ratio"]
    )
    fig = plots.phase_diagram(clean, "sigma_w2", "depth", threshold=T, log_y=True)
    (ax,) = panels(fig)
    assert ax.get_yscale() == "log"
    assert not tagged(ax, "nonfinite") and not tagged(ax, "theory", ContourSet)
    assert tagged(ax, "threshold", ContourSet)


def test_phase_diagram_all_nonfinite_column_does_not_crash(tables):
    _, _, summary = tables
    bad = summary.copy()
    sel = bad.sigma_w2 == SIGMAS[-1]
    bad.loc[sel, "log10_delta_ratio"] = np.nan
    bad.loc[sel, "regime"] = "nonfinite"
    fig = plots.phase_diagram(bad, "sigma_w2", "depth", threshold=T, facet=["activation"])
    for ax in panels(fig):
        assert sum(len(c.get_paths()) for c in tagged(ax, "nonfinite")) == len(DEPTHS)


def test_regime_map_majority_and_legend(tables):
    _, _, summary = tables
    fig = plots.regime_map(summary, "sigma_w2", "depth", facet="activation")
    axes = panels(fig)
    assert len(axes) == 2
    legend = [t.get_text() for t in fig.legends[0].get_texts()]
    assert legend[:4] == ["vanishing", "stable", "exploding", "nonfinite"]
    assert "unmeasured" not in legend  # shown only where a config was unmeasured
    relu = axes[0]
    codes = np.ma.masked_invalid(relu.collections[0].get_array()).reshape(len(DEPTHS), len(SIGMAS))
    sub = summary[summary.activation == "relu"]
    for (d, s), part in sub.groupby(["depth", "sigma_w2"]):
        i, j = DEPTHS.index(d), int(np.argmin(abs(SIGMAS - s)))
        majority = part.regime.value_counts()
        if majority.iloc[0] > len(part) / 2:
            assert schema.REGIMES[int(codes[i, j])] == majority.index[0]


def test_layer_profiles_uses_largest_depth_and_bands(tables):
    configs, layers, _ = tables
    fig = plots.layer_profiles(layers, configs, hue="sigma_w2", facet="activation")
    axes = panels(fig)
    assert len(axes) == 2
    assert "depth L = 16" in fig.get_suptitle()
    ax = axes[0]
    xs = np.concatenate([ln.get_xdata() for ln in ax.get_lines()])
    assert xs.max() == 16
    assert ax.collections  # min-max band over replicates
    labels = [t.get_text() for t in fig.legends[0].get_texts()]
    assert labels == [f"{s:.3g}" for s in SIGMAS]


def test_layer_profiles_thins_hue_and_accepts_other_values(tables):
    configs, layers, _ = tables
    fig = plots.layer_profiles(layers, configs, hue="sigma_w2", value="log10_q", max_lines=3)
    assert len(fig.legends[0].get_texts()) == 3
    assert "activation = relu" in fig.get_suptitle()  # held fixed, and said so


def test_ratio_curves_marks_nonfinite(tables):
    _, _, summary = tables
    fig = plots.ratio_curves(summary, "sigma_w2", threshold=T, hue="depth", facet="activation")
    relu, tanh = panels(fig)
    assert [ln for ln in tanh.get_lines() if ln.get_gid() == "nonfinite"]
    assert not [ln for ln in relu.get_lines() if ln.get_gid() == "nonfinite"]


def test_infer_axes(tables):
    _, _, summary = tables
    manifest = synthetic_manifest(summary)
    assert plots.infer_axes(summary, manifest) == ("sigma_w2", "depth", ["activation"])
    assert plots.infer_axes(summary, {}) == ("sigma_w2", "depth", ["activation"])
    two = summary.assign(init=np.where(summary.replicate == 0, "he", "lecun"))
    manifest["axes"]["init"] = {"values": ["he", "lecun"], "scale": "linear"}
    assert plots.infer_axes(two, manifest)[2] == ["activation", "init"]
    fig = plots.phase_diagram(two, "sigma_w2", "depth", threshold=T, facet=["activation", "init"])
    assert len(panels(fig)) == 4
    one = summary[summary.depth == 16]
    del manifest["axes"]["depth"]
    assert plots.infer_axes(one, manifest)[:2] == ("sigma_w2", None)
    manifest["axes"]["sigma_b2"] = {"values": [0.0, 0.1], "scale": "linear"}
    assert plots.infer_axes(one.assign(sigma_b2=0.1), manifest)[:2] == ("sigma_w2", "sigma_b2")


def test_is_log_axis(tables):
    _, _, summary = tables
    geometric = summary.assign(depth=summary.depth.map({4: 8, 8: 32, 16: 128}))
    assert plots.is_log_axis({}, geometric, "depth")
    assert not plots.is_log_axis({}, summary, "sigma_w2")
    assert plots.is_log_axis({"axes": {"sigma_w2": {"scale": "log"}}}, summary, "sigma_w2")
    # "linear" is what a manifest records for every list that is no logspace: the values decide
    linear = {"axes": {"depth": {"values": [8, 32, 128], "scale": "linear"}}}
    assert plots.is_log_axis(linear, geometric, "depth")
    # the values decide by gradbench.schema.axis_scale: three values over a factor of 100 are log
    spread = dict(zip(SIGMAS, np.geomspace(0.01, 5, len(SIGMAS)), strict=True))
    wide = summary.assign(sigma_w2=summary.sigma_w2.map(spread))
    wide.loc[wide.sigma_w2 > 1, "sigma_w2"] += 0.3  # no longer evenly spaced in log
    assert schema.axis_scale(sorted(set(wide.sigma_w2))) == "log"
    assert plots.is_log_axis({}, wide, "sigma_w2")
    # never a log axis for values <= 0 or for names, whatever the manifest says
    zero = summary.assign(sigma_w2=summary.sigma_w2 - SIGMAS[0])
    assert not plots.is_log_axis({"axes": {"sigma_w2": {"scale": "log"}}}, zero, "sigma_w2")
    assert not plots.is_log_axis({}, summary, "activation")
    assert not plots.is_log_axis({}, summary, None)


def test_save_writes_png_and_svg(tables, tmp_path):
    _, _, summary = tables
    fig = plots.regime_map(summary, "sigma_w2", "depth", facet="activation")
    png, svg = plots.save(fig, tmp_path / "figures", "regimes")
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert 10_000 < png.stat().st_size < 2_000_000
    root = ET.parse(svg).getroot()
    assert root.tag.endswith("svg") and svg.stat().st_size > 10_000
    with pytest.raises(ValueError, match="plain file name"):
        plots.save(fig, tmp_path, "../escape")


def test_svg_files_are_byte_identical_across_renders(tmp_path):
    """Reviews diff re-rendered reports: a figure drawn twice must give the same SVG file."""

    def figure():
        fig = Figure()
        ax = fig.subplots()
        ax.fill_between([0, 1, 2], [1, 2, 1], alpha=0.3)
        ax.plot([0, 1], [1, 2])
        return fig

    first = plots.save(figure(), tmp_path / "a", "x")[1]
    second = plots.save(figure(), tmp_path / "b", "x")[1]
    assert first.read_bytes() == second.read_bytes()


def test_plots_know_every_regime_of_the_classifier():
    """A regime the classifier gains must get a colour, a severity and a column in reports."""

    assert set(schema.REGIMES) == {r.value for r in schema.Regime}
    assert set(schema.SEVERITY) == set(schema.REGIMES) == set(plots.REGIME_COLOURS)


def test_regime_map_draws_and_names_unmeasured_cells(tables):
    _, _, summary = tables
    lost = summary.assign(
        regime=summary["regime"].mask(summary["sigma_w2"] == SIGMAS[0], "unmeasured")
    )
    fig = plots.regime_map(lost, "sigma_w2", "depth", facet="activation")
    legend = [t.get_text() for t in fig.legends[0].get_texts()]
    assert "unmeasured" in legend
    codes = np.ma.masked_invalid(panels(fig)[0].collections[0].get_array())
    codes = codes.reshape(len(DEPTHS), len(SIGMAS))
    assert {schema.REGIMES[int(c)] for c in codes[:, 0]} == {"unmeasured"}
    assert "unmeasured" not in {schema.REGIMES[int(c)] for c in codes[:, 1:].ravel()}


def test_facet_map_has_a_row_per_facet_and_the_replicate_means(tables):
    _, _, summary = many_facet_tables()
    fig = plots.facet_map(summary, "sigma_w2", ["activation", "init"], threshold=T)
    delta, grad_w = panels(fig)
    rows = [t.get_text() for t in delta.texts if t.get_gid() != "cell_value"]
    assert rows == [f"{a}/{i}" for a in ("relu", "tanh") for i in INITS]
    assert "depth L = 16" in fig.get_suptitle()  # the largest depth, and said so
    z = np.ma.masked_invalid(delta.collections[0].get_array()).reshape(len(rows), len(SIGMAS))
    deep = summary[summary["depth"] == 16]
    for i, (act, init) in enumerate((a, i) for a in ("relu", "tanh") for i in INITS):
        part = deep[(deep["activation"] == act) & (deep["init"] == init)]
        means = part.groupby("sigma_w2")["log10_delta_ratio"].agg(["mean", "count", "size"])
        expect = means["mean"].where(means["count"] == means["size"]).to_numpy()
        np.testing.assert_allclose(z[i].filled(np.nan), expect, equal_nan=True)
    # tanh at the largest scale had a NaN replicate (black), relu at the smallest underflowed
    (black,) = tagged(delta, "nonfinite")
    assert len(black.get_paths()) == len(INITS)
    (hatched,) = tagged(delta, "unmeasured")
    assert len(hatched.get_paths()) == len(INITS)
    labelled = [t for t in delta.texts if t.get_gid() == "cell_value"]
    assert len(labelled) == int((~z.mask).sum())
    assert grad_w.get_title() == notation.label("log10_grad_w_ratio")


def test_layer_map_is_relative_to_the_last_layer_per_hue_panel():
    configs, layers, _ = many_facet_tables()
    fig = plots.layer_map(layers, configs, facet=["activation", "init"], hue="sigma_w2",
                          value="log10_delta", threshold=T, max_panels=4)  # fmt: skip
    axes = panels(fig)
    shown = SIGMAS[[0, 2, 5, 7]]  # four evenly chosen of eight, the ends included
    assert [ax.get_title() for ax in axes] == [f"σ_w² = {s:.3g}" for s in shown]
    merged = layers.merge(configs, on="config_id")
    merged = merged[merged["depth"] == 16]
    last = merged[merged["layer"] == 16].set_index("config_id")["log10_delta"]
    merged = merged.assign(rel=merged["log10_delta"] - merged["config_id"].map(last))
    for ax, sigma in zip(axes, shown, strict=True):
        z = np.ma.masked_invalid(ax.collections[0].get_array()).reshape(2 * len(INITS), 16)
        part = merged[(merged["sigma_w2"] == sigma) & (merged["activation"] == "tanh")]
        part = part[part["init"] == "lecun"]
        cells = part.groupby("layer")["rel"].agg(["mean", "count", "size"])
        expect = cells["mean"].where(cells["count"] == cells["size"]).to_numpy()
        row = len(INITS) + INITS.index("lecun")
        np.testing.assert_allclose(z[row].filled(np.nan), expect, atol=1e-12, equal_nan=True)
        assert np.all(z[:, -1].filled(0) == 0)  # every norm relative to its own last layer
    q = plots.layer_map(layers, configs, facet=["activation", "init"], hue="sigma_w2",
                        value="log10_q", max_panels=1)  # fmt: skip
    (ax,) = panels(q)  # one panel: the smallest scale
    z = np.ma.masked_invalid(ax.collections[0].get_array()).reshape(2 * len(INITS), 16)
    part = merged[(merged["sigma_w2"] == SIGMAS[0]) & (merged["activation"] == "relu")]
    expect = part[part["init"] == "he"].groupby("layer")["log10_q"].mean().to_numpy()
    np.testing.assert_allclose(z[0].filled(np.nan), expect, atol=1e-12)  # the value itself


def test_save_lays_out_once_and_draws_each_file_once(tables, monkeypatch, tmp_path):
    """Each savefig of a laid-out figure would draw it twice; both files share one layout."""
    _, _, summary = tables
    fig = plots.phase_diagram(summary, "sigma_w2", "depth", threshold=T, facet="activation")
    draws = []
    original = Figure.draw
    monkeypatch.setattr(Figure, "draw", lambda self, r: draws.append(r) or original(self, r))
    png, svg = plots.save(fig, tmp_path, "phase")
    assert len(draws) == 2 and png.stat().st_size > 10_000 and svg.stat().st_size > 10_000


def test_power_of_ten_labels_are_plain_text():
    assert power_label(0.01) == "10⁻²"
    assert power_label(1000.0) == "10³"
    assert power_label(1.0) == "10⁰"
    assert power_label(0.5) == "0.5"
