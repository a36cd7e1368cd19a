"""The training sections of a report (runs with a [train] section): setup, findings, tables and
the training figures.

Assembles the text of `gradbench.report.training` with the figures of `gradbench.plots.training`;
the only training part of a report that draws, so the only one that imports matplotlib.
"""

from __future__ import annotations

from functools import partial
from pathlib import Path

import pandas as pd

from gradbench import plots
from gradbench.notation import clip_setting, fmt
from gradbench.report.findings import scale_axis
from gradbench.report.training import (
    band_finding,
    clip_varies,
    clipping_findings,
    clipping_table,
    depth_reach,
    has_depth_scale,
    reach_findings,
    setup_text,
    trainable_band,
    training_findings,
)
from gradbench.results import Run

DEPTH_SCALE_CAPTION = (
    " Green: the theory's depth scale {multiple} ξ_c (Schoenholz et al. 2017: networks train up "
    "to about 6 ξ_c); trainable below the line."
)
TRAIN_FIGURES = {
    "trainability": (
        "Trainability phase diagram",
        "Colour: log10(final loss / initial loss), mean over replicates; white dots: most "
        "replicates trained (final loss below {below} × the baseline loss); black: diverged in a "
        "replicate.{theory}{unclipped}",
    ),
    "clipping_fit": (
        "Clipping effect on training",
        "Rows: clipping settings; columns: the weight scale; colour: log10(final loss / baseline "
        "loss); letters: T/t all/some replicates trained, D/d all/some diverged, · none trained.",
    ),
    "clipping_updates": (
        "Clipping effect on the updates",
        "Colour: log10 of the largest parameter update of the run (max over every step); letters "
        "as above. Clipping bounds the update; whether the network then trains is the other map.",
    ),
    "loss_curves": (
        "Loss curves by regime",
        "Training loss over the baseline loss (1: no better than an input-independent prediction), "
        "one line per run, in panels by the gradient's regime at initialisation.{fixed}",
    ),
    "update_curves": (
        "Update norms during training",
        "log10 of the parameter update at each logged step, one line per run, by regime.",
    ),
}


def training_blocks(run: Run, steps: pd.DataFrame, figures: Path) -> list[tuple]:
    """The report blocks of the training sections; draws the training figures into `figures`.

    `run` is the full run (every training setting of every network), `steps` its per-step table.
    """
    s = run.summary
    below = float(s["trained_below"].iloc[0])
    scale = scale_axis(s)
    multiple = plots.DEPTH_SCALE_MULTIPLE
    blocks: list[tuple] = [("h2", "Training"), ("p", setup_text(run))]
    found = training_findings(s)
    band = reach = None
    if (
        scale
        and "depth" in s
        and s["depth"].nunique() > 1
        and "xi_c" in s
        and has_depth_scale(s).any()
    ):
        band = trainable_band(s, scale, multiple)
        found.append(band_finding(band, multiple))
        reach = depth_reach(s, scale, multiple)
        found += reach_findings(reach, scale, multiple)
    if clip_varies(s):
        found += clipping_findings(s)
    blocks.append(("ul", [f.text for f in found]))
    if band is not None and not band.empty:
        shown = reach[[c for c in reach.columns if not c.startswith("_")]]
        blocks += [
            ("h3", "Trainable band"),
            ("table", list(band.columns), band.astype(str).values.tolist()),
            ("h3", "Depth reach"),
            (
                "p",
                f"Per weight scale: the deepest depth at which most replicates trained, the "
                f"shallowest at which they did not, and the theory's depth scale "
                f"{fmt(multiple)} ξ_c.",
            ),
            ("table", list(shown.columns), shown.astype(str).values.tolist()),
        ]
    if clip_varies(s):
        table = clipping_table(s)
        blocks += [
            ("h3", "Clipping outcomes"),
            ("table", list(table.columns), table.astype(str).values.tolist()),
        ]
    for stem, title, caption in _training_figures(run, steps, figures, scale, below, multiple):
        blocks += [("h3", title), ("figure", f"figures/{stem}", title), ("p", caption)]
    return blocks


def _training_figures(run, steps, directory, scale, below, multiple):
    """Draw and save the training figures the run's axes allow; returns (stem, title, caption)."""
    s, m = run.summary, run.manifest
    x, y, facet = plots.infer_axes(s, m)
    facet = [c for c in (facet or []) if c not in ("clip", "clip_threshold")] or None
    draw, fixed_note = {}, ""
    if scale and "depth" in s and s["depth"].nunique() > 1:
        unclipped = s[s["clip"] == "none"] if clip_varies(s) else s
        if len(unclipped):
            # The 6 xi_c line is drawn for the networks the rule speaks about only.
            unclipped = unclipped.assign(xi_c=unclipped["xi_c"].where(has_depth_scale(unclipped)))
            draw["trainability"] = partial(
                plots.trainability_diagram, unclipped, scale, "depth", facet=facet,
                log_x=plots.is_log_axis(m, s, scale), log_y=plots.is_log_axis(m, s, "depth"),
                multiple=multiple,
            )  # fmt: skip
    if clip_varies(s) and scale:
        by = [
            c for c in ("activation", "depth", "optimizer", "lr") if c in s and s[c].nunique() > 1
        ]
        for stem, value in (("clipping_fit", "fit_ratio"), ("clipping_updates", "update")):
            draw[stem] = partial(plots.clipping_map, s, scale, value=value, facet=by or None)
    fixed = {}
    if "depth" in s and s["depth"].nunique() > 1:
        trained_depths = s.loc[s["trained"].astype(bool), "depth"]
        depth = int(trained_depths.max()) if len(trained_depths) else int(s["depth"].max())
        fixed["depth"] = depth
        fixed_note = f" Depth {depth}: the deepest at which some run trained."
    if clip_varies(s):
        hue, panels = (
            "setting",
            ["activation", "regime"] if s["activation"].nunique() > 1 else "regime",
        )
        data = s.assign(setting=clip_setting(s["clip"], s["clip_threshold"]))
    else:
        hue, panels, data = scale, "regime", s
    draw["loss_curves"] = partial(
        plots.training_curves, steps, data, hue=hue, facet=panels, fixed=fixed
    )
    if clip_varies(s):
        draw["update_curves"] = partial(
            plots.training_curves, steps, data, value="log10_update_norm", hue=hue,
            facet=panels, fixed=fixed,
        )  # fmt: skip
    for stem, make in draw.items():
        plots.save(make(), directory, stem)
    return [
        (stem, TRAIN_FIGURES[stem][0], TRAIN_FIGURES[stem][1].format(
            below=fmt(below), multiple=fmt(multiple), fixed=fixed_note,
            theory=DEPTH_SCALE_CAPTION.format(multiple=fmt(multiple))
            if "xi_c" in s and has_depth_scale(s).any() else "",
            unclipped=" Runs without clipping." if clip_varies(s) else ""))
        for stem in draw
    ]  # fmt: skip
