"""What a report says about growth with depth: the law r(L) follows in each network family, measured
and predicted.

A series is one facet (`findings.finding_facets`) at one value of the weight scale, measured at
every depth of the sweep. Its r(L) is the mean over the replicates with a finite r at each depth,
its prediction the mean of `predicted_log10_delta_ratio`; `gradbench.analysis.depth_law` fits both
with the same criterion, so theory's law and rate stand beside the measured ones. Findings sum the
series up per network placement (`architectures.PLACEMENT`: no norm, pre- or post-norm, branch
scale) where the run varies one, else per facet. Pure pandas.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

from gradbench.analysis.agreement import TOLERANCE
from gradbench.analysis.crossings import grid_runs
from gradbench.analysis.depth_law import (
    EXPONENTIAL,
    FLAT,
    FLAT_BOUND,
    LAWS,
    MIN_DEPTHS,
    POLYNOMIAL,
    STRETCHED,
    DepthLaw,
    fit_depth_law,
)
from gradbench.analysis.facets import facet_parts, group_by_facets
from gradbench.analysis.settings import table_cells
from gradbench.notation import fmt, symbol
from gradbench.report.architectures import (
    DEPTH_LETTERS,
    architecture_of,
    layer_word,
    placement,
    placement_name,
)
from gradbench.report.findings import Finding, facet_name, span_text

PREDICTED = "predicted_log10_delta_ratio"


@dataclass(frozen=True)
class Series:
    """One network family across depths, with the law of its measured and its predicted r.

    Attributes:
        values: facet column -> value, the scale included.
        architecture: the family's architecture (it names the rate: per layer, block or step).
        measured: the law of the mean measured r; None with fewer than MIN_DEPTHS finite depths.
        theory: the law of the predicted r; None where the run carries no prediction.
    """

    values: dict
    architecture: str
    measured: DepthLaw | None
    theory: DepthLaw | None


def depth_means(summary: pd.DataFrame, keys: list[str]) -> pd.DataFrame:
    """Per value of `keys` and depth: the mean, smallest and largest finite r over the replicates,
    and the mean prediction where the summary has one."""
    r = summary["log10_delta_ratio"].where(np.isfinite(summary["log10_delta_ratio"]))
    frame = summary.assign(_r=r)
    grouped = group_by_facets(frame, [*keys, "depth"])
    means = grouped["_r"].agg(["mean", "min", "max"])
    if PREDICTED in summary:
        means["predicted"] = grouped[PREDICTED].mean()
    else:
        means["predicted"] = np.nan
    return means.reset_index()


def depth_series(summary: pd.DataFrame, facets: list[str], scale: str | None) -> list[Series]:
    """Every series of the run (facet x scale value), in table order."""
    keys = [*facets, *([scale] if scale else [])]
    means = depth_means(summary, keys)
    out = []
    for key, part in facet_parts(means, keys):
        values = dict(zip(keys, key, strict=True))
        measured = fit_depth_law(part["depth"], part["mean"])
        theory = fit_depth_law(part["depth"], part["predicted"])
        out.append(Series(values, architecture_of(values, summary), measured, theory))
    return out


ROUNDING = 1e-9  # a theory bound below this is float64 rounding of an exact 0


def rate_text(law: DepthLaw, architecture: str) -> str:
    """ "×1.41 per block", "∝ 10^(0.3 √L)", "∝ L^0.27" or "|r| ≤ 0.4 up to depth 256"."""
    letter = DEPTH_LETTERS.get(architecture, "L")
    if law.law == EXPONENTIAL:
        return f"×{fmt(law.factor)} per {layer_word(architecture)}"
    if law.law == STRETCHED:
        return f"∝ 10^({fmt(law.slope)} √{letter})"
    if law.law == POLYNOMIAL:
        return f"∝ {letter}^{fmt(law.slope)}"
    return f"{bound_text(law.bound)} up to depth {law.depth_max}"


def bound_text(bound: float) -> str:
    """ "|r| ≤ 0.4", or "r = 0 to rounding" for a bound float64 cannot tell from 0 (theory's
    exactly flat laws sum rounding errors of 1e-14)."""
    return "r = 0 to rounding" if bound < ROUNDING else f"|r| ≤ {fmt(bound)}"


def law_text(law: DepthLaw | None, architecture: str) -> str:
    """ "exponential: ×1.41 per block"; "–" for a series without a law."""
    return f"{law.law}: {rate_text(law, architecture)}" if law is not None else "–"


def _rates(laws: list[DepthLaw], architecture: str) -> str:
    """The range of the rates of laws of one kind: "×1.11 to ×1.41 per block"."""
    kind = laws[0].law
    if kind == FLAT:
        worst = max(laws, key=lambda law: law.bound)
        return f"{bound_text(worst.bound)} up to depth {max(law.depth_max for law in laws)}"
    values = [law.factor if kind == EXPONENTIAL else law.slope for law in laws]
    low, high = min(values), max(values)
    if fmt(low) == fmt(high):
        return rate_text(laws[0], architecture)
    if kind == EXPONENTIAL:
        return f"×{fmt(low)} to ×{fmt(high)} per {layer_word(architecture)}"
    letter = DEPTH_LETTERS.get(architecture, "L")
    if kind == STRETCHED:
        return f"∝ 10^({fmt(low)} √{letter}) to 10^({fmt(high)} √{letter})"
    return f"∝ {letter}^{fmt(low)} to {letter}^{fmt(high)}"


def _laws_text(summary, series: list[Series], which: str, rest: list[str], scale) -> tuple:
    """ "exponential in 3 (...), flat in 1 (relu/gaussian: ...)" of one group's `which` laws
    ("measured" or "theory"), and its numbers. Series that differ only in the scale are named by
    their scale values; a law of at most 3 series in a group of several laws, by their names."""
    found = [(s, getattr(s, which)) for s in series if getattr(s, which) is not None]
    pieces, numbers = [], {}
    kinds = [k for k in LAWS if any(law.law == k for _, law in found)]
    for kind in kinds:
        members = [(s, law) for s, law in found if law.law == kind]
        text = f"{kind} in {len(members)}"
        if scale and rest == [scale] and len(kinds) > 1:
            grid = np.array(sorted(float(s.values[scale]) for s in series))
            chosen = np.isin(grid, [float(s.values[scale]) for s, _ in members])
            text = f"{kind} for {span_text(symbol(scale), grid_runs(grid, chosen))}"
        elif len(kinds) > 1 and len(members) <= 3 and rest:
            names = [
                facet_name(summary, rest, tuple(s.values[c] for c in rest)) for s, _ in members
            ]
            text += f" ({'; '.join(names)})"
        laws = [law for _, law in members]
        text += f", {_rates(laws, members[0][0].architecture)}"
        pieces.append(text)
        numbers[f"{which}_{kind}"] = len(members)
    return ("; ".join(pieces) if pieces else "no law"), numbers


def growth_findings(summary: pd.DataFrame, facets: list[str], scale: str | None) -> list[Finding]:
    """Per network placement (or per facet where the run varies none): how many series follow each
    law and at what rates, measured and predicted; then how often theory's law is the measured one.
    Empty for runs with fewer than MIN_DEPTHS depths."""
    if summary["depth"].nunique() < MIN_DEPTHS:
        return []
    series = depth_series(summary, facets, scale)
    groups = placement(facets) or facets
    rest = [c for c in [*facets, *([scale] if scale else [])] if c not in groups]
    out = []
    for key in dict.fromkeys(tuple(s.values[c] for c in groups) for s in series):
        members = [s for s in series if tuple(s.values[c] for c in groups) == key]
        name = (placement_name if groups == placement(facets) else facet_name)(summary, groups, key)
        measured, numbers = _laws_text(summary, members, "measured", rest, scale)
        text = f"{name} ({len(members)} series): {measured}"
        if any(s.theory is not None for s in members):
            theory, predicted = _laws_text(summary, members, "theory", rest, scale)
            same = sum(_same_law(s) for s in members)
            text += f"; theory: {theory}; the same law in {same} of {len(members)}"
            numbers |= predicted | {"same_law": same}
        numbers["series"] = len(members)
        facet = dict(zip(groups, key, strict=True))
        out.append(Finding(text + ".", numbers, facet, "depth_law"))
    out.append(_agreement(series))
    return out


def _same_law(s: Series) -> bool:
    return s.measured is not None and s.theory is not None and s.measured.law == s.theory.law


def _agreement(series: list[Series]) -> Finding:
    """How often theory's law is the measured one, and its factor, where both are exponential."""
    both = [s for s in series if s.measured is not None and s.theory is not None]
    same = [s for s in both if _same_law(s)]
    exponential = [s for s in same if s.measured.law == EXPONENTIAL]
    close = [s for s in exponential if abs(s.measured.factor / s.theory.factor - 1) <= TOLERANCE]
    numbers = {
        "series": len(series),
        "fitted": len(both),
        "same_law": len(same),
        "exponential": len(exponential),
        "factor_within": len(close),
    }
    if not both:
        text = f"None of the {len(series)} series has both a measured and a predicted law."
        return Finding(text, numbers, kind="depth_law_agreement")
    text = f"Theory's law is the measured one in {len(same)} of {len(both)} series with both"
    if exponential:
        words = {layer_word(s.architecture) for s in exponential}
        text += (
            f"; where both are exponential ({len(exponential)} series), the measured factor per "
            f"{words.pop() if len(words) == 1 else 'layer'} is within ±{fmt(100 * TOLERANCE)}% of "
            f"theory's in {len(close)}"
        )
    return Finding(text + ".", numbers, kind="depth_law_agreement")


def growth_table(
    summary: pd.DataFrame, facets: list[str], scale: str | None
) -> tuple[list[str], list[list[str]]]:
    """Every series: its facet and scale value, depths, measured law, fit residual, theory's law."""
    keys = [*facets, *([scale] if scale else [])]
    header = [*(symbol(k) for k in keys), "depths", "measured", "rms residual", "theory"]
    rows = []
    for s in depth_series(summary, facets, scale):
        law = s.measured
        depths = f"{law.depth_min}–{law.depth_max} ({law.depths})" if law else "–"
        rows.append([
            *table_cells(keys, [s.values[k] for k in keys]),
            depths,
            law_text(law, s.architecture),
            fmt(law.rms) if law else "–",
            law_text(s.theory, s.architecture),
        ])  # fmt: skip
    return header, rows


def criterion_text() -> str:
    """The paragraph that says how a law is chosen."""
    return (
        "Per facet and scale value, the mean of r over the replicates at each depth is fitted "
        "four ways: exponential (r = a + b L: ‖δ_1‖/‖δ_L‖ grows by a factor 10^b per layer), "
        "stretched exponential (r = a + b √L), polynomial (r = a + b log10 L: ‖δ_1‖/‖δ_L‖ ∝ "
        f"L^b) and flat. Flat is tested first: |r| stays within {fmt(FLAT_BOUND)} at every depth "
        f"(the first and the last layer within a factor {fmt(10**FLAT_BOUND)} of each other); "
        "otherwise the line with the smallest residual sum of squares wins. Theory's law is the "
        "same fit applied to predicted_log10_delta_ratio (gradbench.analysis.depth_law)."
    )
