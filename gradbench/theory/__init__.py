"""Mean-field theory of signal propagation in deep random networks, for any activation.

Conventions (DESIGN.md section 2): layer l computes z_l = W_l h_{l-1} + b_l and h_l = phi(z_l), with
Var(W_ij) = sigma_w^2 / fan_in, Var(b_i) = sigma_b^2 and inputs of unit second moment. At large
width the pre-activations of a layer are Gaussian with variance q_l, and three maps describe it:

    length map       q_{l+1} = V(q_l) = sigma_w^2 E[phi(sqrt(q_l) z)^2] + sigma_b^2,  z ~ N(0, 1)
    correlation map  c_{l+1} = C(c_l) = (sigma_w^2 E[phi(u_1) phi(u_2)] + sigma_b^2) / q*,
                     (u_1, u_2) ~ N(0, q* [[1, c], [c, 1]])
    gradient factor  chi_1 = sigma_w^2 E[phi'(sqrt(q*) z)^2]: ||dJ/dz_l||^2 changes by chi_1 a layer

q* is the fixed point that the orbit q_1 = sigma_w^2 + sigma_b^2, q_2 = V(q_1), ... reaches: 0 when
the signal dies out, inf when it grows without bound. c* = 1 is always a fixed point of C; it is
stable when chi_1 < 1 (ordered phase), otherwise C has a second, stable fixed point c* < 1 (chaotic
phase); chi_1 = 1 is the edge of chaos. Depth scales say over how many layers a perturbation
shrinks by a factor e:

    xi_q = -1 / ln V'(q*),    xi_grad = -1 / ln chi_1,
    xi_c = -1 / ln chi_c,     chi_c = C'(c*) = sigma_w^2 E[phi'(u_1) phi'(u_2)] at c*.

A negative xi means growth (|xi| layers per factor e), xi = inf criticality (algebraic decay). In
the ordered phase c* = 1 and chi_c = chi_1, so xi_c = xi_grad.

Numerics. Gaussian expectations E[f(mean + std z)] use composite Gauss-Legendre quadrature on z in
[-9, 9] (tail mass 2e-19) with panel edges at equal steps *and* at the activation-scale points
u in {0, +-0.5, +-1, +-2, ..., +-256, +-6} mapped to z = (u - mean) / std. The second set puts an
edge on every kink of the registered activations (relu at 0, hard_tanh at +-1, relu6 at 0 and 6) and
resolves saturating activations when sqrt(q) is large, where Gauss-Hermite quadrature fails: 101
Hermite nodes miss E[tanh'(sqrt(10) z)^2] by 2 %, and kinks make it converge only algebraically.
Against adaptive references the 1-D rule (280 nodes) is within 1e-12 for tanh, sigmoid, softplus,
gelu, elu, softsign and relu6 for q in [1e-6, 1e4]. Two-dimensional expectations use a coarser rule
on both axes of u_1,2 = sqrt(q) (a x +- b y) (`_bivariate_moments`), within 1e-8 of closed forms up
to c = 0.9999. Kinks of user activations elsewhere converge more slowly. phi' is from `jax.grad`.

How a call runs. Everything is float64 NumPy except phi and phi' themselves, which one jit-compiled
elementwise kernel evaluates for all the activations a call meets for the first time (a traced
`lax.switch` index picks the activation) on blocks of one fixed size: a call compiles at most once,
whatever its activations and sizes, and a later one only for activations new to the process. The
moments E[phi^2], dE[phi^2]/dq and E[phi'^2] and the Hermite coefficients of phi(sqrt(q) z) are
analytic in q > 0; per activation they are tabulated on first use as Chebyshev interpolants on
panels of ln q (width 1/2, 16 nodes each) and kept for the process, so later calls (reports,
`verify`) reuse them. Measured for q in [1e-12, 1e12] over the registered activations, the
interpolants are within 1e-11 (relative) of the quadrature for E[phi^2] and E[phi'^2], within 3e-10
for dE[phi^2]/dq (sigmoid and softplus at small q, where the quadrature's own cancellation
dominates). Every distinct (sigma_w2, sigma_b2) then costs a few interpolations per step of its
fixed-point iterations, which run on all pairs at once, each until it has converged.

c* comes from the Mehler series of the correlation map, C(c) = (sigma_w^2 sum_n a_n^2 c^n +
sigma_b^2) / q*, truncated at degree 96 and, where that is not enough, 256. Its coefficients are
non-negative and both their sum and their n-weighted sum are known (E[phi^2] and q* E[phi'^2]),
which bounds what the truncation leaves out; where the bound keeps c* and chi_c within 1e-10, the
series is the answer. Elsewhere (kinked activations with c* near 1, or the edge of chaos itself)
Newton steps on the 2-D quadrature refine it (`_bivariate_correlation`). Against erf's closed-form
maps (390 chaotic pairs) chi_c is within 1e-9 (median 5e-14); the 2-D iteration alone was within
5e-6 (median 4e-10).

References:
    Poole, Lahiri, Raghu, Sohl-Dickstein, Ganguli (2016). Exponential expressivity in deep neural
        networks through transient chaos. NeurIPS. arXiv:1606.05340.
    Schoenholz, Gilmer, Ganguli, Sohl-Dickstein (2017). Deep information propagation. ICLR.
        arXiv:1611.01232.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable
from typing import NamedTuple

import jax
import numpy as np

from gradbench import registry
from gradbench.engine import compilation_cache
from gradbench.errors import SpecError

__all__ = [
    "CriticalPoint",
    "MeanField",
    "chi1",
    "critical_sigma_w2",
    "describe",
    "format_description",
    "mean_field",
    "predict",
    "q_star",
]

# -------------------------------------------------------------------------------------------------
# phi and phi', compiled once for all the activations of a call.

Phi = Callable[[np.ndarray], tuple[np.ndarray, np.ndarray]]  # u -> (phi(u), phi'(u)), float64

_BLOCK = 1 << 15  # elements per kernel call: one input shape, so one compilation


@functools.partial(jax.jit, static_argnames=("fns",))
def _phi_block(index, u, *, fns):
    branches = [jax.vmap(jax.value_and_grad(fn)) for fn in fns]
    return jax.lax.switch(index, branches, u) if len(branches) > 1 else branches[0](u)


def _elementwise(fns: tuple[Callable, ...], index: int) -> Phi:
    """phi = fns[index] and its derivative (by `jax.grad`) on float64 arrays of any shape."""

    def phi(u):
        u = np.asarray(u, float)
        padded = np.zeros(max(1, -(-u.size // _BLOCK)) * _BLOCK)
        padded[: u.size] = u.ravel()
        with jax.enable_x64(True):
            blocks = [
                _phi_block(index, padded[i : i + _BLOCK], fns=fns)
                for i in range(0, padded.size, _BLOCK)
            ]
            value, slope = (np.concatenate(parts)[: u.size] for parts in zip(*blocks, strict=True))
        return value.reshape(u.shape), slope.reshape(u.shape)

    return phi


# -------------------------------------------------------------------------------------------------
# Quadrature: E[f(mean + std z)], z ~ N(0, 1), composite Gauss-Legendre with kink-aware panel edges.


class _Rule(NamedTuple):
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


_M2, _DM2, _D2 = range(3)  # columns of `_length_moments`


def _length_moments(phi: Phi, q: np.ndarray) -> np.ndarray:
    """E[phi^2], dE[phi^2]/dq = E[z phi phi'] / sqrt(q) and E[phi'^2] at u = sqrt(q) z.

    Returns an array of shape q.shape + (3,), in the order `_M2, _DM2, _D2`.
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


class _Series(NamedTuple):
    """A truncation of the Mehler series and the rule that computes its coefficients."""

    degree: int
    rule: _Rule


# Tried in turn. The coefficients oscillate about sqrt(2 degree) / (2 pi) times per unit of z
# and decay only like exp(-z^2 / 4): each rule is within 1e-15 of one 4 times finer.
_SERIES = (
    _Series(96, _rule(z_max=12.0, panels=48, largest_u=256, nodes=12)),  # 852 nodes
    _Series(256, _rule(z_max=12.0, panels=96, largest_u=256, nodes=12)),  # 1428 nodes
)


def _hermite_moments(phi: Phi, series: _Series, q: np.ndarray) -> np.ndarray:
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


def _bivariate_moments(phi: Phi, q: np.ndarray, c: np.ndarray):
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


# -------------------------------------------------------------------------------------------------
# Tables: smooth functions of q, tabulated once per activation.

_PANEL = 0.5  # width of a panel in ln q
_CHEB = 16  # Chebyshev nodes per panel (degree 15)
_CHEB_X = np.cos(np.pi * (np.arange(_CHEB) + 0.5) / _CHEB)  # first-kind points on [-1, 1]
# Values at the points -> Chebyshev coefficients (the discrete cosine transform).
_CHEB_TRANSFORM = (2.0 / _CHEB) * np.cos(
    np.pi * np.outer(np.arange(_CHEB), np.arange(_CHEB) + 0.5) / _CHEB
)
_CHEB_TRANSFORM[0] /= 2.0
_Q_FLOOR = 1e-300  # a smaller q is looked up here: the moments are continuous at q = 0
_CHUNK = 1 << 15  # values per evaluation, to keep temporaries small


class _Table:
    """Functions of q > 0 as Chebyshev interpolants on the panels [k, k + 1] * _PANEL of ln q.

    A panel is computed (by `moments`, q of shape (n,) -> values (n, functions)) the first time a q
    falls in it, and kept. A panel depends on its index alone, so no value depends on what was
    asked before.
    """

    def __init__(self, moments: Callable[[np.ndarray], np.ndarray], functions: int):
        self._moments = moments
        self._first = 0  # panel index of row 0
        self._coef = np.zeros((0, _CHEB, functions))  # (panel, degree, function); NaN: not yet

    def __call__(self, q: np.ndarray, columns: slice = slice(None)) -> np.ndarray:
        """The tabulated functions (those in `columns`) at q, shape (n,) -> (n, functions)."""
        width = len(range(self._coef.shape[2])[columns])
        out = np.empty((q.size, width))
        for part in range(0, q.size, _CHUNK):
            out[part : part + _CHUNK] = self._evaluate(q[part : part + _CHUNK], columns, width)
        return out

    def cover(self, low: float, high: float) -> None:
        """Computes every panel between q = low and q = high (> 0) now, in one call of `moments`."""
        first, last = (math.floor(math.log(max(x, _Q_FLOOR)) / _PANEL) for x in (low, high))
        self._rows(np.arange(first, last + 1))

    def _evaluate(self, q: np.ndarray, columns: slice, width: int) -> np.ndarray:
        s = np.log(np.maximum(q, _Q_FLOOR)) / _PANEL
        panel = np.floor(s)
        rows = self._rows(panel.astype(np.int64))
        basis = np.polynomial.chebyshev.chebvander(2.0 * (s - panel) - 1.0, _CHEB - 1)
        coef = self._coef[:, :, columns]
        if width <= 4:  # gathering each value's coefficients is cheapest for a few functions
            return np.einsum("nk,nkf->nf", basis, coef[rows])
        # Else one product per panel (by einsum: a threaded BLAS is many times slower at these
        # sizes when the cores are busy).
        order = np.argsort(rows, kind="stable")
        keys, starts = np.unique(rows[order], return_index=True)
        out = np.empty((q.size, width))
        for key, members in zip(keys, np.split(order, starts[1:]), strict=True):
            out[members] = np.einsum("nk,kf->nf", basis[members], coef[key])
        return out

    def _rows(self, panel: np.ndarray) -> np.ndarray:
        """The rows of `_coef` that hold these panels, computing those not there yet."""
        if panel.size == 0:
            return panel
        first, end = panel.min(), panel.max() + 1
        if self._coef.shape[0]:
            first, end = min(first, self._first), max(end, self._first + self._coef.shape[0])
        if first != self._first or end - first != self._coef.shape[0]:  # widen the range
            coef = np.full((end - first, *self._coef.shape[1:]), np.nan)
            coef[self._first - first : self._first - first + self._coef.shape[0]] = self._coef
            self._first, self._coef = first, coef
        rows = panel - self._first
        missing = np.isnan(self._coef[rows, 0, 0])
        if missing.any():
            new = np.unique(rows[missing])
            q = np.exp(_PANEL * (self._first + new[:, None] + (_CHEB_X + 1.0) / 2.0))
            values = self._moments(q.ravel()).reshape(new.size, _CHEB, -1)
            self._coef[new] = np.einsum("mj,pjf->pmf", _CHEB_TRANSFORM, values)
        return rows


class _Tables(NamedTuple):
    phi: Phi
    length: _Table  # `_length_moments`
    hermite: tuple[_Table, ...]  # `_hermite_moments`, one per `_SERIES`


_TABLES: dict[Callable, _Tables] = {}  # by phi, for the process; oldest dropped beyond _KEPT
_KEPT = 64


def _tables(acts: list[registry.Activation]) -> list[_Tables]:
    """The tables of each activation; those met for the first time share one compiled kernel."""
    fresh = tuple(dict.fromkeys(a.fn for a in acts if a.fn not in _TABLES))
    if fresh:
        compilation_cache.enable()  # before the first compile, or JAX never looks at the cache
    for index, fn in enumerate(fresh):
        phi = _elementwise(fresh, index)
        _TABLES[fn] = _Tables(
            phi,
            _Table(functools.partial(_length_moments, phi), 3),
            tuple(
                _Table(functools.partial(_hermite_moments, phi, series), series.degree + 3)
                for series in _SERIES
            ),
        )
    tables = [_TABLES[a.fn] for a in acts]
    while len(_TABLES) > max(_KEPT, len(fresh)):
        _TABLES.pop(next(iter(_TABLES)))
    return tables


# -------------------------------------------------------------------------------------------------
# Fixed points, every configuration at once (each one iterates until it has converged).

# q* is searched in q_1 * 4^[-15, 15], about q_1 * 10^[-9, 9].
_LADDER_RATIO, _LADDER_STEPS = 4.0, 15
# Where quantities at q* = 0 and q* = inf are evaluated (their limits, within 1e-8). Larger q puts
# |u| beyond 1e10, where XLA's vectorised exp (in softplus' and others) loses accuracy.
_Q_TINY, _Q_HUGE = 1e-100, 1e16
_UNIT_TOL = 1e-12  # |ln x| below this counts as x = 1 (criticality, marginal stability)


def _homogeneous_q_star(table: _Table, sigma_w2, sigma_b2):
    """q* in closed form when phi(c x) = c phi(x) for c > 0: V(q) = a q + sigma_b^2 is linear,
    a = sigma_w^2 E[phi(z)^2]."""
    a = sigma_w2 * table(np.ones(1), slice(_M2, _M2 + 1))[0, 0]
    q1 = sigma_w2 + sigma_b2
    marginal = np.abs(a - 1.0) <= _UNIT_TOL
    converges = a < 1.0 - _UNIT_TOL
    # a = 1 without bias: every q is a fixed point and the orbit stays at q_1.
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(
            converges,
            sigma_b2 / (1.0 - a),
            np.where(marginal & (sigma_b2 == 0), q1, np.inf),
        )


def _generic_q_star(table: _Table, sigma_w2, sigma_b2):
    """The fixed point of V that the orbit from q_1 = sigma_w^2 + sigma_b^2 converges to.

    Walks q_1 * 4^k in the direction of V(q_1) - q_1 until the gap V(q) - q changes sign, then
    refines the bracket by Newton steps that fall back to bisection. No sign change within
    q_1 * 4^[-15, 15] (about 10^[-9, 9]) means q_l -> 0 or q_l -> inf. The bound keeps the gap,
    which is O(1) when V is asymptotically the identity (softplus at sigma_w^2 = 2), above the
    quadrature error of V(q), about 1e-12 q.
    """
    q1 = sigma_w2 + sigma_b2

    def gap(rows, q):
        return sigma_w2[rows] * table(q, slice(_M2, _M2 + 1))[:, 0] + sigma_b2[rows] - q

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
        m = table(at, slice(_M2, _DM2 + 1))
        g, dg = w * m[:, 0] + sigma_b2[moving] - at, w * m[:, 1] - 1.0
        lo[moving], hi[moving] = np.where(g > 0, at, lo[moving]), np.where(g > 0, hi[moving], at)
        with np.errstate(divide="ignore", invalid="ignore"):
            step = at - g / dg
        inside = (step >= lo[moving]) & (step <= hi[moving])
        new = np.where(inside, step, np.sqrt(lo[moving] * hi[moving]))
        q[moving] = new
        moving = moving[np.abs(new - at) > 1e-14 * new]
    return np.where(crossed, q, np.where(g1 > 0, np.inf, 0.0))


def _length_and_gradient(tables: _Tables, homogeneous: bool, sigma_w2, sigma_b2):
    """(q*, V'(q*), chi_1) of each configuration; at q* = 0 or inf, their limits."""
    if homogeneous:
        q = _homogeneous_q_star(tables.length, sigma_w2, sigma_b2)
        at = np.ones_like(q)  # V'(q) and chi_1 do not depend on q
    else:
        q = _generic_q_star(tables.length, sigma_w2, sigma_b2)
        at = np.clip(q, _Q_TINY, _Q_HUGE)
    m = tables.length(at)
    return q, sigma_w2 * m[:, _DM2], sigma_w2 * m[:, _D2]


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


def _mehler_correlation(table: _Table, top: int, sigma_w2, sigma_b2, q):
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
        c[moving] = np.clip(old - (value - old) / np.minimum(slope - 1.0, -_UNIT_TOL), 0.0, 1.0)
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


def _bivariate_correlation(phi: Phi, sigma_w2, sigma_b2, q, start):
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
        both, both_prime = _bivariate_moments(phi, q[moving], at)
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


def _chaotic_correlation(tables: _Tables, sigma_w2, sigma_b2, q):
    """(c*, chi_c) for 0 < q* < inf and chi_1 > 1: the shortest series that resolves them, else 2-D."""
    c, chi_c = np.empty(q.size), np.empty(q.size)
    rest = np.arange(q.size)
    for series, table in zip(_SERIES, tables.hermite, strict=True):
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
        c[part], chi_c[part] = _bivariate_correlation(
            tables.phi, sigma_w2[part], sigma_b2[part], q[part], start[part]
        )
    return c, chi_c


# -------------------------------------------------------------------------------------------------
# Host side: inputs and assembly.


def _as_activation(activation) -> registry.Activation:
    if isinstance(activation, registry.Activation):
        return activation
    if isinstance(activation, str):
        return registry.activation(activation)
    if callable(activation):
        name = getattr(activation, "__name__", repr(activation))
        return registry.Activation(name, activation, False, f"user function {name}")
    raise SpecError(
        "`theory` activation", activation, "a registry name, a registry.Activation or a callable"
    )


def _scales(sigma_w2, sigma_b2) -> tuple[np.ndarray, np.ndarray]:
    """Broadcast float64 arrays of the two scales, checked to be finite and >= 0."""
    arrays = np.broadcast_arrays(np.asarray(sigma_w2, float), np.asarray(sigma_b2, float))
    for name, a in zip(("sigma_w2", "sigma_b2"), arrays, strict=True):
        if not np.all(np.isfinite(a) & (a >= 0)):
            bad = a[~(np.isfinite(a) & (a >= 0))][0]
            raise SpecError(f"`theory` {name}", bad, "finite values >= 0")
    return arrays


def _depth_scale(slope: np.ndarray) -> np.ndarray:
    """xi = -1 / ln(slope): > 0 for decay, < 0 for growth, inf at slope 1 (within 1e-12 in ln)."""
    with np.errstate(divide="ignore", invalid="ignore"):
        log = np.log(slope)
        return np.where(np.abs(log) < _UNIT_TOL, np.inf, -1.0 / log)


def _out(a: np.ndarray):
    return a[()]  # a numpy scalar for 0-d results


class MeanField(NamedTuple):
    """Mean-field quantities, numpy arrays (or scalars) in the broadcast shape of the inputs.

    Attributes:
        q_star: fixed point q* of the length map reached from q_1 = sigma_w^2 + sigma_b^2; 0 when
            the signal dies out, inf when q_l grows without bound (no finite fixed point).
        q_status: "zero", "finite" or "infinite".
        length_slope: V'(q*) = sigma_w^2 E[z phi(u) phi'(u)] / sqrt(q*) (limits at 0 and inf):
            < 1 stable, 1 marginal, > 1 growth.
        chi1: sigma_w^2 E[phi'(sqrt(q*) z)^2], the per-layer factor of squared backward signals.
        phase: "ordered" (chi1 < 1), "critical" (chi1 = 1 within 1e-12) or "chaotic" (chi1 > 1).
        c_star: stable fixed point of the correlation map; 1 unless chaotic with finite q*.
        chi_c: C'(c*) = sigma_w^2 E[phi'(u_1) phi'(u_2)] at c*: chi1 when c* = 1 and q* is finite,
            exactly 1 when q* = inf (the correlation map of the growing, asymptotically homogeneous
            signal has slope 1 at c* = 1, so correlations approach 1 only algebraically).
        xi_q, xi_c, xi_grad: -1 / ln of length_slope, chi_c and chi1 (< 0: growth; inf: critical).
    """

    q_star: np.ndarray
    q_status: np.ndarray
    length_slope: np.ndarray
    chi1: np.ndarray
    phase: np.ndarray
    c_star: np.ndarray
    chi_c: np.ndarray
    xi_q: np.ndarray
    xi_c: np.ndarray
    xi_grad: np.ndarray


def _evaluate(act: registry.Activation, sigma_w2, sigma_b2, correlation: bool) -> dict:
    """The fixed points of the distinct (sigma_w2, sigma_b2) pairs, expanded to the input shape."""
    sw2, sb2 = _scales(sigma_w2, sigma_b2)
    # A complex view sorts the pairs lexicographically, far faster than np.unique(axis=0).
    pairs, inverse = np.unique(sw2.ravel() + 1j * sb2.ravel(), return_inverse=True)
    sw2_u, sb2_u = pairs.real.copy(), pairs.imag.copy()
    (tables,) = _tables([act])
    q, slope, chi = _length_and_gradient(tables, act.homogeneous, sw2_u, sb2_u)
    out = {"q_star": q, "length_slope": slope, "chi1": chi}
    if correlation:
        c_star, chi_c = np.ones_like(q), np.where(np.isinf(q), 1.0, chi)
        with np.errstate(divide="ignore"):
            rows = np.flatnonzero((q > 0) & np.isfinite(q) & (np.log(chi) > _UNIT_TOL))
        if rows.size:
            c_star[rows], chi_c[rows] = _chaotic_correlation(
                tables, sw2_u[rows], sb2_u[rows], q[rows]
            )
        out |= {"c_star": c_star, "chi_c": chi_c}
    return {k: v[inverse.reshape(-1)].reshape(sw2.shape) for k, v in out.items()}


def mean_field(activation, sigma_w2, sigma_b2) -> MeanField:
    """All mean-field quantities of `activation` at (sigma_w2, sigma_b2); see `MeanField`.

    Args:
        activation: a registry name, a `registry.Activation` or an elementwise jnp callable.
        sigma_w2: weight scale sigma_w^2 = fan_in Var(W_ij); scalar or array.
        sigma_b2: bias variance sigma_b^2; broadcast against sigma_w2.

    Returns:
        A `MeanField` of numpy arrays in the broadcast shape (numpy scalars for scalar inputs).

    References:
        Poole et al. (2016), eqs. (3)-(5) and (7); Schoenholz et al. (2017), eqs. (5)-(9).
    """
    d = _evaluate(_as_activation(activation), sigma_w2, sigma_b2, correlation=True)
    q, chi = d["q_star"], d["chi1"]
    xi_grad = _depth_scale(chi)
    return MeanField(
        q_star=_out(q),
        q_status=_out(np.where(q == 0, "zero", np.where(np.isinf(q), "infinite", "finite"))),
        length_slope=_out(d["length_slope"]),
        chi1=_out(chi),
        phase=_out(
            np.where(np.isinf(xi_grad), "critical", np.where(chi < 1, "ordered", "chaotic"))
        ),
        c_star=_out(d["c_star"]),
        chi_c=_out(d["chi_c"]),
        xi_q=_out(_depth_scale(d["length_slope"])),
        xi_c=_out(_depth_scale(d["chi_c"])),
        xi_grad=_out(xi_grad),
    )


def q_star(activation, sigma_w2, sigma_b2):
    """The fixed point q* = sigma_w^2 E[phi(sqrt(q*) z)^2] + sigma_b^2 that q_1 = sigma_w^2 +
    sigma_b^2, q_2 = V(q_1), ... converges to.

    Returns 0 when q_l -> 0 (e.g. sigma_b2 = 0 and V'(0) = sigma_w^2 phi'(0)^2 <= 1) and inf when
    q_l grows without bound (relu with sigma_w2 > 2, or sigma_w2 = 2 and sigma_b2 > 0). Its
    stability, the slope V'(q*), is `mean_field(...).length_slope`. Fixed points are searched in
    q_1 * 10^[-9, 9]: a smaller one is reported as 0, a larger one as inf. See `mean_field` for
    the arguments.

    References:
        Poole et al. (2016), eq. (3).
    """
    act = _as_activation(activation)
    return _out(_evaluate(act, sigma_w2, sigma_b2, correlation=False)["q_star"])


def chi1(activation, sigma_w2, sigma_b2):
    """chi_1 = sigma_w^2 E[phi'(sqrt(q*) z)^2], the per-layer factor of ||dJ/dz_l||^2.

    Defined at q* = 0 and q* = inf as the q -> 0 and q -> inf limits; for homogeneous activations it
    does not depend on q (relu: sigma_w^2 / 2, linear: sigma_w^2). See `mean_field` for the
    arguments.

    References:
        Poole et al. (2016), eq. (7); Schoenholz et al. (2017), eq. (9).
    """
    act = _as_activation(activation)
    return _out(_evaluate(act, sigma_w2, sigma_b2, correlation=False)["chi1"])


def predict(activation, sigma_w2, sigma_b2, depth) -> dict[str, np.ndarray]:
    """Mean-field predictions for many configurations at once.

    Args:
        activation: one activation (see `mean_field`) or an array of registry names, broadcast with
            the rest; each distinct name is one vectorised group.
        sigma_w2, sigma_b2: scales, broadcast together with `depth`.
        depth: number of hidden layers L.

    Returns:
        Arrays in the broadcast shape: `chi1`, `q_star`, `xi_c`, `xi_grad` and
        `predicted_log10_delta_ratio` = (L - 1) log10(chi_1) / 2, the mean-field value of
        r = log10(||delta_1|| / ||delta_L||) once the forward signal sits at q*.

    References:
        Schoenholz et al. (2017), section 4 (backpropagation of gradients).
    """
    names = None
    if not (isinstance(activation, str | registry.Activation) or callable(activation)):
        names = np.asarray(activation, dtype=object)
    sw2, sb2, d = np.broadcast_arrays(
        np.asarray(sigma_w2, float), np.asarray(sigma_b2, float), np.asarray(depth, float)
    )
    keys = ("chi1", "q_star", "xi_c", "xi_grad")
    out = {k: np.full(sw2.shape, np.nan) for k in keys}
    groups = [(activation, np.ones(sw2.shape, bool))]
    if names is not None:
        names = np.broadcast_to(names, sw2.shape)
        groups = [(name, names == name) for name in dict.fromkeys(names.ravel())]
    _tables([_as_activation(name) for name, _ in groups])  # one kernel for those new here
    for name, mask in groups:
        mf = mean_field(name, sw2[mask], sb2[mask])
        for k in keys:
            out[k][mask] = getattr(mf, k)
    with np.errstate(divide="ignore"):
        out["predicted_log10_delta_ratio"] = (d - 1.0) * np.log10(out["chi1"]) / 2.0
    return {k: _out(v) for k, v in out.items()}


# -------------------------------------------------------------------------------------------------
# The edge of chaos.


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
    if abs(math.log(slope)) < _UNIT_TOL:
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
    act = _as_activation(activation)
    sigma_b2 = float(sigma_b2)

    def sign(sw2: np.ndarray) -> np.ndarray:
        d = _evaluate(act, sw2, np.full_like(sw2, sigma_b2), correlation=False)
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
    d = _evaluate(act, roots, np.full_like(roots, sigma_b2), correlation=False)
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


# -------------------------------------------------------------------------------------------------
# Plain data and text for `gradbench theory`.


def describe(activation, sigma_b2: float = 0.0, sigma_w2: float | None = None) -> dict:
    """The theory of one activation as plain data (floats, str, None, lists) for the CLI.

    Keys: activation, description, sigma_b2, critical (a list of `CriticalPoint` dicts for sigma_w2
    in (0, 100]), sigma_w2, and, when sigma_w2 is given (None otherwise): q_star, q_status,
    length_slope, chi1, phase, c_star, chi_c, xi_q, xi_c, xi_grad. Infinities stay floats
    (`json.dumps` writes them as Infinity).
    """
    act = _as_activation(activation)
    at = MeanField._fields
    d = {
        "activation": act.name,
        "description": act.description,
        "sigma_b2": float(sigma_b2),
        "critical": [p._asdict() for p in critical_sigma_w2(act, sigma_b2)],
        "sigma_w2": None if sigma_w2 is None else float(sigma_w2),
    }
    mf = None if sigma_w2 is None else mean_field(act, sigma_w2, sigma_b2)
    d |= {key: None if mf is None else getattr(mf, key).item() for key in at}
    if sigma_w2 is None:
        d["scan"] = _depth_scale_scan(act, sigma_b2, [p["sigma_w2"] for p in d["critical"]])
    return d


SCAN_FACTORS = (0.25, 0.5, 0.8, 0.9, 0.95, 1.05, 1.1, 1.25, 2.0)


def _depth_scale_scan(
    act: registry.Activation, sigma_b2: float, critical: list[float]
) -> list[dict]:
    """Depth scales at multiples of the first critical sigma_w^2 (or at 0.5..4 when there is none)."""
    centre = critical[0] if critical else None
    grid = np.array(
        [centre * f for f in SCAN_FACTORS] if centre else [0.5, 1.0, 1.5, 2.0, 3.0, 4.0]
    )
    mf = mean_field(act, grid, np.full_like(grid, float(sigma_b2)))
    keys = ("q_star", "chi1", "phase", "xi_q", "xi_c", "xi_grad")
    return [
        {"sigma_w2": float(w)} | {k: getattr(mf, k)[i].item() for k in keys}
        for i, w in enumerate(grid)
    ]


def _number(x: float) -> str:
    return f"{x:.6g}"


def format_description(d: dict) -> str:
    """A plain-text table of a `describe` result."""
    lines = [
        f"mean-field theory: {d['activation']} ({d['description']}), sigma_b^2 = {d['sigma_b2']:g}",
        "conventions: Var(W_ij) = sigma_w^2 / fan_in, Var(b) = sigma_b^2;"
        " xi = -1 / ln(slope) layers (negative: growth, inf: critical)",
        "",
        "edge of chaos (chi_1 = 1):",
    ]
    if not d["critical"]:
        lines.append("  none for sigma_w^2 in (0, 100]")
    for p in d["critical"]:
        sw2, q = _number(p["sigma_w2"]), _number(p["q_star"])
        lines.append(f"  sigma_w^2 = {sw2:<10} q* = {q:<10} {p['note']}")
    if d.get("scan"):
        lines += [
            "",
            "depth scales (layers; xi_grad: ||delta||^2 changes by e per xi_grad layers):",
        ]
        lines.append(
            f"  {'sigma_w^2':<10} {'q*':<10} {'chi_1':<10} {'xi_q':<10} {'xi_c':<10} {'xi_grad':<10} phase"
        )
        for row in d["scan"]:
            cells = [
                _number(row[k]) for k in ("sigma_w2", "q_star", "chi1", "xi_q", "xi_c", "xi_grad")
            ]
            lines.append("  " + " ".join(f"{c:<10}" for c in cells) + f" {row['phase']}")
    if d["sigma_w2"] is not None:
        slope = d["length_slope"]
        settles = "q_l settles at q*" if slope < 1 else "q_l does not settle"
        rows = [
            ("q*", _number(d["q_star"]), d["q_status"]),
            ("V'(q*)", _number(slope), f"length-map slope; {settles}"),
            ("chi_1", _number(d["chi1"]), f"{d['phase']}; factor of ||delta||^2 per layer"),
            ("c*", _number(d["c_star"]), "correlation fixed point"),
            ("chi_c", _number(d["chi_c"]), "correlation-map slope at c*"),
            ("xi_q", _number(d["xi_q"]), "depth scale of q_l"),
            ("xi_c", _number(d["xi_c"]), "depth scale of correlations"),
            ("xi_grad", _number(d["xi_grad"]), "depth scale of ||delta||^2"),
        ]
        lines += ["", f"at sigma_w^2 = {d['sigma_w2']:g}:"]
        lines += [f"  {name:<8} {value:<12} {what}" for name, value, what in rows]
    return "\n".join(lines)
