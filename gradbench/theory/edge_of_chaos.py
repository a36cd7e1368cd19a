"""The edge of chaos: every sigma_w^2 > 0 where chi_1 = 1 at a fixed sigma_b^2.

On one side of such a point squared gradients shrink by chi_1 < 1 a layer (the ordered phase), on
the other they grow (the chaotic phase). `critical_sigma_w2` lists every one, with which side is
chaotic and what the forward signal does there (a stable, marginal, vanishing or absent fixed
point q*).

Why a finite scan finds them all. chi_1 = sigma_w^2 E[phi'(sqrt(q*) z)^2] <= sigma_w^2 g with
g = sup phi'^2, so chi_1 < 1 for sigma_w^2 < 1/g: no critical point lies below. As sigma_w^2 -> inf,
chi_1 -> inf for every non-constant phi of at most linear growth, at one of two rates:

    phi grows linearly (relu, elu, gelu, softplus, ...): q* -> inf and
        chi_1 ~ sigma_w^2 (phi'(+inf)^2 + phi'(-inf)^2) / 2;
    phi saturates (tanh, sigmoid, hard_tanh, ...): q* ~ sigma_w^2 m with
        m = (phi(+inf)^2 + phi(-inf)^2) / 2, and E[phi'^2] ~ int phi'(u)^2 du / sqrt(2 pi q*), so
        chi_1 ~ sqrt(sigma_w^2) int phi'(u)^2 du / sqrt(2 pi m)
        (sigmoid: sqrt(sigma_w^2) / (6 sqrt(pi)); tanh: sqrt(sigma_w^2) 4 / (3 sqrt(2 pi))).

So each such activation has at least one critical point, and once chi_1 follows one of these laws
it stays above 1. The scan starts at 1/(2g) and grows by decades from 100 until chi_1 is above 1
over its last decade and grew over it at least as fast as sqrt(sigma_w^2): sigmoid's critical
point (about 103 at sigma_b^2 = 0, as chi_1 <= sigma_w^2 / 16) is found with the rest.
"""

from __future__ import annotations

import math
from typing import NamedTuple

import numpy as np

from gradbench import registry
from gradbench.theory.length_map import UNIT_TOL
from gradbench.theory.quantities import as_activation, evaluate
from gradbench.theory.tables import tables_for

_POINTS_PER_DECADE = 200  # scan resolution: 1.2 % apart; closer roots can be missed
_FIRST_HIGH = 100.0  # the scan reaches at least this sigma_w^2, and a decade past its start
# The scan stops here even if chi_1 has not settled (q* stays within 1e16, where the length map
# resolves it); no registered activation gets near it.
SIGMA_W2_LIMIT = 1e12
# Over its last decade chi_1 must grow by this factor (0.9 of sqrt(10), the slower law) to end it.
_SETTLED_GROWTH = 0.9 * math.sqrt(10.0)


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


def _critical_note(q: float, slope: float, residual: float, below, above) -> str:
    """What happens at a critical point; `below` and `above` are (q*, chi_1) on either side."""
    if abs(residual) > 1e-6:
        return (
            f"chi_1 jumps from {below[1]:.4g} to {above[1]:.4g} as q* changes branch"
            f" ({below[0]:.4g} -> {above[0]:.4g}); not a smooth critical point"
        )
    if q == 0:
        return "q* = 0: the forward signal dies out; chi_1 is its q -> 0 limit"
    if math.isinf(q):
        return (
            "unstable: no finite fixed point, q_l grows without bound; chi_1 is its large-q limit"
        )
    if abs(math.log(slope)) < UNIT_TOL:
        return "marginal: the length map has slope 1 at q* (no bias: every q is a fixed point)"
    return f"stable fixed point (length-map slope {slope:.4g} < 1)"


def _steepest_slope_squared(act: registry.Activation) -> float:
    """g = sup phi'(u)^2, sampled at u = 0 and +-10^[-6, 9] (100 points a decade).

    chi_1 <= sigma_w^2 g, so no critical point lies below 1/g.
    """
    u = np.geomspace(1e-6, 1e9, 1501)
    (tables,) = tables_for([act])
    _, slope = tables.phi(np.concatenate([-u[::-1], [0.0], u]))
    return float(np.nanmax(slope**2))


def _decade_points(low: float, high: float) -> np.ndarray:
    count = max(2, round(_POINTS_PER_DECADE * math.log10(high / low)) + 1)
    return np.geomspace(low, high, count)


def _settled(chi: np.ndarray) -> bool:
    """Whether chi_1 over the scan's last decade is above 1, increasing and growing at least like
    sqrt(sigma_w^2): it follows one of its large-sigma_w^2 laws, and stays above 1 beyond."""
    last = chi[-(_POINTS_PER_DECADE + 1) :]
    return bool(
        np.all(last > 1.0) and np.all(np.diff(last) > 0) and last[-1] >= _SETTLED_GROWTH * last[0]
    )


def _scan(act: registry.Activation, sigma_b2: float) -> tuple[np.ndarray, np.ndarray]:
    """sigma_w^2 on a geometric grid that brackets every critical point, and chi_1 - 1 there."""
    g = _steepest_slope_squared(act)
    if not g > 0:  # phi' = 0 everywhere: chi_1 = 0 for every sigma_w^2
        return np.empty(0), np.empty(0)
    low = 0.5 / g
    grid = _decade_points(low, max(_FIRST_HIGH, 10.0 * low))
    chi = _chi1(act, sigma_b2, grid)
    while grid[-1] < SIGMA_W2_LIMIT and not _settled(chi):
        more = _decade_points(grid[-1], 10.0 * grid[-1])[1:]
        grid, chi = np.concatenate([grid, more]), np.concatenate([chi, _chi1(act, sigma_b2, more)])
    return grid, chi - 1.0


def _chi1(act: registry.Activation, sigma_b2: float, sigma_w2: np.ndarray) -> np.ndarray:
    return evaluate(act, sigma_w2, np.full_like(sigma_w2, sigma_b2), correlation=False)["chi1"]


def _refine(act, sigma_b2: float, lo: np.ndarray, hi: np.ndarray, lo_sign: np.ndarray):
    """Narrows each bracket [lo, hi] of a sign change of chi_1 - 1 64-fold per round; nine rounds
    take the 1.2 % brackets to float64 resolution. Returns the roots."""
    fractions = np.linspace(0.0, 1.0, 65)
    for _ in range(9 if lo.size else 0):
        points = lo[:, None] + (hi - lo)[:, None] * fractions[None, :]
        inner = points[:, 1:-1].ravel()
        signs = np.sign(_chi1(act, sigma_b2, inner) - 1.0).reshape(len(lo), -1)
        signs = np.concatenate([lo_sign[:, None], signs, -lo_sign[:, None]], axis=1)
        first = np.argmax(signs != lo_sign[:, None], axis=1)  # first point past the sign change
        rows = np.arange(len(lo))
        exact = signs[rows, first] == 0
        lo, hi = np.where(exact, points[rows, first], points[rows, first - 1]), points[rows, first]
    return (lo + hi) / 2


def critical_sigma_w2(activation, sigma_b2=0.0) -> list[CriticalPoint]:
    """The edge of chaos: every sigma_w^2 > 0 with chi_1(sigma_w^2, sigma_b^2) = 1.

    chi_1 - 1 is scanned on a geometric grid of 200 points a decade, from 1/(2 sup phi'^2) (below
    1/sup phi'^2 chi_1 < 1) up to where it follows its large-sigma_w^2 law (see the module
    docstring; at most `SIGMA_W2_LIMIT`), and each sign change narrowed to float64 resolution.
    Roots closer together than the scan step (1.2 %) can be missed.

    Returns:
        A list of `CriticalPoint`, increasing in sigma_w2; for a registered activation at least
        one (sigmoid: about 103 at sigma_b2 = 0, as chi_1 <= sigma_w^2 / 16), empty only when
        phi' = 0 or chi_1 stays below 1 up to `SIGMA_W2_LIMIT`. Each says whether q* there is
        stable, marginal, 0 or infinite (relu with sigma_b2 > 0: chi_1 = 1 at sigma_w2 = 2, where
        q_l grows without bound), and flags where chi_1 jumps across 1 as q* leaves its branch.

    References:
        Poole et al. (2016), fig. 2; Schoenholz et al. (2017), section 3 and fig. 1.
    """
    act = as_activation(activation)
    sigma_b2 = float(sigma_b2)
    grid, gap = _scan(act, sigma_b2)
    s = np.sign(gap)
    changes = np.flatnonzero(s[:-1] * s[1:] < 0)
    crossings = _refine(act, sigma_b2, grid[changes], grid[changes + 1], s[changes])
    roots = np.sort(np.concatenate([grid[s == 0], crossings]))
    if roots.size == 0:
        return []
    # Each root is known to float64 resolution: 1e-9 away is on either side of it.
    at, below, above = (
        evaluate(act, x, np.full_like(x, sigma_b2), correlation=False)
        for x in (roots, roots * (1 - 1e-9), roots * (1 + 1e-9))
    )
    points = []
    for i, r in enumerate(roots):
        q, slope, chi = (float(at[k][i]) for k in ("q_star", "length_slope", "chi1"))
        sides = [(float(d["q_star"][i]), float(d["chi1"][i])) for d in (below, above)]
        points.append(
            CriticalPoint(
                sigma_w2=float(r),
                q_star=q,
                q_status="zero" if q == 0 else "infinite" if math.isinf(q) else "finite",
                length_slope=slope,
                chaotic_above=sides[1][1] > 1.0,
                note=_critical_note(q, slope, chi - 1.0, *sides),
            )
        )
    return points
