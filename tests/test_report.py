"""Report of a synthetic run: findings checked against the tables, pages written, no JAX needed."""

from __future__ import annotations

import importlib.util
import re
import subprocess
import sys
import textwrap
from html.parser import HTMLParser
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from gradbench import cli, plots, report, schema
from gradbench.analysis import crossings
from gradbench.notation import fmt
from gradbench.report import findings, render

# The synthetic run lives in test_plots.py; load it by path so any pytest import mode works.
_spec = importlib.util.spec_from_file_location(
    "_synthetic", Path(__file__).with_name("test_plots.py")
)
synthetic = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(synthetic)
T = synthetic.T


@pytest.fixture(scope="module")
def summary():
    return synthetic.synthetic_tables()[2]


def select(summary: pd.DataFrame, facet: dict) -> pd.DataFrame:
    for col, value in facet.items():
        summary = summary[summary[col] == value]
    return summary[summary["depth"] == summary["depth"].max()]


def stated(f: findings.Finding) -> None:
    """Every number a finding carries appears in its text as formatted."""
    for name, value in f.numbers.items():
        shown = str(value) if isinstance(value, int) else fmt(value)
        assert shown in f.text, (name, value, f.text)


def test_factor_findings_match_tables(summary):
    found = [f for f in findings.findings(summary, T) if f.kind == "factor"]
    assert {f.facet["activation"] for f in found} == {"relu", "tanh"}
    for f in found:
        stated(f)
        rows = select(summary, f.facet)
        rows = rows[rows["sigma_w2"] == f.numbers["scale"]]
        rows = rows[np.isfinite(rows["delta_growth"]) & np.isfinite(rows["log10_delta_ratio"])]
        assert f.numbers["replicates"] == len(rows)
        assert f.numbers["factor"] == pytest.approx(10 ** rows["delta_growth"].mean(), rel=1e-12)
        assert f.numbers["log10_delta_ratio"] == pytest.approx(rows["log10_delta_ratio"].mean())
        assert f.numbers["log10_grad_w_ratio"] == pytest.approx(rows["log10_grad_w_ratio"].mean())
        assert f.numbers["chi1"] == pytest.approx(rows["chi1"].mean())
        assert f.numbers["depth"] == 16
        assert f"10^{fmt(rows['log10_delta_ratio'].mean())} of the last" in f.text
        verb = "shrinks" if rows["delta_growth"].mean() < 0 else "grows"
        assert verb in f.text or "changes ×1 " in f.text
    relu_low = next(
        f for f in found if f.facet == {"activation": "relu"} and f.numbers["scale"] == 0.5
    )
    assert relu_low.numbers["replicates"] == 2  # the underflowed replicate has no finite r
    assert relu_low.text.startswith("relu/gaussian, σ_w² = 0.5: the backward signal shrinks ×0.5")


def test_regime_findings_match_tables(summary):
    found = [f for f in findings.findings(summary, T) if f.kind == "regimes"]
    assert len(found) == 2
    for f in found:
        stated(f)
        rows = select(summary, f.facet)
        majority = rows.groupby("sigma_w2")["regime"].agg(lambda r: r.value_counts().idxmax())
        for regime, members in (
            ("vanishing", ["vanishing"]),
            ("stable", ["stable"]),
            ("exploding", ["exploding", "nonfinite"]),
        ):
            scales = majority.index[majority.isin(members)]
            assert f.numbers[f"{regime}_min"] == scales.min()
            assert f.numbers[f"{regime}_max"] == scales.max()
        assert f.numbers["stable_count"] == (majority == "stable").sum()


def test_critical_findings_match_tables(summary):
    found = [f for f in findings.findings(summary, T) if f.kind == "critical"]
    assert len(found) == 2
    for f in found:
        stated(f)
        rows = select(summary, f.facet)
        g = rows.groupby("sigma_w2")["delta_growth"].mean()
        i = int(np.flatnonzero(np.diff(np.sign(g.to_numpy())))[0])
        expect = np.interp(0.0, g.iloc[i : i + 2].to_numpy(), g.index[i : i + 2].to_numpy())
        assert f.numbers["critical"] == pytest.approx(expect)
        chi = rows.groupby("sigma_w2")["chi1"].mean()
        j = int(np.flatnonzero(np.diff(np.sign(chi.to_numpy() - 1)))[0])
        theory = np.interp(1.0, chi.iloc[j : j + 2].to_numpy(), chi.index[j : j + 2].to_numpy())
        assert f.numbers["theory_critical"] == pytest.approx(theory)


def test_count_findings(summary):
    found = {f.kind: f for f in findings.findings(summary, T)}
    stated(found["nonfinite"])
    bad = summary[summary["regime"] == "nonfinite"]
    assert found["nonfinite"].numbers["count"] == len(bad) == 1
    assert found["nonfinite"].numbers["scale_min"] == bad["sigma_w2"].min()
    assert found["underflow"].numbers["count"] == summary["underflow"].sum()
    clean = summary[(summary["regime"] != "nonfinite") & ~summary["underflow"]]
    kinds = {f.kind: f for f in findings.findings(clean, T)}
    assert "underflow" not in kinds
    assert kinds["nonfinite"].text.startswith("No config produced NaN or Inf")


def test_findings_without_theory_and_with_other_facets(summary):
    bare = summary.drop(columns=["chi1", "predicted_log10_delta_ratio"])
    bare = bare.assign(sigma_b2=np.where(bare["replicate"] == 0, 0.0, 0.05))
    bare["sigma_b"] = np.sqrt(bare["sigma_b2"])
    found = findings.findings(bare, T)
    assert not any("χ₁" in f.text for f in found)
    regimes = [f for f in found if f.kind == "regimes"]
    assert {tuple(sorted(f.facet)) for f in regimes} == {("activation", "sigma_b2")}
    assert len(regimes) == 4
    assert any(f.text.startswith("tanh/gaussian, σ_b² = 0.05,") for f in regimes)


class _Tags(HTMLParser):
    def __init__(self):
        super().__init__()
        self.open, self.images, self.text = [], [], []

    def handle_starttag(self, tag, attrs):
        if tag == "img":
            self.images.append(dict(attrs)["src"])
        elif tag not in ("meta", "br"):
            self.open.append(tag)

    def handle_endtag(self, tag):
        assert self.open.pop() == tag

    def handle_data(self, data):
        self.text.append(data)


RERENDER = """
import sys
import gradbench.plots, gradbench.report, gradbench.results
assert "jax" not in sys.modules, "importing plots/report/results pulled in jax"
run = gradbench.results.load(sys.argv[1])
print(gradbench.report.write_report(run))
assert "jax" not in sys.modules, "rendering a report pulled in jax"
# seaborn imports scipy.stats: half the import time of `gradbench report`, for nothing it draws
assert "seaborn" not in sys.modules and "scipy" not in sys.modules, "rendering imported seaborn"
"""


@pytest.fixture(scope="module")
def rendered(tmp_path_factory):
    """A stored run loaded and re-rendered in a fresh interpreter that must never import jax."""
    directory = tmp_path_factory.mktemp("run")
    run = synthetic.write_synthetic_run(directory)
    done = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(RERENDER), str(directory)],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
    assert Path(done.stdout.strip()) == directory / "index.html"
    return run


def test_report_pages_and_figures(rendered):
    d = rendered.path
    md = (d / "report.md").read_text(encoding="utf-8")
    page = (d / "index.html").read_text(encoding="utf-8")
    links = re.findall(r"\]\((figures/[^)]+)\)", md)
    assert {
        "figures/phase_delta_ratio.png",
        "figures/regimes.png",
        "figures/layers_delta.png",
        "figures/ratio_curves.png",
        "figures/phase_grad_w_ratio.svg",
    } <= set(links)
    for link in links:
        assert (d / link).stat().st_size > 5_000
    for png in (d / "figures").glob("*.png"):
        assert png.read_bytes()[:4] == b"\x89PNG"
    parser = _Tags()
    parser.feed(page)
    assert parser.open == []  # every element closed, in order
    assert parser.images and all((d / src).is_file() for src in parser.images)
    assert set(parser.images) == {link for link in links if link.endswith(".png")}
    # the run name and the spec carry "<demo>": escaped in HTML, backslash-escaped in Markdown
    assert "<demo>" not in page and "synthetic &lt;demo&gt;" in page
    assert "# gradbench report: synthetic \\<demo\\>" in md
    assert 'name = "synthetic <demo>"' in md  # verbatim inside the code fence
    text = "".join(parser.text)
    for f in findings.findings(rendered.summary, T):
        assert f.text.replace("10^", "10") in text.replace("10^", "10")
        assert f.text.replace("_", "\\_").replace("|", "\\|") in md
    for act, part in rendered.summary.groupby("activation"):  # regime counts per facet
        counts = part["regime"].value_counts()
        cells = [str(counts.get(r, 0)) for r in ("vanishing", "stable", "exploding", "nonfinite")]
        assert f"| {act} | {' | '.join(cells)} | {len(part)} |" in md
    assert "deadbeef" in md and "0.4.30 / 0.4.30" in md and "compile time" in md


def test_report_one_dimensional_sweep_into_other_directory(tmp_path):
    run = synthetic.write_synthetic_run(tmp_path / "run")
    keep = run.summary["depth"] == 16
    run.summary = run.summary[keep]
    run.configs = run.configs[keep.to_numpy()]
    layers = run.layers[run.layers["config_id"].isin(run.configs["config_id"])]
    run.layers = layers.drop(columns=["log10_grad_w", "log10_q"])  # absent columns: no figure
    del run.manifest["axes"]["depth"]
    index = report.write_report(run, out_dir=tmp_path / "elsewhere")
    assert index == tmp_path / "elsewhere" / "index.html"
    figures = {p.stem for p in (tmp_path / "elsewhere" / "figures").glob("*.png")}
    assert figures == {"ratio_curves", "layers_delta", "theory_agreement"}  # the summary has chi1
    assert not (tmp_path / "run" / "index.html").exists()


def test_report_files_are_identical_when_rendered_again(rendered, tmp_path):
    """Reviews diff re-rendered reports: every figure, and both pages, come out byte for byte."""
    report.write_report(rendered, out_dir=tmp_path)
    names = sorted(p.name for p in (rendered.path / "figures").iterdir())
    assert names == sorted(p.name for p in (tmp_path / "figures").iterdir())
    for name in names:
        again = (tmp_path / "figures" / name).read_bytes()
        assert again == (rendered.path / "figures" / name).read_bytes(), name
    for page in ("index.html", "report.md"):
        assert (tmp_path / page).read_text() == (rendered.path / page).read_text()


def svg_axes(svg: Path) -> int:
    """Axes in an SVG file written by matplotlib (panels and colour bars): one group each."""
    return len(re.findall(r'<g id="axes_[0-9]+"', svg.read_text(encoding="utf-8")))


def test_cli_report_of_many_facets_draws_one_row_per_facet(tmp_path):
    """8 facets (activation x init): summary maps with a row per facet instead of 8-panel grids,
    and every cell's numbers folded away in the pages."""
    run = synthetic.write_synthetic_run(tmp_path / "run", many_facets=True)
    assert cli.main(["report", str(run.path)]) == 0
    figures = run.path / "figures"
    stems = {p.stem for p in figures.glob("*.png")}
    assert stems == {"ratio_map", "layer_map_delta", "layer_map_grad_w", "layer_map_q",
                     "theory_agreement"}  # fmt: skip
    for svg in figures.glob("*.svg"):
        assert svg_axes(svg) <= plots.MAX_PANELS + 1, svg.name  # the panels and a colour bar
    md = (run.path / "report.md").read_text(encoding="utf-8")
    page = (run.path / "index.html").read_text(encoding="utf-8")
    cells = run.summary.groupby(["activation", "init", "sigma_w2", "depth"])
    what = f"{cells.ngroups} cells (activation × init × sigma_w2 × depth)"
    assert f"<details><summary>{what}" in md and f"<details><summary>{what}" in page
    # one clean cell, recomputed here: relu/lecun at sigma_w^2 = 2, depth 8
    part = run.summary[(run.summary["activation"] == "relu") & (run.summary["init"] == "lecun")]
    part = part[(part["sigma_w2"] == 2.0) & (part["depth"] == 8)]
    r = part["log10_delta_ratio"]
    row = [
        "relu", "lecun", "2", "8", str(len(part)), fmt(r.mean()),
        f"{fmt(r.min())} to {fmt(r.max())}",
        fmt(part["log10_grad_w_ratio"].mean()),
        fmt(10 ** part["delta_growth"].mean()), fmt(part["chi1"].mean()),
        part["regime"].value_counts().idxmax(),
    ]  # fmt: skip
    assert "| " + " | ".join(row) + " |" in md


def test_every_cell_table_has_the_replicate_statistics(summary):
    keys = ["activation", "sigma_w2", "depth"]
    table = findings.cell_table(summary, keys)
    assert len(table) == summary.groupby(keys).ngroups
    # tanh at the largest scale and depth: one replicate NaN, two finite, majority exploding
    row = table[(table["activation"] == "tanh") & (table["σ_w²"] == "4") & (table["depth"] == "16")]
    (row,) = row.to_dict("records")
    part = summary[(summary["activation"] == "tanh") & (summary["sigma_w2"] == 4.0)]
    part = part[part["depth"] == 16]
    finite = part["log10_delta_ratio"].dropna()
    assert len(finite) == 2 and row["replicates"] == 3
    assert row["r: mean"] == fmt(finite.mean())
    assert row["r: min to max"] == f"{fmt(finite.min())} to {fmt(finite.max())}"
    assert row["regime (majority)"] == "exploding"


def test_majorities_equal_majority_per_group_ties_to_the_more_severe():
    rng = np.random.default_rng(3)
    frame = pd.DataFrame({
        "cell": rng.integers(0, 40, 400),
        "regime": rng.choice(list(schema.REGIMES), 400),
    })  # fmt: skip
    frame = pd.concat([frame, pd.DataFrame({"cell": [99, 99], "regime": ["stable", "unmeasured"]})])
    got = findings.majorities(frame, ["cell"])
    expect = frame.groupby("cell")["regime"].agg(findings.majority)
    pd.testing.assert_series_equal(got, expect, check_names=False)
    assert got[99] == "unmeasured"  # a tie between stable and unmeasured


def test_underflow_finding_counts_the_regimes_of_configs_without_r(summary):
    lost = summary.copy()
    rows = lost.index[lost["underflow"]]
    extra = lost.index[(lost["activation"] == "tanh") & (lost["sigma_w2"] == SIGMA_LOW)][:2]
    lost.loc[extra, ["underflow", "log10_delta_ratio", "regime"]] = [True, np.nan, "unmeasured"]
    (found,) = [f for f in findings.findings(lost, T) if f.kind == "underflow"]
    stated(found)
    assert found.numbers["count"] == len(rows) + 2
    assert found.numbers["without_r"] == len(rows) + 2
    assert found.numbers["unmeasured_count"] == 2
    assert found.numbers["vanishing_count"] == len(rows)  # the synthetic underflow is vanishing
    assert 'measure = "log" measures them' in found.text


SIGMA_LOW = float(synthetic.SIGMAS[0])


def test_details_blocks_fold_markdown_and_html():
    blocks = [("details", "3 cells <a & b>", [("table", ["x", "r"], [["1", "2"]])])]
    md = render.markdown(blocks)
    assert md.startswith("<details><summary>3 cells &lt;a &amp; b&gt;</summary>\n\n| x | r |")
    assert md.rstrip().endswith("</details>")
    page = render.html_page(blocks, "t")
    assert "<details><summary>3 cells &lt;a &amp; b&gt;</summary>" in page
    assert "<table><tr><th>x</th><th>r</th></tr><tr><td>1</td><td>2</td></tr></table>" in page


def test_a_facet_without_any_finite_growth_gets_its_regimes_only(summary):
    broken = summary.copy()
    tanh = broken["activation"] == "tanh"
    broken.loc[tanh, ["delta_growth", "log10_delta_ratio"]] = np.nan
    broken.loc[tanh, "regime"] = "nonfinite"
    found = [f for f in findings.findings(broken, T) if f.facet.get("activation") == "tanh"]
    assert [f.kind for f in found] == ["regimes"]
    assert "exploding for σ_w² in 0.5–4" in found[0].text  # nonfinite counts as exploding


# The modules of gradbench.report that only compute text; the rest draw with gradbench.plots.
TEXT_MODULES = (
    "findings",
    "replicates",
    "spectrum",
    "training",
    "render",
    "architectures",
    "depth_laws",
    "predictions",
)
DRAWING_MODULES = ("page", "training_sections", "architecture_sections")


def test_text_modules_of_the_report_import_neither_matplotlib_nor_jax():
    package = Path(report.__file__).parent
    assert {p.stem for p in package.glob("*.py")} - {"__init__"} == {
        *TEXT_MODULES,
        *DRAWING_MODULES,
    }, "a new module of gradbench.report: list it as text or drawing here"
    modules = ["gradbench.report", "gradbench.notation"]
    modules += [f"gradbench.report.{m}" for m in TEXT_MODULES]
    code = f"import sys\nimport {', '.join(modules)}\n" + textwrap.dedent("""
        assert "matplotlib" not in sys.modules, "a text module of the report imported matplotlib"
        assert "jax" not in sys.modules, "a text module of the report imported jax"
    """)
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr


def test_fmt_prints_floats_to_3_significant_digits_and_integers_whole():
    assert [fmt(v) for v in (0.031623, 2.0, np.float64(1234.5), np.float32(0.5))] == [
        "0.0316", "2", "1.23e+03", "0.5",
    ]  # fmt: skip
    assert [fmt(v) for v in (1024, np.int64(8), "relu", True)] == ["1024", "8", "relu", "True"]


def test_facet_names_print_numbers_to_3_significant_digits(summary):
    wide = summary.assign(width=np.where(summary["replicate"] == 0, 1024, 2048))
    facets = findings.finding_facets(wide, "sigma_w2")
    assert facets == ["activation", "width"]
    assert findings.facet_name(wide, facets, ("relu", 1024)) == "relu/gaussian, width = 1.02e+03"


def test_crossings_along_a_grid():
    xs = np.array([0.5, 1.0, 1.5, 2.0])
    assert crossings.crossing(xs, np.array([-1.0, -0.5, 0.5, 1.0]), 0.0) == 1.25
    assert crossings.crossing(xs, np.array([np.nan, 1.0, 0.0, -1.0]), 0.0) == 1.5
    assert crossings.crossing(xs, np.array([1.0, 2.0, 3.0, 4.0]), 0.0) is None
    chosen = np.array([True, True, False, True])
    assert crossings.true_runs(chosen) == [(0, 2), (3, 4)]
    assert crossings.grid_runs(xs, chosen) == [(0.5, 1.0), (2.0, 2.0)]
    assert findings.span_text("σ_w²", crossings.grid_runs(xs, chosen)) == "σ_w² in 0.5–1, 2"


def test_replicate_findings_count_split_cells_and_spreads():
    """Two cells of four replicates: one split 2 stable / 2 vanishing (r from -3 to -1), one agreeing
    (r within 0.2); the numbers are those of the table, counted by hand."""
    from gradbench.report.replicates import replicate_findings

    rows = []
    for sw2, rs, regimes in [
        (1.0, [-3.0, -2.5, -1.5, -1.0], ["vanishing", "vanishing", "stable", "stable"]),
        (2.0, [0.0, 0.1, 0.2, 0.05], ["stable"] * 4),
    ]:
        for rep, (r, regime) in enumerate(zip(rs, regimes, strict=True)):
            rows.append(
                {"activation": "tanh", "sigma_w2": sw2, "depth": 20, "replicate": rep,
                 "log10_delta_ratio": r, "regime": regime}
            )  # fmt: skip
    found = replicate_findings(pd.DataFrame(rows))
    spread = next(f for f in found if "spans" in f.text)
    assert spread.numbers["cells"] == 2
    assert spread.numbers["largest_spread"] == pytest.approx(2.0)
    assert spread.numbers["median_spread"] == pytest.approx((2.0 + 0.2) / 2)
    split = next(f for f in found if "disagree" in f.text)
    assert split.numbers["disagreeing"] == 1 and split.numbers["share"] == 0.5
    assert "2 vanishing, 2 stable" in split.text and "σ_w² = 1" in split.text
    one = pd.DataFrame(rows).query("replicate == 0")
    assert replicate_findings(one) == []


def test_spectrum_findings_state_the_spread_on_the_edge_of_chaos(tmp_path):
    """Synthetic spectra: orthogonal tanh narrow at q* = 0, Gaussian wide; an off-edge config
    (chi_1 = 2) is left out; the figure draws one measured and one predicted line per curve."""
    from gradbench import plots
    from gradbench.report.spectrum import on_edge, spectrum_findings

    rows = []
    for init, spread in (("orthogonal", 0.05), ("gaussian", 20.0)):
        for depth in (4, 16):
            for chi1, q in ((1.0, 0.0), (2.0, 1.5)):
                rows.append(
                    {"activation": "tanh", "init": init, "depth": depth, "chi1": chi1, "q_star": q,
                     "jacobian_sv2_spread": spread * depth / 16,
                     "predicted_jacobian_sv2_spread": 1.1 * spread * depth / 16}
                )  # fmt: skip
    summary = pd.DataFrame(rows)
    found = spectrum_findings(summary)
    assert [f.facet.get("init") for f in found] == ["gaussian", "orthogonal", None]
    gaussian, orthogonal, verdict = found
    assert gaussian.numbers == {"depth": 16, "spread_q0": 20.0, "predicted_q0": 22.0}
    assert orthogonal.numbers["spread_q0"] == pytest.approx(0.05)
    assert verdict.numbers == {"cases": 2, "isometric": 1, "largest_per_layer": 1.25}
    assert "tanh/orthogonal at q* = 0 (spread 0.05 at depth 16)" in verdict.text
    assert spectrum_findings(summary.drop(columns="jacobian_sv2_spread")) == []
    figure = plots.spectrum_growth(on_edge(summary))
    assert (
        len(figure.axes[0].get_lines()) == 2 * 2 + 1
    )  # 2 curves x (measured, predicted) + spread 1
