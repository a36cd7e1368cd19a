"""The report of a run: figures, findings computed from its tables, `index.html` and `report.md`.

Reads only the run's tables and manifest (pandas) and draws with `gradbench.plots`; never touches
JAX, so `gradbench report RUN_DIR` re-renders a stored run without compiling anything. Every number
in the text is computed here from the tables; none is typed in.
"""

from __future__ import annotations

import html
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import pandas as pd

from gradbench import agreement, plots

SYMBOLS = {"sigma_w2": "σ_w²", "sigma_w": "σ_w", "sigma_b2": "σ_b²", "sigma_b": "σ_b"}
SEVERITY = ("nonfinite", "exploding", "vanishing", "stable")  # ties go to the first


class RunLike(Protocol):
    """What `write_report` needs of a run (`gradbench.results.Run` provides it)."""

    path: Path
    configs: pd.DataFrame
    layers: pd.DataFrame
    summary: pd.DataFrame
    manifest: Mapping[str, Any]
    spec_text: str


@dataclass(frozen=True)
class Finding:
    """One sentence about the run and the numbers it states, exactly as computed from the tables.

    Attributes:
        text: the sentence (numbers shown to 3 significant digits).
        numbers: name -> value of every number in `text`, unrounded.
        facet: the facet (axis -> value) the sentence is about; empty for the whole run.
        kind: "regimes", "critical", "factor", "nonfinite" or "underflow".
    """

    text: str
    numbers: dict[str, float] = field(default_factory=dict)
    facet: dict[str, Any] = field(default_factory=dict)
    kind: str = ""


def fmt(v: float) -> str:
    """Numbers in reports: 3 significant digits."""
    return f"{float(v):.3g}"


def _symbol(name: str) -> str:
    return SYMBOLS.get(name, name)


def _majority(regimes: pd.Series) -> str:
    counts = regimes.value_counts()
    return max(counts.index, key=lambda r: (counts[r], -SEVERITY.index(r) if r in SEVERITY else -9))


def _runs(values: np.ndarray, chosen: np.ndarray) -> list[tuple[float, float]]:
    """Maximal runs of consecutive grid values for which `chosen` holds, as (first, last)."""
    runs, start = [], None
    for i, ok in enumerate(chosen):
        if ok and start is None:
            start = i
        if start is not None and (not ok or i == len(chosen) - 1):
            end = i if ok else i - 1
            runs.append((float(values[start]), float(values[end])))
            start = None
    return runs


def _span(sym: str, runs: list[tuple[float, float]]) -> str:
    """ "σ_w² = 4" or "σ_w² in 0.5–1, 3.5"."""
    if len(runs) == 1 and runs[0][0] == runs[0][1]:
        return f"{sym} = {fmt(runs[0][0])}"
    return f"{sym} in " + ", ".join(fmt(a) if a == b else f"{fmt(a)}–{fmt(b)}" for a, b in runs)


def scale_axis(summary: pd.DataFrame) -> str | None:
    """The swept weight scale (sigma_w2 preferred when both columns vary), or None."""
    return next((a for a in plots.SCALE_AXES if a in summary and summary[a].nunique() > 1), None)


def finding_facets(summary: pd.DataFrame, scale: str | None) -> list[str]:
    """Varying config columns other than the scale and depth (sigma_w2 stands for sigma_w)."""
    cols = [c for c in plots.config_columns(summary) if c != "init_family"]
    cols = [c for c in cols if summary[c].nunique(dropna=False) > 1]
    drop = {scale, "depth"}
    if scale in plots.SCALE_AXES:
        drop |= set(plots.SCALE_AXES)
    drop |= {c[:-1] for c in ("sigma_w2", "sigma_b2") if c in cols}
    return [c for c in cols if c not in drop]


def _facet_name(summary: pd.DataFrame, facets: list[str], key: tuple) -> str:
    """ "relu/he, σ_b² = 0.05": activation and init by value (also when fixed), others by name."""
    values = dict(zip(facets, key, strict=True))
    lead = [c for c in ("activation", "init") if c in values or c in summary]
    words = [
        str(values.get(c, summary[c].iloc[0]))
        for c in lead
        if c in values or summary[c].nunique() == 1
    ]
    rest = [
        f"{_symbol(c)} = {fmt(v) if isinstance(v, int | float) else v}"
        for c, v in values.items()
        if c not in lead
    ]
    return ", ".join(["/".join(words)] * bool(words) + rest) or "all configs"


def findings(summary: pd.DataFrame, threshold: float, *, scale: str | None = None) -> list[Finding]:
    """Sentences about the run, every number computed from `summary`.

    Per facet (activation, init and any other swept axis except the weight scale and depth), at the
    largest depth: which grid values of the scale are vanishing/stable/exploding (majority of
    replicates), where the measured growth rate crosses zero (and where theory puts chi_1 = 1), and
    the per-layer factor 10^mean(delta_growth) and the ratio 10^mean(r) at the smallest, the most
    nearly critical and the largest scale. Then the count of non-finite and underflowed configs.

    Args:
        summary: the run's summary table (docs/results.md).
        threshold: t of the regime rule.
        scale: the scale axis; by default the swept one of sigma_w2, sigma_w.
    """
    scale = scale or scale_axis(summary)
    facets = finding_facets(summary, scale)
    groups = summary.groupby(facets, sort=True, observed=True) if facets else [((), summary)]
    out: list[Finding] = []
    for key, part in groups:
        key = key if isinstance(key, tuple) else (key,)
        name = _facet_name(summary, facets, key)
        facet = dict(zip(facets, key, strict=True))
        depth = int(part["depth"].max())
        deep = part[part["depth"] == depth]
        if scale is not None:
            out.append(_regimes(name, facet, deep, scale, depth, threshold))
            out += _critical(name, facet, deep, scale, depth)
        out += _factors(name, facet, deep, scale, depth)
    out.append(_nonfinite(summary, scale))
    if "underflow" in summary and summary["underflow"].astype(bool).any():
        n = int(summary["underflow"].astype(bool).sum())
        out.append(
            Finding(
                f"{n} config{'s' * (n != 1)} underflowed (a gradient was zero or subnormal in "
                "the compute dtype): their r is not a number and their regime comes from the "
                "bound on r.",
                {"count": n},
                kind="underflow",
            )
        )
    return out


def _regimes(name, facet, deep, scale, depth, t) -> Finding:
    by = deep.groupby(scale)["regime"].agg(_majority).sort_index()
    values = by.index.to_numpy(float)
    sym, pieces, numbers = _symbol(scale), [], {"depth": depth, "threshold": float(t)}
    for regime, members in (
        ("vanishing", ("vanishing",)),
        ("stable", ("stable",)),
        ("exploding", ("exploding", "nonfinite")),
    ):
        chosen = by.isin(members).to_numpy()
        if not chosen.any():
            continue
        runs = _runs(values, chosen)
        numbers |= {f"{regime}_min": runs[0][0], f"{regime}_max": runs[-1][1]}
        pieces.append(f"{regime} for {_span(sym, runs)}")
    n_stable = int((by == "stable").sum())
    numbers |= {"stable_count": n_stable, "grid_count": len(values)}
    stable = (
        f" ({n_stable} of {len(values)} grid values stable)"
        if n_stable
        else (f"; no grid value of {sym} is stable")
    )
    text = (
        f"{name}, depth {depth} (majority of replicates, t = {fmt(t)}): "
        f"{'; '.join(pieces)}{stable}."
    )
    return Finding(text, numbers, facet, "regimes")


def _per_scale(deep: pd.DataFrame, scale: str) -> pd.DataFrame:
    """Mean over the replicates with a finite growth and ratio, per scale value."""
    ok = np.isfinite(deep["delta_growth"]) & np.isfinite(deep["log10_delta_ratio"])
    cols = ["delta_growth", "log10_delta_ratio"]
    cols += [c for c in ("log10_grad_w_ratio", "chi1") if c in deep]
    grouped = deep[ok].groupby(scale)
    return grouped[cols].mean().assign(replicates=grouped.size()).sort_index()


def _critical(name, facet, deep, scale, depth) -> list[Finding]:
    means = _per_scale(deep, scale)
    if len(means) < 2:
        return []
    xs, sym = means.index.to_numpy(float), _symbol(scale)
    cross = plots.crossing(xs, means["delta_growth"].to_numpy(float), 0.0)
    if cross is None:
        verb = "grows" if (means["delta_growth"] > 0).all() else "shrinks"
        text = (
            f"{name}: the backward signal {verb} at every {sym} in "
            f"{fmt(xs[0])}–{fmt(xs[-1])} (depth {depth}); no critical point in the grid."
        )
        return [
            Finding(
                text, {"scale_min": xs[0], "scale_max": xs[-1], "depth": depth}, facet, "critical"
            )
        ]
    text = f"{name}: the measured growth of ‖δ‖ per layer crosses zero at {sym} ≈ {fmt(cross)}"
    numbers = {"critical": cross, "depth": depth}
    theory = plots.crossing(xs, means["chi1"].to_numpy(float), 1.0) if "chi1" in means else None
    if theory is not None:
        text += f"; mean-field theory puts χ₁ = 1 at {sym} ≈ {fmt(theory)}"
        numbers["theory_critical"] = theory
    return [Finding(f"{text} (depth {depth}).", numbers, facet, "critical")]


def _factors(name, facet, deep, scale, depth) -> list[Finding]:
    if scale is None:
        means = _per_scale(deep.assign(_all=0), "_all")
    else:
        means = _per_scale(deep, scale)
    if means.empty:
        return []
    picks = [means.index[0], means["delta_growth"].abs().idxmin(), means.index[-1]]
    out = []
    for s in dict.fromkeys(picks):  # unique, in order
        row = means.loc[s]
        g, r = float(row["delta_growth"]), float(row["log10_delta_ratio"])
        where = f"{name}, {_symbol(scale)} = {fmt(s)}" if scale else name
        verb = "changes" if fmt(10**g) == "1" else "grows" if g > 0 else "shrinks"
        text = (
            f"{where}: the backward signal {verb} ×{fmt(10**g)} per layer toward the input; "
            f"at depth {depth} the first layer receives 10^{fmt(r)} of the last layer's "
            f"gradient (mean of {int(row['replicates'])} replicates)"
        )
        numbers = {
            "factor": 10**g,
            "log10_delta_ratio": r,
            "depth": depth,
            "replicates": int(row["replicates"]),
        }
        if scale:
            numbers["scale"] = float(s)
        if "log10_grad_w_ratio" in row and np.isfinite(row["log10_grad_w_ratio"]):
            numbers["log10_grad_w_ratio"] = float(row["log10_grad_w_ratio"])
            text += f"; for ‖∂J/∂W‖ the ratio is 10^{fmt(row['log10_grad_w_ratio'])}"
        if "chi1" in row and np.isfinite(row["chi1"]):
            numbers |= {"chi1_measured": 10 ** (2 * g), "chi1": float(row["chi1"])}
            text += (
                f"; 10^(2 × growth) = {fmt(10 ** (2 * g))} against theory χ₁ = {fmt(row['chi1'])}"
            )
        text += "."
        out.append(Finding(text, numbers, facet, "factor"))
    return out


def _nonfinite(summary: pd.DataFrame, scale: str | None) -> Finding:
    bad = summary[summary["regime"] == "nonfinite"]
    n, total = len(bad), len(summary)
    if not n:
        return Finding(
            f"No config produced NaN or Inf ({total} configs).",
            {"count": 0, "total": total},
            kind="nonfinite",
        )
    pct = 100 * n / total
    numbers = {"count": n, "total": total, "percent": pct, "depth_min": int(bad["depth"].min())}
    text = f"{n} of {total} configs ({fmt(pct)}%) produced NaN or Inf"
    if scale:
        numbers["scale_min"] = float(bad[scale].min())
        text += f"; the smallest {_symbol(scale)} among them is {fmt(numbers['scale_min'])}"
    return Finding(f"{text}, the smallest depth {numbers['depth_min']}.", numbers, kind="nonfinite")


def _threshold(run: RunLike) -> float:
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
            shown = ", ".join(fmt(v) if isinstance(v, float) else str(v) for v in values)
        else:
            shown = f"{axis.get('scale', 'linear')} {fmt(min(values))}–{fmt(max(values))}"
        parts.append(f"{name} ({len(values)}: {shown})")
    return f"{' × '.join(parts)} = {n} configs" if parts else f"{n} configs"


def _seconds(groups: Any, word: str) -> float | None:
    """Sum of the per-group `<word>_seconds` in the manifest, or None when none is recorded."""
    found = [g[f"{word}_seconds"] for g in groups or [] if f"{word}_seconds" in g]
    return float(sum(found)) if found else None


def _facts(run: RunLike, threshold: float) -> list[tuple[str, str]]:
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
    header = [*(facets or ["configs"]), *plots.REGIMES, "total"]
    groups = summary.groupby(facets, sort=True, observed=True) if facets else [(("all",), summary)]
    rows = []
    for key, part in groups:
        key = key if isinstance(key, tuple) else (key,)
        counts = part["regime"].value_counts()
        cells = [str(int(counts.get(r, 0))) for r in plots.REGIMES]
        rows.append(
            [*(fmt(k) if isinstance(k, float) else str(k) for k in key), *cells, str(len(part))]
        )
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
}
LAYER_VALUES = {
    "layers_delta": "log10_delta",
    "layers_grad_w": "log10_grad_w",
    "layers_q": "log10_q",
}


def _figures(run: RunLike, threshold: float, directory: Path) -> list[tuple[str, str, str]]:
    """Draw and save the figures that the run's axes allow; returns (stem, title, caption)."""
    s, m = run.summary, run.manifest
    x, y, facet = plots.infer_axes(s, m)
    logs = {"log_x": plots.is_log_axis(m, s, x), "log_y": plots.is_log_axis(m, s, y)}
    draw = {}
    if x and y:
        draw["phase_delta_ratio"] = lambda: plots.phase_diagram(
            s, x, y, threshold=threshold, facet=facet, **logs
        )
        draw["regimes"] = lambda: plots.regime_map(s, x, y, facet=facet, **logs)
        if "log10_grad_w_ratio" in s:
            draw["phase_grad_w_ratio"] = lambda: plots.phase_diagram(
                s, x, y, threshold=threshold, facet=facet, value="log10_grad_w_ratio", **logs
            )
    if x:
        draw["ratio_curves"] = lambda: plots.ratio_curves(
            s, x, threshold=threshold, hue=y, facet=facet, log_x=logs["log_x"]
        )
    for stem, value in LAYER_VALUES.items():
        if value in run.layers:
            draw[stem] = partial(
                plots.layer_profiles, run.layers, run.configs, hue=x, facet=facet, value=value
            )
    layers = (
        "At the largest depth; one line per scale value (at most 8); the band spans the replicates."
    )
    for stem, make in draw.items():
        plots.save(make(), directory, stem)
    return [
        (stem, FIGURES[stem][0], FIGURES[stem][1].format(t=fmt(threshold), layers=layers))
        for stem in draw
    ]


def write_report(run: RunLike, out_dir: str | Path | None = None) -> Path:
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
    figures = _figures(run, threshold, out / "figures")
    facets = finding_facets(run.summary, scale)
    name = str(run.manifest.get("name", Path(run.path).name))
    blocks: list[tuple] = [
        ("h1", f"gradbench report: {name}"),
        (
            "p",
            f"{len(run.summary)} configurations. r = log10(‖δ_1‖/‖δ_L‖) compares the backward "
            f"signal ‖∂J/∂z_l‖ at the first and the last hidden layer; a config is vanishing if "
            f"r < −{fmt(threshold)}, exploding if r > {fmt(threshold)}, stable otherwise, and "
            "nonfinite if NaN or Inf appeared.",
        ),
        *(_training_blocks(full, steps, out / "figures") if steps is not None else []),
        *_glance_blocks(run.summary, threshold, scale, facets),
        ("h2", "Findings"),
        ("ul", [f.text for f in findings(run.summary, threshold, scale=scale)]),
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
        ("h2", "What was run"),
        ("table", ["", ""], [list(f) for f in _facts(full, threshold)]),
        ("h3", "Sweep file"),
        ("code", full.spec_text),
    ]
    (out / "report.md").write_text(_markdown(blocks), encoding="utf-8")
    (out / "index.html").write_text(_html(blocks, name), encoding="utf-8")
    return out / "index.html"


def glance(
    summary: pd.DataFrame, threshold: float, scale: str | None, facets: list[str]
) -> pd.DataFrame:
    """Per facet at its largest depth: where the majority regime is vanishing, stable, exploding.

    The columns answer the classic questions on the first screen: whether small weights make the
    gradient vanish, from which scale it explodes, and how fast it grows per layer at the largest scale.
    """
    rows = []
    groups = summary.groupby(facets, sort=True, observed=True) if facets else [((), summary)]
    for key, part in groups:
        key = key if isinstance(key, tuple) else (key,)
        depth = int(part["depth"].max())
        row = {"configs": _facet_name(summary, facets, key), "depth": depth}
        if scale is not None:
            by_scale = part[part["depth"] == depth].groupby(scale)
            regime = by_scale["regime"].agg(_majority)
            vanishing = regime.index[regime == "vanishing"]
            stable = regime.index[regime == "stable"]
            exploding = regime.index[regime == "exploding"]
            row["vanishing up to"] = fmt(vanishing.max()) if len(vanishing) else "never"
            row["stable"] = _range_text(stable) if len(stable) else "nowhere"
            row["exploding from"] = fmt(exploding.min()) if len(exploding) else "never"
            top = regime.index.max()
            growth = by_scale["delta_growth"].mean()
            row[f"×/layer at the largest {_symbol(scale)}"] = (
                f"{fmt(10 ** growth.loc[top])} ({_symbol(scale)} = {fmt(top)})"
            )
        rows.append(row)
    return pd.DataFrame(rows)


def _range_text(values: pd.Index) -> str:
    low, high = values.min(), values.max()
    return fmt(low) if low == high else f"{fmt(low)}–{fmt(high)}"


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
    table = agreement.cells(summary)
    numbers = agreement.score(table)
    plots.save(plots.theory_agreement(table), figures, "theory_agreement")
    worst = table.dropna(subset=["ratio"]).assign(off=lambda t: (t["ratio"] - 1).abs())
    worst = worst[~worst["agrees"]].sort_values("off", ascending=False).head(10)
    columns = [c for c in agreement.CELL if c in worst and summary[c].nunique() > 1]
    rows = [
        [str(r[c]) if not isinstance(r[c], float) else fmt(r[c]) for c in columns]
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
            ("table", columns + ["measured", "chi_1", "ratio", "explanation"], rows),
        ]
    return blocks


_MD_SPECIAL = re.compile(r"([\\`*_\[\]<>|#])")


def _md(text: str) -> str:
    return _MD_SPECIAL.sub(r"\\\1", text)


def _markdown(blocks: Sequence[tuple]) -> str:
    out = []
    for kind, *args in blocks:
        if kind in ("h1", "h2", "h3"):
            out.append(f"{'#' * int(kind[1])} {_md(args[0])}")
        elif kind == "p":
            out.append(_md(args[0]))
        elif kind == "ul":
            out.append("\n".join(f"- {_md(item)}" for item in args[0]))
        elif kind == "table":
            header, rows = args
            lines = [header, ["---"] * len(header), *rows]
            out.append("\n".join("| " + " | ".join(_md(c) for c in row) + " |" for row in lines))
        elif kind == "code":
            fence = "`" * max(3, 1 + max((len(m) for m in re.findall(r"`+", args[0])), default=0))
            out.append(f"{fence}toml\n{args[0].rstrip()}\n{fence}")
        elif kind == "figure":
            out.append(f"![{_md(args[1])}]({args[0]}.png)\n\n[SVG]({args[0]}.svg)")
    return "\n\n".join(out) + "\n"


_CSS = """
body { font: 15px/1.5 system-ui, sans-serif; max-width: 72rem; margin: 2rem auto; padding: 0 1rem;
       color: #1a1a1a; }
h1 { font-size: 1.6rem; } h2 { margin-top: 2.2rem; border-bottom: 1px solid #ddd; }
table { border-collapse: collapse; margin: 1rem 0; }
th, td { border: 1px solid #ddd; padding: .25rem .6rem; text-align: left; vertical-align: top; }
th { background: #f4f4f4; }
pre { background: #f6f8fa; padding: .8rem; overflow-x: auto; }
img { max-width: 100%; height: auto; border: 1px solid #eee; }
li { margin: .3rem 0; }
"""


def _h(text: str) -> str:
    """Escape, then show 10^x as a superscript."""
    return re.sub(
        r"10\^(-?[0-9]+(?:\.[0-9]+)?(?:e[+-]?[0-9]+)?)", r"10<sup>\1</sup>", html.escape(text)
    )


def _html(blocks: Sequence[tuple], title: str) -> str:
    body = []
    for kind, *args in blocks:
        if kind in ("h1", "h2", "h3"):
            body.append(f"<{kind}>{_h(args[0])}</{kind}>")
        elif kind == "p":
            body.append(f"<p>{_h(args[0])}</p>")
        elif kind == "ul":
            body.append("<ul>" + "".join(f"<li>{_h(i)}</li>" for i in args[0]) + "</ul>")
        elif kind == "table":
            header, rows = args
            head = "".join(f"<th>{_h(c)}</th>" for c in header) if any(header) else ""
            cells = "".join(
                "<tr>" + "".join(f"<td>{_h(c)}</td>" for c in row) + "</tr>" for row in rows
            )
            body.append(f"<table>{f'<tr>{head}</tr>' if head else ''}{cells}</table>")
        elif kind == "code":
            body.append(f"<pre><code>{html.escape(args[0])}</code></pre>")
        elif kind == "figure":
            src = html.escape(args[0], quote=True)
            body.append(
                f'<figure><a href="{src}.svg"><img src="{src}.png" '
                f'alt="{html.escape(args[1], quote=True)}"></a></figure>'
            )
    return (
        f'<!DOCTYPE html>\n<html lang="en">\n<head>\n<meta charset="utf-8">\n'
        f"<title>{html.escape(title)}</title>\n<style>{_CSS}</style>\n</head>\n<body>\n"
        + "\n".join(body)
        + "\n</body>\n</html>\n"
    )


# --- training dynamics (runs with a [train] section; gradbench.train) ---------------------------

TRAIN_AXES = ("optimizer", "lr", "clip", "clip_threshold")
TRAIN_CONSTANTS = ("task", "steps", "samples", "train_batch", "outputs", "train_group")
OUTCOMES = ("loss_initial", "loss_final", "loss_baseline", "loss_ratio", "fit_ratio", "trained",
            "diverged", "diverged_step", "clipped_fraction", "log10_grad_norm_initial",
            "log10_grad_norm_max", "log10_clipped_norm_max", "log10_update_norm_max",
            "trained_below")  # fmt: skip


@dataclass
class _View:
    path: Path
    configs: pd.DataFrame
    layers: pd.DataFrame
    summary: pd.DataFrame
    manifest: Mapping[str, Any]
    spec_text: str


def training_steps(run: RunLike) -> pd.DataFrame | None:
    """The run's training table (data/training.parquet), or None for a run without training."""
    if "trained" not in run.summary:
        return None
    table = getattr(run, "training", None)
    if table is None:
        path = Path(run.path) / "data" / "training.parquet"
        table = pd.read_parquet(path) if path.is_file() else None
    return table


def gradient_view(run: RunLike) -> _View:
    """The run with one row per network (the first of its training settings), without training
    columns: gradients at initialisation do not depend on how the network is trained afterwards."""
    drop = [*TRAIN_AXES, *TRAIN_CONSTANTS, *OUTCOMES]
    summary = run.summary.drop(columns=[c for c in drop if c in run.summary])
    network = [c for c in plots.config_columns(summary) if c != "init_family"]
    network += [c for c in ("replicate", "seed") if c in summary]
    summary = summary.drop_duplicates(subset=network, ignore_index=True)
    keep = set(summary["config_id"])
    configs = run.configs[run.configs["config_id"].isin(keep)]
    configs = configs.drop(columns=[c for c in drop if c in configs])
    manifest = dict(run.manifest)
    manifest["axes"] = {
        k: v for k, v in (run.manifest.get("axes") or {}).items() if k not in TRAIN_AXES
    }
    layers = run.layers[run.layers["config_id"].isin(keep)]
    return _View(Path(run.path), configs, layers, summary, manifest, run.spec_text)


def _clip_varies(s: pd.DataFrame) -> bool:
    return "clip" in s and s["clip"].nunique() > 1


def _count(mask: pd.Series) -> str:
    return f"{int(mask.sum())}/{len(mask)}"


def training_findings(summary: pd.DataFrame) -> list[Finding]:
    """Sentences about training, every number computed from the summary's outcome columns."""
    s = summary
    below = float(s["trained_below"].iloc[0])
    n, trained, diverged = len(s), s["trained"].astype(bool), s["diverged"].astype(bool)
    failed = ~trained & ~diverged
    text = (
        f"{int(trained.sum())} of {n} training runs trained (final loss below {fmt(below)} × "
        f"the baseline loss), {int(diverged.sum())} diverged, {int(failed.sum())} did neither."
    )
    numbers = {"trained": int(trained.sum()), "diverged": int(diverged.sum()), "runs": n}
    out = [Finding(text, numbers, kind="training")]
    parts = []
    for regime in plots.REGIMES:
        rows = s["regime"] == regime
        if rows.any():
            parts.append(
                f"{regime} {_count(trained[rows])} trained, {_count(diverged[rows])} diverged"
            )
            numbers[f"{regime}_trained"] = int(trained[rows].sum())
    out.append(
        Finding(
            "By the gradient's regime at initialisation: " + "; ".join(parts) + ".",
            numbers={k: v for k, v in numbers.items() if k.endswith("_trained")},
            kind="training_regimes",
        )
    )
    if diverged.any():
        first = s.loc[diverged, "diverged_step"].astype(float)
        out.append(
            Finding(
                f"Diverging runs (loss or gradient NaN/Inf) did so at step {fmt(first.min())} "
                f"at the earliest, median {fmt(first.median())}.",
                {"first": float(first.min()), "median": float(first.median())},
                kind="divergence",
            )
        )
    return out


def trainable_band(summary: pd.DataFrame, scale: str, multiple: float) -> pd.DataFrame:
    """Per facet and depth: the scale values where most replicates trained, and where theory puts
    depth <= multiple x xi_c. Only runs without clipping (or the sweep's only clipping setting)."""
    s = summary
    if _clip_varies(s):
        s = s[s["clip"] == "none"]
    facets = [c for c in finding_facets(s, scale) if c not in TRAIN_AXES or s[c].nunique() > 1]
    facets = [c for c in facets if c not in ("clip", "clip_threshold")]
    rows = []
    groups = s.groupby(facets, sort=True, observed=True) if facets else [((), s)]
    for key, part in groups:
        key = key if isinstance(key, tuple) else (key,)
        name = _facet_name(s, facets, key)
        for depth, deep in part.groupby("depth", sort=True):
            by = deep.groupby(scale).agg(trained=("trained", "mean"), xi_c=("xi_c", "mean"))
            xs = by.index.to_numpy(float)
            measured = (by["trained"] > 0.5).to_numpy()
            theory = (depth <= multiple * by["xi_c"]).to_numpy()
            sym = _symbol(scale)
            rows.append(
                {
                    "configs": name,
                    "depth": int(depth),
                    "trained (most replicates)": _span(sym, _runs(xs, measured))
                    if measured.any()
                    else "nowhere",
                    f"theory: depth ≤ {fmt(multiple)} ξ_c": _span(sym, _runs(xs, theory))
                    if theory.any()
                    else "nowhere",
                    "agree": int((measured == theory).sum()),
                    "cells": len(xs),
                }
            )
    return pd.DataFrame(rows)


def depth_reach(summary: pd.DataFrame, scale: str, multiple: float) -> pd.DataFrame:
    """Per facet and scale value: the deepest depth at which most replicates trained, the
    shallowest at which they did not, and the theory's depth scale `multiple` x xi_c there."""
    s = summary[summary["clip"] == "none"] if _clip_varies(summary) else summary
    facets = [c for c in finding_facets(s, scale) if c not in ("clip", "clip_threshold")]
    rows = []
    groups = s.groupby(facets, sort=True, observed=True) if facets else [((), s)]
    for key, part in groups:
        key = key if isinstance(key, tuple) else (key,)
        name = _facet_name(s, facets, key)
        for x, cells in part.groupby(scale, sort=True):
            by = cells.groupby("depth")["trained"].mean()
            trained, failed = by.index[by > 0.5], by.index[by <= 0.5]
            xi = float(cells["xi_c"].mean())
            rows.append(
                {
                    "configs": name,
                    _symbol(scale): fmt(x),
                    "χ₁": fmt(cells["chi1"].mean()) if "chi1" in cells else "–",
                    f"{fmt(multiple)} ξ_c": fmt(multiple * xi) if np.isfinite(xi) else "∞",
                    "deepest trained": str(int(trained.max())) if len(trained) else "none",
                    "shallowest failed": str(int(failed.min())) if len(failed) else "none",
                    "_x": float(x),
                    "_chi1": float(cells["chi1"].mean()) if "chi1" in cells else np.nan,
                    "_scale": multiple * xi,
                    "_deepest": float(trained.max()) if len(trained) else np.nan,
                }
            )
    return pd.DataFrame(rows)


def _reach_findings(reach: pd.DataFrame, scale: str, multiple: float) -> list[Finding]:
    """The deepest trained depth against the theory's depth scale, on each side of chi_1 = 1."""
    out = []
    for side, rows in (("ordered", reach["_chi1"] < 1), ("chaotic", reach["_chi1"] > 1)):
        part = reach[rows]
        if part.empty:
            continue
        pieces = [
            f"{_symbol(scale)} = {r[_symbol(scale)]}: {r['deepest trained']} vs "
            f"{r[f'{fmt(multiple)} ξ_c']}"
            for r in part.to_dict("records")
        ]
        text = (
            f"{part['configs'].iloc[0]}, {side} side (χ₁ {'<' if side == 'ordered' else '>'} 1): "
            f"deepest trained depth vs the theory's {fmt(multiple)} ξ_c — "
            + "; ".join(pieces)
            + "."
        )
        numbers = {"cells": len(part)}
        out.append(Finding(text, numbers, {"side": side}, "depth_reach"))
    return out


def _band_finding(band: pd.DataFrame, multiple: float) -> Finding:
    agree, cells = int(band["agree"].sum()), int(band["cells"].sum())
    text = (
        f"The measured outcome (most replicates trained or not) matches the theory's rule "
        f"'trainable iff depth ≤ {fmt(multiple)} ξ_c' in {agree} of {cells} (σ_w², depth) cells "
        f"({fmt(100 * agree / max(cells, 1))}%)."
    )
    return Finding(text, {"agree": agree, "cells": cells}, kind="trainable_band")


def clipping_table(summary: pd.DataFrame) -> pd.DataFrame:
    """Per initial regime and clipping setting: runs, diverged, trained, largest updates."""
    s = summary.assign(setting=plots.clip_setting(summary["clip"], summary["clip_threshold"]))
    rows = []
    for (regime, setting), part in s.groupby(["regime", "setting"], sort=True):
        update = part["log10_update_norm_max"].to_numpy(float)
        update = update[np.isfinite(update)]
        rows.append(
            {
                "regime at init": regime,
                "clipping": setting,
                "runs": len(part),
                "diverged": int(part["diverged"].sum()),
                "trained": int(part["trained"].sum()),
                "clipped steps (median share)": fmt(part["clipped_fraction"].median()),
                "largest update, median (log10)": fmt(np.median(update)) if update.size else "–",
                "largest update, max (log10)": fmt(update.max()) if update.size else "–",
            }
        )
    return pd.DataFrame(rows)


def clipping_findings(summary: pd.DataFrame) -> list[Finding]:
    """What clipping did to exploding and to vanishing configs, computed from the summary."""
    s = summary.assign(setting=plots.clip_setting(summary["clip"], summary["clip_threshold"]))
    none, clipped = s[s["clip"] == "none"], s[s["clip"] != "none"]
    out = []
    for regime in ("exploding", "vanishing"):
        a, b = none[none["regime"] == regime], clipped[clipped["regime"] == regime]
        if a.empty or b.empty:
            continue
        ua, ub = a["log10_update_norm_max"], b["log10_update_norm_max"]
        numbers = {
            "runs_none": len(a), "diverged_none": int(a["diverged"].sum()),
            "trained_none": int(a["trained"].sum()), "runs_clipped": len(b),
            "diverged_clipped": int(b["diverged"].sum()), "trained_clipped": int(b["trained"].sum()),
        }  # fmt: skip
        text = (
            f"{regime.capitalize()} at initialisation: without clipping {numbers['diverged_none']} "
            f"of {len(a)} runs diverged and {numbers['trained_none']} trained"
        )
        if ua.notna().any() and ub.notna().any():
            numbers |= {"update_none": float(ua.max()), "update_clipped": float(ub.max())}
            text += f", the largest update norm reached 10^{fmt(ua.max())}"
        text += (
            f"; with clipping (all rules) {numbers['diverged_clipped']} of {len(b)} diverged, "
            f"{numbers['trained_clipped']} trained"
        )
        if "update_clipped" in numbers:
            text += f", and the largest update norm was 10^{fmt(ub.max())}"
        out.append(Finding(text + ".", numbers, {"regime": regime}, "clipping"))
    out.append(_rescued(s, "vanishing"))
    out.append(_rescued(s, "exploding"))
    verdict = _verdict(out)
    if verdict is not None:
        out.insert(0, verdict)
    for setting, part in s[s["clip"] == "global_norm"].groupby("setting"):
        t = float(part["clip_threshold"].iloc[0])
        top = float(10 ** part["log10_clipped_norm_max"].max())
        out.append(
            Finding(
                f"{setting}: over every step of its {len(part)} runs the clipped gradient norm "
                f"never exceeded {fmt(top)} (threshold {fmt(t)}).",
                {"largest": top, "threshold": t},
                kind="clip_bound",
            )
        )
    return [f for f in out if f.text]


def _verdict(found: list[Finding]) -> Finding | None:
    """One sentence from the clipping findings: were exploding updates bounded, were vanishing
    networks rescued? Needs both regimes in the run."""
    by = {(f.kind, f.facet.get("regime")): f.numbers for f in found}
    exploding, rescue = by.get(("clipping", "exploding")), by.get(("rescue", "vanishing"))
    if not exploding or not rescue or "update_clipped" not in exploding:
        return None
    bounded = exploding["update_clipped"] < exploding["update_none"]
    text = (
        f"In short: clipping {'bounded' if bounded else 'did not bound'} the exploding updates "
        f"(largest update norm 10^{fmt(exploding['update_none'])} without clipping, "
        f"10^{fmt(exploding['update_clipped'])} with it; divergences "
        f"{exploding['diverged_none']} of {exploding['runs_none']} → "
        f"{exploding['diverged_clipped']} of {exploding['runs_clipped']}), and it "
    )
    if rescue["rescued"]:
        text += f"made {rescue['rescued']} of {rescue['pairs']} runs of vanishing networks train."
    else:
        text += f"made none of the {rescue['pairs']} clipped runs of vanishing networks train."
    numbers = {"bounded": bounded, "rescued_vanishing": rescue["rescued"]}
    return Finding(text, numbers, kind="clipping_verdict")


def _rescued(s: pd.DataFrame, regime: str) -> Finding:
    """Runs that failed without clipping and trained with it: same network, optimiser and lr."""
    key = [c for c in plots.config_columns(s) if c not in ("clip", "clip_threshold", "setting")]
    key = [c for c in key if c != "init_family"] + ["replicate"]
    base = s[(s["clip"] == "none") & (s["regime"] == regime)][[*key, "trained"]]
    other = s[(s["clip"] != "none") & (s["regime"] == regime)]
    if base.empty or other.empty:
        return Finding("")
    pairs = other.merge(base, on=key, suffixes=("", "_unclipped"))
    rescued = pairs[pairs["trained"].astype(bool) & ~pairs["trained_unclipped"].astype(bool)]
    failed_before = int((~base["trained"].astype(bool)).sum())
    text = (
        f"Clipping rescued {len(rescued)} of the {len(pairs)} clipped runs of {regime} networks "
        f"({failed_before} of {len(base)} such networks failed to train without clipping)"
    )
    if len(rescued):
        settings = ", ".join(sorted(rescued["setting"].unique()))
        text += f"; rescued by {settings}"
    return Finding(
        text + ".",
        {"rescued": len(rescued), "pairs": len(pairs), "failed_unclipped": failed_before},
        {"regime": regime},
        "rescue",
    )


TRAIN_FIGURES = {
    "trainability": (
        "Trainability phase diagram",
        "Colour: log10(final loss / initial loss), mean over replicates; white dots: most "
        "replicates trained (final loss below {below} × the baseline loss); black: diverged in a "
        "replicate. Green: the theory's depth scale {multiple} ξ_c (Schoenholz et al. 2017: "
        "networks train up to about 6 ξ_c); trainable below the line.{unclipped}",
    ),
    "clipping_fit": (
        "Clipping effect on training",
        "Rows: clipping settings; columns: the weight scale; colour: log10(final loss / baseline "
        "loss); letters: T/t all/some replicates trained, D/d all/some diverged, · none trained.",
    ),
    "clipping_updates": (
        "Clipping effect on the updates",
        "Colour: log10 of the largest parameter update of the run (max over every step); letters "
        "as above. Clipping bounds the update; whether the network then trains is the other map.",
    ),
    "loss_curves": (
        "Loss curves by regime",
        "Training loss over the baseline loss (1: no better than an input-independent prediction), "
        "one line per run, in panels by the gradient's regime at initialisation.{fixed}",
    ),
    "update_curves": (
        "Update norms during training",
        "log10 of the parameter update at each logged step, one line per run, by regime.",
    ),
}


def _training_blocks(run: RunLike, steps: pd.DataFrame, figures: Path) -> list[tuple]:
    s, m = run.summary, run.manifest.get("training", {})
    below = float(s["trained_below"].iloc[0])
    scale = scale_axis(s)
    multiple = plots.DEPTH_SCALE_MULTIPLE
    opts = ", ".join(sorted(s["optimizer"].unique()))
    lrs = ", ".join(fmt(v) for v in sorted(s["lr"].unique()))
    setup = (
        f"Every configuration was trained for {int(s['steps'].iloc[0])} steps with {opts} "
        f"(learning rate {lrs}) on the '{s['task'].iloc[0]}' task ({int(s['samples'].iloc[0])} "
        f"examples, {int(s['train_batch'].iloc[0])} per step), starting from exactly the network "
        f"whose gradients the sections below measure: {len(s)} training runs of "
        f"{len(gradient_view(run).summary)} networks. A run counts as "
        f"trained when its final loss is below {fmt(below)} × the baseline loss (the best "
        f"input-independent prediction; {fmt(s['loss_baseline'].iloc[0])} here) and as diverged "
        "when its loss or gradient became NaN or Inf (data/training.parquet has the curves)."
    )
    if m.get("groups"):
        setup += f" Training compiled {len(m['groups'])} trainer groups."
    blocks: list[tuple] = [("h2", "Training"), ("p", setup)]
    found = training_findings(s)
    band = reach = None
    if scale and "depth" in s and s["depth"].nunique() > 1 and "xi_c" in s:
        band = trainable_band(s, scale, multiple)
        found.append(_band_finding(band, multiple))
        reach = depth_reach(s, scale, multiple)
        found += _reach_findings(reach, scale, multiple)
    if _clip_varies(s):
        found += clipping_findings(s)
    blocks.append(("ul", [f.text for f in found]))
    if band is not None and not band.empty:
        shown = reach[[c for c in reach.columns if not c.startswith("_")]]
        blocks += [
            ("h3", "Trainable band"),
            ("table", list(band.columns), band.astype(str).values.tolist()),
            ("h3", "Depth reach"),
            (
                "p",
                f"Per weight scale: the deepest depth at which most replicates trained, the "
                f"shallowest at which they did not, and the theory's depth scale "
                f"{fmt(multiple)} ξ_c.",
            ),
            ("table", list(shown.columns), shown.astype(str).values.tolist()),
        ]
    if _clip_varies(s):
        table = clipping_table(s)
        blocks += [
            ("h3", "Clipping outcomes"),
            ("table", list(table.columns), table.astype(str).values.tolist()),
        ]
    for stem, title, caption in _training_figures(run, steps, figures, scale, below, multiple):
        blocks += [("h3", title), ("figure", f"figures/{stem}", title), ("p", caption)]
    return blocks


def _training_figures(run, steps, directory, scale, below, multiple):
    s, m = run.summary, run.manifest
    x, y, facet = plots.infer_axes(s, m)
    facet = [c for c in (facet or []) if c not in ("clip", "clip_threshold")] or None
    draw, fixed_note = {}, ""
    if scale and "depth" in s and s["depth"].nunique() > 1:
        unclipped = s[s["clip"] == "none"] if _clip_varies(s) else s
        log_y = s["depth"].max() >= 8 * s["depth"].min()
        if len(unclipped):
            draw["trainability"] = partial(
                plots.trainability_diagram, unclipped, scale, "depth", facet=facet, log_y=log_y,
                log_x=plots.is_log_axis(m, s, scale), multiple=multiple,
            )  # fmt: skip
    if _clip_varies(s) and scale:
        by = [
            c for c in ("activation", "depth", "optimizer", "lr") if c in s and s[c].nunique() > 1
        ]
        for stem, value in (("clipping_fit", "fit_ratio"), ("clipping_updates", "update")):
            draw[stem] = partial(plots.clipping_map, s, scale, value=value, facet=by or None)
    fixed = {}
    if "depth" in s and s["depth"].nunique() > 1:
        trained_depths = s.loc[s["trained"].astype(bool), "depth"]
        depth = int(trained_depths.max()) if len(trained_depths) else int(s["depth"].max())
        fixed["depth"] = depth
        fixed_note = f" Depth {depth}: the deepest at which some run trained."
    if _clip_varies(s):
        hue, panels = (
            "setting",
            ["activation", "regime"] if s["activation"].nunique() > 1 else "regime",
        )
        data = s.assign(setting=plots.clip_setting(s["clip"], s["clip_threshold"]))
    else:
        hue, panels, data = scale, "regime", s
    draw["loss_curves"] = partial(
        plots.training_curves, steps, data, hue=hue, facet=panels, fixed=fixed
    )
    if _clip_varies(s):
        draw["update_curves"] = partial(
            plots.training_curves, steps, data, value="log10_update_norm", hue=hue,
            facet=panels, fixed=fixed,
        )  # fmt: skip
    for stem, make in draw.items():
        plots.save(make(), directory, stem)
    return [
        (stem, TRAIN_FIGURES[stem][0], TRAIN_FIGURES[stem][1].format(
            below=fmt(below), multiple=fmt(multiple), fixed=fixed_note,
            unclipped=" Runs without clipping." if _clip_varies(s) else ""))
        for stem in draw
    ]  # fmt: skip
