"""phi and phi' on float64 NumPy arrays, for many activations from one compiled kernel.

This is the only part of the theory that runs JAX; everything around it is float64 NumPy. One
jit-compiled elementwise kernel evaluates phi and phi' (by `jax.grad`) for a tuple of activations,
a traced `lax.switch` index choosing which, on blocks of one fixed size: one tuple of activations
costs one compilation, whatever the sizes of the arrays it is later called on.
`gradbench.theory.tables` builds one tuple from all the activations a call meets for the first time.
"""

from __future__ import annotations

import functools
from collections.abc import Callable

import jax
import numpy as np

Phi = Callable[[np.ndarray], tuple[np.ndarray, np.ndarray]]  # u -> (phi(u), phi'(u)), float64

_BLOCK = 1 << 15  # elements per kernel call: one input shape, so one compilation


@functools.partial(jax.jit, static_argnames=("fns",))
def _phi_block(index, u, *, fns):
    branches = [jax.vmap(jax.value_and_grad(fn)) for fn in fns]
    return jax.lax.switch(index, branches, u) if len(branches) > 1 else branches[0](u)


def elementwise(fns: tuple[Callable, ...], index: int) -> Phi:
    """phi = fns[index] and its derivative (by `jax.grad`) on float64 arrays of any shape."""

    def phi(u):
        u = np.asarray(u, float)
        padded = np.zeros(max(1, -(-u.size // _BLOCK)) * _BLOCK)
        padded[: u.size] = u.ravel()
        with jax.enable_x64(True):
            blocks = [
                _phi_block(index, padded[i : i + _BLOCK], fns=fns)
                for i in range(0, padded.size, _BLOCK)
            ]
            value, slope = (np.concatenate(parts)[: u.size] for parts in zip(*blocks, strict=True))
        return value.reshape(u.shape), slope.reshape(u.shape)

    return phi
