"""The one sweep every case measures: tanh, sigma_w^2 on a linspace, sigma_b = 0, one shape."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

SIGMA_W2 = (0.5, 4.0)


@dataclass(frozen=True)
class Sweep:
    """`configs` networks of one shape that differ only in sigma_w^2 (a linspace over SIGMA_W2)."""

    width: int
    batch: int
    depth: int
    configs: int
    activation: str = "tanh"
    seed: int = 0

    @property
    def sigma_w2(self) -> np.ndarray:
        return np.linspace(*SIGMA_W2, self.configs)

    def flops(self, configs: int | None = None) -> float:
        """Forward, backward and weight-gradient products: 3 x 2 x batch x width^2 per layer."""
        n = self.configs if configs is None else configs
        return 6.0 * self.batch * self.width**2 * self.depth * n

    def subset(self, n: int) -> np.ndarray:
        """Indices of n configs spread evenly over the sweep (for peers timed on part of it)."""
        return np.unique(np.linspace(0, self.configs - 1, min(n, self.configs)).round().astype(int))

    def spec_text(self, name: str = "bench") -> str:
        """The sweep as a gradbench sweep file."""
        lo, hi = SIGMA_W2
        return (
            f'name = "{name}"\n'
            f"seed = {self.seed}\n"
            "[model]\n"
            f"width = {self.width}\n"
            f"batch = {self.batch}\n"
            "[axes]\n"
            f'activation = "{self.activation}"\n'
            f"sigma_w2 = {{ linspace = [{lo}, {hi}, {self.configs}] }}\n"
            "sigma_b2 = 0.0\n"
            f"depth = {self.depth}\n"
            "[run]\n"
            'dtype = "float32"\n'
        )
