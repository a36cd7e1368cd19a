"""The trained network: gradbench.engine.model's fully connected net, with explicit parameters.

Its parameters come from the sweep's common random numbers: the stacked hidden weights
W_l = sigma_w / sqrt(width) Z_l and biases b_l = sigma_b beta_l are built from
`model.layer_draws(replicate_key(seed, replicate), l, width, init_family)`, and the readout is the
first `outputs` rows of the replicate's W_out. So training starts from exactly the network whose
gradients the sweep measured, and a depth-L net is the prefix of a deeper one: `apply` treats the
layers past a config's depth as the identity, so they receive zero gradients, hence zero updates.
"""

from __future__ import annotations

import functools
import math
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from gradbench.engine.model import layer_draws, replicate_key, shared_draws
from gradbench.engine.precision import PRECISION
from gradbench.sweep.keys import StaticKey


class Draws(NamedTuple):
    """Standard draws of some replicates (leading axis R): z (R, L, out, in), beta (R, L, out), and
    the readout (R, width, width) with Var = 1/width (gradbench.engine.model's common random numbers)."""

    z: jax.Array
    beta: jax.Array
    readout: jax.Array


@functools.cache
def _layer_draws(width: int, init_family: str):
    # Jitted per layer (the layer index is traced): threefry compiles once per width, not once per
    # depth bucket or trainer, which on a CPU is seconds each time.
    return jax.jit(lambda rep_key, layer: layer_draws(rep_key, layer, width, init_family))


@functools.cache
def _readout(width: int):
    return jax.jit(lambda rep_key: shared_draws(rep_key, 1, width).readout)


def draws(seed: int, replicates, width: int, depth: int, init_family: str) -> Draws:
    """The draws of `depth` layers for each replicate; a shallower bucket uses a prefix of them."""
    layer_fn, readout_fn = _layer_draws(width, init_family), _readout(width)
    zs, betas, readouts = [], [], []
    for replicate in replicates:
        rep_key = replicate_key(np.uint32(seed), int(replicate))
        pairs = [layer_fn(rep_key, np.int32(layer)) for layer in range(depth)]
        zs.append(np.stack([np.asarray(z) for z, _ in pairs]))
        betas.append(np.stack([np.asarray(b) for _, b in pairs]))
        readouts.append(np.asarray(readout_fn(rep_key)))
    return Draws(np.stack(zs), np.stack(betas), np.stack(readouts))


def init_params(static: StaticKey, z, beta, readout, sigma_w, sigma_b, outputs: int) -> dict:
    """Parameters of one config from its replicate's draws: w (L, in, out), b (L, out), readout.

    W_l = sigma_w / sqrt(width) Z_l (stored transposed, (in, out)), b_l = sigma_b beta_l, and the
    readout is the first `outputs` rows of W_out, stored (width, outputs).
    """
    dtype = jnp.dtype(static.dtype)
    return {
        "w": (sigma_w / math.sqrt(static.width)).astype(dtype)
        * jnp.swapaxes(z, -1, -2).astype(dtype),
        "b": sigma_b.astype(dtype) * beta.astype(dtype),
        "readout": readout[:outputs].T.astype(dtype),
    }


def apply(params: dict, x, depth, phi) -> jax.Array:
    """y = W_out h_L with h_l = phi(h_{l-1} W_l + b_l); layers at index >= depth are identity."""

    def layer(h, inputs):
        w, b, index = inputs
        z = jnp.matmul(h, w, precision=PRECISION) + b[None, :]
        return jnp.where(index < depth, phi(z), h), None

    n_layers = params["w"].shape[0]
    h, _ = jax.lax.scan(layer, x, (params["w"], params["b"], jnp.arange(n_layers)))
    return jnp.matmul(h, params["readout"], precision=PRECISION)
