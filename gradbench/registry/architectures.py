"""The network architectures a sweep can measure (`[model] architecture`), by name."""

from __future__ import annotations

from typing import NamedTuple


class Architecture(NamedTuple):
    """A network family the engine builds (`gradbench.engine.model`).

    Attributes:
        name: registry name.
        description: one line for `gradbench list`.
    """

    name: str
    description: str


ARCHITECTURES: dict[str, Architecture] = {
    a.name: a
    for a in [
        Architecture(
            "mlp", "fully connected, z_l = W_l h_{l-1} + b_l, h_l = phi(z_l), one loop over layers"
        ),
    ]
}
