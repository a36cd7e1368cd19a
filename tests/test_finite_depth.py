"""The finite-depth mean field and the finite-width law of r against independent references: a plain
NumPy iteration of the length map with its own Gauss-Hermite quadrature, a measured network, and a
Monte Carlo of explicit NumPy ReLU networks."""

import math

import numpy as np
import pytest

from gradbench import theory
from gradbench.errors import SpecError
from gradbench.pipeline import run
from gradbench.sweep import spec as spec_module

# Gauss-Hermite for E[f(z)], z ~ N(0, 1); for the activations below within 1e-10 of the integrals
# at q ~ 1, 4e-8 at q = 4.3 (tanh, where sqrt(q) z saturates).
NODES, WEIGHTS = np.polynomial.hermite_e.hermegauss(300)
WEIGHTS = WEIGHTS / math.sqrt(2 * math.pi)
_erf = np.frompyfunc(math.erf, 1, 1)


def erf(u):
    return _erf(u).astype(float)


def normal_cdf(u):
    return 0.5 * (1 + erf(u / math.sqrt(2)))


def sigmoid(u):
    return 1 / (1 + np.exp(-u))


# phi and phi', written out in NumPy.
ACTIVATIONS = {
    "tanh": (np.tanh, lambda u: 1 - np.tanh(u) ** 2),
    "gelu": (
        lambda u: u * normal_cdf(u),
        lambda u: normal_cdf(u) + u * np.exp(-(u**2) / 2) / math.sqrt(2 * math.pi),
    ),
    "erf": (erf, lambda u: 2 / math.sqrt(math.pi) * np.exp(-(u**2))),
    "sigmoid": (sigmoid, lambda u: sigmoid(u) * (1 - sigmoid(u))),
    "softplus": (lambda u: np.logaddexp(0, u), sigmoid),
}


def expectation(f, q):
    return float(WEIGHTS @ f(math.sqrt(q) * NODES))


def reference_orbit(name, sigma_w2, sigma_b2, depth):
    """q_l and chi_l, l = 1..depth, iterated layer by layer from q_1 = sigma_w2 + sigma_b2."""
    phi, slope = ACTIVATIONS[name]
    q, qs, chis = sigma_w2 + sigma_b2, [], []
    for _ in range(depth):
        qs.append(q)
        chis.append(sigma_w2 * expectation(lambda u: slope(u) ** 2, q))
        q = sigma_w2 * expectation(lambda u: phi(u) ** 2, q) + sigma_b2
    return np.array(qs), np.array(chis)


def reference_ratio(name, sigma_w2, sigma_b2, depth):
    """r = (1/2) sum_{l=1}^{L-1} log10 chi_l."""
    return float(np.sum(np.log10(reference_orbit(name, sigma_w2, sigma_b2, depth)[1][:-1])) / 2)


CASES = [
    ("gelu", 2.0, 0.0, [1, 2, 10, 40]),  # He init: q* = 0, q_l decays geometrically
    ("gelu", 1.0, 0.0, [60]),
    ("tanh", 1.0, 0.0, [5, 300]),  # q* = 0 approached as a power law
    ("tanh", 0.9, 0.0, [300]),  # q* = 0, slowly (V'(0) = 0.9)
    ("tanh", 1.5, 0.0, [100]),  # finite q* without bias
    ("tanh", 1.0, 0.05, [64]),  # ordered
    ("tanh", 2.5, 0.05, [3, 64]),  # chaotic
    ("tanh", 4.0, 0.3, [64]),  # chaotic
    ("erf", 3.0, 0.1, [50]),  # chaotic
    ("sigmoid", 4.0, 0.1, [50]),
    ("softplus", 1.5, 0.0, [30]),
]


@pytest.mark.parametrize(("name", "sigma_w2", "sigma_b2", "depths"), CASES)
def test_finite_depth_matches_a_plain_iteration(name, sigma_w2, sigma_b2, depths):
    got = theory.finite_depth(name, sigma_w2, sigma_b2, depths)  # the depths in one call
    for depth, value in zip(depths, got, strict=True):
        expected = reference_ratio(name, sigma_w2, sigma_b2, depth)
        assert value == pytest.approx(expected, rel=1e-8, abs=1e-8), depth
    q, chi = reference_orbit(name, sigma_w2, sigma_b2, depths[-1])
    layers = theory.finite_depth_layers(name, sigma_w2, sigma_b2, depths[-1])
    np.testing.assert_allclose(layers.q, q, rtol=1e-7, atol=1e-300)
    np.testing.assert_allclose(layers.chi, chi, rtol=1e-7)
    assert layers.log10_delta_ratio == pytest.approx(got[-1], rel=1e-9, abs=1e-10)


def test_many_configurations_at_once_equal_each_alone():
    sigma_w2 = np.array([0.6, 1.0, 1.0, 2.5, 3.5, 0.6])
    sigma_b2 = np.array([0.0, 0.0, 0.1, 0.05, 0.0, 0.0])
    depth = np.array([[1], [7], [400]])
    together = theory.finite_depth("tanh", sigma_w2, sigma_b2, depth)
    assert together.shape == (3, 6)
    for (i, k), value in np.ndenumerate(together):
        alone = theory.finite_depth("tanh", sigma_w2[k], sigma_b2[k], int(depth[i, 0]))
        assert value == pytest.approx(float(alone), rel=1e-12, abs=1e-13)
    assert (together[0] == 0).all()  # one layer: r = 0


@pytest.mark.parametrize("name", ["gelu", "softplus"])
@pytest.mark.parametrize("sigma_w2", [0.3, 1.0])
def test_an_orbit_that_starts_at_q_star_is_the_fixed_point_prediction(name, sigma_w2):
    """sigma_b^2 = q0 - sigma_w^2 with E[phi(sqrt(q0) z)^2] = 1 (bisection on the reference
    quadrature) makes q_1 = sigma_w^2 + sigma_b^2 = q0 a fixed point: every layer sits at q*."""
    phi = ACTIVATIONS[name][0]
    lo, hi = 0.1, 10.0
    for _ in range(60):
        mid = (lo + hi) / 2
        lo, hi = (mid, hi) if expectation(lambda u: phi(u) ** 2, mid) < 1 else (lo, mid)
    q0 = (lo + hi) / 2
    predicted = theory.predict(name, sigma_w2, q0 - sigma_w2, [2, 50, 5000])
    assert float(theory.q_star(name, sigma_w2, q0 - sigma_w2)) == pytest.approx(q0, rel=1e-9)
    np.testing.assert_allclose(
        predicted["predicted_log10_delta_ratio"],
        predicted["fixed_point_log10_delta_ratio"],
        rtol=1e-9,
        atol=1e-12,
    )
    layers = theory.finite_depth_layers(name, sigma_w2, q0 - sigma_w2, 50)
    np.testing.assert_allclose(layers.q, q0, rtol=1e-9)


@pytest.mark.parametrize(
    ("name", "sigma_w2", "sigma_b2"),
    [("tanh", 2.5, 0.05), ("gelu", 4.0, 0.0), ("softplus", 2.5, 0.0), ("tanh", 0.8, 0.0)],
)
def test_deep_layers_add_log10_chi1_each(name, sigma_w2, sigma_b2):
    """Past the transient, including q_l -> inf (gelu, softplus) and q_l -> 0 (tanh), each layer
    adds log10(chi_1) / 2; the difference from the fixed-point prediction stays what the transient
    made it."""
    chi1 = float(theory.chi1(name, sigma_w2, sigma_b2))
    r = theory.finite_depth(name, sigma_w2, sigma_b2, [200, 1200])
    assert r[1] - r[0] == pytest.approx(1000 * math.log10(chi1) / 2, rel=1e-9, abs=1e-9)


def test_homogeneous_activations_have_no_transient():
    """relu and linear: chi(q) = chi_1 at every q, whatever q_l does."""
    for name, sigma_w2, sigma_b2, chi1 in [
        ("relu", 1.5, 0.0, 0.75),
        ("relu", 3.0, 0.2, 1.5),
        ("linear", 0.8, 0.1, 0.8),
    ]:
        r = theory.finite_depth(name, sigma_w2, sigma_b2, 30)
        assert float(r) == pytest.approx(29 * math.log10(chi1) / 2, rel=1e-10)
        layers = theory.finite_depth_layers(name, sigma_w2, sigma_b2, 30)
        q = [sigma_w2 + sigma_b2]
        a = sigma_w2 / 2 if name == "relu" else sigma_w2
        for _ in range(29):
            q.append(a * q[-1] + sigma_b2)
        np.testing.assert_allclose(layers.q, q, rtol=1e-10)


def test_bad_depths_are_spec_errors():
    for depth in (0, 2.5, float("nan")):
        with pytest.raises(SpecError, match="depth"):
            theory.finite_depth("tanh", 1.0, 0.0, depth)
    with pytest.raises(SpecError, match="width"):
        theory.relu_finite_width(2.0, 0, 10)


GELU_AT_HE = """
name = "gelu-he"
seed = 3
[model]
width = 512
batch = 1
[axes]
activation = "gelu"
init = "he"
sigma_b2 = 0.0
depth = 40
replicate = { count = 6 }
"""


@pytest.mark.slow
def test_measured_gelu_at_he_init_follows_the_finite_depth_prediction(tmp_path):
    """q_l falls from 2 toward q* = 0 over the whole network, chi_l with it: the fixed-point r is
    far too negative, the finite-depth one is where the measurement lands."""
    summary = run(
        spec_module.parse(GELU_AT_HE), tmp_path / "run", progress=False, report=False
    ).summary
    measured = summary["log10_delta_ratio"].mean()
    finite_depth = summary["predicted_log10_delta_ratio"].iloc[0]
    fixed_point = summary["fixed_point_log10_delta_ratio"].iloc[0]
    assert finite_depth == pytest.approx(reference_ratio("gelu", 2.0, 0.0, 40), abs=1e-8)
    assert abs(measured - finite_depth) < abs(measured - fixed_point) / 4


def relu_network_ratios(sigma_w2, width, depth, networks, seed):
    """r of explicit ReLU networks (Gaussian weights, no bias, one input, probe loss), in NumPy
    float32 (drawing the weights is most of the cost)."""
    rng = np.random.default_rng(seed)

    def normal(*shape):
        return rng.standard_normal((networks, *shape), np.float32)

    def times(matrices, vectors):
        return (matrices @ vectors[..., None])[..., 0]

    weights = [normal(width, width) * np.float32(math.sqrt(sigma_w2 / width)) for _ in range(depth)]
    h, pre = normal(width), []
    for w in weights:
        pre.append(times(w, h))
        h = np.maximum(pre[-1], 0)
    readout, probe = normal(width, width) / np.float32(math.sqrt(width)), normal(width)
    delta = (pre[-1] > 0) * times(readout.transpose(0, 2, 1), probe)
    top = np.linalg.norm(delta, axis=1)
    for layer in range(depth - 2, -1, -1):
        delta = (pre[layer] > 0) * times(weights[layer + 1].transpose(0, 2, 1), delta)
    return np.log10(np.linalg.norm(delta, axis=1) / top).astype(float)


@pytest.mark.parametrize(("sigma_w2", "width", "depth"), [(2.0, 32, 12), (1.5, 40, 10)])
def test_finite_width_law_matches_explicit_relu_networks(sigma_w2, width, depth):
    networks = 3000
    r = relu_network_ratios(sigma_w2, width, depth, networks, seed=width)
    law = theory.relu_finite_width(sigma_w2, width, depth)
    error_of_mean, error_of_sd = r.std() / math.sqrt(networks), r.std() / math.sqrt(2 * networks)
    assert r.mean() == pytest.approx(float(law.mean), abs=4 * error_of_mean)
    assert r.std() == pytest.approx(float(law.sd), abs=4 * error_of_sd)
    mean_field = (depth - 1) * math.log10(sigma_w2 / 2) / 2
    assert abs(r.mean() - mean_field) > 10 * error_of_mean  # the law's mean is not mean field


def test_finite_width_law_against_scipy():
    """The mixture over K ~ Binomial(n, 1/2) given K >= 1, with SciPy's digamma and trigamma."""
    scipy_special = pytest.importorskip("scipy.special")
    scipy_stats = pytest.importorskip("scipy.stats")
    for width, sigma_w2, depth in [(1, 2.0, 5), (7, 1.0, 3), (64, 2.0, 100), (4096, 3.0, 1000)]:
        k = np.arange(1, width + 1)
        p = scipy_stats.binom.pmf(k, width, 0.5)
        p /= p.sum()
        term = (np.log(2 * sigma_w2 / width) + scipy_special.digamma(k / 2)) / (2 * math.log(10))
        mean = p @ term
        variance = p @ (
            scipy_special.polygamma(1, k / 2) / (2 * math.log(10)) ** 2 + (term - mean) ** 2
        )
        law = theory.relu_finite_width(sigma_w2, width, depth)
        assert float(law.mean) == pytest.approx((depth - 1) * mean, rel=1e-12)
        assert float(law.sd) == pytest.approx(math.sqrt((depth - 1) * variance), rel=1e-12)
