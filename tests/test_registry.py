"""Contract tests over every registry entry."""

import functools
import math
import subprocess
import sys

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from gradbench import registry
from gradbench.errors import SpecError

NAMES = sorted(registry.ACTIVATIONS)
POINTS = np.linspace(-3.0, 3.0, 41) + 0.0123  # avoid the kinks of relu-like functions at 0, +-1, 6

# What each registered activation computes, written with JAX's own functions.
JAX_REFERENCES = {
    "linear": lambda x: x,
    "relu": jax.nn.relu,
    "leaky_relu": jax.nn.leaky_relu,
    "tanh": jnp.tanh,
    "sigmoid": jax.nn.sigmoid,
    "erf": jax.lax.erf,
    "elu": jax.nn.elu,
    "selu": jax.nn.selu,
    "celu": jax.nn.celu,
    "gelu": functools.partial(jax.nn.gelu, approximate=False),
    "gelu_tanh": functools.partial(jax.nn.gelu, approximate=True),
    "silu": jax.nn.silu,
    "swish": jax.nn.silu,
    "softplus": jax.nn.softplus,
    "softsign": jax.nn.soft_sign,
    "relu6": jax.nn.relu6,
    "hard_tanh": jax.nn.hard_tanh,
    # jax.nn.mish rounds differently (last bits); gradbench's mish is the textbook formula
    "mish": lambda x: x * jnp.tanh(jax.nn.softplus(x)),
}
BOUNDED = {"tanh", "sigmoid", "erf", "hard_tanh", "softsign", "relu6"}


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


def test_importing_the_registry_imports_neither_jax_nor_optax():
    """A sweep file is validated, and a stored run's activations described, without JAX."""
    code = (
        "import sys\n"
        "from gradbench import registry\n"
        "facts = [(a.name, a.homogeneous, a.bounded) for a in registry.ACTIVATIONS.values()]\n"
        "names = [*registry.LOSSES, *registry.OPTIMIZERS, *registry.CLIP_RULES, *registry.TASKS]\n"
        "registry.init_family('he'), registry.TASKS['digits'].available()\n"
        "print(sorted({'jax', 'optax', 'gradbench.training'} & set(sys.modules)))\n"
    )
    found = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert found.stdout.strip() == "[]"


@pytest.mark.parametrize("name", NAMES)
def test_activation_fn_is_its_jax_function(name):
    """fn computes and differentiates exactly what JAX's own function does, eager and jitted."""
    fn, reference = registry.ACTIVATIONS[name].fn, JAX_REFERENCES[name]
    assert fn is registry.activation(name).fn  # one object per activation: theory caches per fn
    x = jnp.asarray(POINTS, jnp.float32)
    np.testing.assert_array_equal(np.asarray(fn(x)), np.asarray(reference(x)))
    np.testing.assert_array_equal(np.asarray(jax.jit(fn)(x)), np.asarray(jax.jit(reference)(x)))
    np.testing.assert_array_equal(
        np.asarray(jax.vmap(jax.grad(fn))(x)), np.asarray(jax.vmap(jax.grad(reference))(x))
    )


def test_aliases_share_their_fn():
    assert registry.ACTIVATIONS["swish"].fn is registry.ACTIVATIONS["silu"].fn


@pytest.mark.parametrize("name", NAMES)
def test_activation_bounded_flag_is_true(name):
    activation = registry.ACTIVATIONS[name]
    far = jnp.asarray([-1e4, -10.0, 10.0, 1e4], jnp.float32)
    assert bool(np.abs(np.asarray(activation.fn(far))).max() < 10) == activation.bounded
    assert activation.bounded == (name in BOUNDED)


@pytest.mark.parametrize("name", sorted(registry.LOSSES))
@pytest.mark.parametrize("log_scale", [0.0, 3.0, -2.5])
def test_loss_output_gradient_is_the_gradient_of_its_loss(name, log_scale):
    """exp(log_g - log_scale) g = dJ/dy at the true scale, for the loss its description states."""
    batch, width = 5, 4
    keys = jax.random.split(jax.random.key(3), 3)
    h_hat = jax.random.normal(keys[0], (batch, width))
    readout = jax.random.normal(keys[1], (width, width)) / 2
    target = jax.random.normal(keys[2], (batch, width))
    losses = {
        "probe": lambda y: jnp.mean(jnp.sum(target * y, axis=1)),
        "mse": lambda y: jnp.mean(jnp.sum(jnp.square(y - target), axis=1)) / 2,
    }
    y = jnp.exp(log_scale) * h_hat @ readout.T
    g, log_g = registry.LOSSES[name].output_gradient(
        h_hat, jnp.float32(log_scale), readout, target, jax.lax.Precision.HIGHEST
    )
    np.testing.assert_allclose(
        np.exp(log_g - log_scale) * np.asarray(g), jax.grad(losses[name])(y), rtol=1e-5, atol=1e-6
    )


def test_training_entries_are_stateless_traceable_optax_transformations():
    """The trainer computes every clipping rule of a sweep with traced values, and keeps no state
    for them; optimisers take a traced learning rate."""
    params = {"w": jnp.ones((2, 3, 3)), "b": jnp.ones((2, 3)), "readout": jnp.ones((3, 2))}
    grads = jax.tree.map(lambda p: 0.5 * p, params)
    for rule in registry.CLIP_RULES.values():
        clip = rule.make(jnp.float32(10.0))
        assert jax.tree.leaves(clip.init(params)) == [], rule.name
        clipped = jax.jit(lambda t, c=rule.make: c(t).update(grads, c(t).init(params), params)[0])(
            10.0
        )
        assert jax.tree.structure(clipped) == jax.tree.structure(params)
    none, _ = registry.CLIP_RULES["none"].make(1.0).update(grads, optax.EmptyState(), params)
    assert none is grads
    for opt in registry.OPTIMIZERS.values():
        step = jax.jit(lambda lr, o=opt: o.make(lr).update(grads, o.make(lr).init(params))[0])
        assert jax.tree.structure(step(0.1)) == jax.tree.structure(params)


def test_unknown_optimiser_and_clip_rule():
    with pytest.raises(ValueError, match="unknown optimiser 'rmsprop'"):
        registry.optimizer("rmsprop")
    with pytest.raises(ValueError, match="unknown rule 'norm'"):
        registry.clip_rule("norm")


def test_tasks_say_what_they_need():
    assert registry.TASKS["teacher"].available() and registry.TASKS["classification"].available()
    digits = registry.TASKS["digits"]
    assert digits.requires == "scikit-learn" and digits.max_samples == 1797
    assert digits.classification and not registry.TASKS["teacher"].classification


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
