"""The one place where names become functions: activations, weight-init families and presets, losses.

Everything downstream asks this module; nothing else maps strings to callables.
"""

from __future__ import annotations

import functools
import importlib
import math
from collections.abc import Callable
from typing import NamedTuple

import jax
import jax.numpy as jnp

from gradbench.errors import SpecError


class Activation(NamedTuple):
    """An elementwise nonlinearity phi.

    Attributes:
        name: registry name.
        fn: jnp-traceable elementwise function.
        homogeneous: phi(c x) = c phi(x) for every c > 0 (relu, leaky_relu, linear). For these the forward
            pass can be renormalised layer by layer without changing any result, which is what lets the
            log-domain measurement follow exploding forward signals.
        description: one line for `gradbench list`.
    """

    name: str
    fn: Callable[[jax.Array], jax.Array]
    homogeneous: bool
    description: str


def _linear(x):
    return x


def _hard_tanh(x):
    return jnp.clip(x, -1.0, 1.0)


def _mish(x):
    return x * jnp.tanh(jax.nn.softplus(x))


def _gelu_exact(x):
    return jax.nn.gelu(x, approximate=False)


def _gelu_tanh(x):
    return jax.nn.gelu(x, approximate=True)


def _erf(x):
    return jax.lax.erf(x)


ACTIVATIONS: dict[str, Activation] = {
    a.name: a
    for a in [
        Activation("linear", _linear, True, "identity; chi_1 = sigma_w^2"),
        Activation("relu", jax.nn.relu, True, "max(0, x); chi_1 = sigma_w^2 / 2"),
        Activation("leaky_relu", jax.nn.leaky_relu, True, "max(x, 0.01 x)"),
        Activation("tanh", jnp.tanh, False, "hyperbolic tangent"),
        Activation("sigmoid", jax.nn.sigmoid, False, "logistic 1 / (1 + e^-x); phi' <= 1/4"),
        Activation("erf", _erf, False, "error function (closed-form mean-field maps)"),
        Activation("elu", jax.nn.elu, False, "exponential linear unit, alpha = 1"),
        Activation("selu", jax.nn.selu, False, "scaled ELU (self-normalising at sigma_w^2 = 1)"),
        Activation("celu", jax.nn.celu, False, "continuously differentiable ELU, alpha = 1"),
        Activation("gelu", _gelu_exact, False, "Gaussian error linear unit, exact x Phi(x)"),
        Activation("gelu_tanh", _gelu_tanh, False, "GELU, tanh approximation"),
        Activation("silu", jax.nn.silu, False, "x sigmoid(x)"),
        Activation("swish", jax.nn.silu, False, "alias of silu"),
        Activation("softplus", jax.nn.softplus, False, "log(1 + e^x)"),
        Activation("softsign", jax.nn.soft_sign, False, "x / (1 + |x|)"),
        Activation("relu6", jax.nn.relu6, False, "min(max(0, x), 6)"),
        Activation("hard_tanh", _hard_tanh, False, "clip(x, -1, 1)"),
        Activation("mish", _mish, False, "x tanh(softplus(x))"),
    ]
}


def is_import_path(name: str) -> bool:
    """Whether an activation name is a user import path ``"package.module:function"``."""
    return ":" in name


def activation(name: str, *, allow_imports: bool = False) -> Activation:
    """Looks up an activation by registry name, or imports ``"package.module:function"`` when allowed.

    Raises:
        SpecError: unknown name, or an import path without permission, or one that does not resolve.
    """
    if name in ACTIVATIONS:
        return ACTIVATIONS[name]
    if not is_import_path(name):
        raise SpecError(
            "activation", name, f"one of {sorted(ACTIVATIONS)} or 'package.module:function'"
        )
    if not allow_imports:
        raise SpecError(
            "activation",
            name,
            "registered names only; importing code from a sweep needs --allow-imports "
            "(or allow_imports=True in the Python API)",
        )
    return _imported_activation(name)


@functools.cache
def _imported_activation(name: str) -> Activation:
    """Imports ``"package.module:function"`` and checks that it can serve as an activation."""
    module_name, _, attr = name.partition(":")
    try:
        fn = getattr(importlib.import_module(module_name), attr)
    except Exception as exc:  # importing runs the module's code, which may raise anything
        raise SpecError(
            "activation", name, f"an importable 'package.module:function' ({_summary(exc)})"
        ) from None
    _check_elementwise(name, fn)
    return Activation(name, fn, False, f"user function {name}")


def _check_elementwise(name: str, fn: object) -> None:
    """Refuses an imported object that does not map a float array to a float array of its shape.

    The check traces `fn` and its `jax.jvp` on an abstract (2, 3) float32 array with `jax.eval_shape`,
    as the kernel will: `fn`'s Python code runs on tracers, no computation is executed.
    """
    allowed = (
        "a JAX function mapping a float array to a float array of the same shape, "
        "differentiable by jax.jvp (e.g. 'jax.numpy:tanh')"
    )
    found = _describe(fn)
    if not callable(fn):
        raise SpecError("activation", name, f"{allowed}; found {found}, which is not callable")
    probe = jax.ShapeDtypeStruct((2, 3), jnp.float32)
    try:
        value, _ = jax.eval_shape(lambda x: jax.jvp(fn, (x,), (jnp.ones_like(x),)), probe)
    except Exception as exc:  # whatever the object does with an array it does not understand
        raise SpecError(
            "activation",
            name,
            f"{allowed}; {found} called on a float32[2,3] raised {_summary(exc)}",
        ) from None
    if not (
        isinstance(value, jax.ShapeDtypeStruct)
        and value.shape == probe.shape
        and value.dtype == probe.dtype
    ):
        raise SpecError(
            "activation", name, f"{allowed}; {found} maps a float32[2,3] to {_kind(value)}"
        )


def _describe(obj: object) -> str:
    """What an imported object is, e.g. "builtin_function_or_method posix.system"."""
    qualname = getattr(obj, "__qualname__", None)
    if not isinstance(qualname, str):
        return f"{type(obj).__name__} {_clip(repr(obj))}"
    return f"{type(obj).__name__} {getattr(obj, '__module__', None) or '?'}.{qualname}"


def _kind(value: object) -> str:
    """An abstract value as JAX prints types, e.g. float32[2,3]; other objects by their type."""
    if isinstance(value, jax.ShapeDtypeStruct):
        return f"{value.dtype.name}[{','.join(map(str, value.shape))}]"
    return f"a {type(value).__name__}"


def _summary(exc: Exception) -> str:
    lines = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {_clip(lines[0])}" if lines else type(exc).__name__


def _clip(text: str, most: int = 120) -> str:
    return text if len(text) <= most else text[: most - 3] + "..."


class InitFamily(NamedTuple):
    """How the standard draw Z of a layer is made; weights are then W = sigma_w / sqrt(fan_in) * Z.

    Every family draws Z with unit variance per entry, so sigma_w^2 = fan_in * Var(W) means the same
    thing in every family.
    """

    name: str
    draw: Callable[[jax.Array, tuple[int, int]], jax.Array]
    description: str


# Standard deviation of N(0, 1) truncated to [-2, 2]; dividing by it gives unit variance.
_TRUNCATED_STD = math.sqrt(
    1.0 - 4.0 * math.exp(-2.0) / math.sqrt(2.0 * math.pi) / math.erf(2.0 / math.sqrt(2.0))
)


def _gaussian(key, shape):
    return jax.random.normal(key, shape, jnp.float32)


def _uniform(key, shape):
    return jax.random.uniform(key, shape, jnp.float32, -math.sqrt(3.0), math.sqrt(3.0))


def _truncated_normal(key, shape):
    return jax.random.truncated_normal(key, -2.0, 2.0, shape, jnp.float32) / _TRUNCATED_STD


def _orthogonal(key, shape):
    fan_out, fan_in = shape
    q = jax.nn.initializers.orthogonal(scale=1.0)(key, shape, jnp.float32)
    # Rows (or columns) are orthonormal; scale so that entries have unit variance like the other families.
    return q * math.sqrt(max(fan_in, fan_out))


# Families whose standard draw calls a batched LAPACK kernel (the QR of `orthogonal`). Inside the
# sharded kernel such a call deadlocks XLA:CPU's intra-op pool: each device's QR waits on sub-tasks
# that no free worker can run. Their draws are made beforehand, unsharded
# (`gradbench.engine.model.weight_stack`), and read by a gradient kernel of their own; the other families are
# drawn in the kernel, which costs no memory.
PREDRAWN_FAMILIES = frozenset({"orthogonal"})

INIT_FAMILIES: dict[str, InitFamily] = {
    f.name: f
    for f in [
        InitFamily("gaussian", _gaussian, "W_ij ~ N(0, sigma_w^2 / fan_in)"),
        InitFamily("uniform", _uniform, "W_ij ~ U(-a, a) with a = sigma_w sqrt(3 / fan_in)"),
        InitFamily(
            "truncated_normal", _truncated_normal, "normal truncated at 2 std, rescaled to variance"
        ),
        InitFamily("orthogonal", _orthogonal, "sigma_w times a random orthogonal matrix"),
    ]
}


class InitPreset(NamedTuple):
    """A named scheme: a family with a fixed sigma_w^2 (square hidden layers, so every fan mode agrees)."""

    name: str
    family: str
    sigma_w2: float
    description: str


INIT_PRESETS: dict[str, InitPreset] = {
    p.name: p
    for p in [
        InitPreset("lecun", "gaussian", 1.0, "LeCun normal, Var(W) = 1 / fan_in"),
        InitPreset("he", "gaussian", 2.0, "He / Kaiming normal, Var(W) = 2 / fan_in"),
        InitPreset("kaiming", "gaussian", 2.0, "alias of he"),
        InitPreset("xavier", "gaussian", 1.0, "Glorot normal, Var(W) = 2 / (fan_in + fan_out)"),
        InitPreset("glorot", "gaussian", 1.0, "alias of xavier"),
        InitPreset("torch-default", "uniform", 1.0 / 3.0, "PyTorch nn.Linear, U(+-1/sqrt(fan_in))"),
        InitPreset("he-uniform", "uniform", 2.0, "He / Kaiming uniform"),
        InitPreset("lecun-uniform", "uniform", 1.0, "LeCun uniform"),
    ]
}


def init_names() -> list[str]:
    return sorted(INIT_FAMILIES) + sorted(INIT_PRESETS)


def init_family(name: str) -> InitFamily:
    """The family of an init name (a family itself, or the family of a preset)."""
    if name in INIT_PRESETS:
        name = INIT_PRESETS[name].family
    if name not in INIT_FAMILIES:
        raise SpecError("init", name, f"one of {init_names()}")
    return INIT_FAMILIES[name]


LOSSES: dict[str, str] = {
    "probe": "J = mean_b <u_b, y_b> with a fixed u ~ N(0, 1): dJ/dy = u / batch, independent of the net",
    "mse": "J = mean_b ||y_b - t_b||^2 / 2 with fixed random targets t ~ N(0, 1)",
}
