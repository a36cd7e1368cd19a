"""The run directory's contract: every table and column name, the regime and flag values, the version.

Written once and imported everywhere, on both sides of the JAX boundary (this module imports only numpy).
docs/results.md documents each column; tests/test_schema.py holds the two against each other and
against the tables a run writes. `SCHEMA_VERSION` changes whenever a column changes meaning or goes.
"""

from __future__ import annotations

import itertools
import math
from enum import StrEnum
from numbers import Real

import numpy as np

SCHEMA_VERSION = (
    3  # 2: predicted_log10_delta_ratio is the finite-depth mean field; 3: architectures
)

# data/<table>.parquet of every run, and of runs with a [train] section.
RUN_TABLES = ("configs", "layers", "summary")
TRAINING_TABLES = ("training", "training_layers")
TABLES = (*RUN_TABLES, *TRAINING_TABLES)


class Regime(StrEnum):
    """A config's regime, decided on r = log10(||delta_1|| / ||delta_L||) (gradbench.analysis.classify)."""

    VANISHING = "vanishing"
    STABLE = "stable"
    EXPLODING = "exploding"
    NONFINITE = "nonfinite"
    UNMEASURED = "unmeasured"


REGIMES = tuple(r.value for r in Regime)
# The order in which regimes win a tie (a cell's majority), and in which tables list them.
SEVERITY = ("nonfinite", "exploding", "vanishing", "unmeasured", "stable")


class Flag(StrEnum):
    """What happened to one layer's statistics (layers.parquet `flag`)."""

    OK = "ok"
    ZERO = "zero"
    UNDERFLOW = "underflow"
    NONFINITE = "nonfinite"


FLAGS = tuple(f.value for f in Flag)  # a flag's code in the kernel's output is its index here


def lost_below(dtype) -> float:
    """gradbench's one definition of "lost to underflow": a vector whose largest entry is below this.

    The threshold is tiny / eps: 2^-103 ~ 9.9e-32 in float32, 2^-970 ~ 1.0e-292 in float64. Below
    it, the entries that still matter to a norm (down to max x eps) are subnormal or zero; above it
    every such entry is a normal number. The kernel's flags (`gradbench.engine.layerstats.is_tiny`) use it, and so does the
    regime rule: a lost vector of n entries has a norm below sqrt(n) x lost_below(dtype), the largest
    value `gradbench.analysis.classify` lets a lost signal have.
    """
    info = np.finfo(dtype)
    return float(info.tiny) / float(info.eps)


# configs.parquet, in order.
CONFIG_COLUMNS = (
    "config_id",
    "group",
    "activation",
    "init",
    "init_family",
    "sigma_w2",
    "sigma_w",
    "sigma_b2",
    "sigma_b",
    "depth",
    "width",
    "batch",
    "replicate",
    "architecture",
    "branch_layers",
    "norm",
    "norm_position",
    "branch_scale",
    "alpha",
    "input_scale",
    "loss",
    "dtype",
    "measure",
    "seed",
)
# Config columns of a [train] section: the swept training axes, then its settings.
TRAIN_AXES = ("optimizer", "lr", "clip", "clip_threshold")
TRAIN_SETTINGS = ("task", "steps", "samples", "train_batch", "outputs")
TRAIN_CONFIG_COLUMNS = (*TRAIN_AXES, *TRAIN_SETTINGS)
# Columns that identify a config or its compiled code, rather than describe it.
ID_COLUMNS = ("config_id", "group", "replicate", "seed", "train_group")
# The two spellings of the weight scale: a sweep gives one, the tables hold both.
SCALE_AXES = ("sigma_w2", "sigma_w")

# layers.parquet: the per-layer log10 statistics, then q and the flag. A row is a (layer, sublayer):
# sublayer 0 is the layer, residual block or RNN step, 1.. the dense layers of a residual branch.
LAYER_STATS = ("log10_delta", "log10_grad_w", "log10_grad_b", "log10_q", "log10_grad_w_sum")
LAYER_COLUMNS = ("config_id", "layer", "sublayer", *LAYER_STATS, "q", "flag")

# summary.parquet: every config column, then these.
MEASURED_COLUMNS = (
    "log10_delta_ratio",
    "log10_grad_w_ratio",
    "log10_grad_b_ratio",
    "delta_growth",
    "grad_w_growth",
    "log10_delta_first",
    "log10_delta_last",
    "log10_grad_w_first",
    "log10_grad_w_last",
    "log10_grad_w_total",
    "log10_q_last",
    "regime",
    "underflow",
    "nonfinite",
    "threshold",
)
THEORY_COLUMNS = (
    "chi1",
    "q_star",
    "xi_c",
    "predicted_log10_delta_ratio",
    "fixed_point_log10_delta_ratio",
    "finite_width_log10_delta_ratio",
    "predicted_log10_delta_ratio_sd",
    "pascanu_log10_bound",
)
# With `[run] jacobian = true`: the input-output Jacobian's squared singular values, measured
# (gradbench.engine.jacobian) and predicted by free probability (gradbench.theory.spectrum).
JACOBIAN_COLUMNS = ("log10_jacobian_sv2_mean", "jacobian_sv2_spread")
SPECTRUM_COLUMNS = ("predicted_log10_jacobian_sv2_mean", "predicted_jacobian_sv2_spread")
# Training outcomes, one per config of a [train] section (gradbench.training).
OUTCOME_COLUMNS = (
    "loss_initial",
    "loss_final",
    "loss_baseline",
    "loss_ratio",
    "fit_ratio",
    "trained",
    "diverged",
    "diverged_step",
    "clipped_fraction",
    "log10_grad_norm_initial",
    "log10_grad_norm_max",
    "log10_clipped_norm_max",
    "log10_update_norm_max",
    "trained_below",
)

# training.parquet (config x logged step) and training_layers.parquet (config x logged step x layer).
TRAINING_COLUMNS = (
    "config_id",
    "step",
    "loss",
    "log10_loss",
    "log10_grad_norm",
    "log10_clipped_norm",
    "log10_update_norm",
    "log10_grad_w_first",
    "log10_grad_w_last",
    "clipped_fraction",
    "log10_grad_norm_max",
    "log10_clipped_norm_max",
    "log10_update_norm_max",
    "diverged",
)
TRAINING_LAYER_COLUMNS = ("config_id", "step", "layer", "log10_grad_w", "log10_grad_b")

# Every column that holds a result (measured, predicted or trained): never a facet. The training
# table's `loss` is left out: in configs and summary, `loss` is the sweep's loss function.
RESULT_COLUMNS = frozenset(
    {*LAYER_STATS, "q", "flag", *MEASURED_COLUMNS, *THEORY_COLUMNS, *OUTCOME_COLUMNS}
    | {*JACOBIAN_COLUMNS, *SPECTRUM_COLUMNS}
    | {c for c in (*TRAINING_COLUMNS, *TRAINING_LAYER_COLUMNS) if c not in ("config_id", "loss")}
)


def is_result(column: str) -> bool:
    """Whether `column` holds a result rather than describes a config; log10_*, predicted_*, *_growth
    and *_ratio columns are results by name, so derived tables follow the same rule."""
    if column in RESULT_COLUMNS:
        return True
    return column.startswith(("log10_", "predicted_")) or column.endswith(("_growth", "_ratio"))


# Config columns that follow from others: a residual config's alpha from branch_scale and depth.
DERIVED_COLUMNS = ("alpha",)


def config_axes(columns) -> list[str]:
    """The columns among `columns` that describe a configuration: not ids, layers, results or
    columns derived from other axes (`DERIVED_COLUMNS`)."""
    skip = {*ID_COLUMNS, *DERIVED_COLUMNS, "layer", "sublayer"}
    return [c for c in columns if c not in skip and not is_result(c)]


def layer_rows(layers):
    """The rows of a layers table that r, growth rates and regimes are read from: sublayer 0 (the
    layer, block or step). Tables written before sublayers existed are all such rows."""
    if "sublayer" not in layers:
        return layers
    return layers[layers["sublayer"] == 0]


def axis_scale(values) -> str:
    """How an axis of these values is drawn and recorded (the manifest's `axes.<name>.scale`): "log"
    for three or more positive numbers that span a factor of 100, or that are evenly spaced in log
    and not in linear terms over a factor of 8 or more (a depth list 8, 16, 32, 64); else "linear".
    A sweep's logspace is "log" whatever its values."""
    numbers = [v for v in values if isinstance(v, Real) and not isinstance(v, bool)]
    if len(numbers) < 3 or len(numbers) < len(values) or min(numbers) <= 0:
        return "linear"
    v = sorted(set(float(x) for x in numbers))
    if len(v) < 3:
        return "linear"
    if v[-1] >= 100 * v[0]:
        return "log"
    if v[-1] < 8 * v[0]:
        return "linear"
    steps = [b - a for a, b in itertools.pairwise(v)]
    ratios = [math.log(b / a) for a, b in itertools.pairwise(v)]
    even_in_log = max(ratios) - min(ratios) < 0.1 * (sum(ratios) / len(ratios))
    even_in_linear = max(steps) - min(steps) <= 0.5 * (sum(steps) / len(steps))
    return "log" if even_in_log and not even_in_linear else "linear"
