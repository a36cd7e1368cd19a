"""An independently written reference MLP: explicit weights, a Python loop over layers, plain jax.grad.

It shares only the standard draws with gradbench (the common-random-numbers rule fixes them), and
computes in float64, so it checks the kernel's vmap, scan, masking, frames and statistics.
"""

import math

import jax
import jax.numpy as jnp
import numpy as np

from gradbench import registry
from gradbench.engine.model import layer_draws, replicate_key, shared_draws


def reference_layers(
    *,
    activation,
    init_family,
    width,
    batch,
    depth,
    sigma_w2,
    sigma_b2,
    seed=0,
    replicate=0,
    loss="probe",
):
    """log10 ||dJ/dz_l||, ||dJ/dW_l||_F, ||dJ/db_l|| and q_l for l = 1..depth, in float64."""
    with jax.enable_x64(True):
        phi = registry.ACTIVATIONS[activation].fn
        key = replicate_key(seed, replicate)
        shared = shared_draws(key, batch, width)
        weights, biases = [], []
        for layer in range(depth):
            z_std, beta = layer_draws(key, layer, width, init_family)
            weights.append(math.sqrt(sigma_w2 / width) * jnp.asarray(z_std, jnp.float64))
            biases.append(math.sqrt(sigma_b2) * jnp.asarray(beta, jnp.float64))
        x = jnp.asarray(shared.x, jnp.float64)
        readout = jnp.asarray(shared.readout, jnp.float64)
        probe = jnp.asarray(shared.probe, jnp.float64)
        perturbations = [jnp.zeros((batch, width), jnp.float64) for _ in range(depth)]

        def objective(weights, biases, perturbations):
            h, q = x, []
            for w, b, e in zip(weights, biases, perturbations, strict=True):
                z = h @ w.T + b[None, :] + e
                q.append(jnp.mean(z**2))
                h = phi(z)
            y = h @ readout.T
            if loss == "probe":
                value = jnp.sum(probe * y) / batch
            else:
                value = 0.5 * jnp.sum((y - probe) ** 2) / batch
            return value, jnp.stack(q)

        (g_w, g_b, g_z), q = jax.grad(objective, argnums=(0, 1, 2), has_aux=True)(
            weights, biases, perturbations
        )

        def log10_norms(arrays):
            return np.array([np.log10(np.linalg.norm(np.asarray(a))) for a in arrays])

        return {
            "log10_delta": log10_norms(g_z),
            "log10_grad_w": log10_norms(g_w),
            "log10_grad_b": log10_norms(g_b),
            "log10_q": np.log10(np.asarray(q)),
        }
