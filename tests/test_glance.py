"""The at-a-glance table and the grid text on sweeps whose scale comes from init presets."""

import numpy as np
import pandas as pd

from gradbench.notation import fmt
from gradbench.report import findings, page


def preset_summary():
    rows = []
    for activation, factor in [("tanh", 1.0), ("relu", 1.2)]:
        for init, sigma_w2 in [("lecun", 1.0), ("he", 2.0), ("torch-default", 1 / 3)]:
            for replicate in (0, 1):
                growth = np.log10(factor * sigma_w2) / 2
                r = 63 * growth
                rows.append(
                    {
                        "config_id": f"{activation}{init}{replicate}",
                        "activation": activation,
                        "init": init,
                        "sigma_w2": sigma_w2,
                        "sigma_w": np.sqrt(sigma_w2),
                        "depth": 64,
                        "replicate": replicate,
                        "delta_growth": growth,
                        "log10_delta_ratio": r,
                        "regime": "vanishing" if r < -2 else "exploding" if r > 2 else "stable",
                    }
                )
    return pd.DataFrame(rows)


def test_glance_names_each_facets_own_largest_scale():
    summary = preset_summary()
    scale = findings.scale_axis(summary)
    table = findings.glance(summary, 2.0, scale, findings.finding_facets(summary, scale))
    assert not table.isna().any().any()
    row = table.set_index("configs").loc["relu/he"]
    assert row["exploding from"] == "2" and row["vanishing up to"] == "never"
    factor = 10 ** (np.log10(1.2 * 2.0) / 2)
    assert row["×/layer at the largest σ_w²"] == f"{fmt(factor)} (σ_w² = 2)"
    assert table.set_index("configs").loc["tanh/torch-default", "vanishing up to"] == "0.333"


def test_grid_text_lists_many_names():
    names = [f"act{i}" for i in range(9)]
    text = page._grid_text({"axes": {"activation": {"values": names, "scale": "linear"}}}, 18)
    assert "act0" in text and "act8" in text and "18 configs" in text
