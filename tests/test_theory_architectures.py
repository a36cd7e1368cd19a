"""The mean field of residual MLPs and Elman RNNs (`gradbench.theory.residual`, `.recurrent`).

Against NumPy Monte Carlo of the networks themselves (explicit float64 weights, forward and backward
by hand, the backward checked against finite differences), against closed forms where they exist,
and in the theory columns, where MLP rows keep exactly the numbers they had.

Tolerances. r of one draw spreads by sd ~ sqrt((L - 1) / n); the mean over the draws is within 4
standard errors of its expectation. That expectation sits below the infinite-width mean field by
O(u), u = (L - 1) / (2 ln(10) n) (Jensen, and the O(1/n) terms of the norm Jacobians; see
`residual`): measured over 64 draws (n = 256) it is -2.5 u to +0.4 u for the residual cases here,
and -3.4 u to -0.3 u for the nonlinear RNNs (n = 512, T = 32), so the tests allow 4 u besides.
Where the networks' r is exact (the orthogonal linear RNN) the test is draw by draw.
"""

import functools
import math

import numpy as np
import pandas as pd
import pytest

from gradbench import registry, theory
from gradbench.errors import SpecError
from gradbench.schema import THEORY_COLUMNS
from gradbench.theory import recurrent, residual
from gradbench.theory.tables import tables_for

PHI = {
    "relu": (lambda x: np.maximum(x, 0.0), lambda x: (x > 0).astype(float)),
    "tanh": (np.tanh, lambda x: 1.0 - np.tanh(x) ** 2),
    "linear": (lambda x: x, np.ones_like),
}
NETS = 12  # draws per Monte Carlo estimate
BIAS_UNITS = 4.0  # the finite-width allowance, in units of (L - 1) / (2 ln(10) n)


@pytest.fixture(scope="module", autouse=True)
def one_kernel():
    """Every activation used here in one theory kernel: one compilation, not one per test."""
    names = ("relu", "tanh", "linear", "gelu", "erf", "sigmoid", "softplus", "selu", "softsign")
    tables_for([registry.ACTIVATIONS[n] for n in (*names, "hard_tanh")])


def apply(w, x):
    """W x for a stack of networks: w (nets, n, n), x (nets, n)."""
    return (w @ x[..., None])[..., 0]


def apply_t(w, x):
    """W^T x for a stack of networks."""
    return (x[:, None, :] @ w)[:, 0, :]


# --- the reference residual MLP ---------------------------------------------------------------


def normalise(h, norm):
    """N(h), and what its Jacobian needs: the centred input u and its rms s."""
    centred = h - h.mean(-1, keepdims=True) if norm == "layernorm" else h
    scale = np.sqrt(np.mean(centred**2, -1, keepdims=True))
    return centred / scale, (centred, scale)


def normalise_t(v, saved, norm):
    """J_N^T v = (v - [mean v] - u (u . v) / (n s^2)) / s (the mean only for layernorm)."""
    centred, scale = saved
    if norm == "layernorm":
        v = v - v.mean(-1, keepdims=True)
    n = v.shape[-1]
    return (v - centred * np.sum(centred * v, -1, keepdims=True) / (n * scale**2)) / scale


def residual_net(rng, config, width, nets):
    """`nets` draws of the network of `config` (a dict of `predict_residual`'s arguments)."""

    def layer():
        w = rng.standard_normal((nets, width, width)) * math.sqrt(config["sigma_w2"] / width)
        return w, rng.standard_normal((nets, width)) * math.sqrt(config["sigma_b2"])

    return dict(
        config,
        blocks=[[layer() for _ in range(config["branch_layers"])] for _ in range(config["depth"])],
        x=rng.standard_normal((nets, width)),
        readout=rng.standard_normal((nets, width, width)) / math.sqrt(width),
        probe=rng.standard_normal((nets, width)),
    )


def residual_forward(net, nudge=None):
    """J = <u, W_out h_L> per network and what backprop needs; `nudge` = (l, v) adds v to h_l."""
    phi, _ = PHI[net["activation"]]
    norm, pre = net["norm"], net["norm"] != "none" and net["norm_position"] == "pre"
    post = net["norm"] != "none" and net["norm_position"] == "post"
    h, saved = net["x"], []
    for block, branch in enumerate(net["blocks"]):
        if nudge is not None and nudge[0] == block:
            h = h + nudge[1]
        a, pre_saved = normalise(h, norm) if pre else (h, None)
        inputs = []
        for w, b in branch:
            inputs.append(a)
            a = apply(w, phi(a)) + b
        h, post_saved = (
            normalise(h + net["alpha"] * a, norm) if post else (h + net["alpha"] * a, None)
        )
        saved.append((inputs, pre_saved, post_saved))
    h, final = normalise(h, norm) if pre else (h, None)
    return np.sum(net["probe"] * apply(net["readout"], h), -1), (saved, final)


def residual_gradients(net):
    """g_l = dJ/dh_l for l = 0..L, by backprop."""
    _, dphi = PHI[net["activation"]]
    _, (saved, final) = residual_forward(net)
    g = apply_t(net["readout"], net["probe"])
    if final is not None:
        g = normalise_t(g, final, net["norm"])
    grads = [g]
    for branch, (inputs, pre, post) in zip(net["blocks"][::-1], saved[::-1], strict=True):
        if post is not None:
            g = normalise_t(g, post, net["norm"])
        v = g
        for (w, _), a in zip(branch[::-1], inputs[::-1], strict=True):
            v = dphi(a) * apply_t(w, v)
        if pre is not None:
            v = normalise_t(v, pre, net["norm"])
        g = g + net["alpha"] * v
        grads.append(g)
    return grads[::-1]


def residual_ratios(config, width, seed):
    """The measured r = log10(||g_0|| / ||g_{L-1}||) of `NETS` draws."""
    grads = residual_gradients(residual_net(np.random.default_rng(seed), config, width, NETS))
    first, last = (np.linalg.norm(grads[i], axis=-1) for i in (0, config["depth"] - 1))
    return np.log10(first / last)


# --- the reference RNN ------------------------------------------------------------------------


@functools.cache
def unit_weights(family, nets, width):
    """W / sigma_w of `nets` networks: Gaussian entries of variance 1 / width, or Haar orthogonal
    (QR of Gaussians, R's diagonal made positive). One stack that every RNN case scales by its
    sigma_w: batched LAPACK calls are slow where BLAS threads contend for the cores."""
    z = np.random.default_rng(99).standard_normal((nets, width, width))
    if family == "gaussian":
        return z / math.sqrt(width)
    q, r = np.linalg.qr(z)
    return q * np.sign(np.diagonal(r, axis1=1, axis2=2))[:, None, :]


@functools.cache
def unit_singular_values(family, nets, width):
    """s_max(W / sigma_w) of each network of `unit_weights`."""
    return np.linalg.norm(unit_weights(family, nets, width), 2, axis=(1, 2))


def rnn_net(rng, config, width, nets):
    """`nets` draws of the RNN of `config` (`predict_recurrent` arguments), W by `unit_weights`."""
    return dict(
        config,
        w=math.sqrt(config["sigma_w2"]) * unit_weights(config["init_family"], nets, width),
        u=rng.standard_normal((nets, width, width)) * config["input_scale"] / math.sqrt(width),
        b=rng.standard_normal((nets, width)) * math.sqrt(config["sigma_b2"]),
        x=rng.standard_normal((config["depth"], nets, width)),
        readout=rng.standard_normal((nets, width, width)) / math.sqrt(width),
        probe=rng.standard_normal((nets, width)),
    )


def rnn_forward(net, nudge=None):
    """J = <u, W_out h_T> per network and z_1..z_T; `nudge` = (t, v) adds v to z_t."""
    phi, _ = PHI[net["activation"]]
    h, zs = np.zeros_like(net["b"]), []
    for t, x in enumerate(net["x"], start=1):
        z = apply(net["w"], h) + apply(net["u"], x) + net["b"]
        if nudge is not None and nudge[0] == t:
            z = z + nudge[1]
        zs.append(z)
        h = phi(z)
    return np.sum(net["probe"] * apply(net["readout"], h), -1), zs


def rnn_gradients(net):
    """delta_t = dJ/dz_t for t = 1..T, by backprop through time."""
    _, dphi = PHI[net["activation"]]
    _, zs = rnn_forward(net)
    deltas = [dphi(zs[-1]) * apply_t(net["readout"], net["probe"])]
    for z in zs[-2::-1]:
        deltas.append(dphi(z) * apply_t(net["w"], deltas[-1]))
    return deltas[::-1]


def rnn_ratios(net):
    deltas = rnn_gradients(net)
    return np.log10(np.linalg.norm(deltas[0], axis=-1) / np.linalg.norm(deltas[-1], axis=-1))


def finite_differences(forward, net, where, width, step=1e-6):
    """dJ/d(the nudged vector) of the first network by central differences."""
    columns = []
    for e in step * np.eye(width):
        nudge = np.zeros_like(net["probe"])
        nudge[0] = e
        up, down = forward(net, (where, nudge))[0][0], forward(net, (where, -nudge))[0][0]
        columns.append((up - down) / (2 * step))
    return np.array(columns)


@pytest.mark.parametrize(
    ("norm", "position", "layers"),
    [("none", "none", 2), ("layernorm", "pre", 1), ("rmsnorm", "pre", 2), ("layernorm", "post", 2)]
    + [("rmsnorm", "post", 1)],
)
def test_reference_residual_backprop_is_the_gradient(norm, position, layers):
    """The hand-written backward pass against central differences of J (width 8)."""
    config = dict(activation="tanh", sigma_w2=1.5, sigma_b2=0.1, depth=4, branch_layers=layers)
    config |= dict(norm=norm, norm_position=position, alpha=0.7)
    net = residual_net(np.random.default_rng(0), config, 8, 1)
    grads = residual_gradients(net)
    for block in (0, 3):
        reference = finite_differences(residual_forward, net, block, 8)
        np.testing.assert_allclose(grads[block][0], reference, rtol=1e-6, atol=1e-8)


def test_reference_rnn_backprop_is_the_gradient():
    config = dict(activation="tanh", init_family="gaussian", sigma_w2=1.5, sigma_b2=0.1)
    rnn = rnn_net(np.random.default_rng(1), config | dict(input_scale=0.7, depth=5), 8, 1)
    deltas = rnn_gradients(rnn)
    for step in (1, 5):
        reference = finite_differences(rnn_forward, rnn, step, 8)
        np.testing.assert_allclose(deltas[step - 1][0], reference, rtol=1e-6, atol=1e-8)


# --- closed forms -----------------------------------------------------------------------------


_Z = np.linspace(-12.0, 12.0, 4801)  # the trapezoidal rule converges geometrically for analytic f
_Z_WEIGHTS = np.exp(-(_Z**2) / 2) * (_Z[1] - _Z[0]) / math.sqrt(2 * math.pi)


def gaussian_mean(f, q):
    """E[f(sqrt(q) z)], z ~ N(0, 1), by the trapezoidal rule on [-12, 12] (smooth f)."""
    return float(np.sum(_Z_WEIGHTS * f(math.sqrt(q) * _Z)))


def tanh_branch(sigma_w2, sigma_b2, layers, a=1.0):
    """V_F(a) and chi_F(a) of a tanh branch, from `gaussian_mean`."""
    tanh, slope = PHI["tanh"]
    variance, gain = a, 1.0
    for _ in range(layers):
        gain *= sigma_w2 * gaussian_mean(lambda u: slope(u) ** 2, variance)
        variance = sigma_w2 * gaussian_mean(lambda u: tanh(u) ** 2, variance) + sigma_b2
    return variance, gain


def predicted(**config):
    return residual.predict_residual(**config)["predicted_log10_delta_ratio"]


@pytest.mark.parametrize("layers", [1, 2])
def test_relu_and_linear_blocks_without_norm_in_closed_form(layers):
    """relu: every block multiplies ||g||^2 by 1 + alpha^2 (sigma_w^2 / 2)^layers, whatever q;
    linear: by 1 + alpha^2 sigma_w^(2 layers)."""
    alpha, sigma_w2, depth = (
        np.array([0.5, 1.0, 0.3]),
        np.array([2.0, 1.0, 3.5]),
        np.array([8, 64, 33]),
    )
    for name, gain in (("relu", sigma_w2 / 2), ("linear", sigma_w2)):
        out = residual.predict_residual(name, sigma_w2, 0.0, depth, layers, "none", "none", alpha)
        factor = 1.0 + alpha**2 * gain**layers
        np.testing.assert_allclose(out["chi1"], factor, rtol=1e-12)
        np.testing.assert_allclose(
            out["predicted_log10_delta_ratio"], (depth - 1) * np.log10(factor) / 2, rtol=1e-12
        )
        assert np.array_equal(
            out["fixed_point_log10_delta_ratio"], out["predicted_log10_delta_ratio"]
        )
        assert np.all(out["q_star"] == np.inf)
    one = residual.residual_blocks("relu", 2.0, 0.0, 10, layers, "none", "none", 0.5)
    np.testing.assert_allclose(one.q, 1.25 ** np.arange(10), rtol=1e-12)  # q_l = (1 + alpha^2)^l


@pytest.mark.parametrize("norm", ["layernorm", "rmsnorm"])
def test_pre_norm_grows_polynomially_in_closed_form(norm):
    """prod_{l<L} (1 + alpha^2 chi / (1 + (l - 1) alpha^2 V)) = Gamma(L - 1 + a + c) Gamma(a) /
    (Gamma(a + c) Gamma(L - 1 + a)), a = 1 / (alpha^2 V), c = chi / V: for relu without bias
    (c = 1) it is 1 + (L - 1) alpha^2 sigma_w^2 / 2, the stream's variance q_{L-1} itself."""
    depth = np.array([2, 8, 64, 1000])
    pre = dict(norm=norm, norm_position="pre", alpha=0.7, depth=depth)
    relu = predicted(activation="relu", sigma_w2=2.0, sigma_b2=0.0, branch_layers=1, **pre)
    np.testing.assert_allclose(relu, np.log10(1 + (depth - 1) * 0.49) / 2, rtol=1e-12)
    for layers in (1, 2):
        variance, gain = tanh_branch(1.5, 0.05, layers)
        a, c = 1 / (0.49 * variance), gain / variance
        lg = np.vectorize(math.lgamma)
        product = lg(depth - 1 + a + c) + lg(a) - lg(a + c) - lg(depth - 1 + a)
        tanh = predicted(
            activation="tanh", sigma_w2=1.5, sigma_b2=0.05, branch_layers=layers, **pre
        )
        np.testing.assert_allclose(tanh, product / (2 * math.log(10)), rtol=1e-9)
    out = residual.predict_residual("tanh", 1.5, 0.05, 64, 1, norm, "pre", 0.7)
    assert np.isnan(out["chi1"]) and np.isnan(out["fixed_point_log10_delta_ratio"])
    assert out["q_star"] == np.inf and np.isnan(out["xi_c"])


@pytest.mark.parametrize("norm", ["layernorm", "rmsnorm"])
def test_post_norm_blocks_share_one_factor(norm):
    """X = (1 + alpha^2 chi_F(1)) / (1 + alpha^2 V_F(1)) every block: 1 for relu without bias."""
    for layers in (1, 2):
        variance, gain = tanh_branch(2.0, 0.1, layers)
        factor = (1 + 4.0 * gain) / (1 + 4.0 * variance)
        out = residual.predict_residual("tanh", 2.0, 0.1, 40, layers, norm, "post", 2.0)
        assert out["chi1"] == pytest.approx(factor, rel=1e-10)
        assert out["predicted_log10_delta_ratio"] == pytest.approx(
            39 * math.log10(factor) / 2, rel=1e-10
        )
        assert out["q_star"] == 1.0
        relu = residual.predict_residual(
            "relu", [1.0, 2.0, 5.0], 0.0, 40, layers, norm, "post", 1.3
        )
        np.testing.assert_allclose(relu["predicted_log10_delta_ratio"], 0.0, atol=1e-12)
        # relu with bias vanishes: chi_F(1) = 1 and V_F(1) = 1.5 (one layer) or 1.5 + 0.5 (two).
        with_bias = residual.predict_residual("relu", 2.0, 0.5, 40, layers, norm, "post", 1.0)
        assert with_bias["chi1"] == pytest.approx(2 / (2.5 if layers == 1 else 3.0), rel=1e-12)


def test_block_by_block_and_vectorised_agree():
    """`residual_blocks` (one configuration) and `predict_residual` (many, mixed activations)."""
    configs = [
        ("tanh", 1.5, 0.05, 30, 2, "none", "none", 0.8),
        ("gelu", 2.0, 0.0, 12, 1, "none", "none", 1.0),
        ("relu", 2.0, 0.1, 20, 1, "layernorm", "pre", 0.5),
        ("erf", 1.0, 0.2, 7, 2, "rmsnorm", "post", 1.5),
        ("tanh", 1.5, 0.05, 1, 1, "none", "none", 1.0),
    ]
    columns = [
        np.array(c, dtype=object if isinstance(c[0], str) else None)
        for c in zip(*configs, strict=True)
    ]
    out = residual.predict_residual(*columns)
    for i, config in enumerate(configs):
        one = residual.residual_blocks(*config)
        assert out["predicted_log10_delta_ratio"][i] == pytest.approx(
            one.log10_delta_ratio, rel=1e-12, abs=1e-15
        )
        assert one.q.shape == one.factor.shape == (config[3],)
    assert out["predicted_log10_delta_ratio"][-1] == 0.0  # one block: r spans none
    with pytest.raises(SpecError, match="norm"):
        residual.predict_residual("tanh", 1.0, 0.0, 8, 1, "batchnorm", "pre", 1.0)
    with pytest.raises(SpecError, match="branch_layers"):
        residual.predict_residual("tanh", 1.0, 0.0, 8, 3, "none", "none", 1.0)
    with pytest.raises(SpecError, match="alpha"):
        residual.predict_residual("tanh", 1.0, 0.0, 8, 1, "none", "none", 0.0)
    with pytest.raises(SpecError, match="norm_position"):
        residual.predict_residual("tanh", 1.0, 0.0, 8, 1, "layernorm", "none", 1.0)


# --- against the networks ---------------------------------------------------------------------


def assert_agrees(measured, prediction, depth, width):
    """The mean of the draws within 4 standard errors and `BIAS_UNITS` finite-width units."""
    error = measured.std(ddof=1) / math.sqrt(measured.size)
    unit = (depth - 1) / (2 * math.log(10) * width)
    assert abs(measured.mean() - prediction) <= 4 * error + BIAS_UNITS * unit, (
        f"measured {measured.mean():.4f} +- {error:.4f}, predicted {prediction:.4f}"
    )


RESIDUAL_CASES = [
    # (activation, sigma_w2, sigma_b2, branch_layers, norm, norm_position, alpha)
    ("relu", 2.0, 0.0, 1, "none", "none", 1.0),  # X = 2 every block
    ("relu", 2.0, 0.0, 2, "none", "none", 0.5),  # X = 1.25
    ("tanh", 1.5, 0.05, 1, "none", "none", 1.0),
    ("tanh", 2.0, 0.1, 2, "none", "none", 0.5),
    ("relu", 2.0, 0.0, 1, "rmsnorm", "pre", 1.0),  # ||g_0||^2 / ||g_{L-1}||^2 = L
    ("tanh", 1.5, 0.05, 1, "layernorm", "pre", 1.0),
    ("tanh", 2.0, 0.1, 2, "rmsnorm", "pre", 0.5),
    ("tanh", 2.0, 0.0, 1, "rmsnorm", "post", 2.0),  # X = 1.14: exploding
    ("relu", 2.0, 0.5, 1, "layernorm", "post", 1.0),  # X = 0.8: vanishing
    ("relu", 2.0, 0.5, 2, "rmsnorm", "post", 1.0),  # X = 2 / 3
]
RESIDUAL_WIDTH, RESIDUAL_DEPTH = 256, 16


@pytest.mark.parametrize("case", RESIDUAL_CASES, ids=lambda c: "-".join(map(str, c)))
def test_residual_mean_field_is_the_networks_mean(case):
    keys = ("activation", "sigma_w2", "sigma_b2", "branch_layers", "norm", "norm_position", "alpha")
    config = dict(zip(keys, case, strict=True), depth=RESIDUAL_DEPTH)
    measured = residual_ratios(config, RESIDUAL_WIDTH, seed=RESIDUAL_CASES.index(case))
    assert_agrees(measured, float(predicted(**config)), RESIDUAL_DEPTH, RESIDUAL_WIDTH)


RNN_CASES = [
    # (activation, init_family, sigma_w2, sigma_b2, input_scale, steps)
    ("tanh", "gaussian", 2.0, 0.1, 0.5, 32),
    ("tanh", "orthogonal", 2.0, 0.1, 0.5, 32),
    ("tanh", "gaussian", 1.5, 0.0, 1.0, 32),
    ("tanh", "orthogonal", 1.0, 0.05, 1.5, 32),
    ("relu", "gaussian", 1.5, 0.1, 0.7, 32),
    ("relu", "orthogonal", 1.5, 0.1, 0.7, 32),
    # Short: one shared i.i.d. W makes ||(W^T)^k v|| outgrow sigma_w^k at finite width.
    ("linear", "gaussian", 0.8, 0.0, 1.0, 16),
]
RNN_WIDTH, RNN_NETS = 256, 32  # an RNN draw is cheap: more of them


def rnn_config(case):
    keys = ("activation", "init_family", "sigma_w2", "sigma_b2", "input_scale", "depth")
    return dict(zip(keys, case, strict=True))


@pytest.mark.parametrize("case", RNN_CASES, ids=lambda c: "-".join(map(str, c)))
def test_recurrent_mean_field_is_the_networks_mean(case):
    config = rnn_config(case)
    net = rnn_net(np.random.default_rng(100 + RNN_CASES.index(case)), config, RNN_WIDTH, RNN_NETS)
    prediction = recurrent.predict_recurrent(**config)["predicted_log10_delta_ratio"]
    assert_agrees(rnn_ratios(net), float(prediction), config["depth"], RNN_WIDTH)


def test_recurrent_orbit_in_closed_form_and_by_quadrature():
    """linear and relu: q* = d / (1 - a), a = sigma_w^2 E[phi^2] (inf for a >= 1), and r =
    (T - 1) log10(chi_1) / 2; tanh: the orbit iterated with Gauss-Hermite moments."""
    for name, a_of, chi_of in (("linear", 1.0, 1.0), ("relu", 0.5, 0.5)):
        sigma_w2 = np.array([0.5, 0.8, 1.5, 2.5])
        out = recurrent.predict_recurrent(name, "gaussian", sigma_w2, 0.1, 0.7, 20)
        a, drive = a_of * sigma_w2, 0.7**2 + 0.1
        with np.errstate(divide="ignore"):
            q_star = np.where(a < 1, drive / (1 - a), np.inf)
        np.testing.assert_allclose(out["q_star"], q_star, rtol=1e-12)
        np.testing.assert_allclose(out["chi1"], chi_of * sigma_w2, rtol=1e-12)
        np.testing.assert_allclose(
            out["predicted_log10_delta_ratio"], 19 * np.log10(chi_of * sigma_w2) / 2, rtol=1e-12
        )
    tanh, slope = PHI["tanh"]
    for sigma_w2, sigma_b2, scale in ((2.0, 0.1, 0.5), (1.0, 0.0, 1.0), (3.0, 0.2, 0.3)):
        drive, q, total = scale**2 + sigma_b2, scale**2 + sigma_b2, 0.0
        for _ in range(39):
            total += math.log10(sigma_w2 * gaussian_mean(lambda u: slope(u) ** 2, q))
            q = sigma_w2 * gaussian_mean(lambda u: tanh(u) ** 2, q) + drive
        out = recurrent.predict_recurrent("tanh", "gaussian", sigma_w2, sigma_b2, scale, 40)
        assert out["predicted_log10_delta_ratio"] == pytest.approx(total / 2, rel=1e-9)
        steps = recurrent.recurrent_steps("tanh", sigma_w2, sigma_b2, scale, 40)
        assert steps.log10_delta_ratio == pytest.approx(total / 2, rel=1e-9)
        for _ in range(2000):
            q = sigma_w2 * gaussian_mean(lambda u: tanh(u) ** 2, q) + drive
        assert out["q_star"] == pytest.approx(q, rel=1e-9)
        assert out["chi1"] == pytest.approx(
            sigma_w2 * gaussian_mean(lambda u: slope(u) ** 2, q), rel=1e-9
        )
        assert out["fixed_point_log10_delta_ratio"] == pytest.approx(
            39 * math.log10(out["chi1"]) / 2
        )


def test_orthogonal_linear_rnn_is_exact_in_every_draw():
    """||delta_t|| = sigma_w ||delta_{t+1}||: r = (T - 1) log10 sigma_w, draw by draw."""
    for sigma_w2 in (0.64, 1.0, 1.44):
        config = dict(
            activation="linear",
            init_family="orthogonal",
            sigma_w2=sigma_w2,
            sigma_b2=0.2,
            input_scale=1.0,
            depth=48,
        )
        exact = 47 * math.log10(math.sqrt(sigma_w2))
        measured = rnn_ratios(rnn_net(np.random.default_rng(7), config, RNN_WIDTH, RNN_NETS))
        np.testing.assert_allclose(measured, exact, rtol=0, atol=1e-10)
        out = recurrent.predict_recurrent(**config)
        assert out["predicted_log10_delta_ratio"] == pytest.approx(exact, rel=1e-12, abs=1e-12)
        assert out["pascanu_log10_bound"] == pytest.approx(exact, rel=1e-12, abs=1e-12)  # tight


# --- the Pascanu bound ------------------------------------------------------------------------


def test_max_slope_is_sup_of_phi_prime():
    """gamma = sup |phi'| against closed forms: gelu's is Phi(sqrt 2) + sqrt 2 phi(sqrt 2) (where
    phi'' = (2 - x^2) phi(x) vanishes), selu's lambda alpha left of 0, softplus' 1 at infinity."""
    root2 = math.sqrt(2.0)
    gelu = 0.5 * (1 + math.erf(1.0)) + root2 * math.exp(-1.0) / math.sqrt(2 * math.pi)
    expected = {
        "relu": 1.0, "tanh": 1.0, "linear": 1.0, "sigmoid": 0.25, "softplus": 1.0, "gelu": gelu,
        "erf": 2 / math.sqrt(math.pi), "selu": 1.0507009873554805 * 1.6732632423543772,
        "softsign": 1.0, "hard_tanh": 1.0,
    }  # fmt: skip
    for name, gamma in expected.items():
        assert recurrent.max_slope(name) == pytest.approx(gamma, rel=1e-8), name


@pytest.mark.parametrize(
    ("activation", "family", "sigma_w2"),
    [("tanh", "gaussian", 1.5), ("relu", "gaussian", 2.0), ("tanh", "orthogonal", 3.0)]
    + [("relu", "orthogonal", 1.2)],
)
def test_pascanu_bound_holds_on_sampled_networks(activation, family, sigma_w2):
    """r <= (T - 1) log10(gamma s_max(W)) with the draw's own s_max, and below the column's
    large-width edge; the draws' s_max against it: sigma_w exactly for orthogonal W, 2 sigma_w
    (1 - 0.38 n^(-2/3)) on average for Gaussian W (Tracy-Widom), 0.99 of the edge at n = 256."""
    config = dict(
        activation=activation,
        init_family=family,
        sigma_w2=sigma_w2,
        sigma_b2=0.1,
        input_scale=1.0,
        depth=24,
    )
    width, sigma_w = RNN_WIDTH, math.sqrt(sigma_w2)
    net = rnn_net(np.random.default_rng(11), config, width, RNN_NETS)
    measured = rnn_ratios(net)
    s_max = sigma_w * unit_singular_values(family, RNN_NETS, width)
    gamma = recurrent.max_slope(activation)
    assert np.all(measured <= 23 * np.log10(gamma * s_max))
    bound = recurrent.predict_recurrent(**config)["pascanu_log10_bound"]
    edge = {"gaussian": 2.0, "orthogonal": 1.0}[family] * sigma_w
    assert bound == pytest.approx(23 * math.log10(gamma * edge), rel=1e-12)
    assert np.all(measured < bound - 1.0)  # far below: the bound is loose
    if family == "orthogonal":
        np.testing.assert_allclose(s_max, sigma_w, rtol=1e-12)
    else:  # one draw spreads by about 0.01 of the edge at this width
        assert np.mean(s_max) / edge == pytest.approx(1 - 0.38 * width ** (-2 / 3), abs=0.01)
        assert np.all(np.abs(s_max / edge - 1) < 0.04)


def test_singular_edge_of_each_family():
    edge = recurrent.singular_edge(
        ["gaussian", "uniform", "truncated_normal", "orthogonal", "?"], 4.0
    )
    np.testing.assert_array_equal(edge, [4.0, 4.0, 4.0, 2.0, np.nan])


# --- the theory columns -----------------------------------------------------------------------

NEW_COLUMNS = {"architecture": "mlp", "branch_layers": 0, "norm": "none", "norm_position": "none",
               "branch_scale": "none", "alpha": np.nan, "input_scale": 1.0}  # fmt: skip


def mlp_frame() -> pd.DataFrame:
    """Distinct MLP configs as runs before the new architectures wrote them (no new columns),
    the finite-width law applying to the relu rows at batch 1."""
    rng = np.random.default_rng(5)
    rows = [
        dict(activation=name, sigma_w2=float(w), sigma_b2=float(b), depth=int(d), batch=int(batch))
        for name in ("relu", "tanh", "gelu", "erf")
        for w, b, d, batch in zip(rng.uniform(0.5, 4.0, 6), rng.choice([0.0, 0.05], 6),
                                  rng.choice([8, 40], 6), rng.choice([1, 4], 6), strict=True)
    ]  # fmt: skip
    frame = pd.DataFrame(rows).assign(init_family="gaussian", width=64, loss="probe")
    return frame.drop_duplicates(["activation", "sigma_w2", "sigma_b2", "depth"], ignore_index=True)


def test_mlp_rows_keep_exactly_their_numbers():
    """Without the new columns, with them, and beside resmlp and rnn rows, an MLP row's theory
    columns are bit for bit those of `predict` and `relu_finite_width`, and its bound is NaN."""
    frame = mlp_frame()
    out = theory.with_theory(frame)
    assert list(out.columns) == [*frame.columns, *THEORY_COLUMNS]
    pd.testing.assert_frame_equal(out[frame.columns], frame)
    expected = theory.predict(
        frame["activation"].to_numpy(object), frame["sigma_w2"], frame["sigma_b2"], frame["depth"]
    )
    for column in set(expected) & set(THEORY_COLUMNS):
        assert np.array_equal(out[column], expected[column], equal_nan=True), column
    law = (frame["activation"] == "relu") & (frame["sigma_b2"] == 0) & (frame["batch"] == 1)
    assert law.any() and (~law).any()
    spread = theory.relu_finite_width(*(frame.loc[law, c] for c in ("sigma_w2", "width", "depth")))
    assert np.array_equal(out.loc[law, "finite_width_log10_delta_ratio"], spread.mean)
    assert out.loc[~law, "finite_width_log10_delta_ratio"].isna().all()
    assert out["pascanu_log10_bound"].isna().all()

    with_columns = theory.with_theory(frame.assign(**NEW_COLUMNS))
    pd.testing.assert_frame_equal(
        with_columns[list(THEORY_COLUMNS)], out[list(THEORY_COLUMNS)], check_exact=True
    )
    resmlp = NEW_COLUMNS | dict(architecture="resmlp", branch_layers=1, alpha=1.0)
    rnn = NEW_COLUMNS | dict(architecture="rnn", input_scale=0.5)
    others = pd.concat([frame.assign(**resmlp), frame.assign(**rnn)])
    mixed = pd.concat(
        [others.iloc[::2], frame.assign(**NEW_COLUMNS), others.iloc[1::2]], ignore_index=True
    )
    mixed_out = theory.with_theory(mixed)
    mlp = mixed_out[mixed_out["architecture"] == "mlp"].reset_index(drop=True)
    pd.testing.assert_frame_equal(
        mlp[list(THEORY_COLUMNS)], out[list(THEORY_COLUMNS)], check_exact=True
    )


def test_resmlp_and_rnn_rows_get_their_own_theory():
    """Row by row the architecture's predictions; no finite-width law (even for relu, Gaussian,
    no bias, batch 1), no bound outside the rnn, and NaN for an architecture without a theory."""
    base = dict(NEW_COLUMNS, init_family="gaussian", width=64, batch=1, loss="probe", sigma_b2=0.0)
    resmlp = dict(base, architecture="resmlp", branch_layers=1, alpha=1.0)
    rnn = dict(base, architecture="rnn")
    rows = [
        dict(resmlp, activation="relu", sigma_w2=2.0, depth=16, alpha=0.5),
        dict(resmlp, activation="tanh", sigma_w2=1.5, depth=9, branch_layers=2, norm="layernorm",
             norm_position="pre"),
        dict(resmlp, activation="gelu", sigma_w2=2.0, depth=30, norm="rmsnorm",
             norm_position="post", alpha=0.25),
        dict(rnn, activation="tanh", sigma_w2=2.0, depth=20, input_scale=0.5),
        dict(rnn, activation="relu", init_family="orthogonal", sigma_w2=1.5, depth=12),
        dict(base, architecture="transformer", activation="relu", sigma_w2=2.0, depth=12),
        dict(base, activation="relu", sigma_w2=2.0, depth=12),
    ]  # fmt: skip
    frame = pd.DataFrame(rows)
    out = theory.with_theory(frame)
    keys = ("sigma_w2", "sigma_b2", "depth", "branch_layers", "norm", "norm_position", "alpha")
    for i in range(3):
        one = residual.predict_residual(
            frame.loc[i, "activation"], *(frame.loc[i, k] for k in keys)
        )
        for c, value in one.items():
            assert out.loc[i, c] == pytest.approx(float(value), rel=1e-12, nan_ok=True), c
    for i in (3, 4):
        row = frame.loc[i]
        one = recurrent.predict_recurrent(
            row.activation, row.init_family, row.sigma_w2, row.sigma_b2, row.input_scale, row.depth
        )
        for c, value in one.items():
            assert out.loc[i, c] == pytest.approx(float(value), rel=1e-12), c
    finite_width = ["finite_width_log10_delta_ratio", "predicted_log10_delta_ratio_sd"]
    assert out.loc[:5, finite_width].isna().all(axis=None)
    assert out.loc[6, finite_width].notna().all()  # the MLP row beside them
    assert out.loc[[0, 1, 2, 5, 6], "pascanu_log10_bound"].isna().all()
    assert out.loc[:2, "xi_c"].isna().all() and out.loc[5, list(THEORY_COLUMNS)].isna().all()

    jacobian = theory.with_spectrum(frame)
    assert jacobian.loc[:5, "predicted_log10_jacobian_sv2_mean"].isna().all()
    mlp_alone = theory.with_spectrum(frame.loc[[6]].drop(columns="architecture"))
    assert (
        jacobian.loc[6, "predicted_log10_jacobian_sv2_mean"]
        == mlp_alone["predicted_log10_jacobian_sv2_mean"].iloc[0]
    )
