"""The edge of chaos: the sigma_w^2 where chi_1 = 1 at a fixed sigma_b^2, found by scanning.

On one side of such a point squared gradients shrink by chi_1 < 1 a layer (the ordered phase), on
the other they grow (the chaotic phase). `critical_sigma_w2` lists every one in range, with which
side is chaotic and what the forward signal does there (a stable, marginal, vanishing or absent
fixed point q*).
"""

from __future__ import annotations

import math
from typing import NamedTuple

import numpy as np

from gradbench.theory.length_map import UNIT_TOL
from gradbench.theory.quantities import as_activation, evaluate


class CriticalPoint(NamedTuple):
    """A sigma_w^2 where chi_1 = 1 at fixed sigma_b^2.

    Attributes:
        sigma_w2: the critical weight scale.
        q_star, q_status, length_slope: the length-map fixed point there and V'(q*).
        chaotic_above: whether chi_1 > 1 just above sigma_w2 (ordered below, chaotic above).
        note: whether the fixed point there is stable, marginal, 0 or absent, in words.
    """

    sigma_w2: float
    q_star: float
    q_status: str
    length_slope: float
    chaotic_above: bool
    note: str


def _critical_note(q: float, slope: float, residual: float) -> str:
    if abs(residual) > 1e-6:
        return "chi_1 jumps across 1 here (q* changes branch); not a smooth critical point"
    if q == 0:
        return "q* = 0: the forward signal dies out; chi_1 is its q -> 0 limit"
    if math.isinf(q):
        return (
            "unstable: no finite fixed point, q_l grows without bound; chi_1 is its large-q limit"
        )
    if abs(math.log(slope)) < UNIT_TOL:
        return "marginal: the length map has slope 1 at q* (no bias: every q is a fixed point)"
    return f"stable fixed point (length-map slope {slope:.4g} < 1)"


def critical_sigma_w2(activation, sigma_b2=0.0, *, sigma_w2_max: float = 100.0):
    """The edge of chaos: every sigma_w^2 in (0, sigma_w2_max] with chi_1(sigma_w^2, sigma_b^2) = 1.

    chi_1 - 1 is scanned on 1024 geometric steps over [1e-5, 1] * sigma_w2_max (1.1 % apart) and
    each sign change narrowed 64-fold per round, nine rounds reaching float64 resolution. Roots
    closer together than the scan step can be missed.

    Returns:
        A list of `CriticalPoint`, increasing in sigma_w2; empty when there is no critical point
        in range (sigmoid: chi_1 <= sigma_w^2 / 16 stays below 1). Each says whether q* there is
        stable, marginal, 0 or infinite (relu with sigma_b2 > 0: chi_1 = 1 at sigma_w2 = 2, where
        q_l grows without bound), and flags where chi_1 jumps across 1 as q* leaves its branch.

    References:
        Poole et al. (2016), fig. 2; Schoenholz et al. (2017), section 3 and fig. 1.
    """
    act = as_activation(activation)
    sigma_b2 = float(sigma_b2)

    def sign(sw2: np.ndarray) -> np.ndarray:
        d = evaluate(act, sw2, np.full_like(sw2, sigma_b2), correlation=False)
        return np.sign(d["chi1"] - 1.0)

    grid = np.geomspace(1e-5 * sigma_w2_max, sigma_w2_max, 1024)
    s = sign(grid)
    changes = np.flatnonzero(s[:-1] * s[1:] < 0)
    lo, hi, lo_sign = grid[changes], grid[changes + 1], s[changes]
    fractions = np.linspace(0.0, 1.0, 65)
    for _ in range(9 if lo.size else 0):
        points = lo[:, None] + (hi - lo)[:, None] * fractions[None, :]
        signs = sign(points[:, 1:-1].ravel()).reshape(len(lo), -1)
        signs = np.concatenate([lo_sign[:, None], signs, -lo_sign[:, None]], axis=1)
        first = np.argmax(signs != lo_sign[:, None], axis=1)  # first point past the sign change
        rows = np.arange(len(lo))
        exact = signs[rows, first] == 0
        lo, hi = np.where(exact, points[rows, first], points[rows, first - 1]), points[rows, first]
    roots = np.sort(np.concatenate([grid[s == 0], (lo + hi) / 2]))
    if roots.size == 0:
        return []
    d = evaluate(act, roots, np.full_like(roots, sigma_b2), correlation=False)
    above = sign(roots * (1 + 1e-6))
    return [
        CriticalPoint(
            sigma_w2=float(r),
            q_star=float(q),
            q_status="zero" if q == 0 else "infinite" if math.isinf(q) else "finite",
            length_slope=float(slope),
            chaotic_above=bool(a > 0),
            note=_critical_note(float(q), float(slope), float(chi) - 1.0),
        )
        for r, q, slope, chi, a in zip(
            roots, d["q_star"], d["length_slope"], d["chi1"], above, strict=True
        )
    ]
