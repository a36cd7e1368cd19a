"""The per-config JAX peer: what a user writes without gradbench, one jitted call per config.

Each config draws its own weights (one key per config), runs a Python loop over layers under `jit`,
and takes `jax.grad` with respect to the weights, the biases and zero perturbations added to every
pre-activation (the perturbation's gradient is dJ/dz_l). Same statistics as gradbench: log10 of
||dJ/dz_l||, ||dJ/dW_l||_F, ||dJ/db_l|| and q_l = mean(z_l^2), for the same probe loss
J = mean_b <u_b, W_out h_L>.

`crosscheck` feeds gradbench's own standard draws (its common-random-numbers rule) through the same
statistics function and compares with what gradbench reports: an independent check of the kernel's
vmap, scan, log-domain frames and custom-VJP statistics.
"""

from __future__ import annotations

import math
import tempfile
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np

from benchmarks.sweep import Sweep

ACTIVATIONS = {"tanh": jnp.tanh, "relu": jax.nn.relu}
STATS = ("log10_delta", "log10_grad_w", "log10_grad_b", "log10_q")


def init_params(key, sigma_w, sigma_b, *, width: int, depth: int):
    """Weights N(0, sigma_w^2 / width), biases N(0, sigma_b^2), readout N(0, 1 / width)."""
    keys = jax.random.split(key, 2 * depth + 1)
    weights = [
        sigma_w / math.sqrt(width) * jax.random.normal(keys[2 * i], (width, width))
        for i in range(depth)
    ]
    biases = [sigma_b * jax.random.normal(keys[2 * i + 1], (width,)) for i in range(depth)]
    readout = jax.random.normal(keys[-1], (width, width)) / math.sqrt(width)
    return weights, biases, readout


def layer_stats(weights, biases, readout, x, u, *, activation: str = "tanh"):
    """(4, depth): log10 of ||dJ/dz_l||, ||dJ/dW_l||_F, ||dJ/db_l|| and q_l, in STATS order."""
    phi = ACTIVATIONS[activation]
    batch = x.shape[0]
    perturbations = [jnp.zeros_like(x) for _ in weights]

    def objective(weights, biases, perturbations):
        h, q = x, []
        for w, b, e in zip(weights, biases, perturbations, strict=True):
            z = h @ w.T + b[None, :] + e
            q.append(jnp.mean(z**2))
            h = phi(z)
        y = h @ readout.T
        return jnp.sum(u * y) / batch, jnp.stack(q)

    (g_w, g_b, g_z), q = jax.grad(objective, argnums=(0, 1, 2), has_aux=True)(
        weights, biases, perturbations
    )

    def norms(arrays):
        return jnp.stack([jnp.sqrt(jnp.sum(a * a)) for a in arrays])

    return jnp.log10(jnp.stack([norms(g_z), norms(g_w), norms(g_b), q]))


def prepare_loop(params: tuple[Sweep, int]):
    """Loops over `n` configs of the sweep: one jitted call (draws, forward, grad, norms) each."""
    sweep, n = params
    data_key, _ = jax.random.split(jax.random.key(sweep.seed))
    x_key, u_key = jax.random.split(data_key)
    x = jax.random.normal(x_key, (sweep.batch, sweep.width))
    u = jax.random.normal(u_key, (sweep.batch, sweep.width))

    @jax.jit
    def step(key, sigma_w, sigma_b, x, u):
        weights, biases, readout = init_params(
            key, sigma_w, sigma_b, width=sweep.width, depth=sweep.depth
        )
        return layer_stats(weights, biases, readout, x, u, activation=sweep.activation)

    sigma_w = np.sqrt(sweep.sigma_w2).astype(np.float32)
    configs = sweep.subset(n)

    def closure() -> list[np.ndarray]:
        return [
            np.asarray(step(jax.random.key(i), sigma_w[i], np.float32(0.0), x, u)) for i in configs
        ]

    return closure


def crosscheck_spec(activation: str, width: int, batch: int, depth: int, sigma_w2, sigma_b2) -> str:
    return (
        'name = "crosscheck"\nseed = 0\n[model]\n'
        f"width = {width}\nbatch = {batch}\n[axes]\n"
        f'activation = "{activation}"\nsigma_w2 = {sigma_w2}\nsigma_b2 = {sigma_b2}\n'
        f"depth = {depth}\n"
    )


def crosscheck(
    activation: str, *, width: int, batch: int, depth: int, sigma_w2: float, sigma_b2: float
) -> dict[str, float]:
    """Max |difference| per statistic (log10 units, over layers) between gradbench and this peer.

    The peer uses gradbench's standard draws for the config (seed 0, replicate 0) and float32, like
    gradbench; everything else is computed independently.
    """
    from benchmarks.gradbench_cases import run_sweep
    from gradbench.engine.model import layer_draws, replicate_key, shared_draws

    with tempfile.TemporaryDirectory(prefix="gradbench-crosscheck-") as tmp:
        text = crosscheck_spec(activation, width, batch, depth, sigma_w2, sigma_b2)
        layers = run_sweep(text, Path(tmp) / "run").layers.sort_values("layer")
    key = replicate_key(0, 0)
    shared = shared_draws(key, batch, width)
    draws = [layer_draws(key, i, width, "gaussian") for i in range(depth)]
    weights = [math.sqrt(sigma_w2 / width) * z for z, _ in draws]
    biases = [math.sqrt(sigma_b2) * beta for _, beta in draws]
    ours = np.asarray(
        jax.jit(layer_stats, static_argnames="activation")(
            weights, biases, shared.readout, shared.x, shared.probe, activation=activation
        )
    )
    return {
        name: float(np.max(np.abs(layers[name].to_numpy() - ours[i])))
        for i, name in enumerate(STATS)
    }
