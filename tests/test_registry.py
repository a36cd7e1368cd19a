"""Contract tests over every registry entry."""

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from gradbench import registry
from gradbench.errors import SpecError

NAMES = sorted(registry.ACTIVATIONS)
POINTS = np.linspace(-3.0, 3.0, 41) + 0.0123  # avoid the kinks of relu-like functions at 0, +-1, 6


@pytest.mark.parametrize("name", NAMES)
def test_activation_contract(name):
    fn = registry.ACTIVATIONS[name].fn
    x = jnp.asarray(POINTS, jnp.float32)
    eager = np.asarray(fn(x))
    np.testing.assert_allclose(np.asarray(jax.jit(fn)(x)), eager, rtol=1e-6, atol=1e-6)
    assert fn(x).dtype == jnp.float32
    np.testing.assert_allclose(np.asarray(jax.vmap(fn)(x)), eager, rtol=1e-6, atol=1e-6)
    with jax.enable_x64(True):
        x64 = jnp.asarray(POINTS, jnp.float64)
        assert fn(x64).dtype == jnp.float64
        derivative = np.asarray(jax.vmap(jax.grad(fn))(x64))
        step = 1e-6
        central = (np.asarray(fn(x64 + step)) - np.asarray(fn(x64 - step))) / (2 * step)
    np.testing.assert_allclose(derivative, central, rtol=1e-6, atol=1e-7)
    assert np.all(np.isfinite(derivative))


@pytest.mark.parametrize("name", NAMES)
def test_activation_homogeneity_flag_is_true(name):
    activation = registry.ACTIVATIONS[name]
    x = jnp.asarray(POINTS, jnp.float32)
    scaled_equal = np.allclose(activation.fn(3.7 * x), 3.7 * activation.fn(x), rtol=1e-5, atol=1e-6)
    assert scaled_equal == activation.homogeneous


@pytest.mark.parametrize("name", NAMES)
def test_gradient_finite_through_a_stable_network(name):
    fn = registry.ACTIVATIONS[name].fn
    key = jax.random.key(0)
    weights = jax.random.normal(key, (6, 32, 32)) / math.sqrt(32)
    x = jax.random.normal(jax.random.key(1), (4, 32))

    def loss(weights):
        h = x
        for w in weights:
            h = fn(h @ w.T)
        return jnp.sum(h)

    grads = jax.grad(loss)(weights)
    assert np.all(np.isfinite(np.asarray(grads)))
    assert np.linalg.norm(np.asarray(grads[0])) > 0


def test_known_closed_forms():
    x = jnp.asarray(POINTS)
    np.testing.assert_allclose(registry.ACTIVATIONS["relu"].fn(x), np.maximum(POINTS, 0), atol=1e-7)
    np.testing.assert_allclose(
        registry.ACTIVATIONS["sigmoid"].fn(x), 1 / (1 + np.exp(-POINTS)), rtol=1e-6
    )
    np.testing.assert_allclose(
        registry.ACTIVATIONS["erf"].fn(x), [math.erf(p) for p in POINTS], rtol=1e-6, atol=1e-7
    )
    gelu = [p * 0.5 * (1 + math.erf(p / math.sqrt(2))) for p in POINTS]
    np.testing.assert_allclose(registry.ACTIVATIONS["gelu"].fn(x), gelu, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("family", sorted(registry.INIT_FAMILIES))
def test_init_family_draws_unit_variance_float32_deterministic(family):
    draw = registry.INIT_FAMILIES[family].draw
    z = np.asarray(draw(jax.random.key(7), (256, 256)))
    assert z.dtype == np.float32
    assert abs(z.mean()) < 0.02
    assert abs(z.var() - 1.0) < 0.02
    np.testing.assert_array_equal(z, np.asarray(draw(jax.random.key(7), (256, 256))))
    if family == "orthogonal":
        np.testing.assert_allclose(z @ z.T / 256, np.eye(256), atol=1e-4)
    if family == "uniform":
        assert np.abs(z).max() <= math.sqrt(3.0) + 1e-6
    if family == "truncated_normal":
        assert np.abs(z).max() * 0.8796 <= 2.0 + 1e-5


def test_presets_fix_the_documented_scales():
    assert registry.INIT_PRESETS["he"].sigma_w2 == 2.0
    assert registry.INIT_PRESETS["lecun"].sigma_w2 == 1.0
    assert registry.INIT_PRESETS["xavier"].sigma_w2 == 1.0
    # PyTorch nn.Linear: U(-1/sqrt(n), 1/sqrt(n)) has variance 1 / (3 n).
    assert math.isclose(registry.INIT_PRESETS["torch-default"].sigma_w2, 1 / 3)
    assert registry.INIT_PRESETS["torch-default"].family == "uniform"


def test_unknown_and_import_activations():
    with pytest.raises(SpecError, match="relu"):
        registry.activation("rleu")
    with pytest.raises(SpecError, match="allow-imports"):
        registry.activation("math:tanh")
    imported = registry.activation("jax.numpy:tanh", allow_imports=True)
    assert float(imported.fn(jnp.float32(0.5))) == pytest.approx(math.tanh(0.5), rel=1e-6)
    assert not imported.homogeneous  # never renormalised: nothing is known about a user function
    with pytest.raises(SpecError, match="importable"):
        registry.activation("no_such_module_xyz:f", allow_imports=True)


@pytest.mark.parametrize(
    "name,found",
    [
        ("os:system", "builtin_function_or_method posix.system called on a float32[2,3] raised"),
        ("math:tanh", "math.tanh called on a float32[2,3] raised TypeError"),  # scalars only
        ("numpy:tanh", "numpy.tanh called on a float32[2,3] raised TracerArrayConversionError"),
        ("math:pi", "found float 3.141592653589793, which is not callable"),
        ("jax.numpy:sum", "jax.numpy.sum maps a float32[2,3] to float32[]"),
        ("jax.numpy:argmax", "maps a float32[2,3] to int32[]"),
        ("jax.numpy:float16", "maps a float32[2,3] to float16[2,3]"),
        ("builtins:print", "maps a float32[2,3] to a NoneType"),
    ],
)
def test_an_imported_object_must_be_an_elementwise_jax_function(name, found):
    with pytest.raises(SpecError) as info:
        registry.activation(name, allow_imports=True)
    message = str(info.value)
    assert message.startswith(f"activation: got {name!r}; allowed: a JAX function mapping a float")
    assert found in message, message


@pytest.mark.parametrize("name", [":tanh", "..:x", "os:"])
def test_a_malformed_import_path_is_bad_input(name):
    with pytest.raises(SpecError, match="an importable 'package.module:function'"):
        registry.activation(name, allow_imports=True)
