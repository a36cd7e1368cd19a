"""The theory columns of a run's tables: predictions beside each config's measurement.

`with_theory` adds `gradbench.schema.THEORY_COLUMNS` to any frame with the config columns in
`CONFIG_KEYS` (a summary, or the configs before they are measured):

    chi1, q_star, xi_c                the mean field at the fixed point q* (`quantities.mean_field`)
    predicted_log10_delta_ratio       the mean-field r of the orbit q_1, q_2, ... from the input
                                      (`quantities.finite_depth`)
    fixed_point_log10_delta_ratio     (L - 1) log10(chi_1) / 2, the r of a forward signal at q*
    finite_width_log10_delta_ratio,   mean and standard deviation of r over draws of a network of
    predicted_log10_delta_ratio_sd    the config's width, where the exact law applies (`spread`)

`with_spectrum` adds `gradbench.schema.SPECTRUM_COLUMNS`, free probability's prediction of the
input-output Jacobian's spectrum (`spectrum`), to runs that measure it. Both are separate from the
array functions because they speak in table columns: each distinct config is solved once,
whatever the replicates.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from gradbench import registry
from gradbench.schema import SPECTRUM_COLUMNS, THEORY_COLUMNS
from gradbench.theory.quantities import predict
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


def with_theory(summary: pd.DataFrame) -> pd.DataFrame:
    """`summary` with the theory columns of each config (see the module docstring).

    Only registered activations have a theory here; rows with any other activation (a user
    "package.module:function") get NaN in every theory column, and rows where the finite-width law
    does not apply get NaN in its two. Rows keep their order.
    """
    missing = [c for c in CONFIG_KEYS if c not in summary]
    if missing:
        raise KeyError(f"with_theory needs the config columns {missing}")
    return _per_config(summary, list(CONFIG_KEYS), THEORY_COLUMNS, _theory_columns)


def with_spectrum(summary: pd.DataFrame) -> pd.DataFrame:
    """`summary` with `gradbench.schema.SPECTRUM_COLUMNS`, the prediction beside each measured config.

    Rows with activations given as import paths get NaN. Needs the config columns activation,
    init_family, sigma_w2, sigma_b2 and depth; rows keep their order.
    """
    keys = ["activation", "init_family", "sigma_w2", "sigma_b2", "depth"]
    return _per_config(
        summary, keys, SPECTRUM_COLUMNS, lambda unique: predict_spectrum(*(unique[k] for k in keys))
    )


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


def _theory_columns(unique: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """The theory columns of distinct configs (arrays by config column)."""
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
