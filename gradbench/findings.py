"""What a report says: findings computed from a run's summary, each with the numbers it states.

Pure pandas; every number in a sentence is in its `Finding.numbers`, computed here from the tables.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd

from gradbench import plots

SYMBOLS = {"sigma_w2": "σ_w²", "sigma_w": "σ_w", "sigma_b2": "σ_b²", "sigma_b": "σ_b"}

SEVERITY = ("nonfinite", "exploding", "vanishing", "stable")  # ties go to the first


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


def symbol(name: str) -> str:
    return SYMBOLS.get(name, name)


def majority(regimes: pd.Series) -> str:
    counts = regimes.value_counts()
    return max(counts.index, key=lambda r: (counts[r], -SEVERITY.index(r) if r in SEVERITY else -9))


def grid_runs(values: np.ndarray, chosen: np.ndarray) -> list[tuple[float, float]]:
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


def span_text(sym: str, runs: list[tuple[float, float]]) -> str:
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


def facet_name(summary: pd.DataFrame, facets: list[str], key: tuple) -> str:
    """ "relu/he, σ_b² = 0.05": activation and init by value (also when fixed), others by name."""
    values = dict(zip(facets, key, strict=True))
    lead = [c for c in ("activation", "init") if c in values or c in summary]
    words = [
        str(values.get(c, summary[c].iloc[0]))
        for c in lead
        if c in values or summary[c].nunique() == 1
    ]
    rest = [
        f"{symbol(c)} = {fmt(v) if isinstance(v, int | float) else v}"
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
        name = facet_name(summary, facets, key)
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
    by = deep.groupby(scale)["regime"].agg(majority).sort_index()
    values = by.index.to_numpy(float)
    sym, pieces, numbers = symbol(scale), [], {"depth": depth, "threshold": float(t)}
    for regime, members in (
        ("vanishing", ("vanishing",)),
        ("stable", ("stable",)),
        ("exploding", ("exploding", "nonfinite")),
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
    xs, sym = means.index.to_numpy(float), symbol(scale)
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
        where = f"{name}, {symbol(scale)} = {fmt(s)}" if scale else name
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
    groups = summary.groupby(facets, sort=True, observed=True) if facets else [((), summary)]
    for key, part in groups:
        key = key if isinstance(key, tuple) else (key,)
        depth = int(part["depth"].max())
        row = {"configs": facet_name(summary, facets, key), "depth": depth}
        if scale is not None:
            by_scale = part[part["depth"] == depth].groupby(scale)
            regime = by_scale["regime"].agg(majority)
            vanishing = regime.index[regime == "vanishing"]
            stable = regime.index[regime == "stable"]
            exploding = regime.index[regime == "exploding"]
            row["vanishing up to"] = fmt(vanishing.max()) if len(vanishing) else "never"
            row["stable"] = _range_text(stable) if len(stable) else "nowhere"
            row["exploding from"] = fmt(exploding.min()) if len(exploding) else "never"
            top = regime.index.max()
            growth = by_scale["delta_growth"].mean()
            row[f"×/layer at the largest {symbol(scale)}"] = (
                f"{fmt(10 ** growth.loc[top])} ({symbol(scale)} = {fmt(top)})"
            )
        rows.append(row)
    return pd.DataFrame(rows)


def _range_text(values: pd.Index) -> str:
    low, high = values.min(), values.max()
    return fmt(low) if low == high else f"{fmt(low)}–{fmt(high)}"
