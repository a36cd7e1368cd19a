"""The theory columns of a run's tables: predictions beside each config's measurement.

`with_theory` adds `gradbench.schema.THEORY_COLUMNS` to any frame with the config columns in
`CONFIG_KEYS` (a summary, or the configs before they are measured):

    chi1, q_star, xi_c                the mean field at the fixed point q* (`quantities.mean_field`)
    predicted_log10_delta_ratio       the mean-field r of the orbit q_1, q_2, ... from the input
                                      (`quantities.finite_depth`)
    fixed_point_log10_delta_ratio     (L - 1) log10(chi_1) / 2, the r of a forward signal at q*
    finite_width_log10_delta_ratio,   mean and standard deviation of r over draws of a network of
    predicted_log10_delta_ratio_sd    the config's width, where the exact law applies (`spread`)

It is separate from `quantities` because it speaks in table columns, not arrays: it solves each
distinct config once, whatever the replicates.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from gradbench import registry
from gradbench.schema import THEORY_COLUMNS
from gradbench.theory.quantities import predict
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
    keys = list(CONFIG_KEYS)
    known = summary["activation"].isin(list(registry.ACTIVATIONS))
    unique = summary.loc[known, keys].drop_duplicates(ignore_index=True)
    if unique.empty:
        return summary.assign(**{c: np.nan for c in THEORY_COLUMNS})
    predicted = predict(
        activation=unique["activation"].to_numpy(object),
        sigma_w2=unique["sigma_w2"].to_numpy(),
        sigma_b2=unique["sigma_b2"].to_numpy(),
        depth=unique["depth"].to_numpy(),
    )
    columns = {c: np.asarray(predicted[c], float) for c in THEORY_COLUMNS if c in predicted}
    law = law_applies(
        **{
            c: unique[c].to_numpy()
            for c in ("activation", "init_family", "sigma_b2", "batch", "loss")
        }
    )
    spread = relu_finite_width(
        *(unique.loc[law, c].to_numpy() for c in ("sigma_w2", "width", "depth"))
    )
    for column, values in (
        ("finite_width_log10_delta_ratio", spread.mean),
        ("predicted_log10_delta_ratio_sd", spread.sd),
    ):
        columns[column] = np.full(len(unique), np.nan)
        columns[column][law] = values
    unique = unique.assign(**{c: columns[c] for c in THEORY_COLUMNS})
    return summary.merge(unique, on=keys, how="left", validate="m:1")
