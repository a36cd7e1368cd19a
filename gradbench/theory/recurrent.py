"""The mean field of Elman RNNs, and Pascanu, Mikolov & Bengio's bound on their gradients.

The network runs T = depth steps, z_t = W h_{t-1} + U x_t + b, h_t = phi(z_t), h_0 = 0, one W for
every step (Var(W_ij) = sigma_w^2 / n, or sigma_w times a Haar orthogonal matrix), Var(U_ij) =
input_scale^2 / n, a fresh input x_t ~ N(0, 1) each step and J read out from h_T. At large width
z_t is Gaussian with variance

    q_1 = d,    q_{t+1} = sigma_w^2 E[phi(sqrt(q_t) z)^2] + d,    d = input_scale^2 + sigma_b^2:

the length map of an MLP with bias variance d (the input arrives afresh each step, uncorrelated with
W h_{t-1}), started from h_0 = 0 instead of from an input. Backwards, delta_t = dJ/dz_t =
phi'(z_t) * W^T delta_{t+1}. Taking W^T independent of the forward pass (gradient independence, as
for MLPs, although here one W serves every step), ||delta_t||^2 = chi_t ||delta_{t+1}||^2 with
chi_t = sigma_w^2 E[phi'(sqrt(q_t) z)^2], and

    r = log10(||delta_1|| / ||delta_T||) = (1/2) sum_{t=1}^{T-1} log10 chi_t.

The orbit settles at the fixed point q* >= d, and chi_1 = sigma_w^2 E[phi'(sqrt(q*) z)^2]. Two
states that see the same inputs but differ (in their start, or in inputs long past) follow that
MLP's correlation map, whose slope chi_c at its stable fixed point gives xi_c = -1 / ln chi_c: the
steps over which the state forgets the difference (ordered phase), or settles at a correlation
c* < 1 (chaotic phase: the inputs do not synchronise it).

How exact. For orthogonal W and linear phi, ||delta_t|| = sigma_w ||delta_{t+1}|| in every draw:
r = (T - 1) log10 sigma_w exactly. Otherwise E[r] lies below the mean field by O(u), u = (T - 1) /
(2 ln(10) n), as for MLPs: measured (64 draws, n = 512, T = 32) by 0.3 u to 3.4 u for tanh and relu
nets, Gaussian or orthogonal, with one draw spreading by about 0.1 to 0.25. For i.i.d. W the shared
matrix adds a finite-width effect of its own, ||(W^T)^k v|| outgrowing sigma_w^k: for linear phi at
sigma_w = 1, r lies above its mean-field 0 by 0.07 at T = 32 and 0.45 at T = 64 for n = 256 (0.04
and 0.27 for n = 512; 64 and 24 draws), faster than linearly in T and slower than 1 / n in n.

The bound (Pascanu et al. 2013). Each step multiplies delta by diag(phi'(z_t)) W^T, of norm at
most gamma s_max(W) with gamma = sup |phi'|, so r <= (T - 1) log10(gamma s_max(W)). The registry
does not record gamma: `max_slope` takes it from phi' on a fine grid. s_max(W) is sigma_w for
orthogonal W; for i.i.d. entries, the Bai-Yin edge 2 sigma_w of the large-width limit, which by
Gordon's inequality also bounds E s_max at every width for Gaussian entries. At width n a draw's
s_max is 2 sigma_w (1 - 0.38 n^(-2/3)) on average (Tracy-Widom), with a spread of about 0.01 of
the edge at n = 256: measured over 32 Gaussian draws there, 0.988 of the edge on average, 0.972 to
1.003. No finite-width correction is made: it would lower the bound, by less than 1 % of
log10(gamma s_max) per step, and measured r stays below the bound by far more (by 3 to 12 in the
tests' nets at T = 24, by 14 to 16 at T = 32).

References:
    Pascanu, Mikolov, Bengio (2013). On the difficulty of training recurrent neural networks. ICML.
        arXiv:1211.5063.
    Chen, Pennington, Schoenholz (2018). Dynamical isometry and a mean field theory of RNNs: gating
        enables signal propagation in recurrent neural networks. ICML. arXiv:1806.05394.
    Yin, Bai, Krishnaiah (1988). On the limit of the largest eigenvalue of the large dimensional
        sample covariance matrix. Probab. Theory Relat. Fields 78.
    Davidson, Szarek (2001). Local operator theory, random matrices and Banach spaces. Handbook
        of the Geometry of Banach Spaces, vol. 1 (Gordon's bound E s_max <= 2 sigma_w).
    Johnstone (2001). On the distribution of the largest eigenvalue in principal components
        analysis. Ann. Statist. 29 (the Tracy-Widom edge).
"""

from __future__ import annotations

import functools
from typing import NamedTuple

import numpy as np
import pandas as pd

from gradbench.errors import SpecError
from gradbench.theory.correlation_map import chaotic_correlation
from gradbench.theory.length_map import Q_HUGE, UNIT_TOL
from gradbench.theory.orbit import moments
from gradbench.theory.quantities import as_activation
from gradbench.theory.residual import activation_groups
from gradbench.theory.tables import ActivationTables, tables_for

# s_max(W) / sigma_w of each init family at large width: the Bai-Yin edge of i.i.d. entries, 1 for
# orthogonal weights. A family not listed has no bound (NaN).
SINGULAR_EDGE = {"gaussian": 2.0, "uniform": 2.0, "truncated_normal": 2.0, "orthogonal": 1.0}

_LADDER_RATIO, _LADDER_STEPS = 2.0**0.25, 120  # the fixed-point search of `length_map`
_BISECTIONS = 64
# Where sup |phi'| is looked for: steps of 1.2e-4 on [-32, 32] (a smooth maximum within about
# 1e-9), points down to 1e-12 either side of 0 (kinks there), and out to 1e6 (suprema at infinity).
_SLOPE_GRID = np.concatenate(
    [np.linspace(-32.0, 32.0, 2**19 + 1), *(s * np.geomspace(1e-12, 1e6, 400) for s in (-1, 1))]
)


def _length_map(tables, homogeneous, sigma_w2, drive, q):
    """V(q) = sigma_w^2 E[phi(sqrt(q) z)^2] + d and chi(q) = sigma_w^2 E[phi'(sqrt(q) z)^2]."""
    second, slope = moments(tables, homogeneous, q)
    return sigma_w2 * second + drive, sigma_w2 * slope


def fixed_point(tables: ActivationTables, homogeneous: bool, sigma_w2, drive) -> np.ndarray:
    """q* of the orbit q_1 = d, q_{t+1} = V(q_t), of each (sigma_w2, d) (1-D arrays).

    V(q) >= d, and V increases (dE[phi^2]/dq >= 0 for every registered activation), so from
    q_1 = d > 0 the orbit climbs to the first fixed point above d. It is found as in `length_map`,
    by walking q_1 * 2^(k/4) up to a change of sign of V(q) - q, then bisecting in log q; none
    within q_1 * 2^30 means q_t -> inf. With d = 0 the orbit starts from V(0) = sigma_w^2 phi(0)^2,
    and stays at 0 if that is 0.
    """
    with np.errstate(divide="ignore", invalid="ignore"):
        if homogeneous:  # V(q) = a q + d
            a = sigma_w2 * moments(tables, True, np.ones(1))[0][0]
            return np.where(a < 1.0 - UNIT_TOL, drive / (1.0 - a), np.where(drive > 0, np.inf, 0.0))
        at_zero = tables.phi(np.zeros(1))[0][0] ** 2  # V(0) = sigma_w^2 phi(0)^2 + d
        q = np.where(drive > 0, drive, sigma_w2 * at_zero)

        def gap(rows, at):
            return _length_map(tables, False, sigma_w2[rows], drive[rows], at)[0] - at

        rows = np.flatnonzero(q > 0)
        out = np.zeros(q.size)
        start = gap(rows, q[rows])
        ratio = np.where(start > 0, _LADDER_RATIO, 1.0 / _LADDER_RATIO)
        lo, hi = q[rows].copy(), q[rows].copy()
        walking = np.flatnonzero(start != 0)
        for _ in range(_LADDER_STEPS):
            if not walking.size:
                break
            lo[walking], hi[walking] = hi[walking], hi[walking] * ratio[walking]
            walking = walking[gap(rows[walking], hi[walking]) * start[walking] > 0]
        out[rows[walking]] = np.where(start[walking] > 0, np.inf, 0.0)
        bracketed = np.setdiff1d(np.arange(rows.size), walking)
        lo, hi = np.minimum(lo, hi)[bracketed], np.maximum(lo, hi)[bracketed]
        for _ in range(_BISECTIONS):  # V(lo) >= lo and V(hi) <= hi
            middle = np.sqrt(lo * hi)
            above = gap(rows[bracketed], middle) > 0
            lo, hi = np.where(above, middle, lo), np.where(above, hi, middle)
        out[rows[bracketed]] = np.sqrt(lo * hi)
        return out


def _log10_chi_sums(tables, homogeneous, sigma_w2, drive, depth) -> np.ndarray:
    """sum_{t=1}^{T-1} log10 chi_t of each configuration, step by step until its orbit stops
    moving (or passes Q_HUGE, where the moments are their limits): the later steps repeat its last
    chi_t."""
    total = np.zeros(depth.size)
    q = drive.copy()
    moving, step = np.flatnonzero(depth > 1), 0
    with np.errstate(divide="ignore", over="ignore", invalid="ignore"):  # chi = 0: r = -inf
        while moving.size:
            step += 1
            following, chi = _length_map(
                tables, homogeneous, sigma_w2[moving], drive[moving], q[moving]
            )
            log_chi = np.log10(chi)
            total[moving] += log_chi
            still = np.abs(following - q[moving]) <= 1e-15 * following
            settled = homogeneous | still | (q[moving] >= Q_HUGE)
            left = depth[moving] - 1 - step
            total[moving] += np.where(settled & (left > 0), left * log_chi, 0.0)
            q[moving] = following
            moving = moving[~settled & (left > 0)]
    return total


@functools.cache
def max_slope(activation) -> float:
    """gamma = sup |phi'(u)| of an activation (a registry name, `registry.Activation` or callable),
    the largest |phi'| on `_SLOPE_GRID`: relu, tanh, linear 1, sigmoid 1/4, erf 2 / sqrt(pi)."""
    (tables,) = tables_for([as_activation(activation)])
    return float(np.max(np.abs(tables.phi(_SLOPE_GRID)[1])))


def singular_edge(init_family, sigma_w2) -> np.ndarray:
    """s_max(W) at large width: sigma_w times `SINGULAR_EDGE` of the family (NaN if unknown)."""
    family = np.asarray(init_family, object)
    edge = pd.Series(family.ravel()).map(SINGULAR_EDGE).to_numpy(float).reshape(family.shape)
    return (edge * np.sqrt(np.asarray(sigma_w2, float)))[()]


class RecurrentSteps(NamedTuple):
    """One configuration, step by step (`recurrent_steps`).

    Attributes:
        q: q_t, the variance of z_t, t = 1..T (q_1 = input_scale^2 + sigma_b^2).
        chi: chi_t = sigma_w^2 E[phi'(sqrt(q_t) z)^2], the factor ||delta_t||^2 / ||delta_{t+1}||^2.
        log10_delta_ratio: the predicted r = (1/2) sum_{t=1}^{T-1} log10 chi_t.
    """

    q: np.ndarray
    chi: np.ndarray
    log10_delta_ratio: float


def _configs(shape, sigma_w2, sigma_b2, input_scale, depth):
    """sigma_w^2, d = input_scale^2 + sigma_b^2 and T as checked 1-D arrays of `shape`."""
    given = {"sigma_w2": sigma_w2, "sigma_b2": sigma_b2, "input_scale": input_scale, "depth": depth}
    arrays = {k: np.broadcast_to(np.asarray(a, float), shape).ravel() for k, a in given.items()}
    for name, a in arrays.items():
        ok = np.isfinite(a) & (a >= 0)
        if name == "depth":
            ok &= (a >= 1) & (a == np.round(a))
        if not ok.all():
            expected = "integers >= 1" if name == "depth" else "finite values >= 0"
            raise SpecError(f"`theory` {name}", a[~ok][0], expected)
    drive = arrays["input_scale"] ** 2 + arrays["sigma_b2"]
    return arrays["sigma_w2"], drive, arrays["depth"].astype(np.int64)


def recurrent_steps(
    activation, sigma_w2: float, sigma_b2: float, input_scale: float, depth: int
) -> RecurrentSteps:
    """q_t, chi_t (t = 1..T) and the predicted r of one configuration, every step iterated."""
    act = as_activation(activation)
    sw2, drive, depth = _configs((), sigma_w2, sigma_b2, input_scale, depth)
    (tables,) = tables_for([act])
    q = np.empty(int(depth[0]))
    q[0] = drive[0]
    with np.errstate(over="ignore"):
        for t in range(1, q.size):
            q[t] = _length_map(tables, act.homogeneous, sw2, drive, q[t - 1 : t])[0][0]
    chi = _length_map(tables, act.homogeneous, np.full(q.size, sw2[0]), drive[0], q)[1]
    with np.errstate(divide="ignore"):
        return RecurrentSteps(q, chi, float(np.sum(np.log10(chi[:-1])) / 2.0))


def predict_recurrent(
    activation, init_family, sigma_w2, sigma_b2, input_scale, depth
) -> dict[str, np.ndarray]:
    """The mean-field predictions and the Pascanu bound of many RNN configurations at once.

    Args:
        activation: one activation (a registry name, a `registry.Activation` or a callable) or an
            array of registry names, broadcast with the rest; each distinct name is one group.
        init_family: family names of W ("gaussian", "orthogonal", ...), for the bound only.
        sigma_w2, sigma_b2, input_scale: the scales of W, b and U; >= 0.
        depth: the number of steps T, integers >= 1.

    Returns:
        Arrays in the broadcast shape: `predicted_log10_delta_ratio`, the mean-field r =
        log10(||delta_1|| / ||delta_T||); `q_star` and `chi1`, the fixed point of the orbit and
        sigma_w^2 E[phi'^2] there; `xi_c`, the depth scale of the correlation map of states
        driven by the same inputs; `fixed_point_log10_delta_ratio` = (T - 1) log10(chi1) / 2;
        `pascanu_log10_bound` = (T - 1) log10(gamma s_max), s_max the large-width edge
        (`singular_edge`).
    """
    given = (sigma_w2, sigma_b2, input_scale, depth)
    shape, groups = activation_groups(activation, init_family, *given)
    sw2, drive, depth = _configs(shape, *given)
    family = np.broadcast_to(np.asarray(init_family, object), shape).ravel()
    out = {k: np.empty(depth.size) for k in ("q_star", "chi1", "chi_c", "ratio", "gamma")}
    for (act, rows), tables in zip(groups, tables_for([act for act, _ in groups]), strict=True):
        w, d = sw2[rows], drive[rows]
        q = fixed_point(tables, act.homogeneous, w, d)
        chi1 = _length_map(tables, act.homogeneous, w, d, q)[1]
        chi_c = np.where(np.isinf(q), 1.0, chi1)
        with np.errstate(divide="ignore"):
            chaotic = np.flatnonzero((q > 0) & np.isfinite(q) & (np.log(chi1) > UNIT_TOL))
        if chaotic.size:
            chi_c[chaotic] = chaotic_correlation(tables, w[chaotic], d[chaotic], q[chaotic])[1]
        ratio = _log10_chi_sums(tables, act.homogeneous, w, d, depth[rows]) / 2.0
        for key, value in zip(out, (q, chi1, chi_c, ratio, max_slope(act)), strict=True):
            out[key][rows] = value
    steps = depth - 1.0
    with np.errstate(divide="ignore", invalid="ignore"):
        log_chi_c = np.log(out["chi_c"])
        bound = np.log10(out["gamma"] * singular_edge(family, sw2))
        columns = {
            "chi1": out["chi1"],
            "q_star": out["q_star"],
            "xi_c": np.where(np.abs(log_chi_c) < UNIT_TOL, np.inf, -1.0 / log_chi_c),
            "predicted_log10_delta_ratio": out["ratio"],
            "fixed_point_log10_delta_ratio": np.where(
                steps == 0, 0.0, steps * np.log10(out["chi1"]) / 2.0
            ),
            "pascanu_log10_bound": np.where(steps == 0, 0.0, steps * bound),
        }
    return {k: v.reshape(shape)[()] for k, v in columns.items()}
