"""Activations by name: the registered nonlinearities, and user functions given as import paths.

A registered activation's fn imports JAX when it is first called, so that reading the table (names,
descriptions, facts such as `homogeneous`) needs no JAX. A user function ``"package.module:function"``
is imported only with permission and checked to be an elementwise JAX function before any kernel
traces it.
"""

from __future__ import annotations

import functools
import importlib
from collections.abc import Callable
from typing import TYPE_CHECKING, NamedTuple

from gradbench.errors import SpecError

if TYPE_CHECKING:
    import jax


class Activation(NamedTuple):
    """An elementwise nonlinearity phi.

    Attributes:
        name: registry name.
        fn: jnp-traceable elementwise function, one object per activation for the life of the
            process (theory caches its tables per fn).
        homogeneous: phi(c x) = c phi(x) for every c > 0 (relu, leaky_relu, linear). For these the forward
            pass can be renormalised layer by layer without changing any result, which is what lets the
            log-domain measurement follow exploding forward signals.
        description: one line for `gradbench list`.
        bounded: phi has a bounded range (tanh, sigmoid, ...): a large pre-activation variance
            saturates its units instead of growing the forward signal.
    """

    name: str
    fn: Callable[[jax.Array], jax.Array]
    homogeneous: bool
    description: str
    bounded: bool = False


@functools.cache
def _from_jax(path: str) -> Callable:
    """`jax.<path>` (e.g. "nn.relu") as a function that imports JAX when it is first called.

    One wrapper per path, so that aliases share their fn (swish is silu). The wrapper only forwards
    its argument: what JAX traces, computes and differentiates is `jax.<path>` itself.
    """
    module, _, attr = f"jax.{path}".rpartition(".")

    def fn(x):
        return getattr(importlib.import_module(module), attr)(x)

    fn.__name__ = fn.__qualname__ = attr
    fn.__doc__ = f"jax.{path}"
    return fn


def _linear(x):
    return x


def _hard_tanh(x):
    import jax.numpy as jnp

    return jnp.clip(x, -1.0, 1.0)


def _mish(x):
    import jax
    import jax.numpy as jnp

    return x * jnp.tanh(jax.nn.softplus(x))


def _gelu_exact(x):
    import jax

    return jax.nn.gelu(x, approximate=False)


def _gelu_tanh(x):
    import jax

    return jax.nn.gelu(x, approximate=True)


ACTIVATIONS: dict[str, Activation] = {
    a.name: a
    for a in [
        Activation("linear", _linear, True, "identity; chi_1 = sigma_w^2"),
        Activation("relu", _from_jax("nn.relu"), True, "max(0, x); chi_1 = sigma_w^2 / 2"),
        Activation("leaky_relu", _from_jax("nn.leaky_relu"), True, "max(x, 0.01 x)"),
        Activation("tanh", _from_jax("numpy.tanh"), False, "hyperbolic tangent", bounded=True),
        Activation(
            "sigmoid",
            _from_jax("nn.sigmoid"),
            False,
            "logistic 1 / (1 + e^-x); phi' <= 1/4",
            bounded=True,
        ),
        Activation(
            "erf",
            _from_jax("lax.erf"),
            False,
            "error function (closed-form mean-field maps)",
            bounded=True,
        ),
        Activation("elu", _from_jax("nn.elu"), False, "exponential linear unit, alpha = 1"),
        Activation(
            "selu", _from_jax("nn.selu"), False, "scaled ELU (self-normalising at sigma_w^2 = 1)"
        ),
        Activation(
            "celu", _from_jax("nn.celu"), False, "continuously differentiable ELU, alpha = 1"
        ),
        Activation("gelu", _gelu_exact, False, "Gaussian error linear unit, exact x Phi(x)"),
        Activation("gelu_tanh", _gelu_tanh, False, "GELU, tanh approximation"),
        Activation("silu", _from_jax("nn.silu"), False, "x sigmoid(x)"),
        Activation("swish", _from_jax("nn.silu"), False, "alias of silu"),
        Activation("softplus", _from_jax("nn.softplus"), False, "log(1 + e^x)"),
        Activation("softsign", _from_jax("nn.soft_sign"), False, "x / (1 + |x|)", bounded=True),
        Activation("relu6", _from_jax("nn.relu6"), False, "min(max(0, x), 6)", bounded=True),
        Activation("hard_tanh", _hard_tanh, False, "clip(x, -1, 1)", bounded=True),
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
    import jax
    import jax.numpy as jnp

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
    import jax

    if isinstance(value, jax.ShapeDtypeStruct):
        return f"{value.dtype.name}[{','.join(map(str, value.shape))}]"
    return f"a {type(value).__name__}"


def _summary(exc: Exception) -> str:
    lines = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {_clip(lines[0])}" if lines else type(exc).__name__


def _clip(text: str, most: int = 120) -> str:
    return text if len(text) <= most else text[: most - 3] + "..."
