"""The theory columns of a run's tables: predictions beside each config's measurement.

`with_theory` adds `gradbench.schema.THEORY_COLUMNS` to any frame with the config columns in
`CONFIG_KEYS` (a summary, or the configs before they are measured), each architecture's own:

    mlp (`quantities`, `spread`)
        chi1, q_star, xi_c               the mean field at the fixed point q*
        predicted_log10_delta_ratio      the mean-field r of the orbit q_1, q_2, ... from the input
        fixed_point_log10_delta_ratio    (L - 1) log10(chi_1) / 2, the r of a forward signal at q*
        finite_width_log10_delta_ratio,  mean and standard deviation of r over draws of a network
        predicted_log10_delta_ratio_sd   of the config's width, where the exact law applies
    resmlp (`residual`)
        predicted_log10_delta_ratio      the mean-field r of the stream, block by block
        chi1                             the factor of ||g||^2 every block shares (post-norm; no
                                         norm, homogeneous phi); NaN where it changes with depth
        q_star                           the stream's limit: 1 after a post-norm, else inf
        fixed_point_log10_delta_ratio    (L - 1) log10(chi1) / 2: r itself, or NaN with chi1
    rnn (`recurrent`)
        chi1, q_star                     the fixed point of the orbit from h_0 = 0, chi_1 there
        xi_c                             the steps over which states fed the same inputs forget
                                         how they differed (the correlation map's -1 / ln chi_c)
        predicted_log10_delta_ratio      the mean-field r of the orbit, step by step
        fixed_point_log10_delta_ratio    (T - 1) log10(chi_1) / 2
        pascanu_log10_bound              Pascanu et al.'s bound (T - 1) log10(gamma s_max(W))

A column not listed for an architecture is NaN in its rows, as is every column for an unregistered
activation or architecture. Rows of runs from before the residual and recurrent architectures
lack their config columns (`ARCHITECTURE_DEFAULTS` stands in) and get the numbers they got then.

`with_spectrum` adds `gradbench.schema.SPECTRUM_COLUMNS`, free probability's prediction of an MLP's
input-output Jacobian spectrum (`spectrum`), to runs that measure it; other architectures get NaN.
Both are separate from the array functions because they speak in table columns: each distinct
config is solved once, whatever the replicates.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from gradbench import registry
from gradbench.schema import SPECTRUM_COLUMNS, THEORY_COLUMNS
from gradbench.theory.quantities import predict
from gradbench.theory.recurrent import predict_recurrent
from gradbench.theory.residual import predict_residual
from gradbench.theory.spectrum import predict_spectrum
from gradbench.theory.spread import law_applies, relu_finite_width

# The config columns the predictions depend on.
CONFIG_KEYS = (
    "activation",
    "init_family",
    "sigma_w2",
    "sigma_b2",
    "depth",
    "width",
    "batch",
    "loss",
)
# Those of the spectrum prediction.
SPECTRUM_KEYS = ("activation", "init_family", "sigma_w2", "sigma_b2", "depth")
# The config columns of the residual and recurrent architectures, with the values that stand in
# for them in rows without them (runs of MLPs only, before these architectures).
ARCHITECTURE_DEFAULTS = {
    "architecture": "mlp",
    "branch_layers": 0,
    "norm": "none",
    "norm_position": "none",
    "alpha": np.nan,
    "input_scale": 1.0,
}


def with_theory(summary: pd.DataFrame) -> pd.DataFrame:
    """`summary` with the theory columns of each config (see the module docstring).

    Only registered activations have a theory here; rows with any other activation (a user
    "package.module:function") or architecture get NaN in every theory column, and rows where a
    column does not apply get NaN in it. Rows keep their order.
    """
    missing = [c for c in CONFIG_KEYS if c not in summary]
    if missing:
        raise KeyError(f"with_theory needs the config columns {missing}")
    standing_in = {k: v for k, v in ARCHITECTURE_DEFAULTS.items() if k not in summary}
    keys = [*CONFIG_KEYS, *ARCHITECTURE_DEFAULTS]
    frame = summary.assign(**standing_in)
    return _per_config(frame, keys, THEORY_COLUMNS, _theory_columns).drop(columns=[*standing_in])


def with_spectrum(summary: pd.DataFrame) -> pd.DataFrame:
    """`summary` with `gradbench.schema.SPECTRUM_COLUMNS`, the prediction beside each measured config.

    Rows with activations given as import paths, and rows of architectures other than mlp, get
    NaN. Needs the config columns in `SPECTRUM_KEYS`; rows keep their order.
    """
    if "architecture" not in summary:  # a run of MLPs only
        return _per_config(summary, [*SPECTRUM_KEYS], SPECTRUM_COLUMNS, _spectrum)
    return _per_config(
        summary,
        [*SPECTRUM_KEYS, "architecture"],
        SPECTRUM_COLUMNS,
        lambda unique: _by_architecture(unique, SPECTRUM_COLUMNS, {"mlp": _spectrum}),
    )


def _spectrum(unique: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    return predict_spectrum(*(unique[k] for k in SPECTRUM_KEYS))


def _per_config(frame: pd.DataFrame, keys: list[str], columns, predict_columns) -> pd.DataFrame:
    """`frame` with `columns`, computed by `predict_columns(unique)` once per distinct `keys` of a
    registered activation (NaN for the others), and merged back in `frame`'s row order."""
    known = frame["activation"].isin(list(registry.ACTIVATIONS))
    unique = frame.loc[known, keys].drop_duplicates(ignore_index=True)
    if unique.empty:
        return frame.assign(**dict.fromkeys(columns, np.nan))
    predicted = predict_columns({k: unique[k].to_numpy() for k in keys})
    unique = unique.assign(**{c: np.asarray(predicted[c], float) for c in columns})
    return frame.merge(unique, on=keys, how="left", validate="m:1")


def _by_architecture(unique: dict[str, np.ndarray], columns, predictors) -> dict[str, np.ndarray]:
    """`columns` of distinct configs (arrays by config column), each architecture's rows by its
    entry of `predictors` (a function of those rows' arrays); NaN for the other architectures."""
    out = {c: np.full(len(unique["activation"]), np.nan) for c in columns}
    for architecture, predict_columns in predictors.items():
        rows = unique["architecture"] == architecture
        if rows.any():
            predicted = predict_columns({k: v[rows] for k, v in unique.items()})
            for c, values in predicted.items():
                out[c][rows] = values
    return out


def _theory_columns(unique: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """The theory columns of distinct configs (arrays by config column)."""
    predictors = {"mlp": _mlp_columns, "resmlp": _residual_columns, "rnn": _recurrent_columns}
    return _by_architecture(unique, THEORY_COLUMNS, predictors)


def _mlp_columns(unique: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    predicted = predict(
        activation=unique["activation"].astype(object),
        sigma_w2=unique["sigma_w2"],
        sigma_b2=unique["sigma_b2"],
        depth=unique["depth"],
    )
    columns = {c: np.asarray(predicted[c], float) for c in THEORY_COLUMNS if c in predicted}
    law = law_applies(
        **{c: unique[c] for c in ("activation", "init_family", "sigma_b2", "batch", "loss")}
    )
    spread = relu_finite_width(*(unique[c][law] for c in ("sigma_w2", "width", "depth")))
    for column, values in (
        ("finite_width_log10_delta_ratio", spread.mean),
        ("predicted_log10_delta_ratio_sd", spread.sd),
    ):
        columns[column] = np.full(law.shape, np.nan)
        columns[column][law] = values
    return columns


def _residual_columns(unique: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    keys = ("sigma_w2", "sigma_b2", "depth", "branch_layers", "norm", "norm_position", "alpha")
    return predict_residual(unique["activation"].astype(object), *(unique[k] for k in keys))


def _recurrent_columns(unique: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    keys = ("init_family", "sigma_w2", "sigma_b2", "input_scale", "depth")
    return predict_recurrent(unique["activation"].astype(object), *(unique[k] for k in keys))
