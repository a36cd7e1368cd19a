"""How figures and reports write gradbench's quantities: column symbols and labels, numbers, settings.

Figures (gradbench.plots: axis labels, legends, panel titles) and reports (gradbench.report:
sentences and tables) both write columns and numbers, and a caption must name σ_w² and print 0.0316
exactly as the figure above it does, so both take their notation from here. Everything is plain
Unicode text, not mathtext: a mathtext label costs matplotlib a parse per label, font size and
renderer (a seventh of a report's time). Imports neither matplotlib nor JAX.

How names and tables write architecture settings (leaving out those that do not apply) is
`gradbench.analysis.settings`, which needs the registry.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

# The symbol of each noise-scale column: in sentences ("σ_w² = 2") and in axis labels alike; and
# of the architecture settings that are numbers.
SYMBOLS = {
    "sigma_w2": "σ_w²",
    "sigma_w": "σ_w",
    "sigma_b2": "σ_b²",
    "sigma_b": "σ_b",
    "branch_scale": "α",
    "alpha": "α",
    "branch_layers": "branch layers",
    "norm_position": "norm position",
    "input_scale": "input scale",
}

# The axis label of each column a figure draws; other columns are labelled by their name.
LABELS = {
    **SYMBOLS,
    "depth": "depth L",
    "layer": "layer l (1 = first hidden)",
    "log10_delta_ratio": "r = log₁₀(‖δ_1‖ / ‖δ_L‖)",
    "log10_grad_w_ratio": "log₁₀(‖∂J/∂W_1‖ / ‖∂J/∂W_L‖)",
    "log10_grad_b_ratio": "log₁₀(‖∂J/∂b_1‖ / ‖∂J/∂b_L‖)",
    "log10_delta": "log₁₀‖δ_l‖ = log₁₀‖∂J/∂z_l‖",
    "log10_grad_w": "log₁₀‖∂J/∂W_l‖_F",
    "log10_grad_b": "log₁₀‖∂J/∂b_l‖",
    "log10_q": "log₁₀ q_l (forward second moment)",
    "lr": "learning rate",
    "clip_threshold": "clip threshold",
    "step": "step",
    "fit": "loss / baseline loss",
    "log10_update_norm": "log₁₀ update norm ‖Δθ‖",
    "log10_grad_norm": "log₁₀‖∇L‖ before clipping",
}


def symbol(name: str) -> str:
    """The symbol of column `name` ("σ_w²" for sigma_w2), or the name itself."""
    return SYMBOLS.get(name, name)


def label(name: str) -> str:
    """The axis label of column `name` ("depth L" for depth), or the name itself."""
    return LABELS.get(name, name)


def fmt(value: object) -> str:
    """A value as figures and reports print it: 3 significant digits for a float (Python or NumPy),
    `str` of anything else, so that integers stay whole (a width of 1024, not 1.02e+03)."""
    return f"{value:.3g}" if isinstance(value, float | np.floating) else str(value)


def clip_setting(clip: pd.Series, threshold: pd.Series) -> pd.Series:
    """ "none", or the rule and its threshold ("global_norm 1"): one label per clipping setting."""
    shown = threshold.map(lambda t: "" if pd.isna(t) else f" {fmt(float(t))}")
    return clip.astype(str) + shown.where(clip.astype(str) != "none", "")
