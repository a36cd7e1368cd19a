"""Which architecture settings mean something for a config, and how names and tables write them.

Architecture settings (norm, branch_scale, ...) are columns of every row, holding
`registry.NOT_APPLICABLE`'s value in the rows of architectures that do not take them (an MLP's
branch_scale is "none"). A facet's name or a table leaves such a value out ("relu/gaussian, mlp",
not "..., branch_scale = none"), and a setting that takes one value within each architecture of a
run (branch_layers: 0 for mlp, 1 for resmlp) is no facet at all: the architecture already says it.
Figures and reports name facets alike, so both take these rules from here. Pure pandas.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import pandas as pd

from gradbench.notation import fmt, symbol
from gradbench.registry.architectures import ARCHITECTURES, NOT_APPLICABLE

# The config columns that say which network was measured beyond an MLP: the architecture, then the
# settings of `registry.ARCHITECTURES` in the order names list them.
ARCHITECTURE_SETTINGS = (
    "architecture", "norm", "norm_position", "branch_scale", "branch_layers", "input_scale",
)  # fmt: skip
# A setting that means nothing while another has a value: the position of no norm.
MEANINGLESS_WHILE = {"norm_position": ("norm", "none")}


def setting_applies(column: str, values: Mapping[str, object]) -> bool:
    """Whether architecture setting `column` means anything for a config whose other columns are
    `values` (as far as known): not for an architecture that does not take it (an MLP's
    branch_scale), not for the position of no norm. Other columns always apply."""
    if column not in NOT_APPLICABLE:
        return True
    architecture = values.get("architecture")
    if architecture in ARCHITECTURES and column not in ARCHITECTURES[architecture].settings:
        return False
    other = MEANINGLESS_WHILE.get(column)
    return not (other is not None and values.get(other[0]) == other[1])


def shown(column: str, values: Mapping[str, object]) -> bool:
    """Whether a name or table shows `values[column]`: not where it is the not-applicable value of
    a setting that does not apply."""
    value = values[column]
    return not (
        column in NOT_APPLICABLE
        and value == NOT_APPLICABLE[column]
        and not setting_applies(column, values)
    )


def _number(value: object) -> str:
    """A setting's value as a number where it is one ("1.0" -> "1"), else as written."""
    try:
        return fmt(float(value))
    except (TypeError, ValueError):
        return str(value)


def setting_words(
    values: Mapping[str, object], context: Mapping[str, object] | None = None
) -> list[str]:
    """The architecture settings among `values` as a name writes them, those that do not apply
    left out: "resmlp", "pre-layernorm" (or "no norm"), "α = 0.5", "2 branch layers".

    `context` holds config columns known to be fixed (the run's one architecture), used only to
    decide what applies.
    """
    known = {**(context or {}), **values}
    present = [c for c in ARCHITECTURE_SETTINGS if c in values and shown(c, known)]
    words = []
    for column in present:
        value = values[column]
        if column == "architecture":
            words.append(str(value))
        elif column == "norm":
            position = values.get("norm_position") if "norm_position" in present else None
            words.append(
                "no norm" if value == "none" else f"{position}-{value}" if position else str(value)
            )
        elif column == "norm_position":
            if "norm" not in present:
                words.append(f"{value}-norm")
        elif column == "branch_layers":
            words.append(f"{value} branch layer{'s' * (int(value) != 1)}")
        else:
            words.append(f"{symbol(column)} = {_number(value)}")
    return words


def setting_cell(column: str, values: Mapping[str, object]) -> str:
    """`values[column]` as a table cell: empty where the setting does not apply, numbers to 3
    significant digits (a branch scale written "1.0" is 1)."""
    if not shown(column, values):
        return ""
    value = values[column]
    return _number(value) if column in ("branch_scale", "input_scale") else fmt(value)


def table_cells(columns: Sequence[str], key: Sequence[object]) -> list[str]:
    """One table row's cells for the values `key` of `columns`: `fmt`, and `setting_cell` for
    architecture settings."""
    values = dict(zip(columns, key, strict=True))
    return [setting_cell(c, values) if c in NOT_APPLICABLE else fmt(values[c]) for c in columns]


def fixed_by_architecture(frame: pd.DataFrame, columns: Sequence[str]) -> list[str]:
    """The architecture settings among `columns` that take one value within each architecture of
    `frame` while several architectures are there: the architecture names them already."""
    if "architecture" not in frame or frame["architecture"].nunique() < 2:
        return []
    settings = [c for c in columns if c in NOT_APPLICABLE and c in frame]
    if not settings:
        return []
    counts = frame.groupby("architecture", observed=True)[settings].nunique(dropna=False).max()
    return [c for c in settings if counts[c] <= 1]
