"""Figures from run tables: phase diagrams, regime maps, ratio curves, layer profiles, theory and
training figures.

The only gradbench package that imports matplotlib. Every figure function takes pandas DataFrames
with the columns of docs/results.md and returns a `matplotlib.figure.Figure`; nothing here touches
JAX, so a stored run can be re-plotted without compiling anything. Figures are built with `Figure`
rather than pyplot, so they hold no global state and need no closing. Statistics are aggregated
with one pandas groupby per panel and drawn with plain matplotlib: seaborn's per-point estimators
(and its scipy import) took most of a report's time.

    diagrams     phase_diagram, regime_map: heatmaps over two swept axes
    curves       ratio_curves, layer_profiles: lines against one axis or the layer index
    depth        depth_curves: r against depth per network family, with theory's r
    facet_maps   facet_map, layer_map: one heatmap row per facet, for sweeps with many facets
    theory       theory_agreement, and the mean-field overlays of the diagrams
    training     trainability_diagram, clipping_map, training_curves
    axes         infer_axes, is_log_axis: which swept axes a run's figures use, on which scale
    layout       panels per facet, shared labels and legends, hue thinning, save
    selection    the configs a figure shows when it has fewer axes than the sweep
    cells        heatmap cells: replicates aggregated, NaN/Inf and unmeasurable cells marked
    scales       log and symlog axes, cell edges, the colour scale of gradient ratios
    style        regime colours, marker and patch styles, line colours
"""

import sys

import matplotlib

if "matplotlib.pyplot" not in sys.modules:  # respect a backend the user already chose (notebooks)
    matplotlib.use("Agg")

from gradbench.plots.axes import infer_axes, is_log_axis  # noqa: E402
from gradbench.plots.curves import layer_profiles, ratio_curves  # noqa: E402
from gradbench.plots.depth import depth_curves  # noqa: E402
from gradbench.plots.diagrams import phase_diagram, regime_map  # noqa: E402
from gradbench.plots.facet_maps import facet_map, layer_map  # noqa: E402
from gradbench.plots.layout import MAX_PANELS, panel_count, save, thin  # noqa: E402
from gradbench.plots.spectrum import spectrum_growth  # noqa: E402
from gradbench.plots.style import REGIME_COLOURS  # noqa: E402
from gradbench.plots.theory import theory_agreement  # noqa: E402
from gradbench.plots.training import (  # noqa: E402
    DEPTH_SCALE_MULTIPLE,
    clipping_map,
    trainability_diagram,
    training_curves,
)

__all__ = [
    "phase_diagram",
    "regime_map",
    "ratio_curves",
    "layer_profiles",
    "depth_curves",
    "facet_map",
    "layer_map",
    "theory_agreement",
    "spectrum_growth",
    "trainability_diagram",
    "clipping_map",
    "training_curves",
    "infer_axes",
    "is_log_axis",
    "panel_count",
    "save",
    "thin",
    "MAX_PANELS",
    "REGIME_COLOURS",
    "DEPTH_SCALE_MULTIPLE",
]
