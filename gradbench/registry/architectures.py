"""The network architectures a sweep can measure (`architecture`), their settings, by name.

Each architecture but the MLP has settings of its own, which a sweep may fix in `[model]` or sweep in
`[axes]`; `gradbench.sweep.axes` refuses them for a sweep that does not run the architecture. The
engine's forward and backward passes are `gradbench.engine.model` (mlp, rnn) and
`gradbench.engine.residual` (resmlp).
"""

from __future__ import annotations

import math
from typing import NamedTuple

NORMS = ("none", "layernorm", "rmsnorm")
NORM_POSITIONS = ("pre", "post")
# Depth rules for a residual branch scale (Fixup/SkipInit-style): alpha as a function of the depth L.
BRANCH_SCALE_RULES = {
    "1/sqrt(depth)": lambda depth: 1.0 / math.sqrt(depth),
    "1/depth": lambda depth: 1.0 / depth,
}
# The value a setting takes in the rows of architectures it does not apply to.
NOT_APPLICABLE = {
    "branch_layers": 0,
    "norm": "none",
    "norm_position": "none",
    "branch_scale": "none",
    "input_scale": 1.0,
}


class Architecture(NamedTuple):
    """A network family the engine builds.

    Attributes:
        name: registry name.
        description: one line for `gradbench list`.
        settings: the sweep keys only this architecture takes, with their defaults.
        layer: what one `layer` of the layers table is for it.
    """

    name: str
    description: str
    settings: dict
    layer: str


ARCHITECTURES: dict[str, Architecture] = {
    a.name: a
    for a in [
        Architecture(
            "mlp",
            "fully connected, z_l = W_l h_{l-1} + b_l, h_l = phi(z_l)",
            {},
            "layer",
        ),
        Architecture(
            "resmlp",
            "residual blocks h_l = h_{l-1} + alpha F(N(h_{l-1})) (pre) or "
            "N(h_{l-1} + alpha F(h_{l-1})) (post), F = W phi(.) + b, one or two dense layers",
            {"branch_layers": 1, "norm": "none", "norm_position": "pre", "branch_scale": 1.0},
            "block",
        ),
        Architecture(
            "rnn",
            "Elman network over T = depth steps, z_t = W h_{t-1} + U x_t + b, h_t = phi(z_t), "
            "h_0 = 0, W shared, Var(U) = input_scale^2 / width",
            {"input_scale": 1.0},
            "step",
        ),
    ]
}


def branch_scale(rule: float | str, depth: int) -> float:
    """alpha of a residual branch: a number as given, or a depth rule of `BRANCH_SCALE_RULES`."""
    if isinstance(rule, str):
        return BRANCH_SCALE_RULES[rule](depth)
    return float(rule)
