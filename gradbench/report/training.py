"""What a report says about training (runs with a [train] section; `gradbench.training`).

Findings and tables computed from the training outcome columns that `gradbench.training`
wrote into the run's summary; every number in the text is computed here. Pure pandas, no
matplotlib: `gradbench.report.training_sections` draws the figures and assembles the sections.
"""

from __future__ import annotations

import dataclasses

import numpy as np
import pandas as pd

from gradbench.analysis.crossings import grid_runs
from gradbench.analysis.facets import facet_parts
from gradbench.notation import clip_setting, fmt, symbol
from gradbench.report.findings import Finding, facet_name, finding_facets, span_text
from gradbench.results import Run
from gradbench.schema import (
    OUTCOME_COLUMNS,
    REGIMES,
    TRAIN_AXES,
    TRAIN_CONFIG_COLUMNS,
    config_axes,
    layer_rows,
)


def training_steps(run: Run) -> pd.DataFrame | None:
    """The run's training table (data/training.parquet), or None for a run without training."""
    return run.training if "trained" in run.summary else None


def gradient_view(run: Run) -> Run:
    """The run with one row per network (the first of its training settings), without training
    columns: gradients at initialisation do not depend on how the network is trained afterwards.
    Its layers are the whole layers, blocks or steps (`schema.layer_rows`)."""
    drop = [*TRAIN_CONFIG_COLUMNS, "train_group", *OUTCOME_COLUMNS]
    summary = run.summary.drop(columns=[c for c in drop if c in run.summary])
    network = [c for c in config_axes(summary.columns) if c != "init_family"]
    network += [c for c in ("replicate", "seed") if c in summary]
    summary = summary.drop_duplicates(subset=network, ignore_index=True)
    keep = set(summary["config_id"])
    configs = run.configs[run.configs["config_id"].isin(keep)]
    configs = configs.drop(columns=[c for c in drop if c in configs])
    manifest = dict(run.manifest)
    manifest["axes"] = {
        k: v for k, v in (run.manifest.get("axes") or {}).items() if k not in TRAIN_AXES
    }
    layers = layer_rows(run.layers)
    layers = layers[layers["config_id"].isin(keep)]
    return dataclasses.replace(
        run,
        configs=configs,
        layers=layers,
        summary=summary,
        manifest=manifest,
        training=None,
        training_layers=None,
    )


def setup_text(run: Run) -> str:
    """The paragraph that says how the run trained: steps, optimisers, task, and the rules for
    "trained" and "diverged"."""
    s, m = run.summary, run.manifest.get("training", {})
    below = float(s["trained_below"].iloc[0])
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
    return setup


def clip_varies(s: pd.DataFrame) -> bool:
    """Whether the run swept more than one clipping setting."""
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
    for regime in REGIMES:
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


def has_depth_scale(summary: pd.DataFrame) -> pd.Series:
    """Rows whose trainability the rule "depth <= 6 xi_c" speaks about: MLPs with a finite-or-
    infinite xi_c. The rule is Schoenholz et al.'s (2017) for deep feed-forward nets; xi_c is NaN for
    residual nets, and an RNN's xi_c (the correlation map of two states under shared inputs) has
    no such trainability result to hold it against."""
    mlp = summary["architecture"].eq("mlp") if "architecture" in summary else True
    return summary["xi_c"].notna() & mlp


def trainable_band(summary: pd.DataFrame, scale: str, multiple: float) -> pd.DataFrame:
    """Per facet and depth: the scale values where most replicates trained, and where theory puts
    depth <= multiple x xi_c. Only runs without clipping (or the sweep's only clipping setting),
    and only MLPs (`has_depth_scale`)."""
    s = summary
    if clip_varies(s):
        s = s[s["clip"] == "none"]
    facets = [c for c in finding_facets(s, scale) if c not in TRAIN_AXES or s[c].nunique() > 1]
    facets = [c for c in facets if c not in ("clip", "clip_threshold")]
    s = s[has_depth_scale(s)]  # after the facets, so that names still say which network
    rows = []
    for key, part in facet_parts(s, facets):
        name = facet_name(s, facets, key)
        for depth, deep in part.groupby("depth", sort=True):
            by = deep.groupby(scale).agg(trained=("trained", "mean"), xi_c=("xi_c", "mean"))
            xs = by.index.to_numpy(float)
            measured = (by["trained"] > 0.5).to_numpy()
            theory = (depth <= multiple * by["xi_c"]).to_numpy()
            sym = symbol(scale)
            rows.append(
                {
                    "configs": name,
                    "depth": int(depth),
                    "trained (most replicates)": span_text(sym, grid_runs(xs, measured))
                    if measured.any()
                    else "nowhere",
                    f"theory: depth ≤ {fmt(multiple)} ξ_c": span_text(sym, grid_runs(xs, theory))
                    if theory.any()
                    else "nowhere",
                    "agree": int((measured == theory).sum()),
                    "cells": len(xs),
                }
            )
    return pd.DataFrame(rows)


def depth_reach(summary: pd.DataFrame, scale: str, multiple: float) -> pd.DataFrame:
    """Per facet and scale value: the deepest depth at which most replicates trained, the
    shallowest at which they did not, and the theory's depth scale `multiple` x xi_c there (only
    MLPs, `has_depth_scale`)."""
    s = summary[summary["clip"] == "none"] if clip_varies(summary) else summary
    facets = [c for c in finding_facets(s, scale) if c not in ("clip", "clip_threshold")]
    s = s[has_depth_scale(s)]
    rows = []
    for key, part in facet_parts(s, facets):
        name = facet_name(s, facets, key)
        for x, cells in part.groupby(scale, sort=True):
            by = cells.groupby("depth")["trained"].mean()
            trained, failed = by.index[by > 0.5], by.index[by <= 0.5]
            xi = float(cells["xi_c"].mean())
            rows.append(
                {
                    "configs": name,
                    symbol(scale): fmt(x),
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


def reach_findings(reach: pd.DataFrame, scale: str, multiple: float) -> list[Finding]:
    """The deepest trained depth against the theory's depth scale, per facet on each side of
    chi_1 = 1."""
    out = []
    for name in reach["configs"].unique() if len(reach) else []:
        out += _reach_sides(reach[reach["configs"] == name], scale, multiple)
    return out


def _reach_sides(reach: pd.DataFrame, scale: str, multiple: float) -> list[Finding]:
    out = []
    for side, rows in (("ordered", reach["_chi1"] < 1), ("chaotic", reach["_chi1"] > 1)):
        part = reach[rows]
        if part.empty:
            continue
        pieces = [
            f"{symbol(scale)} = {r[symbol(scale)]}: {r['deepest trained']} vs "
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


def band_finding(band: pd.DataFrame, multiple: float) -> Finding:
    agree, cells = int(band["agree"].sum()), int(band["cells"].sum())
    text = (
        f"The measured outcome (most replicates trained or not) matches the theory's rule "
        f"'trainable iff depth ≤ {fmt(multiple)} ξ_c' in {agree} of {cells} (σ_w², depth) cells "
        f"({fmt(100 * agree / max(cells, 1))}%)."
    )
    return Finding(text, {"agree": agree, "cells": cells}, kind="trainable_band")


def clipping_table(summary: pd.DataFrame) -> pd.DataFrame:
    """Per initial regime and clipping setting: runs, diverged, trained, largest updates."""
    s = summary.assign(setting=clip_setting(summary["clip"], summary["clip_threshold"]))
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
    s = summary.assign(setting=clip_setting(summary["clip"], summary["clip_threshold"]))
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
    out.append(_before_any_update(clipped))
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


def _before_any_update(clipped: pd.DataFrame) -> Finding:
    """Clipped runs that diverged at step 0: their loss at initialisation was already NaN or Inf
    (the forward pass overflowed), before clipping had an update to act on."""
    at_start = clipped[clipped["diverged"].astype(bool) & (clipped["diverged_step"] == 0)]
    if at_start.empty:
        return Finding("", {}, kind="clipping_too_late")
    forward = int((~np.isfinite(at_start["loss_initial"].astype(float))).sum())
    text = (
        f"{len(at_start)} of the {len(clipped)} clipped runs diverged at step 0, before any "
        f"update, which no clipping rule acts on: {forward} of them had a NaN or Inf loss at "
        "initialisation (the forward pass overflowed the compute dtype), the others a NaN or Inf "
        "initial gradient."
        if forward < len(at_start)
        else f"{len(at_start)} of the {len(clipped)} clipped runs diverged at step 0, before any "
        "update, which no clipping rule acts on: each had a NaN or Inf loss at initialisation "
        "(the forward pass overflowed the compute dtype)."
    )
    numbers = {"count": len(at_start), "runs": len(clipped), "forward": forward}
    return Finding(text, numbers, kind="clipping_too_late")


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
    key = [c for c in config_axes(s.columns) if c not in ("clip", "clip_threshold", "setting")]
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
