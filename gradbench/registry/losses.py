"""The losses a gradient measurement can differentiate (a sweep's `[model] loss`), by name.

The loss only sets the gradient that enters the top of the backward pass, so each entry is that
gradient, written for a forward pass that carries its signal in a scaled frame.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, NamedTuple

if TYPE_CHECKING:
    import jax


class Loss(NamedTuple):
    """A loss J of the measured network's output y_b = W_out h_b (the sweep's `[model] loss`).

    Attributes:
        name: registry name.
        output_gradient: `(h_hat, log_scale, readout, target, precision) -> (g, log_g)`, the
            gradient dJ/dy = exp(log_g - log_scale) g of a forward pass whose top layer is
            h_top = exp(log_scale) h_hat (batch, width). `readout` is W_out (width, width),
            `target` the replicate's fixed draws (batch, width): u for probe, t for mse;
            `precision` that of the matrix products.
        description: one line for `gradbench list`.
    """

    name: str
    output_gradient: Callable[..., tuple[jax.Array, jax.Array]]
    description: str


def _probe_gradient(h_hat, log_scale, readout, target, precision):
    # dJ/dy = u / batch whatever the network computes: log_g = log_scale makes the factor 1.
    return target / target.shape[0], log_scale


def _mse_gradient(h_hat, log_scale, readout, target, precision):
    import jax.numpy as jnp

    # dJ/dy = (y - t) / batch = exp(s) (y_hat - t exp(-s)) / batch
    y_hat = jnp.matmul(h_hat, readout.T, precision=precision)
    return (y_hat - target * jnp.exp(-log_scale)) / target.shape[0], 2 * log_scale


LOSSES: dict[str, Loss] = {
    loss.name: loss
    for loss in [
        Loss(
            "probe",
            _probe_gradient,
            "J = mean_b <u_b, y_b> with a fixed u ~ N(0, 1): dJ/dy = u / batch, independent of the net",
        ),
        Loss(
            "mse",
            _mse_gradient,
            "J = mean_b ||y_b - t_b||^2 / 2 with fixed random targets t ~ N(0, 1)",
        ),
    ]
}
