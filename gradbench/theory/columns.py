"""The theory columns of a run's tables: mean-field predictions beside each config's measurement.

`with_theory` adds `gradbench.schema.THEORY_COLUMNS` (chi1, q_star, xi_c and the predicted
log10 delta ratio) to any frame with the config columns activation, sigma_w2, sigma_b2 and depth:
a summary, or the configs before they are measured. It is separate from `quantities` because it
speaks in table columns, not arrays: it solves each distinct config once, whatever the replicates.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from gradbench import registry
from gradbench.schema import THEORY_COLUMNS
from gradbench.theory.quantities import predict


def with_theory(summary: pd.DataFrame) -> pd.DataFrame:
    """`summary` with the mean-field chi_1, q*, xi_c and predicted r of each config.

    Only registered activations have a theory here; rows with any other activation (a user
    "package.module:function") get NaN in every theory column. Rows keep their order.
    """
    keys = ["activation", "sigma_w2", "sigma_b2", "depth"]
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
    unique = unique.assign(**{c: np.asarray(predicted[c], float) for c in THEORY_COLUMNS})
    return summary.merge(unique, on=keys, how="left", validate="m:1")
