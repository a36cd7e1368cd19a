"""The mean field at finite depth: the orbit q_1, q_2, ... from the input, and the r it predicts.

The fixed-point prediction r = (L - 1) log10(chi_1) / 2 assumes every layer's pre-activations have
the variance q*. They start at q_1 = sigma_w^2 + sigma_b^2 (inputs of unit second moment) and reach
q* only after a transient, which can last the whole network: where q* = 0 (GELU at He init, tanh
without bias) q_l decays slowly and chi_l with it. Following the orbit layer by layer,

    q_{l+1} = sigma_w^2 E[phi(sqrt(q_l) z)^2] + sigma_b^2,    chi_l = sigma_w^2 E[phi'(sqrt(q_l) z)^2],

the backward signal delta_l = phi'(z_l) * W_{l+1}^T delta_{l+1} has ||delta_l||^2 ~ chi_l
||delta_{l+1}||^2 at large width, so r = log10(||delta_1|| / ||delta_L||) = (1/2) sum_{l=1}^{L-1}
log10 chi_l: q_L never enters.

All configurations of one activation are iterated together, one table lookup per layer
(`gradbench.theory.tables`). A configuration leaves the iteration once the deviations of its
log10 chi_l from log10 chi_1 shrink geometrically and what they could still add is below 1e-10
(each chi_l is within about 1e-11 of its quadrature); each remaining layer then adds log10 chi_1.
Where q_l converges as a power law (a marginal q*, such as tanh at sigma_w^2 = 1 without bias) it
runs to its depth, and the cost of a sweep is that of its slowest orbit. q_l is looked up within the
limits at which the fixed points q* = 0 and q* = inf evaluate chi_1 (`gradbench.theory.length_map`),
so an orbit that collapses or grows without bound settles there. For positively homogeneous
activations the moments scale exactly, E[phi(sqrt(q) z)^2] = q E[phi(z)^2] and chi(q) = chi_1, so
every orbit leaves after one layer and r is the fixed-point value.
"""

from __future__ import annotations

import numpy as np

from gradbench.theory.length_map import Q_HUGE, Q_TINY
from gradbench.theory.quadrature import D2, M2
from gradbench.theory.tables import ActivationTables

_TAIL = 1e-10  # what the deviations of the layers left out may add to sum_l log10 chi_l
_NOISE = 1e-14  # a deviation of log10 chi_l below this is the tables' rounding: settled
_NEAR = 1e-6  # and a finite q* must be this close (relative) before the tail test is trusted


def moments(tables: ActivationTables, homogeneous: bool, q: np.ndarray):
    """E[phi(sqrt(q) z)^2] and E[phi'(sqrt(q) z)^2]."""
    if homogeneous:
        m = tables.length(np.ones(1))[0]
        return q * m[M2], np.full(q.shape, m[D2])
    m = tables.length(np.clip(q, Q_TINY, Q_HUGE))
    return m[:, M2], m[:, D2]


def log10_chi_sums(
    tables: ActivationTables, homogeneous: bool, sigma_w2, sigma_b2, depth, q_star, chi1
) -> np.ndarray:
    """sum_{l=1}^{L-1} log10 chi_l of each configuration (1-D arrays of one length).

    `q_star` and `chi1` are the fixed point each orbit reaches and chi_1 there
    (`length_map.length_and_gradient`); `depth` holds integers >= 1. Each distinct
    (sigma_w2, sigma_b2) is iterated once, to its deepest configuration.
    """
    layers = np.asarray(depth, np.int64) - 1
    pairs, pair = np.unique(sigma_w2 + 1j * sigma_b2, return_inverse=True)
    pair = pair.reshape(-1)
    first = np.unique(pair, return_index=True)[1]
    sw2, sb2, q_star = pairs.real, pairs.imag, q_star[first]
    with np.errstate(divide="ignore"):
        target = np.log10(chi1[first])
    need = np.zeros(pairs.size, np.int64)
    np.maximum.at(need, pair, layers)

    # Rows are recorded in order of depth, each after the layer its sum ends with.
    order = np.argsort(layers, kind="stable")
    ends = np.searchsorted(layers[order], np.arange(need.max(initial=0) + 2))
    out = np.zeros(layers.size)
    total, previous = np.zeros(pairs.size), np.full(pairs.size, np.inf)
    stopped = need.copy()  # the layer after which each pair's remaining layers add log10 chi_1
    q = sw2 + sb2
    running = np.flatnonzero(need > 0)
    layer = 0
    with np.errstate(divide="ignore", invalid="ignore"):  # chi = 0 (sigma_w2 = 0): log10 = -inf
        while running.size:
            layer += 1
            at, w, fixed, goal = q[running], sw2[running], q_star[running], target[running]
            second, slope = moments(tables, homogeneous, at)
            log_chi = np.log10(w * slope)
            total[running] += log_chi
            q[running] = w * second + sb2[running]

            deviation = np.where(log_chi == goal, 0.0, np.abs(log_chi - goal))
            ratio = deviation / previous[running]
            previous[running] = deviation
            near = ~(fixed > 0) | np.isinf(fixed) | (np.abs(at - fixed) <= _NEAR * fixed)
            settled = (deviation <= _NOISE) | (near & (deviation <= _TAIL * (1 - ratio)))
            leaving = settled | (layer >= need[running])
            stopped[running[leaving]] = layer
            running = running[~leaving]

            # The rows that end at this layer (`rest` completes those whose pair left earlier).
            if ends[layer] < ends[layer + 1]:
                rows = order[ends[layer] : ends[layer + 1]]
                out[rows] = total[pair[rows]]

    rest = np.flatnonzero(layers > stopped[pair])
    out[rest] = total[pair[rest]] + (layers[rest] - stopped[pair[rest]]) * target[pair[rest]]
    return out


def length_orbits(
    tables: ActivationTables, homogeneous: bool, sigma_w2, sigma_b2, depth: int
) -> np.ndarray:
    """q_1 .. q_depth of each (sigma_w2, sigma_b2) pair (1-D arrays), shape (pairs, depth), by the
    recursion of every layer: the whole orbit, for what needs more of it than `log10_chi_sums`."""
    sigma_w2, sigma_b2 = np.asarray(sigma_w2, float), np.asarray(sigma_b2, float)
    q = np.empty((sigma_w2.size, depth))
    q[:, 0] = sigma_w2 + sigma_b2
    for layer in range(1, depth):
        second, _ = moments(tables, homogeneous, q[:, layer - 1])
        q[:, layer] = sigma_w2 * second + sigma_b2
    return q


def orbit(
    tables: ActivationTables, homogeneous: bool, sigma_w2: float, sigma_b2: float, depth: int
) -> tuple[np.ndarray, np.ndarray]:
    """q_l and chi_l of one configuration, l = 1..depth."""
    (q,) = length_orbits(tables, homogeneous, [sigma_w2], [sigma_b2], depth)
    return q, sigma_w2 * moments(tables, homogeneous, q)[1]
