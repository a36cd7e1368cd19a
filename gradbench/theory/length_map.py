"""The length map's fixed point q*, its slope V'(q*) and the gradient factor chi_1.

V(q) = sigma_w^2 E[phi(sqrt(q) z)^2] + sigma_b^2. For every (sigma_w^2, sigma_b^2) pair at once,
`length_and_gradient` finds the fixed point that the orbit q_1 = sigma_w^2 + sigma_b^2,
q_2 = V(q_1), ... reaches (0 when the signal dies out, inf when it grows without bound) and
evaluates V'(q*) and chi_1 = sigma_w^2 E[phi'(sqrt(q*) z)^2] there, from the activation's tables.
Each pair iterates until it has converged.
"""

from __future__ import annotations

import numpy as np

from gradbench.theory.quadrature import D2, DM2, M2
from gradbench.theory.tables import ActivationTables, Table

# q* is searched in q_1 * 2^[-30, 30], about q_1 * 10^[-9, 9], in steps of 2^(1/4): a coarser step can
# pass over a short stretch where V(q) < q (silu at sigma_w^2 = 1.9995, sigma_b^2 = 0.5 has its fixed
# point at q* = 5.06 and V(q) > q again before 4 q_1), and land on a fixed point the orbit never reaches.
_LADDER_RATIO, _LADDER_STEPS = 2.0**0.25, 120
# Where quantities at q* = 0 and q* = inf are evaluated (their limits, within 1e-8). Larger q puts
# |u| beyond 1e10, where XLA's vectorised exp (in softplus' and others) loses accuracy.
Q_TINY, Q_HUGE = 1e-100, 1e16
# Throughout the theory, |ln x| below this counts as x = 1 (criticality, marginal stability).
UNIT_TOL = 1e-12


def _homogeneous_q_star(table: Table, sigma_w2, sigma_b2):
    """q* in closed form when phi(c x) = c phi(x) for c > 0: V(q) = a q + sigma_b^2 is linear,
    a = sigma_w^2 E[phi(z)^2]."""
    a = sigma_w2 * table(np.ones(1), slice(M2, M2 + 1))[0, 0]
    q1 = sigma_w2 + sigma_b2
    marginal = np.abs(a - 1.0) <= UNIT_TOL
    converges = a < 1.0 - UNIT_TOL
    # a = 1 without bias: every q is a fixed point and the orbit stays at q_1.
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(
            converges,
            sigma_b2 / (1.0 - a),
            np.where(marginal & (sigma_b2 == 0), q1, np.inf),
        )


def _generic_q_star(table: Table, sigma_w2, sigma_b2):
    """The fixed point of V that the orbit from q_1 = sigma_w^2 + sigma_b^2 converges to.

    Walks q_1 * 2^(k/4) in the direction of V(q_1) - q_1 until the gap V(q) - q changes sign, then
    refines the bracket by Newton steps that fall back to bisection. No sign change within
    q_1 * 2^[-30, 30] (about 10^[-9, 9]) means q_l -> 0 or q_l -> inf. The bound keeps the gap,
    which is O(1) when V is asymptotically the identity (softplus at sigma_w^2 = 2), above the
    quadrature error of V(q), about 1e-12 q.
    """
    q1 = sigma_w2 + sigma_b2

    def gap(rows, q):
        return sigma_w2[rows] * table(q, slice(M2, M2 + 1))[:, 0] + sigma_b2[rows] - q

    positive = q1[q1 > 0]
    if positive.size:  # the ladder's reach, tabulated at once rather than a few panels a step
        reach = _LADDER_RATIO**_LADDER_STEPS
        table.cover(positive.min() / reach, positive.max() * reach)
    g1 = gap(np.arange(q1.size), q1)
    ratio = np.where(g1 > 0, _LADDER_RATIO, 1.0 / _LADDER_RATIO)
    q_prev, q_last, g_last = q1.copy(), q1.copy(), g1.copy()
    walking = np.arange(q1.size)
    for _ in range(_LADDER_STEPS):
        walking = walking[g_last[walking] * g1[walking] > 0]
        if not walking.size:
            break
        q_prev[walking] = q_last[walking]
        q_last[walking] *= ratio[walking]
        g_last[walking] = gap(walking, q_last[walking])
    crossed = g_last * g1 <= 0

    # V(lo) >= lo and V(hi) <= hi: the orbit's fixed point is between.
    lo, hi = np.minimum(q_prev, q_last), np.maximum(q_prev, q_last)
    q = np.sqrt(lo * hi)
    moving = np.flatnonzero(crossed)
    for _ in range(60):
        if not moving.size:
            break
        at, w = q[moving], sigma_w2[moving]
        m = table(at, slice(M2, DM2 + 1))
        g, dg = w * m[:, 0] + sigma_b2[moving] - at, w * m[:, 1] - 1.0
        lo[moving], hi[moving] = np.where(g > 0, at, lo[moving]), np.where(g > 0, hi[moving], at)
        with np.errstate(divide="ignore", invalid="ignore"):
            step = at - g / dg
        inside = (step >= lo[moving]) & (step <= hi[moving])
        new = np.where(inside, step, np.sqrt(lo[moving] * hi[moving]))
        q[moving] = new
        moving = moving[np.abs(new - at) > 1e-14 * new]
    return np.where(crossed, q, np.where(g1 > 0, np.inf, 0.0))


def length_and_gradient(tables: ActivationTables, homogeneous: bool, sigma_w2, sigma_b2):
    """(q*, V'(q*), chi_1) of each configuration; at q* = 0 or inf, their limits."""
    if homogeneous:
        q = _homogeneous_q_star(tables.length, sigma_w2, sigma_b2)
        at = np.ones_like(q)  # V'(q) and chi_1 do not depend on q
    else:
        q = _generic_q_star(tables.length, sigma_w2, sigma_b2)
        at = np.clip(q, Q_TINY, Q_HUGE)
    m = tables.length(at)
    return q, sigma_w2 * m[:, DM2], sigma_w2 * m[:, D2]
