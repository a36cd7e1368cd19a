"""Measurement-vs-theory cells, score and explanations on synthetic summaries."""

import numpy as np
import pandas as pd
import pytest

from gradbench.analysis import agreement


def summary(rows):
    frame = pd.DataFrame(rows)
    frame["delta_growth"] = np.log10(frame.pop("factor")) / 2
    return frame


def test_cells_average_replicates_and_explain_disagreement():
    base = {"activation": "tanh", "init": "gaussian", "width": 256, "sigma_b2": 0.05, "depth": 64}
    rows = [
        {**base, "sigma_w2": 1.0, "factor": 0.75, "chi1": 0.759, "q_star": 0.3},
        {**base, "sigma_w2": 1.0, "factor": 0.77, "chi1": 0.759, "q_star": 0.3},
        {**base, "sigma_w2": 1.0, "depth": 8, "factor": 0.60, "chi1": 0.759, "q_star": 0.3},
        {**base, "sigma_w2": 1.0, "sigma_b2": 0.0, "factor": 0.90, "chi1": 1.0, "q_star": 0.0},
        {**base, "sigma_w2": 2.0, "width": 32, "factor": np.nan, "chi1": 1.1, "q_star": 0.9},
    ]
    table = agreement.cells(summary(rows)).set_index(["sigma_w2", "sigma_b2", "depth", "width"])
    main = table.loc[(1.0, 0.05, 64, 256)]
    assert main["measured"] == pytest.approx(0.76)
    assert main["replicates"] == 2 and main["agrees"] and main["reasons"] == ""
    short = table.loc[(1.0, 0.05, 8, 256)]
    assert not short["agrees"] and short["reasons"] == "short"
    assert table.loc[(1.0, 0.0, 64, 256), "reasons"] == "collapsing"
    assert table.loc[(2.0, 0.05, 64, 32), "reasons"] == "narrow, unmeasured"

    numbers = agreement.score(table.reset_index())
    assert numbers["cells"] == 3  # the unmeasured cell has no ratio
    assert numbers["agreeing"] == 1
    ratios = np.array([0.76 / 0.759, 0.60 / 0.759, 0.90])
    assert numbers["median_abs_log10_ratio"] == pytest.approx(np.median(np.abs(np.log10(ratios))))


def test_reasons_for_unbounded_and_saturated_cells():
    base = {"init": "gaussian", "width": 256, "sigma_b2": 0.05, "depth": 64, "chi1": 1.3}
    rows = [
        {**base, "activation": "gelu", "sigma_w2": 4.0, "factor": 1.6, "q_star": np.inf},
        {**base, "activation": "relu", "sigma_w2": 4.0, "factor": 1.6, "q_star": np.inf},
        {**base, "activation": "tanh", "sigma_w2": 90.0, "factor": 0.8, "q_star": 60.0},
        {**base, "activation": "gelu", "sigma_w2": 90.0, "factor": 0.8, "q_star": 60.0},
        {**base, "activation": "sigmoid", "sigma_w2": 90.0, "depth": 8, "width": 64,
         "factor": 0.8, "q_star": 60.0},
    ]  # fmt: skip
    table = agreement.cells(summary(rows)).set_index(["activation", "sigma_w2", "depth"])
    assert table.loc[("gelu", 4.0, 64), "reasons"] == "unbounded"
    assert table.loc[("relu", 4.0, 64), "reasons"] == ""  # homogeneous: q grows, chi_1 holds
    assert table.loc[("tanh", 90.0, 64), "reasons"] == "saturated"
    assert table.loc[("gelu", 90.0, 64), "reasons"] == ""  # unbounded activations do not saturate
    assert table.loc[("sigmoid", 90.0, 8), "reasons"] == "short, saturated, narrow"


def test_transient_is_where_the_finite_depth_and_fixed_point_predictions_part():
    """The tolerance's worth of r over L - 1 = 39 layers is 39/2 log10(1.05) = 0.413."""
    base = {"activation": "gelu", "init": "he", "width": 512, "sigma_w2": 2.0, "depth": 40}
    rows = [
        {**base, "sigma_b2": 0.0, "factor": 0.7, "chi1": 0.5, "q_star": 0.0,
         "predicted_log10_delta_ratio": -4.06, "fixed_point_log10_delta_ratio": -5.87},
        {**base, "sigma_b2": 0.1, "factor": 0.9, "chi1": 0.9, "q_star": 1.0,
         "predicted_log10_delta_ratio": -1.0, "fixed_point_log10_delta_ratio": -1.4},
        {**base, "sigma_b2": 0.2, "factor": 0.9, "chi1": 0.8, "q_star": 1.0,
         "predicted_log10_delta_ratio": -1.0, "fixed_point_log10_delta_ratio": -1.42},
    ]  # fmt: skip
    table = agreement.cells(summary(rows)).set_index("sigma_b2")
    assert table.loc[0.0, "reasons"] == "transient, collapsing"
    assert table.loc[0.1, "reasons"] == ""  # 0.40 apart: within the tolerance's worth
    assert table.loc[0.2, "reasons"] == "transient"  # 0.42 apart
