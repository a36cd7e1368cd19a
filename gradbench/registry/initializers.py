"""Weight initialisation by name: the families that draw a layer's standard weights, and the presets
(He, LeCun, ...) that fix sigma_w^2 for a family.

Each family's draw imports JAX when it is called.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import TYPE_CHECKING, NamedTuple

from gradbench.errors import SpecError

if TYPE_CHECKING:
    import jax


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
    import jax
    import jax.numpy as jnp

    return jax.random.normal(key, shape, jnp.float32)


def _uniform(key, shape):
    import jax
    import jax.numpy as jnp

    return jax.random.uniform(key, shape, jnp.float32, -math.sqrt(3.0), math.sqrt(3.0))


def _truncated_normal(key, shape):
    import jax
    import jax.numpy as jnp

    return jax.random.truncated_normal(key, -2.0, 2.0, shape, jnp.float32) / _TRUNCATED_STD


def _orthogonal(key, shape):
    import jax
    import jax.numpy as jnp

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
