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

Everything is float64: public functions enable x64 for their own work and return numpy values
(numpy scalars for scalar inputs). Inputs broadcast together; each distinct (sigma_w2, sigma_b2)
pair is computed once, by jit-compiled, vmapped kernels applied in chunks of a few fixed sizes.

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
import jax.numpy as jnp
import numpy as np

from gradbench import registry
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


def _merge_sorted(a, b):
    """The sorted union of two sorted 1-D arrays, scattered by rank (3x faster than XLA's sort)."""
    rank_a = jnp.arange(a.size) + jnp.sum(b[None, :] < a[:, None], axis=1)
    rank_b = jnp.arange(b.size) + jnp.sum(a[None, :] <= b[:, None], axis=1)
    merged = jnp.zeros(a.size + b.size, a.dtype).at[rank_a].set(a, unique_indices=True)
    return merged.at[rank_b].set(b, unique_indices=True)


def _gaussian_nodes(rule: _Rule, std, *centres):
    """Nodes z and weights w with sum_i w_i f(z_i) ~= E[f(z)], z ~ N(0, 1).

    Panels end at the rule's z-edges and wherever centre + std z is a u-point, for each centre: f
    may have kinks there.
    """
    z_max = rule.z_edges[-1]
    edges = jnp.asarray(rule.z_edges)
    for centre in centres:  # each mapped set is sorted because std > 0
        kinks = (rule.u_points - centre) / jnp.maximum(std, _MIN_STD)
        edges = _merge_sorted(edges, jnp.clip(kinks, -z_max, z_max))
    half, mid = (edges[1:] - edges[:-1]) / 2, (edges[1:] + edges[:-1]) / 2
    z = mid[:, None] + half[:, None] * rule.nodes[None, :]
    w = half[:, None] * rule.weights[None, :] * jnp.exp(-(z**2) / 2) / math.sqrt(2 * math.pi)
    return z.reshape(-1), w.reshape(-1)


def _value_and_derivative(fn: Callable, u):
    """phi(u) and phi'(u) elementwise, the derivative by `jax.grad`."""
    value, slope = jax.vmap(jax.value_and_grad(fn))(u.reshape(-1))
    return value.reshape(u.shape), slope.reshape(u.shape)


def _second_moment(fn: Callable, q):
    """E[phi(sqrt(q) z)^2]."""
    z, w = _gaussian_nodes(_FINE, jnp.sqrt(q), 0.0)
    return w @ fn(jnp.sqrt(q) * z) ** 2


def _length_moments(fn: Callable, q):
    """E[phi^2], dE[phi^2]/dq = E[z phi phi'] / sqrt(q) and E[phi'^2], at u = sqrt(q) z."""
    z, w = _gaussian_nodes(_FINE, jnp.sqrt(q), 0.0)
    value, slope = _value_and_derivative(fn, jnp.sqrt(q) * z)
    return w @ value**2, (w @ (z * value * slope)) / jnp.sqrt(q), w @ slope**2


def _bivariate_moments(fn: Callable, q, c):
    """E[phi(u_1) phi(u_2)] and E[phi'(u_1) phi'(u_2)] for (u_1, u_2) ~ N(0, q [[1, c], [c, 1]]).

    Writes u_1,2 = sqrt(q) (a x +- b y), a = sqrt((1 + c) / 2), b = sqrt((1 - c) / 2), x and y
    independent N(0, 1). For each outer node y the inner rule over x has panel edges at the kinks
    of both factors; the outer integrand is then smooth except where two kinks meet, at
    y = (k_1 - k_2) / (2 b sqrt(q)), which are edges of the outer rule. Unlike conditioning u_2 on
    u_1 (whose outer integrand has kinks smeared over sqrt(1 - c^2)), this stays accurate as c -> 1:
    within 1e-8 of closed forms for relu', hard_tanh' and relu6' products up to c = 0.9999.
    """
    root_q = jnp.sqrt(q)
    a, b = jnp.sqrt((1.0 + c) / 2.0), jnp.sqrt(jnp.maximum((1.0 - c) / 2.0, 0.0))
    y, wy = _gaussian_nodes(_COARSE, 2.0 * b * root_q, 0.0)
    # y -> -y swaps u_1 and u_2, so the integrand is even in y; the rule is symmetric about 0 (its
    # edges are), so its upper half holds the y >= 0 nodes (those at 0 have weight 0): use it twice.
    y, wy = y[y.size // 2 :], 2.0 * wy[wy.size // 2 :]
    shift = b * root_q * y
    x, wx = jax.vmap(lambda s: _gaussian_nodes(_COARSE, a * root_q, s, -s))(shift)
    v1, d1 = _value_and_derivative(fn, a * root_q * x + shift[:, None])
    v2, d2 = _value_and_derivative(fn, a * root_q * x - shift[:, None])
    return wy @ jnp.sum(wx * v1 * v2, axis=1), wy @ jnp.sum(wx * d1 * d2, axis=1)


# -------------------------------------------------------------------------------------------------
# Per-configuration kernels (scalars in, scalars out; vmapped and jitted below).

# q* is searched in q_1 * 4^[-15, 15], about q_1 * 10^[-9, 9].
_LADDER_RATIO, _LADDER_STEPS = 4.0, 15
# Where quantities at q* = 0 and q* = inf are evaluated (their limits, within 1e-8). Larger q puts
# |u| beyond 1e10, where XLA's vectorised exp (in softplus' and others) loses accuracy.
_Q_TINY, _Q_HUGE = 1e-100, 1e16
_UNIT_TOL = 1e-12  # |ln x| below this counts as x = 1 (criticality, marginal stability)


def _homogeneous_q_star(fn: Callable, sigma_w2, sigma_b2):
    """q* in closed form when phi(c x) = c phi(x) for c > 0: V(q) = a q + sigma_b^2 is linear,
    a = sigma_w^2 E[phi(z)^2]."""
    a = sigma_w2 * _second_moment(fn, 1.0)
    q1 = sigma_w2 + sigma_b2
    marginal = jnp.abs(a - 1.0) <= _UNIT_TOL
    converges = a < 1.0 - _UNIT_TOL
    # a = 1 without bias: every q is a fixed point and the orbit stays at q_1.
    return jnp.where(
        converges,
        sigma_b2 / (1.0 - a),
        jnp.where(marginal & (sigma_b2 == 0), q1, jnp.inf),
    )


def _generic_q_star(fn: Callable, sigma_w2, sigma_b2):
    """The fixed point of V that the orbit from q_1 = sigma_w^2 + sigma_b^2 converges to.

    Walks q_1 * 4^k in the direction of V(q_1) - q_1 until the gap V(q) - q changes sign, then
    refines the bracket by Newton steps that fall back to bisection. No sign change within
    q_1 * 4^[-15, 15] (about 10^[-9, 9]) means q_l -> 0 or q_l -> inf. The bound keeps the gap,
    which is O(1) when V is asymptotically the identity (softplus at sigma_w^2 = 2), above the
    quadrature error of V(q), about 1e-12 q.
    """
    q1 = sigma_w2 + sigma_b2

    def gap(q):
        return sigma_w2 * _second_moment(fn, q) + sigma_b2 - q

    g1 = gap(q1)
    ratio = jnp.where(g1 > 0, _LADDER_RATIO, 1.0 / _LADDER_RATIO)

    def walk(state):
        k, _, q, _ = state
        return k + 1, q, q * ratio, gap(q * ratio)

    def same_side(state):
        k, _, _, g = state
        return (k < _LADDER_STEPS) & (g * g1 > 0)

    _, q_prev, q_last, g_last = jax.lax.while_loop(same_side, walk, (0, q1, q1, g1))
    crossed = g_last * g1 <= 0

    def newton(state):
        i, lo, hi, q, _ = state  # V(lo) >= lo and V(hi) <= hi: the orbit's fixed point is between
        m2, dm2, _ = _length_moments(fn, q)
        g, dg = sigma_w2 * m2 + sigma_b2 - q, sigma_w2 * dm2 - 1.0
        lo, hi = jnp.where(g > 0, q, lo), jnp.where(g > 0, hi, q)
        step = q - g / dg
        q_new = jnp.where((step >= lo) & (step <= hi), step, jnp.sqrt(lo * hi))
        return i + 1, lo, hi, q_new, jnp.abs(q_new - q)

    def moving(state):
        i, _, _, q, delta = state
        return (i < 60) & (delta > 1e-14 * q)

    lo, hi = jnp.minimum(q_prev, q_last), jnp.maximum(q_prev, q_last)
    init = (0, lo, hi, jnp.where(crossed, jnp.sqrt(lo * hi), q1), jnp.where(crossed, jnp.inf, 0.0))
    root = jax.lax.while_loop(moving, newton, init)[3]
    return jnp.where(crossed, root, jnp.where(g1 > 0, jnp.inf, 0.0))


def _length_and_gradient(fn: Callable, homogeneous: bool, sigma_w2, sigma_b2):
    """(q*, V'(q*), chi_1) of one configuration; at q* = 0 or inf, their limits."""
    if homogeneous:
        q = _homogeneous_q_star(fn, sigma_w2, sigma_b2)
        at = 1.0  # V'(q) and chi_1 do not depend on q
    else:
        q = _generic_q_star(fn, sigma_w2, sigma_b2)
        at = jnp.clip(q, _Q_TINY, _Q_HUGE)
    _, dm2, d2 = _length_moments(fn, at)
    return q, sigma_w2 * dm2, sigma_w2 * d2


_MEHLER_DEGREE = 24


def _correlation_guess(fn: Callable, sigma_w2, sigma_b2, q):
    """c* of the correlation map's Mehler series, truncated at degree 24, the rest lumped at 25.

    C(c) = (sigma_w^2 sum_n a_n^2 c^n + sigma_b^2) / q* with a_n = E[phi(sqrt(q*) z) He_n(z)] /
    sqrt(n!); the lumped remainder E[phi^2] - sum_{n <= 24} a_n^2 keeps C(1) = 1. Newton's method on
    this convex polynomial converges monotonically from 0. Measured: a median 1e-8 from c*, at worst
    1e-2 (kinked activations near the edge of chaos), which leaves two or three 2-D Newton steps.
    """
    z, w = _gaussian_nodes(_FINE, jnp.sqrt(q), 0.0)
    value = fn(jnp.sqrt(q) * z)

    def hermite(carry, n):  # orthonormal He_n / sqrt(n!) by the three-term recurrence
        previous, current = carry
        following = (z * current - jnp.sqrt(n) * previous) / jnp.sqrt(n + 1.0)
        return (current, following), w @ (value * current)

    start = (jnp.zeros_like(z), jnp.ones_like(z))
    _, a = jax.lax.scan(hermite, start, jnp.arange(_MEHLER_DEGREE + 1.0))
    coef = sigma_w2 / q * jnp.append(a**2, w @ value**2 - jnp.sum(a**2))
    coef = coef.at[0].add(sigma_b2 / q)  # C(c) = sum_n coef_n c^n
    slope_coef = (coef * jnp.arange(coef.size))[1:]

    def newton(c, _):
        gap = jnp.polyval(coef[::-1], c) - c
        step = gap / jnp.minimum(jnp.polyval(slope_coef[::-1], c) - 1.0, -_UNIT_TOL)
        return jnp.clip(c - step, 0.0, 1.0), None

    c, _ = jax.lax.scan(newton, 0.0, None, length=50)
    return jnp.clip(c, 0.0, 1.0 - 1e-3)  # start left of c = 1, the trivial root of C(c) = c


def _chaotic_correlation(fn: Callable, sigma_w2, sigma_b2, q):
    """(c*, chi_c) for 0 < q* < inf and chi_1 > 1: the root of h(c) = C(c) - c in [0, 1).

    By Mehler's formula C(c) = (sigma_w^2 sum_n a_n^2 c^n + sigma_b^2) / q*, with a_n the normalised
    Hermite coefficients of phi(sqrt(q*) z): C is convex and increasing on [0, 1], C(1) = 1 and
    C'(1) = chi_1 > 1, so h >= 0 on [0, c*] and h < 0 on (c*, 1). Newton steps from
    `_correlation_guess` refine the bracket [0, 1]; a step that leaves it is replaced by bisection
    in log(1 - c), since c* crowds towards 1 near the edge of chaos. When chi_1 - 1 is so small
    (about 1e-4) that h on [c*, 1] is below the quadrature accuracy, the iteration may end at c = 1
    with chi_c >= 1: that is reported as c* = 1, chi_c = 1 (xi_c = inf), critical within resolution.
    """

    def newton(state):
        i, lo, hi, c, _, _ = state
        both, both_prime = _bivariate_moments(fn, q, c)
        gap, slope = (sigma_w2 * both + sigma_b2) / q - c, sigma_w2 * both_prime
        lo, hi = jnp.where(gap > 0, c, lo), jnp.where(gap > 0, hi, c)
        step = c - gap / (slope - 1.0)
        middle = 1.0 - jnp.sqrt((1.0 - lo) * (1.0 - hi))
        c_new = jnp.where((step >= lo) & (step <= hi), step, middle)
        return i + 1, lo, hi, c_new, slope, jnp.abs(c_new - c)

    def moving(state):
        i, *_, delta = state
        return (i < 40) & (delta > 1e-9)

    start = _correlation_guess(fn, sigma_w2, sigma_b2, q)
    init = (0, 0.0, 1.0, start, jnp.nan, jnp.inf)
    _, _, _, c, slope, _ = jax.lax.while_loop(moving, newton, init)
    # The slope was taken at the previous iterate, within 1e-9 of c*.
    unresolved = slope >= 1.0
    return jnp.where(unresolved, 1.0, c), jnp.where(unresolved, 1.0, slope)


@functools.partial(jax.jit, static_argnames=("fn", "homogeneous"))
def _length_batch(sigma_w2, sigma_b2, *, fn, homogeneous):
    return jax.vmap(functools.partial(_length_and_gradient, fn, homogeneous))(sigma_w2, sigma_b2)


@functools.partial(jax.jit, static_argnames=("fn",))
def _correlation_batch(sigma_w2, sigma_b2, q, *, fn):
    return jax.vmap(functools.partial(_chaotic_correlation, fn))(sigma_w2, sigma_b2, q)


# -------------------------------------------------------------------------------------------------
# Host side: inputs, chunking, assembly.


_BUCKETS = (1, 128, 1024)  # padded batch sizes: one compilation each per activation and kernel


def _map_chunks(kernel: Callable, *columns: np.ndarray, chunk: int) -> tuple[np.ndarray, ...]:
    """Applies a jitted, vmapped kernel to 1-D columns in padded chunks of at most `chunk` rows.

    Chunks bound memory. A vmapped while loop runs until its slowest lane is done, so callers
    order the rows to put slow lanes together.
    """
    n = len(columns[0])
    size = min(chunk, next(b for b in _BUCKETS if b >= min(n, _BUCKETS[-1])))
    padded = [np.resize(c, -(-max(n, 1) // size) * size) for c in columns]  # repeats, never empty
    parts = [
        kernel(*(jnp.asarray(c[i : i + size]) for c in padded))
        for i in range(0, len(padded[0]), size)
    ]
    return tuple(np.concatenate(p)[:n] for p in zip(*parts, strict=True))


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
    """The kernels over the distinct (sigma_b2, sigma_w2) pairs, expanded to the input shape."""
    with jax.enable_x64(True):
        sw2, sb2 = _scales(sigma_w2, sigma_b2)
        # Sorted by sigma_b2 first: the slow no-bias lanes (q* = 0) share chunks.
        pairs, inverse = np.unique(
            np.stack([sb2.ravel(), sw2.ravel()], 1), axis=0, return_inverse=True
        )
        sb2_u, sw2_u = pairs[:, 0], pairs[:, 1]
        kernel = functools.partial(_length_batch, fn=act.fn, homogeneous=act.homogeneous)
        q, slope, chi = _map_chunks(kernel, sw2_u, sb2_u, chunk=1024)
        out = {"q_star": q, "length_slope": slope, "chi1": chi}
        if correlation:
            c_star, chi_c = np.ones_like(q), np.where(np.isinf(q), 1.0, chi)
            with np.errstate(divide="ignore"):
                chaotic = (q > 0) & np.isfinite(q) & (np.log(chi) > _UNIT_TOL)
            rows = np.flatnonzero(chaotic)[np.argsort(chi[chaotic])]  # near-critical ones together
            if rows.size:
                kernel = functools.partial(_correlation_batch, fn=act.fn)
                c_star[rows], chi_c[rows] = _map_chunks(
                    kernel, sw2_u[rows], sb2_u[rows], q[rows], chunk=128
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
