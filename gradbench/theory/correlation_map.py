"""The correlation map's stable fixed point c* and its slope chi_c, in the chaotic phase.

C(c) = (sigma_w^2 E[phi(u_1) phi(u_2)] + sigma_b^2) / q*, (u_1, u_2) ~ N(0, q* [[1, c], [c, 1]]).
c* = 1 is always a fixed point; when chi_1 > 1 and q* is finite a second, stable one c* < 1
exists, and `chaotic_correlation` finds it with chi_c = C'(c*) for many configurations at once.

c* comes from the Mehler series of the correlation map, C(c) = (sigma_w^2 sum_n a_n^2 c^n +
sigma_b^2) / q*, truncated at degree 96 and, where that is not enough, 256. Its coefficients are
non-negative and both their sum and their n-weighted sum are known (E[phi^2] and q* E[phi'^2]),
which bounds what the truncation leaves out; where the bound keeps c* and chi_c within 1e-10, the
series is the answer. Elsewhere (kinked activations with c* near 1, or the edge of chaos itself)
Newton steps on the 2-D quadrature refine it (`bivariate_correlation`). Against erf's closed-form
maps (390 chaotic pairs) chi_c is within 1e-9 (median 5e-14); the 2-D iteration alone was within
5e-6 (median 4e-10).
"""

from __future__ import annotations

import numpy as np

from gradbench.theory.kernel import Phi
from gradbench.theory.length_map import UNIT_TOL
from gradbench.theory.quadrature import SERIES, bivariate_moments
from gradbench.theory.tables import ActivationTables, Table


def _polynomial(coef: np.ndarray, x: np.ndarray, derivatives: int) -> list[np.ndarray]:
    """p(x), p'(x), ... up to `derivatives` by Horner's scheme, where coef[k] multiplies x^k.

    Updates in place: a call costs a few array operations per term, not a temporary each.
    """
    values = [np.zeros_like(x) for _ in range(derivatives + 1)]
    for k in range(coef.shape[0] - 1, -1, -1):
        for d in range(derivatives, 0, -1):  # p^(d) <- p^(d) x + d p^(d-1), before p^(d-1) moves
            values[d] *= x
            values[d] += d * values[d - 1] if d > 1 else values[0]
        values[0] *= x
        values[0] += coef[k]
    return values


_MEHLER_STEPS = 50
_SERIES_TOL = 1e-10  # the series answers where its truncation moves c* and chi_c by less


def _mehler_correlation(table: Table, top: int, sigma_w2, sigma_b2, q):
    """(c*, chi_c, resolved) from the correlation map's Mehler series, truncated at degree `top`.

    C(c) = (sigma_w^2 sum_n a_n^2 c^n + sigma_b^2) / q*, a_n the normalised Hermite coefficients of
    phi(sqrt(q*) z), is convex and increasing on [0, 1] with C(1) = 1 and C'(1) = chi_1 > 1. The
    part past degree N = `top` is lumped at degree N + 1 (so that C(1) = 1 stays exact), and
    Newton steps from c = 0 climb monotonically to the root of C(c) = c below 1.

    With R_0 = sum_{n>N} a_n^2 and R_1 = sum_{n>N} n a_n^2 (from E[phi^2] and q E[phi'^2]), the
    lumped series is off by at most sigma_w^2 / q* R_0 c^(N+1) in C and sigma_w^2 / q* R_1 c^N in
    C', and sum_{n>N} n (n - 1) a_n^2 c^(n-2) <= R_1 max_{m>=N} m c^(m-1). `resolved` says where
    these bounds keep c* and chi_c within `_SERIES_TOL`; elsewhere (kinked activations, or c*
    near 1) the series is a start. Interpolating the coefficients adds about 1e-14 to C (measured),
    far below the 2-D rule's own error.
    """
    tabulated = table(q)
    squares = tabulated[:, : top + 1] ** 2
    ratio = sigma_w2 / q
    rest0 = np.maximum(tabulated[:, top + 1] - squares.sum(1), 0.0)
    weighted = np.einsum("nk,k->n", squares, np.arange(top + 1.0))
    rest1 = np.maximum(tabulated[:, top + 2] - weighted, 0.0)
    coef = ratio * np.concatenate([squares, rest0[:, None]], 1).T  # coef[k] multiplies c^k
    coef[0] += sigma_b2 / q

    # Exact Newton steps shrink towards the root; once rounding stops them shrinking, stop.
    c, step = np.zeros(q.size), np.full(q.size, np.inf)
    moving = np.arange(q.size)
    for _ in range(_MEHLER_STEPS):
        if not moving.size:
            break
        value, slope = _polynomial(coef[:, moving], c[moving], 1)
        old, previous = c[moving], step[moving]
        c[moving] = np.clip(old - (value - old) / np.minimum(slope - 1.0, -UNIT_TOL), 0.0, 1.0)
        step[moving] = np.abs(c[moving] - old)
        moving = moving[(step[moving] > 1e-15) & (step[moving] < previous)]
    _, slope, bend = _polynomial(coef, c, 2)

    with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
        power = c**top
        off, off_slope = ratio * rest0 * power * c, ratio * rest1 * power  # in C and in C'
        margin = 1.0 - slope - off_slope  # at least the slope of c - C(c) between c* and c
        # Of c*, which lies in [c - shift, c] (plus the last step where rounding stalled Newton's).
        shift = np.where(margin > 0, off / margin, np.inf) + step
        turn = np.maximum(top, np.floor(-1.0 / np.log(c)))  # where m c^(m-1) peaks
        peak = np.maximum(turn * c ** (turn - 1.0), (turn + 1.0) * c**turn)
        off_chi = off_slope + (bend + ratio * rest1 * np.nan_to_num(peak)) * shift
    return c, slope, (shift <= _SERIES_TOL) & (off_chi <= _SERIES_TOL)


def bivariate_correlation(phi: Phi, sigma_w2, sigma_b2, q, start):
    """(c*, chi_c) for 0 < q* < inf and chi_1 > 1: Newton steps on the 2-D quadrature from `start`.

    h(c) = C(c) - c is >= 0 on [0, c*] and < 0 on (c*, 1) (see `_mehler_correlation`). Newton steps
    refine the bracket [0, 1]; a step that leaves it is replaced by bisection in log(1 - c), since
    c* crowds towards 1 near the edge of chaos. When chi_1 - 1 is so small (about 1e-4) that h on
    [c*, 1] is below the quadrature accuracy, the iteration may end at c = 1 with chi_c >= 1: that
    is reported as c* = 1, chi_c = 1 (xi_c = inf), critical within resolution.
    """
    lo, hi = np.zeros(q.size), np.ones(q.size)
    c, slope = np.array(start, float), np.full(q.size, np.nan)
    moving = np.arange(q.size)
    for _ in range(40):
        if not moving.size:
            break
        at, w = c[moving], sigma_w2[moving]
        both, both_prime = bivariate_moments(phi, q[moving], at)
        gap = (w * both + sigma_b2[moving]) / q[moving] - at
        slope[moving] = w * both_prime  # at the previous iterate, within 1e-9 of c* at the end
        lo[moving], hi[moving] = (
            np.where(gap > 0, at, lo[moving]),
            np.where(gap > 0, hi[moving], at),
        )
        with np.errstate(divide="ignore", invalid="ignore"):
            step = at - gap / (slope[moving] - 1.0)
        middle = 1.0 - np.sqrt((1.0 - lo[moving]) * (1.0 - hi[moving]))
        new = np.where((step >= lo[moving]) & (step <= hi[moving]), step, middle)
        c[moving] = new
        moving = moving[np.abs(new - at) > 1e-9]
    unresolved = slope >= 1.0
    return np.where(unresolved, 1.0, c), np.where(unresolved, 1.0, slope)


_SERIES_BLOCK = 1 << 14  # configurations per series solve, to keep its arrays small
_BIVARIATE_LANES = 16  # configurations per 2-D quadrature call (about 4 MB per array each)


def chaotic_correlation(tables: ActivationTables, sigma_w2, sigma_b2, q):
    """(c*, chi_c) for 0 < q* < inf and chi_1 > 1: the shortest series that resolves them, else 2-D."""
    c, chi_c = np.empty(q.size), np.empty(q.size)
    rest = np.arange(q.size)
    for series, table in zip(SERIES, tables.hermite, strict=True):
        resolved = np.zeros(rest.size, bool)
        for block in range(0, rest.size, _SERIES_BLOCK):
            rows = rest[block : block + _SERIES_BLOCK]
            c[rows], chi_c[rows], resolved[block : block + _SERIES_BLOCK] = _mehler_correlation(
                table, series.degree, sigma_w2[rows], sigma_b2[rows], q[rows]
            )
        rest = rest[~resolved]
        if not rest.size:
            return c, chi_c
    start = np.minimum(c, 1.0 - 1e-3)  # left of c = 1, the trivial root of C(c) = c
    for part in np.array_split(rest, -(-rest.size // _BIVARIATE_LANES)):
        c[part], chi_c[part] = bivariate_correlation(
            tables.phi, sigma_w2[part], sigma_b2[part], q[part], start[part]
        )
    return c, chi_c
