"""Config-by-config comparison of two sets of results (pure pandas; no JAX).

Used by `gradbench compare RUN_A RUN_B` and by `gradbench verify`, which compares a stored run with a
re-run of (a sample of) its configs. Rows are joined on `config_id` and `layer`; NaN equals NaN (a lost
value must be lost on both sides) and a flag that differs is a mismatch whatever the numbers say.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

from gradbench.measure import STATS


@dataclass
class Comparison:
    """What differs between results A and B.

    Attributes:
        largest: per statistic, the largest |A - B| (log10) and where it occurred.
        mismatches: one row per (config_id, layer, statistic) differing by more than the tolerance.
        regime_changes: configs whose regime differs, with both r values.
        only_in_a, only_in_b: config_ids present on one side only.
        tolerance: the tolerance used, in log10.
    """

    largest: pd.DataFrame
    mismatches: pd.DataFrame
    regime_changes: pd.DataFrame
    only_in_a: list[str]
    only_in_b: list[str]
    tolerance: float

    @property
    def ok(self) -> bool:
        return self.mismatches.empty and not self.only_in_a and not self.only_in_b

    def render(self, limit: int = 20) -> str:
        lines = [f"tolerance: {self.tolerance:g} in log10"]
        lines.append("largest differences:")
        lines.append(self.largest.to_string(index=False) if not self.largest.empty else "  (none)")
        if self.only_in_a or self.only_in_b:
            lines.append(
                f"configs only in A: {len(self.only_in_a)}; only in B: {len(self.only_in_b)}"
            )
        lines.append(f"mismatches beyond tolerance: {len(self.mismatches)}")
        if not self.mismatches.empty:
            lines.append(self.mismatches.head(limit).to_string(index=False))
        lines.append(f"configs whose regime changed: {len(self.regime_changes)}")
        if not self.regime_changes.empty:
            lines.append(self.regime_changes.head(limit).to_string(index=False))
        return "\n".join(lines)


def compare(
    layers_a: pd.DataFrame,
    summary_a: pd.DataFrame,
    layers_b: pd.DataFrame,
    summary_b: pd.DataFrame,
    *,
    tolerance: float,
) -> Comparison:
    """Compares per-layer statistics and regimes of the configs both sides share."""
    ids_a, ids_b = set(summary_a["config_id"]), set(summary_b["config_id"])
    keys = ["config_id", "layer"]
    joined = layers_a[keys + list(STATS) + ["flag"]].merge(
        layers_b[keys + list(STATS) + ["flag"]], on=keys, suffixes=("_a", "_b"), how="outer"
    )
    joined = joined[joined["config_id"].isin(ids_a & ids_b)]

    largest, mismatched = [], []
    for stat in STATS:
        a, b = joined[f"{stat}_a"], joined[f"{stat}_b"]
        diff = (a - b).abs()
        one_lost = a.isna() != b.isna()
        bad = (diff > tolerance) | one_lost
        if diff.notna().any():
            at = diff.idxmax()
            largest.append(
                {
                    "statistic": stat,
                    "max_abs_diff": float(diff.max()),
                    "config_id": joined.at[at, "config_id"],
                    "layer": joined.at[at, "layer"],
                }
            )
        rows = joined.loc[bad, keys].assign(statistic=stat, a=a[bad], b=b[bad], diff=diff[bad])
        mismatched.append(rows)
    flags_differ = joined["flag_a"] != joined["flag_b"]
    mismatched.append(
        joined.loc[flags_differ, keys].assign(
            statistic="flag",
            a=joined.loc[flags_differ, "flag_a"],
            b=joined.loc[flags_differ, "flag_b"],
            diff=np.nan,
        )
    )
    mismatches = pd.concat(mismatched, ignore_index=True).sort_values(keys, kind="stable")

    regimes = summary_a[["config_id", "regime", "log10_delta_ratio"]].merge(
        summary_b[["config_id", "regime", "log10_delta_ratio"]],
        on="config_id",
        suffixes=("_a", "_b"),
    )
    changes = regimes[regimes["regime_a"] != regimes["regime_b"]].reset_index(drop=True)
    return Comparison(
        largest=pd.DataFrame(largest, columns=["statistic", "max_abs_diff", "config_id", "layer"]),
        mismatches=mismatches.reset_index(drop=True),
        regime_changes=changes,
        only_in_a=sorted(ids_a - ids_b),
        only_in_b=sorted(ids_b - ids_a),
        tolerance=tolerance,
    )
