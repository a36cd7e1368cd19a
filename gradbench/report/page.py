"""The report of a run: figures, findings computed from its tables, `index.html` and `report.md`.

Reads only the run's tables and manifest (pandas) and draws with `gradbench.plots`; never touches
JAX, so `gradbench report RUN_DIR` re-renders a stored run without compiling anything. Every number
in the text is computed here from the tables; none is typed in.
"""

from __future__ import annotations

from collections.abc import Mapping
from functools import partial
from pathlib import Path
from typing import Any

import pandas as pd

from gradbench import plots
from gradbench.analysis import agreement
from gradbench.analysis.facets import facet_parts
from gradbench.analysis.settings import ARCHITECTURE_SETTINGS, fixed_by_architecture, table_cells
from gradbench.notation import fmt, symbol
from gradbench.report.architecture_sections import architecture_blocks
from gradbench.report.architectures import layer_note, opening_paragraph
from gradbench.report.findings import cell_table, finding_facets, findings, glance, scale_axis
from gradbench.report.predictions import chi1_cells
from gradbench.report.render import html_page, markdown
from gradbench.report.replicates import replicate_findings
from gradbench.report.spectrum import ON_EDGE, on_edge, spectrum_findings
from gradbench.report.training import gradient_view, training_steps
from gradbench.report.training_sections import training_blocks
from gradbench.results import Run
from gradbench.schema import REGIMES, layer_rows


def _threshold(run: Run) -> float:
    if "threshold" in run.manifest:
        return float(run.manifest["threshold"])
    if "threshold" in run.summary and len(run.summary):
        return float(run.summary["threshold"].iloc[0])
    return 2.0


def _grid_text(manifest: Mapping, n: int) -> str:
    parts = []
    for name, axis in (manifest.get("axes") or {}).items():
        values = list((axis or {}).get("values", []))
        numeric = all(isinstance(v, int | float) for v in values)
        if len(values) <= 6 or not numeric:
            shown = ", ".join(fmt(v) for v in values)
        else:
            low, high = float(min(values)), float(max(values))
            shown = f"{axis.get('scale', 'linear')} {fmt(low)}–{fmt(high)}"
        parts.append(f"{name} ({len(values)}: {shown})")
    return f"{' × '.join(parts)} = {n} configs" if parts else f"{n} configs"


def _seconds(groups: Any, word: str) -> float | None:
    """Sum of the per-group `<word>_seconds` in the manifest, or None when none is recorded."""
    found = [g[f"{word}_seconds"] for g in groups or [] if f"{word}_seconds" in g]
    return float(sum(found)) if found else None


def _facts(run: Run, threshold: float) -> list[tuple[str, str]]:
    m, s = run.manifest, run.summary
    facts = [
        ("name", str(m.get("name", Path(run.path).name))),
        ("grid", _grid_text(m, int(m.get("n_configs", len(s))))),
        ("regime threshold t", f"{fmt(threshold)} (a factor 10^{fmt(threshold)})"),
    ]
    for col in ("loss", "dtype", "measure", "width", "batch"):
        if col in s:
            facts.append((col, ", ".join(str(v) for v in sorted(s[col].unique()))))
    commit = m.get("git_commit")
    if commit:
        commit = f"{commit} (dirty)" if m.get("git_dirty") else str(commit)
    device = None
    if m.get("backend"):
        device = f"{m['backend']}: {m.get('device_kind', '?')} × {m.get('device_count', '?')}"
    groups = m.get("groups")
    timing = [(w, _seconds(groups, w)) for w in ("compile", "run")]
    facts += [
        ("gradbench", m.get("gradbench_version")),
        ("git commit", commit),
        ("spec sha256", m.get("spec_sha256")),
        (
            "jax / jaxlib",
            f"{m['jax_version']} / {m.get('jaxlib_version')}" if m.get("jax_version") else None,
        ),
        ("device", device),
        ("processes", m.get("process_count")),
        ("x64", m.get("x64")),
        ("chunk size", m.get("chunk_size")),
        ("compile groups", len(groups or [])),
        *[(f"{w} time (s, all groups)", fmt(v) if v is not None else None) for w, v in timing],
        ("started", m.get("started")),
        ("finished", m.get("finished")),
    ]
    return [(k, str(v)) for k, v in facts if v is not None]


def _regime_table(summary: pd.DataFrame, facets: list[str]) -> tuple[list[str], list[list[str]]]:
    """Config counts per facet and regime; "unmeasured" gets a column only where it occurs."""
    regimes = [r for r in REGIMES if r != "unmeasured" or summary["regime"].eq(r).any()]
    named = [symbol(c) if c in ARCHITECTURE_SETTINGS else c for c in facets]
    header = [*(named or ["configs"]), *regimes, "total"]
    rows = []
    for key, part in facet_parts(summary, facets):
        counts = part["regime"].value_counts()
        cells = [str(int(counts.get(r, 0))) for r in regimes]
        rows.append([*(table_cells(facets, key) if key else ["all"]), *cells, str(len(part))])
    return header, rows


FIGURES = {  # stem: (title, caption); {t} is the threshold
    "phase_delta_ratio": (
        "Phase diagram of the backward signal",
        "Colour: r = log10(‖δ_1‖/‖δ_L‖), mean over replicates. Black contours at r = ±{t}; black "
        "cells had NaN/Inf in a replicate, hatched cells could not be measured. Green: mean-field "
        "theory where the run carries it.",
    ),
    "regimes": (
        "Regimes",
        "Majority regime over replicates with threshold t = {t}; white dots mark cells where the "
        "replicates disagree.",
    ),
    "phase_grad_w_ratio": (
        "Phase diagram of the weight gradients",
        "The same ratio for ‖∂J/∂W_l‖. For positively homogeneous activations without bias the "
        "forward shrinkage cancels the backward one, so this ratio can stay near 1 while every "
        "layer's gradient carries the same factor; the regime is defined on the backward signal.",
    ),
    "ratio_curves": (
        "Gradient ratio against the scale",
        "r against the scale; the grey band is the stable range |r| < {t}, the band around each "
        "line spans the replicates, crosses mark NaN/Inf.",
    ),
    "layers_delta": ("Backward signal by layer", "{layers}"),
    "layers_grad_w": ("Weight gradients by layer", "{layers}"),
    "layers_q": ("Forward second moment by layer", "{layers}"),
    "ratio_map": (
        "Gradient ratios of every facet",
        "One row per facet ({facets}), one column per {x}: the mean over replicates of r (left) "
        "and of the same ratio for ‖∂J/∂W_l‖ (right), written in each cell, coloured linearly "
        "within ±{t} and logarithmically beyond; black: NaN/Inf in a replicate, hatched: not "
        "measurable. {many} facets are more panels than a reader can compare, so every facet "
        "is a row here; the table under Every cell below has the range over the replicates.",
    ),
    "layer_map_delta": ("Backward signal by layer, every facet", "{layer_map}"),
    "layer_map_grad_w": ("Weight gradients by layer, every facet", "{layer_map}"),
    "layer_map_q": (
        "Forward second moment by layer, every facet",
        "One row per facet: log10 q_l, the mean over replicates; one panel per {hue} value, "
        "at the largest depth.",
    ),
}


LAYER_VALUES = {
    "layers_delta": "log10_delta",
    "layers_grad_w": "log10_grad_w",
    "layers_q": "log10_q",
}


def _figures(run: Run, threshold: float, directory: Path, axes) -> list[tuple[str, str, str]]:
    """Draw and save the figures that the run's axes (x, y, facet) allow; returns (stem, title,
    caption)."""
    s, (x, y, facet) = run.summary, axes
    n_facets = plots.panel_count(s, facet)
    if n_facets > plots.MAX_PANELS:
        draw = _facet_summaries(run, x or "depth", facet, threshold)
    else:
        draw = _facet_grids(run, x, y, facet, threshold)
    for stem, make in draw.items():
        plots.save(make(), directory, stem)
    words = {
        "t": fmt(threshold),
        "x": x or "depth",
        "hue": x or "depth",
        "many": n_facets,
        "facets": ", ".join(facet or []),
        "layers": "At the largest depth; one line per scale value (at most 8); the band spans "
        "the replicates.",
        "layer_map": "One row per facet: log10 of the norm at layer l over the norm at the last "
        "layer (r at layer 1), the mean over replicates, coloured as the gradient ratios; one "
        f"panel per {x or 'depth'} value, at the largest depth.",
    }
    note = layer_note(s)
    words["layers"] += note
    words["layer_map"] += note
    return [(stem, FIGURES[stem][0], FIGURES[stem][1].format(**words)) for stem in draw]


def _facet_grids(run: Run, x, y, facet, threshold: float) -> dict:
    """The figures of a sweep with few facets: one panel per facet."""
    s, m = run.summary, run.manifest
    logs = {"log_x": plots.is_log_axis(m, s, x), "log_y": plots.is_log_axis(m, s, y)}
    draw = {}
    if x and y:
        draw["phase_delta_ratio"] = partial(
            plots.phase_diagram, s, x, y, threshold=threshold, facet=facet, **logs
        )
        draw["regimes"] = partial(plots.regime_map, s, x, y, facet=facet, **logs)
        if "log10_grad_w_ratio" in s:
            draw["phase_grad_w_ratio"] = partial(
                plots.phase_diagram, s, x, y, threshold=threshold, facet=facet,
                value="log10_grad_w_ratio", **logs,
            )  # fmt: skip
    if x:
        draw["ratio_curves"] = partial(
            plots.ratio_curves, s, x, threshold=threshold, hue=y, facet=facet, log_x=logs["log_x"]
        )
    layers = layer_rows(run.layers)
    for stem, value in LAYER_VALUES.items():
        if value in layers:
            draw[stem] = partial(
                plots.layer_profiles, layers, run.configs, hue=x, facet=facet, value=value
            )
    return draw


def _facet_summaries(run: Run, x: str, facet, threshold: float) -> dict:
    """The figures of a sweep with more facets than panels a reader can compare: a row each."""
    draw = {"ratio_map": partial(plots.facet_map, run.summary, x, facet, threshold=threshold)}
    layers = layer_rows(run.layers)
    for stem, value in LAYER_VALUES.items():
        if value in layers:
            draw[stem.replace("layers_", "layer_map_")] = partial(
                plots.layer_map, layers, run.configs, facet=facet, hue=x, value=value,
                threshold=threshold,
            )  # fmt: skip
    return draw


def write_report(run: Run, out_dir: str | Path | None = None) -> Path:
    """Write `figures/`, `index.html` and `report.md` for `run`; returns the path of index.html.

    Args:
        run: a loaded run (`gradbench.results.load(path)`).
        out_dir: where to write; the run directory by default.
    """
    out = Path(out_dir) if out_dir is not None else Path(run.path)
    out.mkdir(parents=True, exist_ok=True)
    full, steps = run, training_steps(run)
    if steps is not None:  # the gradient sections describe each network once, at initialisation
        run = gradient_view(run)
    threshold = _threshold(run)
    scale = scale_axis(run.summary)
    axes = plots.infer_axes(run.summary, run.manifest)
    figures = _figures(run, threshold, out / "figures", axes)
    facets = finding_facets(run.summary, scale)
    name = str(run.manifest.get("name", Path(run.path).name))
    blocks: list[tuple] = [
        ("h1", f"gradbench report: {name}"),
        ("p", opening_paragraph(run.summary, threshold)),
        *(training_blocks(full, steps, out / "figures") if steps is not None else []),
        *_glance_blocks(run.summary, threshold, scale, facets),
        ("h2", "Findings"),
        (
            "ul",
            [
                f.text
                for f in [
                    *findings(run.summary, threshold, scale=scale),
                    *replicate_findings(run.summary),
                ]
            ],
        ),
        (
            "p",
            "Every number above is computed from data/summary.parquet "
            "(gradbench.report.findings); per-layer factors are 10^mean(delta_growth) over the "
            "replicates at the largest depth.",
        ),
        ("h2", "Regimes"),
        ("table", *_regime_table(run.summary, facets)),
        ("h2", "Figures"),
        *[
            b
            for stem, title, caption in figures
            for b in (("h3", title), ("figure", f"figures/{stem}", title), ("p", caption))
        ],
        *_theory_blocks(run.summary, out / "figures"),
        *architecture_blocks(run.summary, facets, scale, threshold, out / "figures"),
        *_spectrum_blocks(run.summary, out / "figures"),
        *_cell_blocks(run.summary, axes),
        ("h2", "What was run"),
        ("table", ["", ""], [list(f) for f in _facts(full, threshold)]),
        ("h3", "Sweep file"),
        ("code", full.spec_text),
    ]
    (out / "report.md").write_text(markdown(blocks), encoding="utf-8")
    (out / "index.html").write_text(html_page(blocks, name), encoding="utf-8")
    return out / "index.html"


MAX_TABLE_CELLS = 500  # the Every cell table stays in the page up to this many rows


def _cell_blocks(summary: pd.DataFrame, axes) -> list[tuple]:
    """Every cell of the figures (facets x swept axes) as numbers, folded away under a summary."""
    x, y, facet = axes
    keys = [*(facet or []), *(a for a in (x, y) if a)] or ["depth"]
    table = cell_table(summary, keys)
    blocks: list[tuple] = [("h2", "Every cell")]
    if len(table) > MAX_TABLE_CELLS:
        text = (
            f"{len(table)} cells ({' × '.join(keys)}) are more than a page should list; "
            "data/summary.parquet holds every config."
        )
        return [*blocks, ("p", text)]
    rows = [[str(v) for v in row] for row in table.values.tolist()]
    what = f"{len(table)} cells ({' × '.join(keys)}), replicates aggregated: show the table"
    return [*blocks, ("details", what, [("table", list(table.columns), rows)])]


def _glance_blocks(summary, threshold, scale, facets) -> list[tuple]:
    table = glance(summary, threshold, scale, facets)
    if table.empty or scale is None:
        return []
    return [
        ("h2", "At a glance"),
        (
            "p",
            f"Majority regime over replicates at each facet's largest depth (t = {fmt(threshold)}); "
            "the last column is the per-layer factor of the backward signal, 10^mean(delta_growth).",
        ),
        ("table", list(table.columns), [[str(v) for v in row] for row in table.values.tolist()]),
    ]


def _theory_blocks(summary: pd.DataFrame, figures: Path) -> list[tuple]:
    """The measurement-vs-theory section, when the run carries mean-field columns."""
    if "chi1" not in summary or summary["chi1"].isna().all():
        return []
    table = chi1_cells(summary)
    numbers = agreement.score(table)
    plots.save(plots.theory_agreement(table), figures, "theory_agreement")
    worst = table.dropna(subset=["ratio"]).assign(off=lambda t: (t["ratio"] - 1).abs())
    worst = worst[~worst["agrees"]].sort_values("off", ascending=False).head(10)
    settings = [c for c in ARCHITECTURE_SETTINGS if c in worst]  # those that vary (chi1_cells)
    columns = [c for c in agreement.CELL if c in worst and summary[c].nunique() > 1]
    columns = [
        *(c for c in settings if c not in fixed_by_architecture(summary, settings)),
        *columns,
    ]
    rows = [
        table_cells(columns, [r[c] for c in columns])
        + [
            fmt(r["measured"]),
            fmt(r["chi1"]),
            fmt(r["ratio"]),
            "; ".join(agreement.REASONS[k] for k in r["reasons"].split(", ") if k)
            or "none of the known causes",
        ]
        for r in worst.to_dict("records")
    ]
    blocks = [
        ("h2", "Measurement vs theory"),
        (
            "p",
            f"{numbers['agreeing']} of {numbers['cells']} cells ({fmt(100 * numbers['share'])}%) have a measured "
            f"per-layer factor 10^(2 delta_growth) within ±{fmt(100 * numbers['tolerance'])}% of mean-field chi_1; "
            f"median |log10(measured / chi_1)| = {fmt(numbers['median_abs_log10_ratio'])}.",
        ),
        ("figure", "figures/theory_agreement", "Measured per-layer factor against chi_1"),
    ]
    if rows:
        blocks += [
            ("h3", "Cells that disagree most, and why"),
            (
                "table",
                [symbol(c) if c in settings else c for c in columns]
                + ["measured", "chi_1", "ratio", "explanation"],
                rows,
            ),
        ]
    return blocks


def _spectrum_blocks(summary: pd.DataFrame, figures: Path) -> list[tuple]:
    """The Jacobian-spectrum section, for runs that measured it (`[run] jacobian = true`)."""
    found = spectrum_findings(summary)
    if not found:
        return []
    plots.save(plots.spectrum_growth(on_edge(summary)), figures, "spectrum_growth")
    return [
        ("h2", "Jacobian spectrum"),
        (
            "p",
            "The squared singular values of the input-output Jacobian J = ∂h_L/∂x, measured with "
            "random probes (mean m1 and spread m2/m1² − 1, averaged over the batch's inputs), against "
            "free probability's prediction from the finite-depth orbit q_l; on the edge of chaos "
            f"(|χ₁ − 1| < {fmt(ON_EDGE)}), where their mean neither vanishes nor explodes with depth.",
        ),
        ("ul", [f.text for f in found]),
        (
            "figure",
            "figures/spectrum_growth",
            "Spread of J's squared singular values against depth",
        ),
    ]
