"""Splitting a run table into facets: one part per combination of the facet columns' values.

A figure draws a panel (or a heatmap row) per facet and a report writes a sentence or a table row
per facet; both split a table here, so that they list the same facets in the same order: sorted by
value, only the combinations that occur (`observed=True`, for categorical columns), and a missing
value kept as a facet of its own rather than silently dropped (`dropna=False`). Pure pandas.
"""

from __future__ import annotations

from collections.abc import Sequence

import pandas as pd
from pandas.api.typing import DataFrameGroupBy


def facet_columns(facet: str | Sequence[str] | None) -> list[str]:
    """The facet columns as a list: a column name, several, or none."""
    return [facet] if isinstance(facet, str) else list(facet or [])


def group_by_facets(frame: pd.DataFrame, columns: Sequence[str]) -> DataFrameGroupBy:
    """`frame` grouped by `columns` (at least one), the way every facet of a run is grouped."""
    return frame.groupby(list(columns), sort=True, observed=True, dropna=False)


def facet_parts(frame: pd.DataFrame, columns: Sequence[str]) -> list[tuple[tuple, pd.DataFrame]]:
    """(key, part) per facet, the key a tuple of the columns' values; ((), frame) without columns."""
    if not columns:
        return [((), frame)]
    return [
        (key if isinstance(key, tuple) else (key,), part)
        for key, part in group_by_facets(frame, columns)
    ]
