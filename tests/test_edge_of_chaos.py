"""The edge of chaos against independent references, and `gradbench theory --gains`.

The references: closed forms at sigma_b^2 = 0, and for every registered activation a plain NumPy
root finder (q* by iterating the length map from q_1, chi_1 - 1 by bisection) built on NumPy
activations and Gaussian moments of their own: closed forms where phi is piecewise or has them
(erf, gelu), otherwise the trapezoidal rule, which converges geometrically for these analytic
integrands (Gauss-Hermite, by contrast, misses E[sigmoid'(sqrt(q) z)^2] at sigmoid's critical
q* = 46 by 2e-4 with 300 nodes, and numpy's hermegauss overflows beyond about 500).
"""

import functools
import json
import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from gradbench import cli, theory
from gradbench.registry import ACTIVATIONS
from gradbench.theory.text import format_description, format_gains

LEAKY = 0.01  # jax.nn.leaky_relu's default negative slope
SELU_SCALE, SELU_ALPHA = 1.0507009873554804934193349852946, 1.6732632423543772848170429916717
_ERF = np.frompyfunc(math.erf, 1, 1)


def _erf(u):
    return _ERF(u).astype(float)


def _cdf(u):
    return 0.5 * (1.0 + _erf(u / math.sqrt(2.0)))


def _pdf(u):
    return np.exp(-u * u / 2.0) / math.sqrt(2.0 * math.pi)


def _sigmoid(u):
    return 0.5 * (1.0 + np.tanh(u / 2.0))


def _softplus(u):
    return np.maximum(u, 0.0) + np.log1p(np.exp(-np.abs(u)))


def _elu(scale, alpha):
    def phi(u):
        return scale * np.where(u > 0, u, alpha * np.expm1(np.minimum(u, 0.0)))

    def slope(u):
        return scale * np.where(u > 0, 1.0, alpha * np.exp(np.minimum(u, 0.0)))

    return phi, slope


def _gelu_tanh(u):
    k, c = math.sqrt(2.0 / math.pi), 0.044715
    t = np.tanh(k * (u + c * u**3))
    return 0.5 * u * (1 + t), 0.5 * (1 + t) + 0.5 * u * (1 - t * t) * k * (1 + 3 * c * u * u)


def _mish(u):
    t = np.tanh(_softplus(u))
    return u * t, t + u * (1 - t * t) * _sigmoid(u)


def _silu(u):
    s = _sigmoid(u)
    return u * s, s * (1 + u * (1 - s))


# phi and phi' in NumPy, one pair per registered activation.
PHI = {
    "linear": (lambda u: u, np.ones_like),
    "relu": (lambda u: np.maximum(u, 0.0), lambda u: (u > 0) * 1.0),
    "leaky_relu": (
        lambda u: np.where(u > 0, u, LEAKY * u),
        lambda u: np.where(u > 0, 1.0, LEAKY),
    ),
    "tanh": (np.tanh, lambda u: 1.0 - np.tanh(u) ** 2),
    "sigmoid": (_sigmoid, lambda u: _sigmoid(u) * _sigmoid(-u)),
    "erf": (_erf, lambda u: 2.0 / math.sqrt(math.pi) * np.exp(-u * u)),
    "elu": _elu(1.0, 1.0),
    "selu": _elu(SELU_SCALE, SELU_ALPHA),
    "celu": _elu(1.0, 1.0),  # alpha = 1
    "gelu": (lambda u: u * _cdf(u), lambda u: _cdf(u) + u * _pdf(u)),
    "gelu_tanh": (lambda u: _gelu_tanh(u)[0], lambda u: _gelu_tanh(u)[1]),
    "silu": (lambda u: _silu(u)[0], lambda u: _silu(u)[1]),
    "swish": (lambda u: _silu(u)[0], lambda u: _silu(u)[1]),
    "softplus": (_softplus, _sigmoid),
    "softsign": (lambda u: u / (1 + np.abs(u)), lambda u: (1 + np.abs(u)) ** -2.0),
    "relu6": (lambda u: np.clip(u, 0.0, 6.0), lambda u: ((u > 0) & (u < 6)) * 1.0),
    "hard_tanh": (lambda u: np.clip(u, -1.0, 1.0), lambda u: (np.abs(u) < 1) * 1.0),
    "mish": (lambda u: _mish(u)[0], lambda u: _mish(u)[1]),
}


# --- Gaussian moments (E[phi(u)^2], E[phi'(u)^2]), u ~ N(0, q) ----------------------------------

_Z = np.linspace(-10.0, 10.0, 201)  # trapezoidal rule, step 0.1
_W = 0.1 * _pdf(_Z)
_HALF_X, _HALF_W = np.polynomial.legendre.leggauss(200)
_HALF_Z = 6.0 * (_HALF_X + 1.0)  # Gauss-Legendre on z in [0, 12]
_HALF_W = 6.0 * _HALF_W * _pdf(_HALF_Z)


def _Phi(x):  # noqa: N802 - the standard normal CDF of a scalar
    return 0.5 * math.erfc(-x / math.sqrt(2.0)) if math.isfinite(x) else float(x > 0)


def _interval(q, a, b):
    """P(a < u < b) and E[u^2; a < u < b]."""
    s = math.sqrt(q)
    lo, hi = a / s, b / s
    p = _Phi(hi) - _Phi(lo)

    def x_pdf(x):
        return x * math.exp(-x * x / 2) / math.sqrt(2 * math.pi) if math.isfinite(x) else 0.0

    return p, q * (p - (x_pdf(hi) - x_pdf(lo)))


def _exp_below_zero(k, q):
    """E[e^{k u}; u < 0] = e^{k^2 q / 2} Phi(-k sqrt(q)) (its asymptotic series for large k^2 q)."""
    x = k * math.sqrt(q)
    if x > 25:
        return (1 - 1 / x**2 + 3 / x**4) / (x * math.sqrt(2 * math.pi))
    return 0.5 * math.exp(x * x / 2) * math.erfc(x / math.sqrt(2))


def _elu_moments(scale, alpha):
    def moments(q):
        negative = _exp_below_zero(2, q) - 2 * _exp_below_zero(1, q) + 0.5
        return (
            scale**2 * (q / 2 + alpha**2 * negative),
            scale**2 * (0.5 + alpha**2 * _exp_below_zero(2, q)),
        )

    return moments


def _hard_tanh_moments(q):
    p, u2 = _interval(q, -1.0, 1.0)
    return u2 + 1.0 - p, p


def _relu6_moments(q):
    p, u2 = _interval(q, 0.0, 6.0)
    return u2 + 36.0 * (1.0 - _Phi(6.0 / math.sqrt(q))), p


def _gelu_moments(q):
    """By Stein's lemma from E[Phi(u)^2] = 1/4 + asin(q / (1 + q)) / (2 pi)."""
    arc = math.asin(q / (1 + q)) / (2 * math.pi)
    cross = q / (math.pi * (1 + q) * math.sqrt(1 + 2 * q))
    return q / 4 + q * arc + q * cross, 0.25 + arc + cross + q / (2 * math.pi * (1 + 2 * q) ** 1.5)


def _softsign_moments(q):
    """phi^2 and phi'^2 are even and smooth on u >= 0: Gauss-Legendre on the half line."""
    a = math.sqrt(q) * _HALF_Z
    return float(2 * _HALF_W @ (a / (1 + a)) ** 2), float(2 * _HALF_W @ (1 + a) ** -4.0)


def _trapezoid_moments(name):
    phi, slope = PHI[name]

    def moments(q):
        u = math.sqrt(q) * _Z
        return float(_W @ phi(u) ** 2), float(_W @ slope(u) ** 2)

    return moments


MOMENTS = {name: _trapezoid_moments(name) for name in PHI} | {
    "linear": lambda q: (q, 1.0),
    "relu": lambda q: (q / 2, 0.5),
    "leaky_relu": lambda q: ((1 + LEAKY**2) * q / 2, (1 + LEAKY**2) / 2),
    "erf": lambda q: (
        2 / math.pi * math.asin(2 * q / (1 + 2 * q)),
        4 / math.pi / math.sqrt(1 + 4 * q),
    ),
    "gelu": _gelu_moments,
    "elu": _elu_moments(1.0, 1.0),
    "celu": _elu_moments(1.0, 1.0),
    "selu": _elu_moments(SELU_SCALE, SELU_ALPHA),
    "hard_tanh": _hard_tanh_moments,
    "relu6": _relu6_moments,
    "softsign": _softsign_moments,
}


# --- the reference root finder ------------------------------------------------------------------

_Q_HUGE = 1e8  # an orbit past this grows without bound (q* = inf)


def reference_q_star(moments, sigma_w2, sigma_b2):
    """The fixed point the orbit q_1 = sigma_w^2 + sigma_b^2, q_{l+1} = V(q_l) reaches.

    An orbit still rising after 1000 layers with V(p) > p at every p = q 1.1^k up to 1e8 never
    stops (inf); one still moving otherwise is returned where it is (softplus near sigma_w^2 = 2,
    where chi_1 < 1 at any finite q).
    """

    def length_map(q):
        return sigma_w2 * moments(q)[0] + sigma_b2

    q = sigma_w2 + sigma_b2
    for _ in range(1000):
        new = length_map(q)
        if new > _Q_HUGE:
            return math.inf
        if abs(new - q) <= 1e-14 * q:
            return new
        q = new
    probe = q
    while probe < _Q_HUGE and length_map(probe) > probe:
        probe *= 1.1
    return math.inf if probe >= _Q_HUGE else q


def reference_chi1(name, sigma_w2, sigma_b2):
    q = reference_q_star(MOMENTS[name], sigma_w2, sigma_b2)
    if math.isinf(q):  # the large-q limit (phi'(+inf)^2 + phi'(-inf)^2) / 2
        slope = PHI[name][1](np.array([1e3, -1e3]))
        return sigma_w2 * float(np.mean(slope**2))
    return sigma_w2 * MOMENTS[name](q)[1]


@functools.cache
def reference_critical(name, sigma_b2):
    """chi_1 = 1, bracketed from sigma_w^2 = 0.01 up by factors of 4, then bisected in log."""

    def gap(sigma_w2):
        return reference_chi1(name, sigma_w2, sigma_b2) - 1.0

    lo = 1e-2
    assert gap(lo) < 0
    while gap(4 * lo) < 0:
        lo *= 4
        assert lo < 1e6, name
    hi = 4 * lo
    for _ in range(32):  # ln 4 / 2^32 ~ 3e-10
        mid = math.sqrt(lo * hi)
        lo, hi = (mid, hi) if gap(mid) < 0 else (lo, mid)
    return math.sqrt(lo * hi)


def test_reference_activations_are_the_registered_ones():
    """NumPy phi against the registered JAX function, NumPy phi' against a central difference."""
    assert set(PHI) == set(ACTIVATIONS)
    u = np.concatenate([np.linspace(-8, 8, 161) + 0.013, [-40.0, 40.0]])  # off the kinks
    h = 1e-6
    with jax.enable_x64(True):
        for name, (phi, slope) in PHI.items():
            value = np.asarray(ACTIVATIONS[name].fn(jnp.asarray(u)))
            np.testing.assert_allclose(phi(u), value, rtol=1e-12, atol=1e-14, err_msg=name)
            difference = (phi(u + h) - phi(u - h)) / (2 * h)
            np.testing.assert_allclose(slope(u), difference, rtol=1e-7, atol=1e-9, err_msg=name)


def test_reference_moments_agree_with_each_other():
    """The trapezoidal rule against the closed forms, where phi is smooth."""
    for name in ("erf", "gelu"):
        for q in (0.05, 0.7, 9.0):
            np.testing.assert_allclose(
                _trapezoid_moments(name)(q), MOMENTS[name](q), rtol=1e-12, err_msg=name
            )


# --- closed forms at sigma_b^2 = 0 --------------------------------------------------------------

# Where q* = 0 at the edge, chi_1 = sigma_w^2 (phi'(0+)^2 + phi'(0-)^2) / 2 = 1 there.
CLOSED_FORMS = {
    "linear": (1.0, "finite"),  # chi_1 = sigma_w^2; marginal: q* = q_1
    "relu": (2.0, "finite"),
    "leaky_relu": (2.0 / (1.0 + LEAKY**2), "finite"),
    "tanh": (1.0, "zero"),
    "erf": (math.pi / 4.0, "zero"),  # erf'(0) = 2 / sqrt(pi)
    "elu": (1.0, "zero"),
    "celu": (1.0, "zero"),
    "softsign": (1.0, "zero"),
    "hard_tanh": (1.0, "zero"),
    "relu6": (2.0, "zero"),  # phi'(0+) = 1, phi'(0-) = 0
    "selu": (2.0 / (SELU_SCALE**2 * (1.0 + SELU_ALPHA**2)), "zero"),
    # softplus > relu, so V(q) > q for every q once sigma_w^2 >= 2 (q* = inf, chi_1 -> sigma_w^2/2),
    # while E[sigmoid^2] < 1/2 keeps chi_1 < sigma_w^2 / 2 < 1 below.
    "softplus": (2.0, "infinite"),
}


@pytest.mark.parametrize("name", sorted(CLOSED_FORMS))
def test_critical_points_in_closed_form(name):
    expected, status = CLOSED_FORMS[name]
    (point,) = theory.critical_sigma_w2(name, 0.0)
    assert point.sigma_w2 == pytest.approx(expected, rel=1e-7)
    assert point.q_status == status and point.chaotic_above


def test_gelu_edge_without_bias_is_where_q1_is_its_own_fixed_point():
    """sigma_b^2 = 0, 2 < sigma_w^2 < 4: q = 0 is stable (V'(0) = sigma_w^2 / 4) and the orbit from
    q_1 = sigma_w^2 falls to it if E[gelu^2](q_1) < 1 (chi_1 = sigma_w^2 / 4), else grows without
    bound (chi_1 = sigma_w^2 / 2): chi_1 jumps across 1 where E[gelu(sqrt(q) z)^2] = 1."""
    lo, hi = 2.0, 4.0
    for _ in range(60):
        mid = (lo + hi) / 2
        lo, hi = (mid, hi) if _gelu_moments(mid)[0] < 1 else (lo, mid)
    (point,) = theory.critical_sigma_w2("gelu", 0.0)
    assert point.sigma_w2 == pytest.approx(lo, rel=1e-9)
    assert f"jumps from {lo / 4:.4g} to {lo / 2:.4g}" in point.note and point.chaotic_above


# --- the reference root finder, every activation ------------------------------------------------


@pytest.mark.parametrize("sigma_b2", [0.05, 0.5])
@pytest.mark.parametrize("name", sorted(ACTIVATIONS))
def test_critical_point_matches_an_independent_root_finder(name, sigma_b2):
    """Within 1e-6; within 1e-4 where chi_1 jumps across 1 because the orbit's fixed point vanishes
    (a saddle-node: silu at sigma_b^2 = 0.5): just below it V(q) < q only on a stretch narrower than
    the q* search's step, so the edge is found slightly early."""
    (point,) = theory.critical_sigma_w2(name, sigma_b2)
    tolerance = 1e-4 if "jumps" in point.note else 1e-6
    assert point.sigma_w2 == pytest.approx(reference_critical(name, sigma_b2), rel=tolerance)


def test_sigmoid_edge_lies_beyond_the_old_search_range():
    (point,) = theory.critical_sigma_w2("sigmoid", 0.0)
    assert point.sigma_w2 > 100 and point.q_status == "finite"
    assert point.sigma_w2 == pytest.approx(reference_critical("sigmoid", 0.0), rel=1e-6)


def test_chi1_grows_without_bound_at_the_stated_rates():
    """The large-sigma_w^2 laws that end the scan (`gradbench.theory.edge_of_chaos`)."""
    sw2 = 1e8
    saturating = {"sigmoid": (1 / 6, 0.5), "tanh": (4 / 3, 1.0)}  # int phi'^2 du, m
    for name, (area, m) in saturating.items():
        expected = math.sqrt(sw2) * area / math.sqrt(2 * math.pi * m)
        assert theory.chi1(name, sw2, 0.0) == pytest.approx(expected, rel=1e-3), name
    for name, limit in {"gelu": 0.5, "selu": SELU_SCALE**2 / 2, "softplus": 0.5}.items():
        assert theory.chi1(name, sw2, 0.0) == pytest.approx(sw2 * limit, rel=1e-6), name


def test_no_critical_point_without_a_slope():
    def constant(x):
        return 0.0 * x + 1.0

    assert theory.critical_sigma_w2(constant, 0.05) == []  # phi' = 0: chi_1 = 0 everywhere
    assert "none: chi_1 < 1" in format_description(theory.describe(constant))


# --- gradbench theory --gains -------------------------------------------------------------------


def _rows(text):
    """activation -> (gain, sigma_w2, q*) of the first line of each activation in the table."""
    lines = text.split("  activation ", 1)[1].splitlines()[1:]
    rows = {}
    for line in lines:
        cells = line.split()
        if cells and cells[0] in ACTIVATIONS:
            rows[cells[0]] = tuple(float(c) for c in cells[1:4])
    return rows


def test_gains_table(capsys):
    assert cli.main(["theory", "--gains"]) == 0
    rows = _rows(capsys.readouterr().out)
    assert set(rows) == set(ACTIVATIONS)
    for name, (expected, _) in CLOSED_FORMS.items():
        gain, sw2, _ = rows[name]
        assert sw2 == pytest.approx(expected, rel=1e-5) and gain == pytest.approx(
            math.sqrt(expected), rel=1e-5
        )
    assert rows["sigmoid"][1] == pytest.approx(reference_critical("sigmoid", 0.0), rel=1e-5)
    assert rows["tanh"][2] == 0.0 and rows["softplus"][2] == math.inf


def test_gains_json_is_strict(capsys):
    assert cli.main(["theory", "--gains", "--sigma-b2", "0.05", "--json"]) == 0

    def refuse(constant):
        raise AssertionError(f"not strict JSON: {constant}")

    data = json.loads(capsys.readouterr().out, parse_constant=refuse)
    assert data["sigma_b2"] == 0.05
    rows = {row["activation"]: row for row in data["activations"]}
    assert set(rows) == set(ACTIVATIONS)
    for row in rows.values():
        (point,) = row["critical"]
        assert point["gain"] ** 2 == pytest.approx(point["sigma_w2"], rel=1e-12)
        assert row["note"] == ""
    relu = rows["relu"]["critical"][0]
    assert relu["q_star"] == "inf" and relu["q_status"] == "infinite" and "unstable" in relu["note"]
    assert rows["tanh"]["critical"][0]["sigma_w2"] == pytest.approx(
        reference_critical("tanh", 0.05), rel=1e-6
    )


def test_gains_table_marks_several_and_none():
    point = {"sigma_w2": 4.0, "gain": 2.0, "q_star": 1.0, "note": "stable"}
    table = {
        "sigma_b2": 0.0,
        "convention": "gain = sqrt(sigma_w^2)",
        "activations": [
            {"activation": "a", "critical": [point, point], "note": "2 critical points"},
            {"activation": "b", "critical": [], "note": "none: chi_1 < 1"},
        ],
    }
    text = format_gains(table)
    assert "1 of 2: stable" in text and "2 of 2: stable" in text and "none: chi_1 < 1" in text


@pytest.mark.parametrize(
    ("argv", "option"),
    [
        (["--gains", "--activation", "tanh"], "--activation"),
        (["--gains", "--sigma-b2", "nan"], "--sigma-b2"),
        (["--gains", "--sigma-b2", "-1"], "--sigma-b2"),
        ([], "--gains"),
    ],
)
def test_gains_bad_arguments_exit_2(argv, option, capsys):
    with pytest.raises(SystemExit) as info:
        cli.main(["theory", *argv])
    assert info.value.code == 2 and option in capsys.readouterr().err


def test_gains_refuses_sigma_w2(capsys):
    assert cli.main(["theory", "--gains", "--sigma-w2", "2"]) == 2
    assert "--sigma-w2" in capsys.readouterr().err
