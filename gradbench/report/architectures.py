"""What a report says about the architectures a run measured: what r compares in each, and which
of its columns tell one network family from another.

r = log10(||delta_1|| / ||delta_L||) is read from different signals per architecture
(docs/results.md, layers.parquet): an MLP's hidden layers, a residual MLP's stream at the input of
its blocks, an RNN's steps. The sentences that say so are computed from the run's `architecture`
column. Pure pandas.
"""

from __future__ import annotations

import pandas as pd

from gradbench.analysis.settings import ARCHITECTURE_SETTINGS, setting_words
from gradbench.notation import fmt
from gradbench.registry.architectures import ARCHITECTURES

# What r compares, per architecture: the signal and the two places it is read.
WHAT_R_COMPARES = {
    "mlp": "the backward signal ‖∂J/∂z_l‖ at the first and the last hidden layer",
    "resmlp": "the residual stream's backward signal ‖∂J/∂h_{l−1}‖ at the input of block 1 and "
    "of block L",
    "rnn": "the backward signal ‖∂J/∂z_t‖ at step 1 and at step T (T = depth)",
}
# The depth's letter in growth laws ("∝ T^0.5" for an RNN).
DEPTH_LETTERS = {"rnn": "T"}
# The settings that say which network an architecture builds (its placement of norms and its
# branch scale), rather than how large it is: a report compares these side by side.
PLACEMENT = ("architecture", "norm", "norm_position", "branch_scale")


def architectures(summary: pd.DataFrame) -> list[str]:
    """The run's architectures, sorted; ["mlp"] for runs from before there were others."""
    if "architecture" not in summary or summary.empty:
        return ["mlp"]
    return sorted(summary["architecture"].astype(str).unique())


def has_new_architectures(summary: pd.DataFrame) -> bool:
    """Whether the run measured an architecture other than the MLP."""
    return architectures(summary) != ["mlp"]


def opening_paragraph(summary: pd.DataFrame, threshold: float) -> str:
    """The report's first paragraph: how many configs, what r compares, the regime rule."""
    found = architectures(summary)
    if len(found) == 1:
        compares = " " + WHAT_R_COMPARES.get(found[0], WHAT_R_COMPARES["mlp"])
    else:  # "compares, for mlp, ...; for resmlp, ..."
        compares = ", " + "; ".join(f"for {a}, {WHAT_R_COMPARES.get(a, '?')}" for a in found)
    return (
        f"{len(summary)} configurations. r = log10(‖δ_1‖/‖δ_L‖) compares{compares}; a config is "
        f"vanishing if r < −{fmt(threshold)}, exploding if r > {fmt(threshold)}, stable "
        "otherwise, and nonfinite if NaN or Inf appeared."
    )


def layer_note(summary: pd.DataFrame) -> str:
    """For the captions of the by-layer figures: what a layer is in the run's other architectures
    ("" for a run of MLPs)."""
    notes = {
        "resmlp": "for resmlp, layer l is block l and δ_l the residual stream's ‖∂J/∂h_{l−1}‖ at "
        "its input (the dense layers inside the branches are not drawn)",
        "rnn": "for rnn, layer l is step t and δ_l = ‖∂J/∂z_t‖",
    }
    text = "; ".join(notes[a] for a in architectures(summary) if a in notes)
    return f" {text[:1].upper()}{text[1:]}." if text else ""


def layer_word(architecture: str) -> str:
    """What one layer of the layers table is: "layer", "block" (resmlp) or "step" (rnn)."""
    known = ARCHITECTURES.get(architecture)
    return known.layer if known is not None else "layer"


def architecture_of(values: dict, summary: pd.DataFrame) -> str:
    """The architecture of a series named by `values` (facet column -> value) of `summary`."""
    if "architecture" in values:
        return str(values["architecture"])
    return architectures(summary)[0]


def placement(facets: list[str]) -> list[str]:
    """The facets among `PLACEMENT`: which network each series is, to compare side by side."""
    return [c for c in facets if c in PLACEMENT]


def placement_name(summary: pd.DataFrame, columns: list[str], key: tuple) -> str:
    """ "resmlp, α = 0.5" or "pre-layernorm": a network placement by its settings alone (what
    applies judged with the run's fixed columns); the run's architectures without columns."""
    values = dict(zip(columns, key, strict=True))
    fixed = {
        c: summary[c].iloc[0]
        for c in ARCHITECTURE_SETTINGS
        if c in summary and len(summary) and summary[c].nunique() == 1
    }
    return ", ".join(setting_words(values, fixed)) or ", ".join(architectures(summary))
