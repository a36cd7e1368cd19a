"""Which configs a figure with fewer axes than the sweep shows: every other swept axis is held at
one value, which the figure's title states.

A line plot against one axis (or a heatmap row per facet) has no room for the remaining swept axes;
averaging over them would hide them, so they are fixed instead, depth at its largest.
"""

from __future__ import annotations

from collections.abc import Sequence

import pandas as pd

from gradbench.notation import fmt, label
from gradbench.schema import ID_COLUMNS, layer_rows


def representative(
    df: pd.DataFrame, keep: Sequence[str | None], axes: Sequence[str]
) -> tuple[pd.DataFrame, list[str]]:
    """Fix every varying column of `axes` outside `keep` at one value (depth at its largest).

    Columns determined by `keep` (sigma_w by sigma_w2, init_family by init) are left alone, so
    lines never silently average over an axis. Returns the filtered frame and "name = value" notes.
    """
    keep = [k for k in keep if k]
    free = [c for c in axes if c not in ID_COLUMNS and c not in keep]
    notes = []
    for col in sorted(free, key=lambda c: c != "depth"):
        if df[col].nunique(dropna=False) <= 1:
            continue
        if keep and df.groupby(keep, observed=True)[col].nunique(dropna=False).max() <= 1:
            continue
        pick = df[col].max() if col == "depth" else df[col].mode().sort_values().iloc[0]
        df = df[df[col] == pick]
        notes.append(f"{label(col)} = {fmt(pick)}")
    return df, notes


def chosen_layers(
    layers: pd.DataFrame, configs: pd.DataFrame, keep: Sequence[str | None]
) -> tuple[pd.DataFrame, list[str]]:
    """The layers of the configs `representative` keeps, with their config columns; and its notes.
    Only the rows of whole layers, blocks or steps (`schema.layer_rows`), not a residual branch's
    dense layers."""
    chosen, notes = representative(configs, keep, list(configs.columns))
    columns = ["config_id", *dict.fromkeys(k for k in [*keep, "replicate"] if k in chosen)]
    layers = layer_rows(layers)
    rows = layers[layers["config_id"].isin(chosen["config_id"])]
    return rows.merge(chosen[columns], on="config_id", how="inner"), notes
