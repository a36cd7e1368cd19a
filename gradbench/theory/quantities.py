"""The mean-field quantities at given scales: `mean_field`, `q_star`, `chi1`, `finite_depth` and
`predict`.

The public entry points of the theory. Each accepts an activation (a registry name, a
`registry.Activation` or an elementwise jnp callable) and arrays of sigma_w^2 and sigma_b^2 that
broadcast together, solves every distinct (sigma_w^2, sigma_b^2) pair once and all of them together
(`gradbench.theory.length_map`, `gradbench.theory.correlation_map`), and returns float64 NumPy
arrays in the broadcast shape, NumPy scalars for scalar inputs. Inputs are checked here.
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np

from gradbench import registry
from gradbench.errors import SpecError
from gradbench.theory.correlation_map import chaotic_correlation
from gradbench.theory.length_map import UNIT_TOL, length_and_gradient
from gradbench.theory.orbit import log10_chi_sums, orbit
from gradbench.theory.tables import tables_for


def as_activation(activation) -> registry.Activation:
    """A registry name, a `registry.Activation` or a callable (a user function, taken as not
    homogeneous) as a `registry.Activation`."""
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


def _depths(depth) -> np.ndarray:
    """A float64 array of depths, checked to be integers >= 1."""
    d = np.asarray(depth, float)
    bad = ~(np.isfinite(d) & (d >= 1) & (d == np.round(d)))
    if bad.any():
        raise SpecError("`theory` depth", d[bad][0], "integers >= 1")
    return d


def _depth_scale(slope: np.ndarray) -> np.ndarray:
    """xi = -1 / ln(slope): > 0 for decay, < 0 for growth, inf at slope 1 (within 1e-12 in ln)."""
    with np.errstate(divide="ignore", invalid="ignore"):
        log = np.log(slope)
        return np.where(np.abs(log) < UNIT_TOL, np.inf, -1.0 / log)


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


def evaluate(act: registry.Activation, sigma_w2, sigma_b2, correlation: bool) -> dict:
    """The fixed points of the distinct (sigma_w2, sigma_b2) pairs, expanded to the input shape.

    Keys: q_star, length_slope, chi1 and, with `correlation`, c_star and chi_c.
    """
    sw2, sb2 = _scales(sigma_w2, sigma_b2)
    # A complex view sorts the pairs lexicographically, far faster than np.unique(axis=0).
    pairs, inverse = np.unique(sw2.ravel() + 1j * sb2.ravel(), return_inverse=True)
    sw2_u, sb2_u = pairs.real.copy(), pairs.imag.copy()
    (tables,) = tables_for([act])
    q, slope, chi = length_and_gradient(tables, act.homogeneous, sw2_u, sb2_u)
    out = {"q_star": q, "length_slope": slope, "chi1": chi}
    if correlation:
        c_star, chi_c = np.ones_like(q), np.where(np.isinf(q), 1.0, chi)
        with np.errstate(divide="ignore"):
            rows = np.flatnonzero((q > 0) & np.isfinite(q) & (np.log(chi) > UNIT_TOL))
        if rows.size:
            c_star[rows], chi_c[rows] = chaotic_correlation(
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
    d = evaluate(as_activation(activation), sigma_w2, sigma_b2, correlation=True)
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
    act = as_activation(activation)
    return _out(evaluate(act, sigma_w2, sigma_b2, correlation=False)["q_star"])


def chi1(activation, sigma_w2, sigma_b2):
    """chi_1 = sigma_w^2 E[phi'(sqrt(q*) z)^2], the per-layer factor of ||dJ/dz_l||^2.

    Defined at q* = 0 and q* = inf as the q -> 0 and q -> inf limits; for homogeneous activations it
    does not depend on q (relu: sigma_w^2 / 2, linear: sigma_w^2). See `mean_field` for the
    arguments.

    References:
        Poole et al. (2016), eq. (7); Schoenholz et al. (2017), eq. (9).
    """
    act = as_activation(activation)
    return _out(evaluate(act, sigma_w2, sigma_b2, correlation=False)["chi1"])


class FiniteDepthLayers(NamedTuple):
    """One configuration's orbit, layer by layer (`finite_depth_layers`).

    Attributes:
        q: q_l, the variance of the pre-activations z_l, l = 1..L (q_1 = sigma_w^2 + sigma_b^2).
        chi: chi_l = sigma_w^2 E[phi'(sqrt(q_l) z)^2], the factor of ||delta_l||^2 / ||delta_{l+1}||^2.
        log10_delta_ratio: the predicted r = (1/2) sum_{l=1}^{L-1} log10 chi_l.
    """

    q: np.ndarray
    chi: np.ndarray
    log10_delta_ratio: float


def _finite_depth_ratio(act: registry.Activation, sw2, sb2, depth, fixed: dict) -> np.ndarray:
    """r at finite depth of arrays of one shape, given their fixed points (`evaluate`)."""
    (tables,) = tables_for([act])
    sums = log10_chi_sums(
        tables,
        act.homogeneous,
        *(np.ravel(a) for a in (sw2, sb2, depth, fixed["q_star"], fixed["chi1"])),
    )
    return (sums / 2.0).reshape(np.shape(sw2))


def finite_depth(activation, sigma_w2, sigma_b2, depth):
    """The mean-field r = log10(||delta_1|| / ||delta_L||) of a depth-L network, layer by layer.

    Follows q_l from the input, q_1 = sigma_w^2 + sigma_b^2, through the length map and sums
    log10 chi_l over layers 1..L-1 (`gradbench.theory.orbit`); equals the fixed-point
    (L - 1) log10(chi_1) / 2 when q_1 = q* and for homogeneous activations, and differs where the
    orbit takes long to reach q*.

    Args:
        activation: see `mean_field`.
        sigma_w2, sigma_b2: scales, broadcast together with `depth`.
        depth: number of hidden layers L, integers >= 1.

    Returns:
        The predicted r in the broadcast shape (a numpy scalar for scalar inputs).
    """
    act = as_activation(activation)
    sw2, sb2, d = np.broadcast_arrays(*_scales(sigma_w2, sigma_b2), _depths(depth))
    fixed = evaluate(act, sw2, sb2, correlation=False)
    return _out(_finite_depth_ratio(act, sw2, sb2, d, fixed))


def finite_depth_layers(activation, sigma_w2: float, sigma_b2: float, depth: int):
    """q_l, chi_l (l = 1..L) and the predicted r of one configuration; see `finite_depth`."""
    act = as_activation(activation)
    sw2, sb2 = (float(a) for a in _scales(sigma_w2, sigma_b2))
    (tables,) = tables_for([act])
    q, chi = orbit(tables, act.homogeneous, sw2, sb2, int(_depths(depth)))
    with np.errstate(divide="ignore"):
        ratio = float(np.sum(np.log10(chi[:-1])) / 2.0)
    return FiniteDepthLayers(q, chi, ratio)


def predict(activation, sigma_w2, sigma_b2, depth) -> dict[str, np.ndarray]:
    """Mean-field predictions for many configurations at once.

    Args:
        activation: one activation (see `mean_field`) or an array of registry names, broadcast with
            the rest; each distinct name is one vectorised group.
        sigma_w2, sigma_b2: scales, broadcast together with `depth`.
        depth: number of hidden layers L, integers >= 1.

    Returns:
        Arrays in the broadcast shape: `chi1`, `q_star`, `xi_c`, `xi_grad`,
        `predicted_log10_delta_ratio`, the mean-field r = log10(||delta_1|| / ||delta_L||) of the
        orbit q_1, q_2, ... from the input (`finite_depth`), and `fixed_point_log10_delta_ratio`
        = (L - 1) log10(chi_1) / 2, its value once the forward signal sits at q*.

    References:
        Schoenholz et al. (2017), section 4 (backpropagation of gradients).
    """
    names = None
    if not (isinstance(activation, str | registry.Activation) or callable(activation)):
        names = np.asarray(activation, dtype=object)
    sw2, sb2, d = np.broadcast_arrays(*_scales(sigma_w2, sigma_b2), _depths(depth))
    keys = ("chi1", "q_star", "xi_c", "xi_grad")  # of `mean_field`
    out = {k: np.full(sw2.shape, np.nan) for k in (*keys, "predicted_log10_delta_ratio")}
    groups = [(activation, np.ones(sw2.shape, bool))]
    if names is not None:
        names = np.broadcast_to(names, sw2.shape)
        groups = [(name, names == name) for name in dict.fromkeys(names.ravel())]
    tables_for([as_activation(name) for name, _ in groups])  # one kernel for those new here
    for name, mask in groups:
        mf = mean_field(name, sw2[mask], sb2[mask])
        for k in keys:
            out[k][mask] = getattr(mf, k)
        fixed = {"q_star": mf.q_star, "chi1": mf.chi1}
        out["predicted_log10_delta_ratio"][mask] = _finite_depth_ratio(
            as_activation(name), sw2[mask], sb2[mask], d[mask], fixed
        )
    with np.errstate(divide="ignore"):
        out["fixed_point_log10_delta_ratio"] = (d - 1.0) * np.log10(out["chi1"]) / 2.0
    return {k: _out(v) for k, v in out.items()}
