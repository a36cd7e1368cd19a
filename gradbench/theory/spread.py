"""The exact finite-width law of r for ReLU networks with Gaussian weights, no bias and one input.

Mean-field theory gives r = log10(||delta_1|| / ||delta_L||) of the infinitely wide network. At width
n every draw is a different network, and for phi = relu, W_ij ~ N(0, sigma_w^2 / n), sigma_b^2 = 0
and one input the law of r is known exactly: each layer multiplies ||delta||^2 by

    ||delta_l||^2 / ||delta_{l+1}||^2 = (sigma_w^2 / n) chi^2_{K_l},    K_l ~ Binomial(n, 1/2),

the number of units of layer l that are on, with all the chi^2 and K_l independent (Hanin 2018;
Hanin & Nica 2019). So r is a sum of L - 1 independent copies of t = (1/2) log10((sigma_w^2 / n)
chi^2_K), and with E[ln chi^2_k] = ln 2 + psi(k / 2), Var[ln chi^2_k] = psi'(k / 2):

    E[t] = (log10(sigma_w^2 / n) + E_K[ln 2 + psi(K / 2)] / ln 10) / 2,
    Var[t] = (E_K[psi'(K / 2)] + Var_K[psi(K / 2)]) / (2 ln 10)^2,
    E[r] = (L - 1) E[t],    sd(r) = sqrt(L - 1) sd(t).

E[t] lies below the mean-field (1/2) log10(sigma_w^2 / 2) by O(1 / n) (Jensen), so over many layers
the finite-width mean drifts away from the mean-field r. K = 0 (probability 2^-n) switches every unit
off and loses the signal (r = -inf, which the measurement flags): the law is that of networks with
K_l >= 1 in every layer. The derivation needs a gradient entering the top that does not depend on the
network: the probe loss, not mse (whose dJ/dy = y - t leans toward the forward signal).
"""

from __future__ import annotations

import math
from typing import NamedTuple

import numpy as np

from gradbench.errors import SpecError

_LN10 = math.log(10.0)
_WINDOW = 20.0  # K further than this many sqrt(n) from n / 2 has weight below e^-800


_SHIFT = 16.0  # psi and psi' step x up to here before their asymptotic series (terms left < 1e-17)
# The series in powers of 1/x^2: psi subtracts B_2k / (2k x^2k), psi' adds 1/x and B_2k / x^(2k + 1).
_PSI = np.array([1 / 12, -1 / 120, 1 / 252, -1 / 240, 1 / 132, -691 / 32760])
_PSI1 = np.array([1.0, 1 / 6, -1 / 30, 1 / 42, -1 / 30, 5 / 66, -691 / 2730])


def _shifted(x):
    """(x shifted up to >= _SHIFT by steps of 1, sum of 1/x and sum of 1/x^2 over the steps)."""
    x = np.array(x, float)
    inverse, inverse_square = np.zeros(x.shape), np.zeros(x.shape)
    for _ in range(int(_SHIFT)):  # x >= 1/2 here: K >= 1
        small = x < _SHIFT
        inverse += np.where(small, 1.0 / x, 0.0)
        inverse_square += np.where(small, 1.0 / (x * x), 0.0)
        x = np.where(small, x + 1.0, x)
    return x, inverse, inverse_square


def _digamma_trigamma(x) -> tuple[np.ndarray, np.ndarray]:
    """psi(x) and psi'(x) for x >= 1/2: psi(x + 1) = psi(x) + 1/x, psi'(x + 1) = psi'(x) - 1/x^2, then
    the asymptotic series in Bernoulli numbers."""
    x, inverse, inverse_square = _shifted(x)
    s = 1.0 / (x * x)
    psi = np.log(x) - 0.5 / x - np.polynomial.polynomial.polyval(s, _PSI) * s
    psi1 = 0.5 * s + np.polynomial.polynomial.polyval(s, _PSI1) / x
    return psi - inverse, psi1 + inverse_square


def _per_layer(width: int) -> tuple[float, float]:
    """E[(1/2) log10 chi^2_K] and Var[(1/2) log10 chi^2_K], K ~ Binomial(width, 1/2) given K >= 1."""
    half = _WINDOW * math.sqrt(width) + 1.0
    k = np.arange(max(1, math.floor(width / 2 - half)), min(width, math.ceil(width / 2 + half)) + 1)
    # Binomial weights up to a constant: ln C(n, k + 1) - ln C(n, k) = ln((n - k) / (k + 1)).
    log_weight = np.concatenate([[0.0], np.cumsum(np.log((width - k[:-1]) / (k[:-1] + 1.0)))])
    weight = np.exp(log_weight - log_weight.max())
    weight /= weight.sum()
    psi, psi1 = _digamma_trigamma(k / 2.0)
    mean_ln = math.log(2.0) + psi  # E[ln chi^2_k]
    mean = float(weight @ mean_ln)
    variance = float(weight @ (psi1 + (mean_ln - mean) ** 2))  # E[Var | K] + Var[E | K]
    return mean / (2.0 * _LN10), variance / (2.0 * _LN10) ** 2


def _whole(a: np.ndarray) -> np.ndarray:
    return np.isfinite(a) & (a >= 1) & (a == np.round(a))


class FiniteWidth(NamedTuple):
    """The law of r over draws of a finite-width ReLU network (`relu_finite_width`)."""

    mean: np.ndarray  # E[r]
    sd: np.ndarray  # its standard deviation over draws


def relu_finite_width(sigma_w2, width, depth) -> FiniteWidth:
    """Mean and standard deviation of r = log10(||delta_1|| / ||delta_L||) over draws of a ReLU
    network of this width and depth, Gaussian weights of scale sigma_w2, no bias, one input and the
    probe loss (see the module docstring). Arrays broadcast together; numpy scalars for scalars.

    References:
        Hanin (2018). Which neural net architectures give rise to exploding and vanishing
            gradients? NeurIPS. arXiv:1801.03744.
        Hanin, Nica (2019). Products of many large random matrices and gradients in deep neural
            networks. Commun. Math. Phys. arXiv:1812.05994.
    """
    sw2, n, d = np.broadcast_arrays(*(np.asarray(a, float) for a in (sigma_w2, width, depth)))
    for name, a, ok, allowed in (
        ("sigma_w2", sw2, np.isfinite(sw2) & (sw2 > 0), "finite values > 0"),
        ("width", n, _whole(n), "integers >= 1"),
        ("depth", d, _whole(d), "integers >= 1"),
    ):
        if not ok.all():
            raise SpecError(f"`theory` {name}", a[~ok][0], allowed)
    widths, inverse = np.unique(n, return_inverse=True)
    per_layer = np.array([_per_layer(int(w)) for w in widths]).reshape(-1, 2)
    mean_t, var_t = (per_layer[inverse.reshape(n.shape), i] for i in (0, 1))
    mean = (d - 1.0) * (0.5 * np.log10(sw2 / n) + mean_t)
    return FiniteWidth(mean[()], np.sqrt((d - 1.0) * var_t)[()])


def law_applies(activation, init_family, sigma_b2, batch, loss) -> np.ndarray:
    """Where `relu_finite_width` is the exact law: relu, Gaussian weights, sigma_b^2 = 0, batch 1 and
    the probe loss (config columns, as arrays of one length)."""
    return (
        (np.asarray(activation) == "relu")
        & (np.asarray(init_family) == "gaussian")
        & (np.asarray(sigma_b2, float) == 0.0)
        & (np.asarray(batch) == 1)
        & (np.asarray(loss) == "probe")
    )
