"""Gaussian expectations of phi and phi': E[f(mean + std z)], z ~ N(0, 1), by quadrature.

The moments that the length and correlation maps need, on arrays of q (and c) at once:
`length_moments` (E[phi^2], dE[phi^2]/dq, E[phi'^2]), `hermite_moments` (the Mehler coefficients of
phi(sqrt(q) z)) and `bivariate_moments` (E[phi(u_1) phi(u_2)], E[phi'(u_1) phi'(u_2)]). Each takes
phi as a `Phi` (values and derivatives on float64 arrays, `gradbench.theory.kernel`).

The rule is composite Gauss-Legendre on z in [-9, 9] (tail mass 2e-19) with panel edges at equal
steps *and* at the activation-scale points u in {0, +-0.5, +-1, +-2, ..., +-256, +-6} mapped to
z = (u - mean) / std. The second set puts an edge on every kink of the registered activations
(relu at 0, hard_tanh at +-1, relu6 at 0 and 6) and resolves saturating activations when sqrt(q)
is large, where Gauss-Hermite quadrature fails: 101 Hermite nodes miss E[tanh'(sqrt(10) z)^2] by
2 %, and kinks make it converge only algebraically. Against adaptive references the 1-D rule (280
nodes) is within 1e-12 for tanh, sigmoid, softplus, gelu, elu, softsign and relu6 for q in
[1e-6, 1e4]. Two-dimensional expectations use a coarser rule on both axes of
u_1,2 = sqrt(q) (a x +- b y) (`bivariate_moments`), within 1e-8 of closed forms up to c = 0.9999.
Kinks of user activations elsewhere converge more slowly.
"""

from __future__ import annotations

import math
from typing import NamedTuple

import numpy as np

from gradbench.theory.kernel import Phi


class _Rule(NamedTuple):
    """Composite Gauss-Legendre in z with panel edges fixed in z and at given points in u."""

    z_edges: np.ndarray  # fixed panel edges on [-z_max, z_max]
    u_points: np.ndarray  # activation-scale points, panel edges at z = (u - mean) / std
    nodes: np.ndarray  # Gauss-Legendre nodes on [-1, 1]
    weights: np.ndarray


def _rule(z_max: float, panels: int, largest_u: int, nodes: int) -> _Rule:
    scales = [0.5, 6.0] + [2.0**k for k in range(largest_u.bit_length())]
    u_points = np.array(sorted({0.0, *scales, *(-s for s in scales)}))
    x, w = np.polynomial.legendre.leggauss(nodes)
    return _Rule(np.linspace(-z_max, z_max, panels + 1), u_points, x, w)


_FINE = _rule(z_max=9.0, panels=12, largest_u=256, nodes=8)  # 35 panels, 280 nodes
_COARSE = _rule(z_max=8.0, panels=8, largest_u=16, nodes=6)  # 23 panels, 138 nodes per axis
_MIN_STD = 1e-150  # keeps (u - mean) / std finite when a variance is exactly 0


def _gaussian_nodes(rule: _Rule, std: np.ndarray, *centres: np.ndarray):
    """Nodes z and weights w, of shape std.shape + (m,), with sum_i w_i f(z_i) ~= E[f(z)].

    Panels end at the rule's z-edges and wherever centre + std z is a u-point, for each centre (an
    array of std's shape or a scalar): f may have kinks there.
    """
    std = np.asarray(std, float)
    z_max = rule.z_edges[-1]
    scale = np.maximum(std, _MIN_STD)[..., None]
    edges = [np.broadcast_to(rule.z_edges, (*std.shape, rule.z_edges.size))]
    for centre in centres:
        centre = np.broadcast_to(centre, std.shape)[..., None]
        edges.append(np.clip((rule.u_points - centre) / scale, -z_max, z_max))
    edges = np.sort(np.concatenate(edges, axis=-1), axis=-1)
    half, mid = (edges[..., 1:] - edges[..., :-1]) / 2, (edges[..., 1:] + edges[..., :-1]) / 2
    z = mid[..., None] + half[..., None] * rule.nodes
    w = half[..., None] * rule.weights * np.exp(-(z**2) / 2) / math.sqrt(2 * math.pi)
    return z.reshape(*std.shape, -1), w.reshape(*std.shape, -1)


M2, DM2, D2 = range(3)  # columns of `length_moments`


def length_moments(phi: Phi, q: np.ndarray) -> np.ndarray:
    """E[phi^2], dE[phi^2]/dq = E[z phi phi'] / sqrt(q) and E[phi'^2] at u = sqrt(q) z.

    Returns an array of shape q.shape + (3,), in the order `M2, DM2, D2`.
    """
    root = np.sqrt(q)
    z, w = _gaussian_nodes(_FINE, root, 0.0)
    value, slope = phi(root[..., None] * z)
    return np.stack(
        [
            np.sum(w * value**2, -1),
            np.sum(w * z * value * slope, -1) / root,
            np.sum(w * slope**2, -1),
        ],
        -1,
    )


class Series(NamedTuple):
    """A truncation of the Mehler series and the rule that computes its coefficients."""

    degree: int
    rule: _Rule


# Tried in turn by the correlation solver, shortest first. The coefficients oscillate about
# sqrt(2 degree) / (2 pi) times per unit of z and decay only like exp(-z^2 / 4): each rule is
# within 1e-15 of one 4 times finer.
SERIES = (
    Series(96, _rule(z_max=12.0, panels=48, largest_u=256, nodes=12)),  # 852 nodes
    Series(256, _rule(z_max=12.0, panels=96, largest_u=256, nodes=12)),  # 1428 nodes
)


def hermite_moments(phi: Phi, series: Series, q: np.ndarray) -> np.ndarray:
    """The Mehler coefficients of phi at q, then their sum and their n-weighted sum.

    Returns an array of shape q.shape + (degree + 3,): a_0 .. a_degree, with a_n =
    E[phi(sqrt(q) z) He_n(z)] / sqrt(n!), then E[phi^2] = sum_n a_n^2 and q E[phi'^2] =
    sum_n n a_n^2 (as He_n' = n He_{n-1}).
    """
    root = np.sqrt(q)
    z, w = _gaussian_nodes(series.rule, root, 0.0)
    value, slope = phi(root[..., None] * z)
    weighted = w * value
    previous, current = np.zeros_like(z), np.ones_like(z)
    columns = []
    for n in range(series.degree + 1):  # orthonormal He_n / sqrt(n!) by the three-term recurrence
        columns.append(np.sum(weighted * current, -1))
        previous, current = current, (z * current - math.sqrt(n) * previous) / math.sqrt(n + 1)
    columns += [np.sum(weighted * value, -1), q * np.sum(w * slope**2, -1)]
    return np.stack(columns, -1)


def bivariate_moments(phi: Phi, q: np.ndarray, c: np.ndarray):
    """E[phi(u_1) phi(u_2)] and E[phi'(u_1) phi'(u_2)] for (u_1, u_2) ~ N(0, q [[1, c], [c, 1]]).

    Writes u_1,2 = sqrt(q) (a x +- b y), a = sqrt((1 + c) / 2), b = sqrt((1 - c) / 2), x and y
    independent N(0, 1). For each outer node y the inner rule over x has panel edges at the kinks
    of both factors; the outer integrand is then smooth except where two kinks meet, at
    y = (k_1 - k_2) / (2 b sqrt(q)), which are edges of the outer rule. Unlike conditioning u_2 on
    u_1 (whose outer integrand has kinks smeared over sqrt(1 - c^2)), this stays accurate as c -> 1:
    within 1e-8 of closed forms for relu', hard_tanh' and relu6' products up to c = 0.9999.
    q and c are arrays of one shape; so are the two results.
    """
    root_q = np.sqrt(q)
    a, b = np.sqrt((1.0 + c) / 2.0), np.sqrt(np.maximum((1.0 - c) / 2.0, 0.0))
    y, wy = _gaussian_nodes(_COARSE, 2.0 * b * root_q, 0.0)
    # y -> -y swaps u_1 and u_2, so the integrand is even in y; the rule is symmetric about 0 (its
    # edges are), so its upper half holds the y >= 0 nodes (those at 0 have weight 0): use it twice.
    half = y.shape[-1] // 2
    y, wy = y[..., half:], 2.0 * wy[..., half:]
    shift = (b * root_q)[..., None] * y
    scale = np.broadcast_to((a * root_q)[..., None], shift.shape)
    x, wx = _gaussian_nodes(_COARSE, scale, shift, -shift)
    v1, d1 = phi(scale[..., None] * x + shift[..., None])
    v2, d2 = phi(scale[..., None] * x - shift[..., None])
    return np.sum(wy * np.sum(wx * v1 * v2, -1), -1), np.sum(wy * np.sum(wx * d1 * d2, -1), -1)
