"""Mean-field theory against independent truth: closed forms, plain float64 iterations, scalars."""

import json
import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from gradbench import theory
from gradbench.errors import SpecError
from gradbench.registry import ACTIVATIONS
from gradbench.theory import kernel, quadrature


def Phi(x):  # noqa: N802 - the standard normal CDF, from the standard library
    return 0.5 * (1.0 + math.erf(x / math.sqrt(2.0)))


def phi(x):
    return math.exp(-x * x / 2.0) / math.sqrt(2.0 * math.pi)


def elementwise(name):
    """The module's (phi, phi') of a registered activation."""
    return kernel.elementwise((ACTIVATIONS[name].fn,), 0)


def moments(name, q):
    """(E[phi^2], dE[phi^2]/dq, E[phi'^2]) at u = sqrt(q) z by the module's 1-D quadrature."""
    return tuple(float(m) for m in quadrature.length_moments(elementwise(name), np.array([q]))[0])


def bivariate(name, q, c):
    """(E[phi(u_1) phi(u_2)], E[phi'(u_1) phi'(u_2)]) by the module's 2-D quadrature."""
    both = quadrature.bivariate_moments(elementwise(name), np.array([q]), np.array([c]))
    return tuple(float(m[0]) for m in both)


# --- quadrature against closed forms -------------------------------------------------------------


def closed_forms(name, q):
    """(E[phi(u)^2], E[phi'(u)^2]) for u ~ N(0, q), from elementary integrals."""
    s = math.sqrt(q)
    if name == "relu":
        return q / 2, 0.5
    if name == "leaky_relu":
        return q * (1 + 0.01**2) / 2, (1 + 0.01**2) / 2
    if name == "linear":
        return q, 1.0
    if name == "hard_tanh":  # E[u^2; |u| < 1] + P(|u| > 1)
        t = 1 / s
        return q * (2 * Phi(t) - 1 - 2 * t * phi(t)) + 2 * (1 - Phi(t)), 2 * Phi(t) - 1
    if name == "relu6":  # E[u^2; 0 < u < 6] + 36 P(u > 6)
        t = 6 / s
        return q * (Phi(t) - 0.5 - t * phi(t)) + 36 * (1 - Phi(t)), Phi(t) - 0.5
    if (
        name == "erf"
    ):  # E[erf(a z)^2] = (2/pi) arcsin(2a^2 / (1 + 2a^2)), erf' = 2/sqrt(pi) e^{-u^2}
        return 2 / math.pi * math.asin(2 * q / (1 + 2 * q)), 4 / math.pi / math.sqrt(1 + 4 * q)
    raise KeyError(name)


@pytest.mark.parametrize("name", ["relu", "leaky_relu", "linear", "hard_tanh", "relu6", "erf"])
@pytest.mark.parametrize("q", [1e-4, 0.01, 0.3, 1.0, 2.7, 10.0, 50.0, 1e3])
def test_one_dimensional_quadrature_matches_closed_forms(name, q):
    second, slope_sq = closed_forms(name, q)
    m2, _, d2 = moments(name, q)
    assert m2 == pytest.approx(second, rel=1e-8, abs=1e-300)
    assert d2 == pytest.approx(slope_sq, rel=1e-8)


@pytest.mark.parametrize("q", [1e-3, 0.5, 4.0, 100.0])
def test_length_map_slope_is_the_derivative_of_the_second_moment(q):
    # dE[phi^2]/dq = E[z phi phi'] / sqrt(q): relu 1/2 exactly; tanh against a central difference.
    assert moments("relu", q)[1] == pytest.approx(0.5, rel=1e-10)
    h = 1e-4 * q
    numeric = (moments("tanh", q + h)[0] - moments("tanh", q - h)[0]) / (2 * h)
    assert moments("tanh", q)[1] == pytest.approx(numeric, rel=1e-6)


@pytest.mark.parametrize("q", [0.3, 2.0, 10.0])
@pytest.mark.parametrize("c", [0.0, 0.5, 0.99, 0.9999])
def test_two_dimensional_quadrature_matches_closed_forms(q, c):
    # arc-cosine kernel for relu; Williams' arcsine kernel for erf.
    relu = q / (2 * math.pi) * (math.sqrt(1 - c * c) + (math.pi - math.acos(c)) * c)
    relu_prime = (math.pi - math.acos(c)) / (2 * math.pi)
    erf = 2 / math.pi * math.asin(2 * q * c / (1 + 2 * q))
    erf_prime = 4 / math.pi / math.sqrt((1 + 2 * q) ** 2 - (2 * q * c) ** 2)
    assert bivariate("relu", q, c) == pytest.approx((relu, relu_prime), rel=1e-7)
    assert bivariate("erf", q, c) == pytest.approx((erf, erf_prime), rel=1e-7, abs=1e-9)


# --- chi_1 and q* --------------------------------------------------------------------------------


def test_homogeneous_chi1_does_not_depend_on_q():
    sw2 = np.array([0.5, 1.0, 1.9, 2.0, 3.0, 7.0])
    for sb2 in [0.0, 0.05, 1.0]:  # q* from 0 through finite to inf
        np.testing.assert_allclose(theory.chi1("relu", sw2, sb2), sw2 / 2, rtol=1e-12)
        np.testing.assert_allclose(theory.chi1("linear", sw2, sb2), sw2, rtol=1e-12)
        np.testing.assert_allclose(
            theory.chi1("leaky_relu", sw2, sb2), sw2 * 1.0001 / 2, rtol=1e-12
        )
    for q in [1e-3, 0.2, 5.0, 400.0]:
        assert moments("relu", q)[2] == pytest.approx(0.5, rel=1e-12)


def test_relu_fixed_points_in_closed_form():
    # V(q) = sigma_w^2 q / 2 + sigma_b^2.
    assert theory.q_star("relu", 1.5, 0.1) == pytest.approx(0.1 / (1 - 0.75), rel=1e-12)
    assert theory.q_star("relu", 1.5, 0.0) == 0.0
    assert theory.q_star("relu", 2.0, 0.0) == pytest.approx(2.0)  # marginal: stays at q_1
    for sw2, sb2 in [(3.0, 0.0), (3.0, 0.5), (2.0, 0.05), (2.5, 0.0)]:
        assert theory.q_star("relu", sw2, sb2) == np.inf


def test_no_fixed_point_is_reported_not_garbage():
    mf = theory.mean_field("relu", 3.0, 0.0)
    assert mf.q_star == np.inf and mf.q_status == "infinite"
    assert mf.chi1 == pytest.approx(1.5, rel=1e-12)
    assert mf.length_slope == pytest.approx(1.5, rel=1e-12)
    assert mf.xi_grad == pytest.approx(-1 / math.log(1.5))  # negative: gradients explode
    assert mf.xi_c == np.inf and mf.c_star == 1.0  # correlations approach 1 only algebraically
    assert mf.phase == "chaotic"
    # A non-homogeneous activation that grows linearly: the q -> inf limit of chi_1 (1e-8).
    gelu = theory.mean_field("gelu", 3.0, 0.05)
    assert gelu.q_status == "infinite" and gelu.chi1 == pytest.approx(1.5, rel=1e-7)
    zero = theory.mean_field("tanh", 0.5, 0.0)
    assert zero.q_star == 0.0 and zero.q_status == "zero"
    assert zero.chi1 == pytest.approx(0.5, rel=1e-10)  # sigma_w^2 tanh'(0)^2
    assert zero.xi_grad == pytest.approx(-1 / math.log(0.5), rel=1e-9)


def python_q_star(f, sigma_w2, sigma_b2, points):
    """Iterates the length map from q_1 = sigma_w2 + sigma_b2 with the trapezoid rule on [-12, 12].

    The trapezoid rule converges geometrically for smooth integrands and as h^2 across a kink.
    """
    z = np.linspace(-12.0, 12.0, points)
    weight = np.exp(-(z**2) / 2) * (z[1] - z[0]) / math.sqrt(2 * math.pi)
    q = sigma_w2 + sigma_b2
    for _ in range(3000):
        new = sigma_w2 * float(np.sum(weight * f(math.sqrt(q) * z) ** 2)) + sigma_b2
        if abs(new - q) <= 1e-14 * new:
            return new
        q = new
    raise AssertionError("the length map did not converge")


@pytest.mark.parametrize(
    "name, f, points",
    [
        ("tanh", np.tanh, 24_001),
        ("sigmoid", lambda u: 1 / (1 + np.exp(-u)), 24_001),
        ("relu6", lambda u: np.clip(u, 0, 6), 480_001),
    ],
)
def test_q_star_matches_a_plain_iteration(name, f, points):
    sw2 = np.array([0.7, 1.3, 2.5, 4.0])
    sb2 = np.array([0.3, 0.05, 0.1, 1.0])
    expected = [python_q_star(f, a, b, points) for a, b in zip(sw2, sb2, strict=True)]
    np.testing.assert_allclose(theory.q_star(name, sw2, sb2), expected, rtol=2e-9)


def test_tanh_values_used_by_the_measurement_tests():
    assert theory.chi1("tanh", 1.0, 0.05) == pytest.approx(0.759, abs=5e-4)
    assert theory.chi1("tanh", 2.5, 0.05) == pytest.approx(1.134, abs=5e-4)


def test_callable_activation_matches_the_registry():
    def my_tanh(x):
        return jnp.tanh(x)

    for quantity in (theory.q_star, theory.chi1):
        assert quantity(my_tanh, 2.0, 0.1) == pytest.approx(quantity("tanh", 2.0, 0.1), rel=1e-12)


# --- correlation map -----------------------------------------------------------------------------


def test_erf_correlation_fixed_point_matches_closed_form_maps():
    # Williams' kernel gives the erf maps in closed form: solve them by iteration and bisection.
    for sw2, sb2 in [(2.5, 0.05), (3.0, 0.5), (4.0, 0.0), (1.2, 0.01)]:
        q = sw2 + sb2
        for _ in range(5000):
            q = sw2 * 2 / math.pi * math.asin(2 * q / (1 + 2 * q)) + sb2

        def gap(c, q=q, sw2=sw2, sb2=sb2):
            return (sw2 * 2 / math.pi * math.asin(2 * q * c / (1 + 2 * q)) + sb2) / q - c

        lo, hi = 0.0, 1.0 - 1e-9  # gap(lo) >= 0 > gap(hi) in the chaotic phase
        for _ in range(100):
            mid = (lo + hi) / 2
            lo, hi = (mid, hi) if gap(mid) > 0 else (lo, mid)
        c_star = lo
        chi_c = sw2 * 4 / math.pi / math.sqrt((1 + 2 * q) ** 2 - (2 * q * c_star) ** 2)
        mf = theory.mean_field("erf", sw2, sb2)
        assert mf.phase == "chaotic"
        assert mf.q_star == pytest.approx(q, rel=1e-10)
        # 2-D quadrature errors of ~1e-9 in C move c* by that over 1 - chi_c (0.018 at (1.2, 0.01)).
        assert abs(gap(mf.c_star)) < 1e-8
        assert mf.c_star == pytest.approx(c_star, abs=1e-6)
        assert mf.chi_c == pytest.approx(chi_c, rel=1e-6)
        assert mf.xi_c == pytest.approx(-1 / math.log(chi_c), rel=1e-4)


def erf_maps_solved(sw2, sb2):
    """(q*, c*, chi_c) of erf from its closed-form maps, by bisection (vectorised)."""

    def bisect(gap, lo, hi):  # gap(lo) > 0 >= gap(hi)
        for _ in range(200):
            mid = (lo + hi) / 2
            lo, hi = np.where(gap(mid) > 0, mid, lo), np.where(gap(mid) > 0, hi, mid)
        return (lo + hi) / 2

    def length(q):
        return sw2 * 2 / np.pi * np.arcsin(2 * q / (1 + 2 * q)) + sb2 - q

    q = bisect(length, np.full(sw2.shape, 1e-12), np.full(sw2.shape, 1e3))  # concave: one root

    def correlation(c):
        return (sw2 * 2 / np.pi * np.arcsin(2 * q * c / (1 + 2 * q)) + sb2) / q - c

    c = bisect(correlation, np.zeros(sw2.shape), np.full(sw2.shape, 1.0 - 1e-13))
    return q, c, sw2 * 4 / np.pi / np.sqrt((1 + 2 * q) ** 2 - (2 * q * c) ** 2)


def test_erf_correlation_fixed_points_match_closed_forms_on_many_pairs():
    # From the ordered phase across the edge of chaos (near it c* is ill-conditioned, chi_c not).
    rng = np.random.default_rng(11)
    sw2, sb2 = rng.uniform(0.5, 5.0, 400), rng.choice([0.0, 0.01, 0.05, 0.2, 0.5, 1.0], 400)
    mf = theory.mean_field("erf", sw2, sb2)
    chaotic = (mf.phase == "chaotic") & (mf.q_status == "finite")
    assert chaotic.sum() > 200
    q, c, chi_c = erf_maps_solved(sw2[chaotic], sb2[chaotic])
    np.testing.assert_allclose(mf.q_star[chaotic], q, rtol=1e-9)
    np.testing.assert_allclose(mf.chi_c[chaotic], chi_c, rtol=0, atol=1e-8)
    clear = chi_c < 0.99
    np.testing.assert_allclose(mf.c_star[chaotic][clear], c[clear], rtol=0, atol=1e-9)


def test_ordered_phase_has_c_star_one_and_xi_c_equal_to_xi_grad():
    mf = theory.mean_field("tanh", 1.0, 0.05)
    assert mf.phase == "ordered" and mf.c_star == 1.0
    assert mf.chi_c == mf.chi1 and mf.xi_c == mf.xi_grad > 0
    assert mf.xi_q == pytest.approx(-1 / math.log(mf.length_slope))


def test_odd_activation_without_bias_has_c_star_zero():
    # C(0) = sigma_b^2 / q* + sigma_w^2 E[phi]^2 / q* = 0, and chi_c = sigma_w^2 E[phi']^2.
    mf = theory.mean_field("tanh", 2.0, 0.0)
    assert mf.c_star == pytest.approx(0.0, abs=1e-12)
    z = np.linspace(-12.0, 12.0, 240_001)
    weight = np.exp(-(z**2) / 2) * (z[1] - z[0]) / math.sqrt(2 * math.pi)
    mean_slope = float(np.sum(weight / np.cosh(math.sqrt(mf.q_star) * z) ** 2))
    assert mf.chi_c == pytest.approx(2.0 * mean_slope**2, rel=1e-9)


# --- the edge of chaos ---------------------------------------------------------------------------


def test_tanh_critical_sigma_w2():
    (zero_bias,) = theory.critical_sigma_w2("tanh", 0.0)
    assert zero_bias.sigma_w2 == pytest.approx(1.0, abs=1e-9)
    assert zero_bias.q_status == "zero"
    (with_bias,) = theory.critical_sigma_w2("tanh", 0.05)
    assert f"{with_bias.sigma_w2:.4g}" == "1.761"
    assert with_bias.q_status == "finite" and with_bias.length_slope < 1
    assert with_bias.chaotic_above and "stable" in with_bias.note
    assert theory.chi1("tanh", with_bias.sigma_w2, 0.05) == pytest.approx(1.0, abs=1e-9)


def test_relu_critical_point_and_its_missing_fixed_point():
    (bias,) = theory.critical_sigma_w2("relu", 0.05)
    assert bias.sigma_w2 == pytest.approx(2.0, abs=1e-12)
    assert bias.q_star == np.inf and "unstable" in bias.note
    (no_bias,) = theory.critical_sigma_w2("relu", 0.0)
    assert no_bias.sigma_w2 == pytest.approx(2.0, abs=1e-12) and "marginal" in no_bias.note


# --- vectorisation -------------------------------------------------------------------------------


def test_grid_equals_scalar_calls():
    sw2 = np.linspace(0.05, 5.0, 100)[:, None]
    sb2 = np.linspace(0.0, 0.5, 100)[None, :]
    q = theory.q_star("tanh", sw2, sb2)
    assert q.shape == (100, 100)
    rng = np.random.default_rng(0)
    for i, j in rng.integers(0, 100, size=(12, 2)):
        one = theory.q_star("tanh", sw2[i, 0], sb2[0, j])
        assert q[i, j] == pytest.approx(one, rel=1e-12, abs=1e-300)
    # Every quantity on a coarser grid (its chaotic part needs c*).
    small = theory.mean_field("tanh", sw2[::12], sb2[:, ::12])
    for i, j in rng.integers(0, 9, size=(4, 2)):
        one = theory.mean_field("tanh", sw2[12 * i, 0], sb2[0, 12 * j])
        for field, value in zip(theory.MeanField._fields, one, strict=True):
            got = getattr(small, field)[i, j]
            assert got == value if isinstance(value, str) else got == pytest.approx(value, rel=1e-9)


def backend_compiles(fn):
    """How many XLA compilations `fn()` triggers (jax.monitoring)."""
    durations = []

    def listener(event, duration, **kwargs):
        if event == "/jax/core/compile/backend_compile_duration":
            durations.append(duration)

    jax.monitoring.register_event_duration_secs_listener(listener)
    try:
        fn()
    finally:
        jax.monitoring.unregister_event_duration_listener(listener)
    return len(durations)


def test_later_calls_of_any_size_compile_nothing():
    theory.mean_field("tanh", [0.4, 0.6, 2.5], 0.1)

    def more():  # other sizes, and q far from the first call's: new table panels
        theory.mean_field("tanh", np.linspace(0.3, 3.0, 16), 0.2)
        theory.q_star("tanh", np.geomspace(1e-3, 1e3, 2000), 0.0)
        theory.predict("tanh", 40.0, 7.0, 10)

    assert backend_compiles(more) == 0


def test_predict_vectorises_over_activations_and_depth():
    names = np.array(["tanh", "relu", "tanh", "erf"])
    sw2 = np.array([2.5, 3.0, 1.0, 1.2])
    depth = np.array([[10], [50]])
    out = theory.predict(names, sw2, 0.05, depth)
    ratios = {"predicted_log10_delta_ratio", "fixed_point_log10_delta_ratio"}
    assert set(out) >= {"chi1", "q_star", "xi_c", "xi_grad", *ratios}
    assert out["chi1"].shape == (2, 4)
    for k, name in enumerate(names):
        one = theory.predict(name, sw2[k], 0.05, 10)
        assert out["chi1"][0, k] == pytest.approx(one["chi1"], rel=1e-12)
        assert out["xi_c"][1, k] == pytest.approx(one["xi_c"], rel=1e-9)
        for d, r in zip(depth[:, 0], out["predicted_log10_delta_ratio"][:, k], strict=True):
            assert r == pytest.approx(float(theory.finite_depth(name, sw2[k], 0.05, d)), rel=1e-12)
    np.testing.assert_allclose(
        out["fixed_point_log10_delta_ratio"], (depth - 1) * np.log10(out["chi1"]) / 2
    )
    relu = 49 * math.log10(1.5) / 2  # homogeneous: chi(q) = sigma_w^2 / 2 at every layer
    assert out["fixed_point_log10_delta_ratio"][1, 1] == pytest.approx(relu)
    assert out["predicted_log10_delta_ratio"][1, 1] == pytest.approx(relu)


# --- describe and input errors -------------------------------------------------------------------


def test_describe_is_plain_data_and_formats():
    d = theory.describe("tanh", sigma_b2=0.05, sigma_w2=2.5)
    json.loads(json.dumps(d))
    assert d["activation"] == "tanh" and d["phase"] == "chaotic"
    assert d["chi1"] == pytest.approx(1.134, abs=5e-4)
    assert [round(p["sigma_w2"], 3) for p in d["critical"]] == [1.761]
    text = theory.format_description(d)
    assert "1.76095" in text and "xi_c" in text and "chaotic" in text
    bare = theory.describe("sigmoid")
    assert bare["sigma_w2"] is None and bare["chi1"] is None
    assert [p["sigma_w2"] > 100 for p in bare["critical"]] == [True]  # beyond the old 100 cap


def test_bad_inputs_are_spec_errors():
    with pytest.raises(SpecError, match="sigma_w2"):
        theory.q_star("tanh", -1.0, 0.0)
    with pytest.raises(SpecError, match="sigma_b2"):
        theory.chi1("tanh", 1.0, float("nan"))
    with pytest.raises(SpecError, match="activation"):
        theory.q_star("no_such_activation", 1.0, 0.0)


def test_q_star_is_the_fixed_point_the_orbit_reaches_not_one_beyond_it():
    """silu at (1.9995, 0.5): V(q) < q only on a short stretch above q* = 5.06, and V(q) > q again
    before 4 q_1; q* is where the orbit q_{l+1} = V(q_l) settles (iterated here in plain NumPy)."""
    z, w = np.polynomial.hermite_e.hermegauss(200)
    w = w / w.sum()

    def length_map(q):
        u = np.sqrt(q) * z
        return 1.9995 * np.sum(w * (u / (1 + np.exp(-u))) ** 2) + 0.5

    q = 1.9995 + 0.5
    for _ in range(5000):
        q = length_map(q)
    assert theory.q_star("silu", 1.9995, 0.5) == pytest.approx(q, rel=1e-6)
