"""Free probability's prediction of the input-output Jacobian's squared singular values, per config.

J = D_L W_L ... D_1 W_1 with D_l = diag phi'(z_l) (`gradbench.engine.jacobian` measures it). At large
width the factors are asymptotically free, so the S-transform of J J^T is the product of theirs
(Pennington, Schoenholz & Ganguli 2017, 2018). Written S(z) = (1 - v z + O(z^2)) / m1 for a spectrum
of mean m1 and normalised variance v = m2 / m1^2 - 1, a product multiplies the means and adds the v:

    m1 = prod_l sigma_w^2 mu_1(q_l),    v = sum_l (mu_2(q_l) / mu_1(q_l)^2 - 1 + v_W),

where mu_k(q) = E[phi'(sqrt(q) z)^(2k)] are the moments of D_l^2 (z_l ~ N(0, q_l)) and v_W is the
normalised variance of the spectrum of W_l W_l^T / sigma_w^2 (v_W = -s_1, the first coefficient of its
S-transform): 0 for orthogonal weights, 1 for i.i.d. entries. The Marchenko-Pastur law, and with
it v_W = 1, holds for every i.i.d. family of unit variance (uniform and truncated normal as well as
Gaussian): it is universal. q_l is the finite-depth orbit of the length map, q_1 = sigma_w^2 +
sigma_b^2 (inputs of unit second moment), q_{l+1} = sigma_w^2 E[phi(sqrt(q_l) z)^2] + sigma_b^2:
shallow nets have not reached q* yet.

So ReLU nets cannot be isometric (mu_2 / mu_1^2 = 2: v grows by 1 a layer even with orthogonal
weights), orthogonal tanh nets near q* = 0 nearly are (phi' -> 1 as q -> 0), and orthogonal linear
nets are exactly. The prediction is of the infinite-width limit: at width n the measured spread of
a depth-L net differs from it by O(L / n).

References:
    Saxe, McClelland, Ganguli (2014). Exact solutions to the nonlinear dynamics of learning in deep
        linear neural networks. ICLR. arXiv:1312.6120.
    Pennington, Schoenholz, Ganguli (2017). Resurrecting the sigmoid in deep learning through
        dynamical isometry: theory and practice. NeurIPS. arXiv:1711.04735.
    Pennington, Schoenholz, Ganguli (2018). The emergence of spectral universality in deep networks.
        AISTATS. arXiv:1802.09979.
"""

from __future__ import annotations

import functools
import math

import numpy as np
import pandas as pd

from gradbench import registry
from gradbench.schema import SPECTRUM_COLUMNS
from gradbench.theory.kernel import Phi
from gradbench.theory.length_map import Q_HUGE, Q_TINY
from gradbench.theory.orbit import length_orbits
from gradbench.theory.quadrature import D2, length_moments
from gradbench.theory.tables import ActivationTables, Table, tables_for

# v_W of each init family's W W^T: Marchenko-Pastur for i.i.d. entries, a point mass for orthogonal
# ones. A family not listed has no known v_W and a NaN predicted spread.
WEIGHT_SPREAD = {"gaussian": 1.0, "uniform": 1.0, "truncated_normal": 1.0, "orthogonal": 0.0}


def _squared_slope(phi: Phi) -> Phi:
    """phi with its slope squared: `length_moments`'s E[slope^2] column then reads E[phi'^4]."""

    def fourth(u):
        value, slope = phi(u)
        return value, slope * slope

    return fourth


def slope_moments(tables: ActivationTables, q: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """mu_1 = E[phi'^2] and mu_2 = E[phi'^4] at z ~ N(0, q), arrays of q's shape."""
    at = np.clip(np.asarray(q, float).ravel(), Q_TINY, Q_HUGE)  # their limits beyond (length_map)
    fourth = Table(functools.partial(length_moments, _squared_slope(tables.phi)), 3)
    mu_1 = tables.length(at, slice(D2, D2 + 1))[:, 0]
    mu_2 = fourth(at, slice(D2, D2 + 1))[:, 0]
    return mu_1.reshape(np.shape(q)), mu_2.reshape(np.shape(q))


def predict_spectrum(activation, init_family, sigma_w2, sigma_b2, depth) -> dict[str, np.ndarray]:
    """The predicted log10 m1 and spread v of J J^T for each config (1-D arrays of one length).

    `activation` holds registry names and `init_family` family names; an unknown family gets a NaN
    spread (its mean is predicted: it depends only on Var(W_ij)).

    Returns:
        {"predicted_log10_jacobian_sv2_mean": ..., "predicted_jacobian_sv2_spread": ...}.
    """
    activation = np.asarray(activation, object)
    sigma_w2, sigma_b2 = np.asarray(sigma_w2, float), np.asarray(sigma_b2, float)
    depth = np.asarray(depth, int)
    log10_mean, spread = np.full(activation.size, np.nan), np.full(activation.size, np.nan)
    names = sorted(set(activation))
    for name, tables in zip(
        names, tables_for([registry.ACTIVATIONS[n] for n in names]), strict=True
    ):
        rows = np.flatnonzero(activation == name)
        pairs, pair_of = np.unique(
            np.stack([sigma_w2[rows], sigma_b2[rows]], axis=1), axis=0, return_inverse=True
        )
        homogeneous = registry.ACTIVATIONS[name].homogeneous
        q = length_orbits(tables, homogeneous, pairs[:, 0], pairs[:, 1], int(depth[rows].max()))
        mu_1, mu_2 = slope_moments(tables, q)
        with np.errstate(divide="ignore", invalid="ignore"):
            log_gain = np.cumsum(np.log(pairs[:, :1] * mu_1), axis=1)
            excess = np.cumsum(mu_2 / mu_1**2 - 1.0, axis=1)
        layer = depth[rows] - 1
        log10_mean[rows] = log_gain[pair_of.ravel(), layer] / math.log(10.0)
        spread[rows] = excess[pair_of.ravel(), layer]
    weights = pd.Series(np.asarray(init_family, object)).map(WEIGHT_SPREAD).to_numpy(float)
    mean_column, spread_column = SPECTRUM_COLUMNS
    return {mean_column: log10_mean, spread_column: spread + depth * weights}
