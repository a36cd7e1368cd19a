"""What a report says: findings computed from a run's summary, each with the numbers it states.

Pure pandas, no matplotlib: every number in a sentence is in its `Finding.numbers`, computed here
from the tables, so a report's text can be checked against its data without drawing anything.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd

from gradbench.analysis.crossings import crossing, grid_runs
from gradbench.analysis.facets import group_by_facets
from gradbench.analysis.settings import (
    ARCHITECTURE_SETTINGS,
    fixed_by_architecture,
    setting_words,
    table_cells,
)
from gradbench.notation import fmt, symbol
from gradbench.report.architectures import architecture_of, layer_word
from gradbench.schema import SCALE_AXES, SEVERITY, config_axes


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


def majority(regimes: pd.Series) -> str:
    """The most frequent regime of `regimes`; a tie goes to the more severe (`SEVERITY`)."""
    counts = regimes.value_counts()
    return max(counts.index, key=lambda r: (counts[r], -SEVERITY.index(r) if r in SEVERITY else -9))


def majorities(frame: pd.DataFrame, keys: list[str]) -> pd.Series:
    """`majority` of the regime per group of `keys`, in one groupby (ties go to the more severe)."""
    counts = group_by_facets(frame, keys)["regime"].value_counts()
    counts = counts.unstack(fill_value=0)
    order = [*(r for r in SEVERITY if r in counts), *sorted(set(counts) - set(SEVERITY))]
    return counts[order].idxmax(axis=1)  # the first maximum in severity order


def span_text(sym: str, runs: list[tuple[float, float]]) -> str:
    """ "σ_w² = 4" or "σ_w² in 0.5–1, 3.5"."""
    if len(runs) == 1 and runs[0][0] == runs[0][1]:
        return f"{sym} = {fmt(runs[0][0])}"
    return f"{sym} in " + ", ".join(fmt(a) if a == b else f"{fmt(a)}–{fmt(b)}" for a, b in runs)


def scale_axis(summary: pd.DataFrame) -> str | None:
    """The swept weight scale (sigma_w2 preferred when both columns vary), or None."""
    return next((a for a in SCALE_AXES if a in summary and summary[a].nunique() > 1), None)


def finding_facets(summary: pd.DataFrame, scale: str | None) -> list[str]:
    """Varying config columns other than the scale and depth (sigma_w2 stands for sigma_w), and
    other than architecture settings the architecture decides (`settings.fixed_by_architecture`)."""
    cols = [c for c in config_axes(summary.columns) if c != "init_family"]
    cols = [c for c in cols if summary[c].nunique(dropna=False) > 1]
    drop = {scale, "depth", *fixed_by_architecture(summary, cols)}
    if scale in SCALE_AXES:
        drop |= set(SCALE_AXES)
    drop |= {c[:-1] for c in ("sigma_w2", "sigma_b2") if c in cols}
    return [c for c in cols if c not in drop]


def facet_name(summary: pd.DataFrame, facets: list[str], key: tuple) -> str:
    """ "relu/he, σ_b² = 0.05": activation and init by value (also when fixed), then the
    architecture settings as `analysis.settings.setting_words` writes them ("resmlp, α = 0.5",
    those that do not apply left out), others by name; numbers, integers included, to 3
    significant digits."""
    values = dict(zip(facets, key, strict=True))
    lead = [c for c in ("activation", "init") if c in values or c in summary]
    words = [
        str(values.get(c, summary[c].iloc[0]))
        for c in lead
        if c in values or summary[c].nunique() == 1
    ]
    fixed = {
        c: summary[c].iloc[0]
        for c in ARCHITECTURE_SETTINGS
        if c in summary and len(summary) and summary[c].nunique() == 1
    }
    settings = setting_words({c: v for c, v in values.items() if c in ARCHITECTURE_SETTINGS}, fixed)
    rest = [
        f"{symbol(c)} = {fmt(float(v)) if isinstance(v, int | float) else v}"
        for c, v in values.items()
        if c not in lead and c not in ARCHITECTURE_SETTINGS
    ]
    return ", ".join(["/".join(words)] * bool(words) + settings + rest) or "all configs"


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
    deep = at_largest_depth(summary, facets)
    by = scale or "_all"
    deep = deep if scale else deep.assign(_all=0)
    regimes = majorities(deep, [*facets, by])
    means = _per_scale(deep, [*facets, by])
    out: list[Finding] = []
    for key, depth in _facet_depths(deep, facets):
        name = facet_name(summary, facets, key)
        facet = dict(zip(facets, key, strict=True))
        at = _facet_rows(means, facets, key)
        if scale is not None:
            out.append(
                _regimes(name, facet, _facet_rows(regimes, facets, key), scale, depth, threshold)
            )
            out += _critical(name, facet, at, scale, depth)
        word = layer_word(architecture_of(facet, summary))
        out += _factors(name, facet, at, scale, depth, word)
    out.append(_nonfinite(summary, scale))
    if "underflow" in summary and summary["underflow"].astype(bool).any():
        out.append(_underflow(summary))
    return out


def _underflow(summary: pd.DataFrame) -> Finding:
    """How many configs lost a signal to underflow, and the regimes of those left without an r."""
    lost = summary[summary["underflow"].astype(bool)]
    n = len(lost)
    no_r = lost[lost["log10_delta_ratio"].isna()]
    numbers = {"count": n, "without_r": len(no_r)}
    text = (
        f"{n} config{'s' * (n != 1)} underflowed (a backward signal was zero or below what the "
        "compute dtype resolves)"
    )
    if len(no_r):
        counts = no_r["regime"].value_counts()
        regimes = [r for r in SEVERITY if r in counts] + sorted(set(counts.index) - set(SEVERITY))
        numbers |= {f"{r}_count": int(counts[r]) for r in regimes}
        shown = ", ".join(f"{int(counts[r])} {r}" for r in regimes)
        text += f"; {len(no_r)} of them have no r: {shown}"
        if "vanishing" in counts:
            text += " (vanishing: even the largest norm a lost signal can have puts r below −t)"
        if "unmeasured" in counts:
            text += ' (unmeasured: nothing proves a regime; measure = "log" measures them)'
    return Finding(text + ".", numbers, kind="underflow")


def at_largest_depth(summary: pd.DataFrame, facets: list[str]) -> pd.DataFrame:
    """The rows of `summary` at the largest depth of their facet."""
    if not facets:
        return summary[summary["depth"] == summary["depth"].max()]
    deepest = group_by_facets(summary, facets)["depth"].transform("max")
    return summary[summary["depth"] == deepest]


def _facet_depths(deep: pd.DataFrame, facets: list[str]) -> list[tuple[tuple, int]]:
    """(facet key, depth) for every facet of `at_largest_depth` rows, in sorted order."""
    if not facets:
        return [((), int(deep["depth"].max()))]
    depths = group_by_facets(deep, facets)["depth"].max()
    keys = [k if isinstance(k, tuple) else (k,) for k in depths.index]
    return list(zip(keys, depths.astype(int).tolist(), strict=True))


def _facet_rows(frame: pd.DataFrame | pd.Series, facets: list[str], key: tuple):
    """The rows of a table indexed by (*facets, scale) that belong to facet `key`, by scale
    (none where the facet has no row, e.g. no replicate with a finite growth)."""
    if not facets:
        return frame
    try:
        return frame.xs(key, level=facets)
    except KeyError:
        return frame.iloc[:0].droplevel(facets)


def _regimes(name, facet, by: pd.Series, scale, depth, t) -> Finding:
    """`by`: the majority regime per scale value at the largest depth."""
    by = by.sort_index()
    values = by.index.to_numpy(float)
    sym, pieces, numbers = symbol(scale), [], {"depth": depth, "threshold": float(t)}
    for regime, members in (
        ("vanishing", ("vanishing",)),
        ("stable", ("stable",)),
        ("exploding", ("exploding", "nonfinite")),
        ("unmeasured", ("unmeasured",)),
    ):
        chosen = by.isin(members).to_numpy()
        if not chosen.any():
            continue
        found = grid_runs(values, chosen)
        numbers |= {f"{regime}_min": found[0][0], f"{regime}_max": found[-1][1]}
        pieces.append(f"{regime} for {span_text(sym, found)}")
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


def _per_scale(deep: pd.DataFrame, keys: list[str]) -> pd.DataFrame:
    """Mean over the replicates with a finite growth and ratio, per value of `keys`."""
    ok = np.isfinite(deep["delta_growth"]) & np.isfinite(deep["log10_delta_ratio"])
    cols = ["delta_growth", "log10_delta_ratio"]
    cols += [c for c in ("log10_grad_w_ratio", "chi1") if c in deep]
    grouped = group_by_facets(deep[ok], keys)
    return grouped[cols].mean().assign(replicates=grouped.size())


def _critical(name, facet, means, scale, depth) -> list[Finding]:
    """`means`: `_per_scale` of the facet, indexed by scale value."""
    if len(means) < 2:
        return []
    xs, sym = means.index.to_numpy(float), symbol(scale)
    cross = crossing(xs, means["delta_growth"].to_numpy(float), 0.0)
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
    theory = crossing(xs, means["chi1"].to_numpy(float), 1.0) if "chi1" in means else None
    if theory is not None:
        text += f"; mean-field theory puts χ₁ = 1 at {sym} ≈ {fmt(theory)}"
        numbers["theory_critical"] = theory
    return [Finding(f"{text} (depth {depth}).", numbers, facet, "critical")]


def _factors(name, facet, means, scale, depth, word: str = "layer") -> list[Finding]:
    """`means`: `_per_scale` of the facet, indexed by scale value (or a constant without one);
    `word`: what a layer is ("block" of a residual MLP, "step" of an RNN)."""
    if means.empty:
        return []
    picks = [means.index[0], means["delta_growth"].abs().idxmin(), means.index[-1]]
    out = []
    for s in dict.fromkeys(picks):  # unique, in order
        row = means.loc[s]
        g, r = float(row["delta_growth"]), float(row["log10_delta_ratio"])
        where = f"{name}, {symbol(scale)} = {fmt(s)}" if scale else name
        verb = "changes" if fmt(10**g) == "1" else "grows" if g > 0 else "shrinks"
        text = (
            f"{where}: the backward signal {verb} ×{fmt(10**g)} per {word} toward the input; "
            f"at depth {depth} the first {word} receives 10^{fmt(r)} of the last {word}'s "
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
        text += f"; the smallest {symbol(scale)} among them is {fmt(numbers['scale_min'])}"
    return Finding(f"{text}, the smallest depth {numbers['depth_min']}.", numbers, kind="nonfinite")


def glance(
    summary: pd.DataFrame, threshold: float, scale: str | None, facets: list[str]
) -> pd.DataFrame:
    """Per facet at its largest depth: where the majority regime is vanishing, stable, exploding.

    The columns answer the classic questions on the first screen: whether small weights make the
    gradient vanish, from which scale it explodes, and how fast it grows per layer at the largest scale.
    """
    rows = []
    deep = at_largest_depth(summary, facets)
    if scale is not None:
        regimes = majorities(deep, [*facets, scale])
        growths = group_by_facets(deep, [*facets, scale])["delta_growth"].mean()
    for key, depth in _facet_depths(deep, facets):
        row = {"configs": facet_name(summary, facets, key), "depth": depth}
        if scale is not None:
            regime = _facet_rows(regimes, facets, key)
            growth = _facet_rows(growths, facets, key)
            vanishing = regime.index[regime == "vanishing"]
            stable = regime.index[regime == "stable"]
            exploding = regime.index[regime == "exploding"]
            row["vanishing up to"] = fmt(vanishing.max()) if len(vanishing) else "never"
            row["stable"] = _range_text(stable) if len(stable) else "nowhere"
            row["exploding from"] = fmt(exploding.min()) if len(exploding) else "never"
            top = regime.index.max()
            row[f"×/layer at the largest {symbol(scale)}"] = (
                f"{fmt(10 ** growth.loc[top])} ({symbol(scale)} = {fmt(top)})"
            )
        rows.append(row)
    return pd.DataFrame(rows)


def _range_text(values: pd.Index) -> str:
    low, high = values.min(), values.max()
    return fmt(low) if low == high else f"{fmt(low)}–{fmt(high)}"


def cell_table(summary: pd.DataFrame, keys: list[str]) -> pd.DataFrame:
    """One row per cell of `keys` (the facets and swept axes), replicates aggregated, as text.

    The numbers behind every figure of a report: the mean and range of r over the replicates, the
    mean weight-gradient ratio, the per-layer factor 10^mean(delta_growth), theory's chi_1 where
    the run carries it and the majority regime. "–" marks a value no replicate measured.
    """
    grouped = group_by_facets(summary, keys)
    r = grouped["log10_delta_ratio"]
    table = pd.DataFrame({"replicates": grouped.size()})
    table["r: mean"] = r.mean().map(_shown)
    table["r: min to max"] = [
        f"{_shown(lo)} to {_shown(hi)}" for lo, hi in zip(r.min(), r.max(), strict=True)
    ]
    if "log10_grad_w_ratio" in summary:
        table["‖∂J/∂W‖ ratio: mean"] = grouped["log10_grad_w_ratio"].mean().map(_shown)
    table["×/layer"] = (10 ** grouped["delta_growth"].mean()).map(_shown)
    if "chi1" in summary:
        table["χ₁ (theory)"] = grouped["chi1"].mean().map(_shown)
    table["regime (majority)"] = majorities(summary, keys)
    table = table.reset_index()
    shown = [table_cells(keys, row) for row in table[keys].itertuples(index=False)]
    table[keys] = pd.DataFrame(shown, columns=keys, index=table.index)
    return table.rename(columns={k: symbol(k) for k in keys})


def _shown(v: float) -> str:
    return fmt(v) if np.isfinite(v) else "–"
