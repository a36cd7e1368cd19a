"""The mean field of residual MLPs: the stream's variance and each block's gradient factor.

Block l maps the stream h_{l-1} (width n, h_0 = x, inputs of unit second moment) to h_l through a
branch F(a) = W phi(a) + b, or W_2 phi(W_1 phi(a) + b_1) + b_2 with two branch layers, drawn afresh
per block with Var(W_ij) = sigma_w^2 / n, Var(b_i) = sigma_b^2, and a norm N, layernorm
(a - mean a) / std(a) or rmsnorm a / rms(a), without epsilon or gain:

    norm "none"    h_l = h_{l-1} + alpha F(h_{l-1})
    pre-norm       h_l = h_{l-1} + alpha F(N(h_{l-1}))
    post-norm      h_l = N(h_{l-1} + alpha F(h_{l-1}))

Forward. At large width the stream's entries are Gaussian with variance q_l, q_0 = 1. A branch
whose input has variance a outputs variance V_F(a) = V(a) = sigma_w^2 E[phi(sqrt(a) z)^2] +
sigma_b^2 (two layers: V_F(a) = V(V(a)), the inner pre-activations having variance V(a)),
uncorrelated with its input because W has mean zero: the variances add, and phi's mean enters
only through E[phi^2]. N outputs unit second moment (its input's mean is O(1 / sqrt(n)), so
layernorm and rmsnorm agree here):

    none    q_l = q_{l-1} + alpha^2 V_F(q_{l-1})
    pre     q_l = q_{l-1} + alpha^2 V_F(1)              q grows linearly
    post    q_l = 1, N dividing a sum of variance 1 + alpha^2 V_F(1)

Backward. With g_l = dJ/dh_l, a block without norm sends back g_{l-1} = g_l + alpha J_F^T g_l, with
J_F^T g = D W^T g (D = diag phi'(a)), or D_1 W_1^T D_2 W_2^T g with two layers. W is independent of
g at large width (gradient independence), so the cross term 2 alpha g^T J_F^T g averages to zero
and ||J_F^T g||^2 = chi_F(a) ||g||^2, chi_F(a) = sigma_w^2 E[phi'(sqrt(a) z)^2] (two layers: the
product of both layers' factors). N's Jacobian is P / s, s the rms (std) of N's input and P the
projection orthogonal to that input (and, for layernorm, to the ones vector): 1 / s at large width.
Block l multiplies ||g||^2 by X_l = ||g_{l-1}||^2 / ||g_l||^2:

    none    X_l = 1 + alpha^2 chi_F(q_{l-1})                    relu: 1 + alpha^2 sigma_w^2 / 2
    pre     X_l = 1 + alpha^2 chi_F(1) / q_{l-1}                polynomial growth
    post    X_l = (1 + alpha^2 chi_F(1)) / (1 + alpha^2 V_F(1))  every block alike

and r = log10(||g_0|| / ||g_{L-1}||) = (1/2) sum_{l=1}^{L-1} log10 X_l (the readout, and with
pre-norm the final N, lie above block L: they cancel in r). Pre-norm in closed form: with
q_{l-1} = 1 + (l - 1) / a, a = 1 / (alpha^2 V_F(1)) and c = chi_F(1) / V_F(1),
prod_{l<L} X_l = Gamma(L - 1 + a + c) Gamma(a) / (Gamma(a + c) Gamma(L - 1 + a)) ~ L^c. A
homogeneous phi without bias has chi_F(1) = V_F(1) (E[phi'^2] = E[phi^2] for piecewise-linear phi
through 0): post-norm is flat, X = 1, and pre-norm's product is 1 + (L - 1) alpha^2 V_F(1), the
stream's variance q_{L-1}.

Finite width. P removes an O(1/n) part of ||g||^2 per block. With post-norm it is g_l's component
along h_l, a fraction alpha^2 (sigma_w^2 E[(z phi'(z) - phi(z))^2] + sigma_b^2) / ((1 + alpha^2
chi_F(1)) n) if W^T g is independent of h, and exactly zero when F is positively homogeneous (block
l + 1's output is then invariant under h_l -> c h_l, so g_l is orthogonal to h_l); for layernorm
also the mean, a fraction alpha^2 chi_F(1) / ((1 + alpha^2 chi_F(1)) n), offset by the mean that
layernorm's s^2 leaves out of the forward pass. Measured (n = 64, 300 draws, times n): the first is
0.000 for relu and linear without bias, 0.13 for relu with sigma_b^2 = 0.3 and 0.11 for tanh where
this gives 0.15; the second 0.50 for linear, 0.41 for tanh as given, but 0.34-0.38 for relu, whose
D correlates W^T g with the constraint g_l . y_{l+1} = 0. With pre-norm it is a fraction O(1 / n)
of the branch's term alone. These are of the order of the other finite-width terms: the cross term
has variance 4 alpha^2 chi_F / n, s^2 fluctuates by O(1 / sqrt(n)). Altogether E[r] lies below the
mean field by O(u), u = (L - 1) / (2 ln(10) n): measured (64 draws, n = 256, L = 32) between -2.5 u
(relu without norm, X = 2) and +0.4 u, -0.7 u to -1.4 u for post-norm at n = 32 and 64; one draw
spreads by about 0.1 to 0.2. The prediction is the infinite-width mean field, as for MLPs,
projection left out.

References:
    Yang, Schoenholz (2017). Mean field residual networks: on the edge of chaos. NeurIPS.
        arXiv:1712.08969.
    Xiong et al. (2020). On layer normalization in the transformer architecture. ICML.
        arXiv:2002.04745.
"""

from __future__ import annotations

import math
from typing import NamedTuple

import numpy as np

from gradbench import registry
from gradbench.errors import SpecError
from gradbench.theory.orbit import moments
from gradbench.theory.quantities import as_activation
from gradbench.theory.tables import ActivationTables, tables_for

NORMS = ("none", "layernorm", "rmsnorm")
NORM_POSITIONS = ("pre", "post")
BRANCH_LAYERS = (1, 2)
_NONE, _PRE, _POST = range(3)  # the three recursions of the module docstring


class Branch(NamedTuple):
    """What branches do to a signal of input variance a (arrays of one shape)."""

    variance: np.ndarray  # V_F(a), the variance they output
    gain: np.ndarray  # chi_F(a), their factor of ||g||^2


def branch(tables: ActivationTables, homogeneous: bool, sigma_w2, sigma_b2, layers, a) -> Branch:
    """V_F(a) and chi_F(a) of one- or two-layer branches (`layers` 1 or 2), 1-D arrays."""
    second, slope = moments(tables, homogeneous, a)
    variance, gain = sigma_w2 * second + sigma_b2, sigma_w2 * slope
    two = np.flatnonzero(layers == 2)
    if two.size:
        second, slope = moments(tables, homogeneous, variance[two])
        gain[two] *= sigma_w2[two] * slope
        variance[two] = sigma_w2[two] * second + sigma_b2[two]
    return Branch(variance, gain)


def _blocks(tables, homogeneous, sigma_w2, sigma_b2, layers, kind, alpha2, count):
    """Yields (q_{l-1}, X_l) of blocks l = 1..count: the stream's variance at the block's input and
    the block's factor of ||g||^2 (1-D arrays, an entry per configuration)."""
    unit = branch(tables, homogeneous, sigma_w2, sigma_b2, layers, np.ones(sigma_w2.shape))
    post = (1.0 + alpha2 * unit.gain) / (1.0 + alpha2 * unit.variance)
    free = np.flatnonzero(kind == _NONE)  # where the branch sees the stream itself
    q = np.ones(sigma_w2.shape)
    with np.errstate(over="ignore"):  # a stream growing without bound reaches inf
        for _ in range(count):
            variance, gain = unit.variance.copy(), unit.gain.copy()
            if free.size:
                at = (sigma_w2[free], sigma_b2[free], layers[free], q[free])
                variance[free], gain[free] = branch(tables, homogeneous, *at)
            scale = np.where(kind == _PRE, q, 1.0)  # pre-norm: N's 1 / s on the branch
            yield q, np.where(kind == _POST, post, 1.0 + alpha2 * gain / scale)
            q = np.where(kind == _POST, 1.0, q + alpha2 * variance)


def activation_groups(activation, *arrays) -> tuple[tuple, list]:
    """The broadcast shape of `arrays` and of `activation`, and (activation, flat indices of its
    configurations) of each distinct activation: one (a registry name, a `registry.Activation` or
    a callable) for all, or an array of registry names."""
    if isinstance(activation, str | registry.Activation) or callable(activation):
        shape = np.broadcast_shapes(*(np.shape(a) for a in arrays))
        return shape, [(as_activation(activation), np.arange(math.prod(shape)))]
    names = np.asarray(activation, object)
    shape = np.broadcast_shapes(names.shape, *(np.shape(a) for a in arrays))
    names = np.broadcast_to(names, shape).ravel()
    return shape, [(as_activation(n), np.flatnonzero(names == n)) for n in dict.fromkeys(names)]


def _configs(shape, sigma_w2, sigma_b2, depth, branch_layers, norm, norm_position, alpha):
    """The arguments as checked 1-D arrays of the broadcast `shape`, and each one's recursion."""
    sw2, sb2, d, layers, a = (
        np.broadcast_to(np.asarray(x, float), shape).ravel()
        for x in (sigma_w2, sigma_b2, depth, branch_layers, alpha)
    )
    norm, position = (
        np.broadcast_to(np.asarray(x, object), shape).ravel() for x in (norm, norm_position)
    )
    checks = [
        ("sigma_w2", sw2, np.isfinite(sw2) & (sw2 >= 0), "finite values >= 0"),
        ("sigma_b2", sb2, np.isfinite(sb2) & (sb2 >= 0), "finite values >= 0"),
        ("depth", d, np.isfinite(d) & (d >= 1) & (d == np.round(d)), "integers >= 1"),
        ("branch_layers", layers, np.isin(layers, BRANCH_LAYERS), f"one of {BRANCH_LAYERS}"),
        ("norm", norm, np.isin(norm, NORMS), f"one of {NORMS}"),
        (
            "norm_position",
            position,
            (norm == "none") | np.isin(position, NORM_POSITIONS),
            f"one of {NORM_POSITIONS} where norm is not 'none'",
        ),
        ("alpha", a, np.isfinite(a) & (a > 0), "finite values > 0"),
    ]
    for name, values, ok, expected in checks:
        if not ok.all():
            raise SpecError(f"`theory` {name}", values[~ok][0], expected)
    kind = np.where(norm == "none", _NONE, np.where(position == "pre", _PRE, _POST))
    return (sw2, sb2, layers.astype(np.int64), kind, a * a), d.astype(np.int64)


class ResidualBlocks(NamedTuple):
    """One configuration, block by block (`residual_blocks`).

    Attributes:
        q: q_{l-1}, the stream's variance at the input of block l = 1..L (q_0 = 1).
        factor: X_l = ||g_{l-1}||^2 / ||g_l||^2 of block l = 1..L.
        log10_delta_ratio: the predicted r = (1/2) sum_{l=1}^{L-1} log10 X_l.
    """

    q: np.ndarray
    factor: np.ndarray
    log10_delta_ratio: float


def residual_blocks(
    activation,
    sigma_w2: float,
    sigma_b2: float,
    depth: int,
    branch_layers: int = 1,
    norm: str = "none",
    norm_position: str = "none",
    alpha: float = 1.0,
) -> ResidualBlocks:
    """q_{l-1}, X_l (l = 1..L) and the predicted r of one configuration; the arguments are those of
    `predict_residual`, scalars."""
    given = (sigma_w2, sigma_b2, depth, branch_layers, norm, norm_position, alpha)
    config, depth = _configs((), *given)
    act = as_activation(activation)
    (tables,) = tables_for([act])
    blocks = list(_blocks(tables, act.homogeneous, *config, int(depth[0])))
    q, factor = (np.concatenate(parts) for parts in zip(*blocks, strict=True))
    with np.errstate(divide="ignore"):
        return ResidualBlocks(q, factor, float(np.sum(np.log10(factor[:-1])) / 2.0))


def predict_residual(
    activation, sigma_w2, sigma_b2, depth, branch_layers, norm, norm_position, alpha
) -> dict[str, np.ndarray]:
    """The mean-field predictions of many residual configurations at once (module docstring).

    Args:
        activation: one activation (a registry name, a `registry.Activation` or a callable) or an
            array of registry names, broadcast with the rest; each distinct name is one group.
        sigma_w2, sigma_b2: the scales of every branch layer, >= 0.
        depth: the number of blocks L, integers >= 1.
        branch_layers: layers per branch, 1 or 2.
        norm: "none", "layernorm" or "rmsnorm".
        norm_position: "pre" or "post"; anything where norm is "none".
        alpha: the branch's multiplier, > 0.

    Returns:
        Arrays in the broadcast shape: `predicted_log10_delta_ratio`, the mean-field r =
        log10(||g_0|| / ||g_{L-1}||); `chi1`, the factor X of ||g||^2 every block shares where it
        does not depend on depth (post-norm; no norm with a homogeneous activation), NaN where it
        does; `q_star`, the stream's limit (1 with post-norm, inf where it grows without bound);
        `fixed_point_log10_delta_ratio` = (L - 1) log10(chi1) / 2, equal to r where chi1 is
        defined; `xi_c`, NaN (no correlation map is derived here).
    """
    given = (sigma_w2, sigma_b2, depth, branch_layers, norm, norm_position, alpha)
    shape, groups = activation_groups(activation, *given)
    config, depth = _configs(shape, *given)
    acts = [act for act, _ in groups]
    ratio, chi1 = np.zeros(depth.size), np.full(depth.size, np.nan)
    for (act, rows), tables in zip(groups, tables_for(acts), strict=True):
        kind = config[3][rows]
        steady = rows[(kind == _POST) | ((kind == _NONE) & act.homogeneous)]
        _, chi1[steady] = next(_blocks(tables, act.homogeneous, *(a[steady] for a in config), 1))
        with np.errstate(divide="ignore", invalid="ignore"):  # chi1 = 0: r = -inf
            ratio[steady] = (depth[steady] - 1) * np.log10(chi1[steady]) / 2.0
        moving = np.setdiff1d(rows, steady)
        ratio[moving] = _summed(tables, act.homogeneous, [a[moving] for a in config], depth[moving])
    sw2, sb2, _, kind, alpha2 = config
    grows = (kind != _POST) & (alpha2 * (sw2 + sb2) > 0)
    with np.errstate(divide="ignore", invalid="ignore"):
        fixed = (depth - 1) * np.log10(chi1) / 2.0
    out = {
        "chi1": chi1,
        "q_star": np.where(grows, np.inf, 1.0),
        "xi_c": np.full(depth.size, np.nan),
        "predicted_log10_delta_ratio": ratio,
        "fixed_point_log10_delta_ratio": fixed,
    }
    return {k: v.reshape(shape)[()] for k, v in out.items()}


def _summed(tables, homogeneous, config, depth) -> np.ndarray:
    """(1/2) sum_{l=1}^{L-1} log10 X_l of each configuration, block by block."""
    total = np.zeros(depth.size)
    if depth.size:
        blocks = _blocks(tables, homogeneous, *config, int(depth.max()) - 1)
        with np.errstate(divide="ignore"):
            for block, (_, factor) in enumerate(blocks, start=1):
                total += np.where(block < depth, np.log10(factor), 0.0)
    return total / 2.0
