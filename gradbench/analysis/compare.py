"""Config-by-config comparison of two sets of results (pure pandas; no JAX).

Used by `gradbench compare RUN_A RUN_B` and by `gradbench verify`, which compares a stored run with a
re-run of (a sample of) its configs. Each table is joined on its keys (`config_id`, and `layer` and/or
`step`); only configs present on both sides are compared, and a row that one side lacks is a mismatch.
Config columns (axis values) are not compared: equal config_ids mean equal configs, except for dtype
and measurement mode, which are left out of the id on purpose so that a float32 and a float64 run of one
sweep can be compared.

How each measured column is compared (`KINDS`), with t = `Tolerance.log10` and t_train =
`Tolerance.training`:

| kind | columns | mismatch when |
|---|---|---|
| log10 | per-layer statistics; the summary's first and last values, `log10_jacobian_sv2_mean` | abs(a - b) > t |
| log10_derived | ratios r and growth rates; `jacobian_sv2_spread` (absolute: it is 0 for isometric nets) | abs(a - b) > 2 t (a difference of two values, or a least-squares slope of values, each within t, is within 2 t) |
| relative | per-layer `q` | abs(a - b) > (10^t - 1) max(abs(a), abs(b)) |
| theory | `chi1`, `q_star`, `xi_c`, the predicted ratios r and their sd, the predicted Jacobian moments | abs(a - b) > `Tolerance.theory` max(abs(a), abs(b), 1): relative, absolute below 1 |
| training_log10 | training gradient, clipped and update norms | abs(a - b) > t_train |
| training_relative | losses and loss ratios | abs(a - b) > (10^t_train - 1) max(abs(a), abs(b)) |
| fraction | `clipped_fraction` | abs(a - b) > t_train |
| exact | flags, booleans, `diverged_step`, thresholds | a != b |

NaN equals NaN (a lost value must be lost on both sides) and Inf equals Inf of the same sign; a value
lost on one side only is a mismatch. A config whose regime differs is a mismatch whatever the numbers
say. Configs are named by the values of the axes that vary (`config_labels`), and by config_id.
"""

from __future__ import annotations

import os
import textwrap
from collections.abc import Mapping
from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from gradbench import results
from gradbench.errors import SpecError
from gradbench.schema import (
    CONFIG_COLUMNS,
    ID_COLUMNS,
    OUTCOME_COLUMNS,
    THEORY_COLUMNS,
    TRAIN_CONFIG_COLUMNS,
    TRAINING_COLUMNS,
    TRAINING_LAYER_COLUMNS,
)
from gradbench.schema import LAYER_STATS as STATS

# Mean-field columns are float64 functions of the config values, computed again wherever they are
# compared; xi_c = -1 / ln(chi_c) is ill-conditioned near chi_c = 1: recomputing the committed reports'
# theory columns moved xi_c by up to 1.9e-8 relative (edge-of-chaos) and chi1 and q_star by < 1e-12.
THEORY_TOLERANCE = 1e-6

KEYS = {
    "configs": ("config_id",),
    "layers": ("config_id", "layer", "sublayer"),
    "summary": ("config_id",),
    "outcomes": ("config_id",),
    "training": ("config_id", "step"),
    "training_layers": ("config_id", "step", "layer"),
}


def _training_kind(column: str) -> str:
    """How a training column is compared: norms in log10, losses relative, the rest exactly."""
    if column.startswith("log10_"):
        return "training_log10"
    if column.startswith("loss") or column.endswith("_ratio"):
        return "training_relative"
    return "fraction" if column == "clipped_fraction" else "exact"


KINDS = {
    "layers": {**dict.fromkeys(STATS, "log10"), "q": "relative", "flag": "exact"},
    "summary": {
        **dict.fromkeys(
            [
                "log10_delta_first",
                "log10_delta_last",
                "log10_grad_w_first",
                "log10_grad_w_last",
                "log10_grad_w_total",
            ],
            "log10",
        ),
        "log10_q_last": "log10",
        **dict.fromkeys(
            ["log10_delta_ratio", "log10_grad_w_ratio", "log10_grad_b_ratio"], "log10_derived"
        ),
        **dict.fromkeys(["delta_growth", "grad_w_growth"], "log10_derived"),
        **dict.fromkeys(["nonfinite", "underflow", "threshold"], "exact"),
        **dict.fromkeys(THEORY_COLUMNS, "theory"),
        # `[run] jacobian = true`. The spread m2 / m1^2 - 1 is compared absolutely: it is 0 (to
        # rounding) for isometric nets, where a relative difference would compare rounding noise.
        "log10_jacobian_sv2_mean": "log10",
        "jacobian_sv2_spread": "log10_derived",
        **dict.fromkeys(
            ["predicted_log10_jacobian_sv2_mean", "predicted_jacobian_sv2_spread"], "theory"
        ),
    },
    "outcomes": {c: _training_kind(c) for c in OUTCOME_COLUMNS},
    "training": {c: _training_kind(c) for c in TRAINING_COLUMNS if c not in ("config_id", "step")},
    "training_layers": {c: _training_kind(c) for c in TRAINING_LAYER_COLUMNS[3:]},
}
# Axes that name a config where their values vary: the config columns in table order, without the ids
# and the spellings that another column already gives (init_family, sigma_w, sigma_b), then the draw.
AXES = (
    *(
        c
        for c in (*CONFIG_COLUMNS, *TRAIN_CONFIG_COLUMNS)
        if c not in {*ID_COLUMNS, "init_family", "sigma_w", "sigma_b"}
    ),
    "seed",
    "replicate",
)


@dataclass(frozen=True)
class Tolerance:
    """How far two values may differ (see the module docstring for which column uses which).

    Attributes:
        log10: per-layer statistics and the summary values derived from them, in log10.
        training: training losses and norms, in log10 (losses: the relative 10^t - 1).
        theory: for the mean-field columns: relative, absolute below 1.
    """

    log10: float
    training: float
    theory: float = THEORY_TOLERANCE

    def limit(self, kind: str) -> float:
        return {
            "log10": self.log10,
            "log10_derived": 2 * self.log10,
            "relative": 10**self.log10 - 1,
            "theory": self.theory,
            "training_log10": self.training,
            "training_relative": 10**self.training - 1,
            "fraction": self.training,
            "exact": 0.0,
        }[kind]

    def describe(self) -> str:
        if not (self.log10 or self.training or self.theory):
            return "none (every value must be identical)"
        return (
            f"{self.log10:g} in log10 (ratios and growth rates {2 * self.log10:g}); training "
            f"{self.training:g} in log10; theory {self.theory:g}; flags exact"
        )


_MISMATCH_COLUMNS = ["table", "config_id", "layer", "step", "column", "a", "b", "diff"]
_LARGEST_COLUMNS = ["table", "column", "max_diff", "limit", "config_id", "layer", "step"]
_CHECKED_COLUMNS = ["table", "configs", "rows", "columns", "one_side"]


@dataclass
class Comparison:
    """What differs between results A and B.

    Attributes:
        checked: one row per compared table: configs and rows compared, the columns compared and
            those that only one side has (not compared).
        largest: per compared numeric column, the largest difference (in its kind's unit, see the
            module docstring), its limit and where it occurred; only columns that differ at all.
        mismatches: one row per (table, row, column) beyond tolerance, or a row one side lacks.
        regime_changes: configs whose regime differs, with both r values.
        only_in_a, only_in_b: config_ids present on one side only.
        tolerance: the tolerance used.
        labels: config_id -> the axis values that name the config.
        complete: whether every config and column must be on both sides (as in `gradbench
            verify`; otherwise configs or columns of one side only are reported, not mismatches).
        sides: what to call A and B in the text.
    """

    checked: pd.DataFrame
    largest: pd.DataFrame
    mismatches: pd.DataFrame
    regime_changes: pd.DataFrame
    only_in_a: list[str]
    only_in_b: list[str]
    tolerance: Tolerance
    labels: pd.Series = field(default_factory=lambda: pd.Series(dtype=object))
    complete: bool = False
    sides: tuple[str, str] = ("A", "B")

    @property
    def ok(self) -> bool:
        one_side = any(len(c) for c in self.checked["one_side"])
        missing = self.complete and (self.only_in_a or self.only_in_b or one_side)
        return self.mismatches.empty and self.regime_changes.empty and not missing

    def render(self, limit: int = 20) -> str:
        """What was checked, the largest differences, the mismatches (at most `limit` rows of each
        list) and the regime changes, as text; configs are named by their axis values."""
        a, b = self.sides
        lines = [f"tolerance: {self.tolerance.describe()}", f"checked ({a} against {b}):"]
        for row in self.checked.itertuples(index=False):
            lines.append(
                f"  {row.table}: {row.configs} configs, {row.rows} rows, {len(row.columns)} columns"
            )
            lines += textwrap.wrap(
                ", ".join(row.columns), 100, initial_indent="    ", subsequent_indent="    "
            )
            if row.one_side:
                lines.append(f"    on one side only, not compared: {', '.join(row.one_side)}")
        if self.only_in_a or self.only_in_b:
            lines.append(
                f"configs only in {a}: {len(self.only_in_a)}; only in {b}: {len(self.only_in_b)}"
            )
            lines += [f"  only in {a}: {self._name(c)}" for c in self.only_in_a[:limit]]
            lines += [f"  only in {b}: {self._name(c)}" for c in self.only_in_b[:limit]]
        if self.largest.empty:
            lines.append("largest differences: none (every compared value is identical)")
        else:
            lines.append("largest differences (columns not listed are identical):")
            lines.append(self._table(self.largest))
        lines.append(f"mismatches beyond tolerance: {len(self.mismatches)}")
        if not self.mismatches.empty:
            counts = self.mismatches.groupby(["table", "column"], sort=False).size()
            by_column = ", ".join(f"{t}.{c} {n}" for (t, c), n in counts.items())
            lines += textwrap.wrap(
                f"by column: {by_column}", 100, initial_indent="  ", subsequent_indent="    "
            )
            lines.append(self._table(self.mismatches.head(limit)))
            if len(self.mismatches) > limit:
                lines.append(f"  ... and {len(self.mismatches) - limit} more")
        lines.append(f"configs whose regime changed: {len(self.regime_changes)}")
        if not self.regime_changes.empty:
            lines.append(self._table(self.regime_changes.head(limit)))
        return "\n".join(lines)

    def _name(self, config_id: str) -> str:
        label = self.labels.get(config_id)
        return f"{label} ({config_id})" if label else config_id

    def _table(self, frame: pd.DataFrame) -> str:
        """Rows as text: the config named, sides as `sides`, columns empty in every row left out."""
        frame = frame.assign(config=frame["config_id"].map(self._name)).drop(columns="config_id")
        a, b = self.sides
        side = {"a": a, "b": b}
        frame = frame.rename(columns=lambda c: side.get(c) or _side_name(c, side))
        frame = frame.loc[:, [c for c in frame.columns if frame[c].notna().any()]]
        text = frame.map(lambda v: "" if v is None or v is pd.NA or v != v else _format(v))
        return textwrap.indent(text.to_string(index=False), "  ")


def config_labels(*summaries: pd.DataFrame) -> pd.Series:
    """config_id -> "activation=tanh sigma_w2=2 depth=8 replicate=1": the axes that vary across
    `summaries` (all of them where none varies), NaN values left out."""
    given = [s for s in summaries if s is not None]
    if not given:
        return pd.Series(dtype=object)
    frame = pd.concat(given, ignore_index=True).drop_duplicates("config_id").set_index("config_id")
    present = [a for a in AXES if a in frame.columns]
    varying = [a for a in present if frame[a].nunique(dropna=False) > 1] or present
    parts = [
        frame[a].map(lambda v, a=a: "" if pd.isna(v) else f"{a}={_format(v)}") for a in varying
    ]
    if not parts:
        return pd.Series(dtype=object)
    joined = parts[0].str.cat(parts[1:], sep=" ") if len(parts) > 1 else parts[0]
    return joined.str.split().str.join(" ")


def _side_name(column: str, side: dict) -> str:
    """How a column of side A or B is shown: regime_a as "regime stored" when A is "stored"."""
    stem, _, suffix = column.rpartition("_")
    return f"{stem} {side[suffix]}" if stem and suffix in side else column


def _format(value) -> str:
    return f"{value:.6g}" if isinstance(value, float | np.floating) else str(value)


def compare_table(
    table: str,
    a: pd.DataFrame,
    b: pd.DataFrame,
    *,
    tolerance: Tolerance,
    kinds: Mapping[str, str] | None = None,
) -> Comparison:
    """Compares one table of A and B over the configs both hold.

    Args:
        table: its name: one of `KEYS`; it chooses the join keys, and the column kinds unless given.
        a, b: the two sides.
        tolerance: see `Tolerance`.
        kinds: column -> kind (module docstring); default `KINDS[table]`.
    """
    keys = [k for k in KEYS[table] if k in a.columns or k in b.columns]
    if "sublayer" in keys:  # a run written before sublayers: all its rows are sublayer 0
        a, b = (t if "sublayer" in t else t.assign(sublayer=0) for t in (a, b))
    kinds = KINDS[table] if kinds is None else kinds
    columns = [c for c in kinds if c in a.columns and c in b.columns]
    ids_a, ids_b = set(a["config_id"]), set(b["config_id"])
    shared = ids_a & ids_b
    joined = a.loc[a["config_id"].isin(shared), keys + columns].merge(
        b.loc[b["config_id"].isin(shared), keys + columns],
        on=keys,
        how="outer",
        suffixes=("_a", "_b"),
        indicator=True,
    )
    both = joined["_merge"] == "both"
    mismatched = [_missing_rows(table, joined.loc[~both], keys)]
    largest = []
    joined = joined.loc[both]
    for column in columns:
        kind = kinds[column]
        va, vb = joined[f"{column}_a"], joined[f"{column}_b"]
        bad, diff = _differs(kind, va, vb, tolerance.limit(kind))
        if kind != "exact" and (diff > 0).any():
            at = diff.idxmax()
            largest.append(
                {
                    "table": table,
                    "column": column,
                    "max_diff": float(diff.max()),
                    "limit": tolerance.limit(kind),
                    **_where(joined, at),
                }
            )
        if bad.any():
            rows = joined.loc[bad, keys].assign(
                table=table, column=column, a=va[bad], b=vb[bad], diff=diff[bad]
            )
            mismatched.append(rows)
    one_side = [c for c in kinds if (c in a.columns) != (c in b.columns)]
    checked = pd.DataFrame(
        [
            {
                "table": table,
                "configs": len(shared),
                "rows": int(both.sum()),
                "columns": columns,
                "one_side": one_side,
            }
        ],
        columns=_CHECKED_COLUMNS,
    )
    return Comparison(
        checked=checked,
        largest=pd.DataFrame(largest, columns=_LARGEST_COLUMNS),
        mismatches=_mismatch_frame(mismatched),
        regime_changes=_regime_frame(None),
        only_in_a=sorted(ids_a - ids_b),
        only_in_b=sorted(ids_b - ids_a),
        tolerance=tolerance,
    )


def _differs(kind: str, a: pd.Series, b: pd.Series, limit: float) -> tuple[pd.Series, pd.Series]:
    """(beyond tolerance, difference) of two aligned columns; the difference is NaN for `exact`."""
    both_lost = a.isna() & b.isna()
    if kind == "exact":
        equal = (a.astype(object) == b.astype(object)).astype(bool) | both_lost
        return ~equal, pd.Series(np.nan, index=a.index)
    x, y = a.astype(float), b.astype(float)
    with np.errstate(invalid="ignore", divide="ignore"):
        diff = (x - y).abs()
        if kind in ("relative", "training_relative"):
            diff = diff / np.maximum(x.abs(), y.abs())
        elif kind == "theory":
            diff = diff / np.maximum(np.maximum(x.abs(), y.abs()), 1.0)
    same = (x == y) | both_lost
    diff = diff.where(~same, 0.0)
    return ~same & ~(diff <= limit), diff


def _where(joined: pd.DataFrame, at) -> dict:
    return {
        "config_id": joined.at[at, "config_id"],
        "layer": joined.at[at, "layer"] if "layer" in joined else pd.NA,
        "step": joined.at[at, "step"] if "step" in joined else pd.NA,
    }


def _missing_rows(table: str, rows: pd.DataFrame, keys: list[str]) -> pd.DataFrame:
    """A mismatch per row that only one side holds (a layer or step the other side lacks)."""
    side = rows["_merge"].map({"left_only": "A", "right_only": "B"})
    return rows[keys].assign(
        table=table,
        column="<row>",
        a=np.where(side == "A", "present", "absent"),
        b=np.where(side == "B", "present", "absent"),
        diff=np.nan,
    )


def _mismatch_frame(parts: list[pd.DataFrame]) -> pd.DataFrame:
    parts = [p.astype({"a": object, "b": object}) for p in parts if len(p)]
    if not parts:
        return pd.DataFrame(columns=_MISMATCH_COLUMNS)
    frame = pd.concat(parts, ignore_index=True).reindex(columns=_MISMATCH_COLUMNS)
    for key in ("layer", "step"):
        frame[key] = frame[key].astype("Int64")
    return frame.sort_values(["config_id", "table"], kind="stable", ignore_index=True)


def _regime_frame(frame: pd.DataFrame | None) -> pd.DataFrame:
    columns = ["config_id", "regime_a", "regime_b", "log10_delta_ratio_a", "log10_delta_ratio_b"]
    return pd.DataFrame(columns=columns) if frame is None else frame[columns]


def regime_changes(summary_a: pd.DataFrame, summary_b: pd.DataFrame) -> pd.DataFrame:
    """Configs of both summaries whose regime differs, with both r values."""
    columns = ["config_id", "regime", "log10_delta_ratio"]
    joined = summary_a[columns].merge(summary_b[columns], on="config_id", suffixes=("_a", "_b"))
    return _regime_frame(joined[joined["regime_a"] != joined["regime_b"]].reset_index(drop=True))


def combine(parts: list[Comparison], *, complete: bool = False) -> Comparison:
    """One Comparison of several tables' (the parts share one tolerance)."""
    nonempty = [frame for frame in (p.largest for p in parts) if len(frame)]
    return Comparison(
        checked=pd.concat([p.checked for p in parts], ignore_index=True),
        largest=(
            pd.concat(nonempty, ignore_index=True)
            if nonempty
            else pd.DataFrame(columns=_LARGEST_COLUMNS)
        ),
        mismatches=_mismatch_frame([p.mismatches for p in parts]),
        regime_changes=pd.concat(
            [p.regime_changes for p in parts if len(p.regime_changes)] or [_regime_frame(None)],
            ignore_index=True,
        ),
        only_in_a=sorted({c for p in parts for c in p.only_in_a}),
        only_in_b=sorted({c for p in parts for c in p.only_in_b}),
        tolerance=parts[0].tolerance,
        complete=complete,
    )


def compare(
    a: Mapping[str, pd.DataFrame | None],
    b: Mapping[str, pd.DataFrame | None],
    *,
    tolerance: Tolerance,
    complete: bool = False,
) -> Comparison:
    """Compares every table that both sides hold (names of `KINDS`) and the regimes of their configs.

    Args:
        a, b: table name -> DataFrame (None or absent: that side has no such table), as
            `run_tables` returns them.
        tolerance: see `Tolerance`.
        complete: every config of a table must be on both sides (as in `gradbench verify`).
    """
    names = [t for t in KINDS if a.get(t) is not None and b.get(t) is not None]
    parts = [compare_table(t, a[t], b[t], tolerance=tolerance) for t in names]
    if not parts:
        raise ValueError("`compare`: the two sides share no table")
    result = combine(parts, complete=complete)
    if "summary" in names:
        result.regime_changes = regime_changes(a["summary"], b["summary"])
    result.labels = config_labels(a.get("summary"), b.get("summary"))
    return result


def run_tables(run: results.Run) -> dict[str, pd.DataFrame | None]:
    """The tables of a run directory that `compare` knows, the training ones where the run has them.

    `outcomes` is the summary's training outcome columns (None for a run without training).
    """
    outcome_columns = [c for c in KINDS["outcomes"] if c in run.summary.columns]
    tables = {
        "layers": run.layers,
        "summary": run.summary,
        "outcomes": run.summary[["config_id", *outcome_columns]] if outcome_columns else None,
    }
    return tables | {"training": run.training, "training_layers": run.training_layers}


def compare_runs(
    run_a: str | os.PathLike, run_b: str | os.PathLike, *, tolerance: Tolerance
) -> Comparison:
    """`gradbench compare`: every table both run directories hold, config by config.

    Raises:
        SpecError: a directory is not a readable run directory, or the runs share no config.
    """
    a, b = results.load(run_a), results.load(run_b)
    shared = set(a.summary["config_id"]) & set(b.summary["config_id"])
    if not shared:
        raise SpecError(
            f"compare {run_a} {run_b}",
            f"<no config in common: A has {len(a.summary)} configs of sweep "
            f"{a.manifest.get('name')!r}, B {len(b.summary)} of {b.manifest.get('name')!r}>",
            "two runs that share configs (the same seed and axis values give the same config_id)",
        )
    return compare(run_tables(a), run_tables(b), tolerance=tolerance)
