"""PyTorch peers as a user writes them: an `nn.Sequential` loop, `torch.func.vmap` over configs.

PyTorch is a benchmark-only extra (`pip install -e '.[bench]'`, CPU wheel), never a gradbench
dependency; without it the cases are reported as skipped. Both peers compute the statistics of
`benchmarks.jax_peer` for the same probe loss, drawing their own weights per config.
"""

from __future__ import annotations

import math

import numpy as np

from benchmarks.sweep import Sweep


def unavailable() -> str | None:
    """Why the PyTorch peers cannot run here, or None when they can."""
    try:
        import torch  # noqa: F401
    except ImportError as exc:
        return f"PyTorch is not installed ({exc}); install the extra: pip install -e '.[bench]'"
    return None


def versions() -> dict:
    import torch

    return {"torch": torch.__version__, "torch_threads": torch.get_num_threads()}


def _data(sweep: Sweep):
    import torch

    g = torch.Generator().manual_seed(sweep.seed)
    x = torch.randn(sweep.batch, sweep.width, generator=g)
    u = torch.randn(sweep.batch, sweep.width, generator=g)
    return x, u


def prepare_loop(params: tuple[Sweep, int, int | None]):
    """One `nn.Sequential`, re-initialised in place per config; hooks keep dJ/dz_l via retain_grad.

    Reusing the modules (instead of building new ones per config) spares PyTorch's default
    initialisation and the allocations: the favourable way to write this loop. `threads` (None:
    PyTorch's default, one per core) is set for each call: this loop is many small operations, and
    on a machine shared with other work OpenMP's spinning barriers make it several times slower
    with two threads than with one.
    """
    import torch
    from torch import nn

    sweep, n, threads = params
    width, depth = sweep.width, sweep.depth
    hidden = [nn.Linear(width, width) for _ in range(depth)]
    readout = nn.Linear(width, width, bias=False)
    act = {"tanh": nn.Tanh, "relu": nn.ReLU}[sweep.activation]
    model = nn.Sequential(*(m for lin in hidden for m in (lin, act())), readout)
    pre_activations: list[torch.Tensor] = []

    def keep(module, inputs, output):
        output.retain_grad()
        pre_activations.append(output)

    for lin in hidden:
        lin.register_forward_hook(keep)
    x, u = _data(sweep)
    sigma_w = np.sqrt(sweep.sigma_w2)
    configs = sweep.subset(n)

    def one_config(index: int) -> np.ndarray:
        g = torch.Generator().manual_seed(int(index))
        with torch.no_grad():
            for lin in hidden:
                lin.weight.normal_(0.0, float(sigma_w[index]) / math.sqrt(width), generator=g)
                lin.bias.normal_(0.0, 0.0, generator=g)
            readout.weight.normal_(0.0, 1.0 / math.sqrt(width), generator=g)
        model.zero_grad(set_to_none=True)
        pre_activations.clear()
        loss = (u * model(x)).sum() / sweep.batch
        loss.backward()
        with torch.no_grad():
            stats = torch.stack(
                [
                    torch.stack([z.grad.norm() for z in pre_activations]),
                    torch.stack([lin.weight.grad.norm() for lin in hidden]),
                    torch.stack([lin.bias.grad.norm() for lin in hidden]),
                    torch.stack([z.square().mean() for z in pre_activations]),
                ]
            ).log10()
        return stats.numpy()

    def closure() -> list[np.ndarray]:
        default = torch.get_num_threads()
        torch.set_num_threads(threads or default)
        try:
            return [one_config(i) for i in configs]
        finally:
            torch.set_num_threads(default)

    return closure


def prepare_vmap(params: tuple[Sweep, int, int]):
    """`torch.func.vmap(torch.func.grad(loss))` over chunks of stacked configs, drawn per chunk."""
    import torch
    from torch.func import grad, vmap

    sweep, n, chunk = params
    width, depth, batch = sweep.width, sweep.depth, sweep.batch
    phi = {"tanh": torch.tanh, "relu": torch.relu}[sweep.activation]
    x, u = _data(sweep)

    def loss(weights, biases, perturbations, readout):
        h, q = x, []
        for layer in range(depth):
            z = h @ weights[layer].T + biases[layer] + perturbations[layer]
            q.append(z.square().mean())
            h = phi(z)
        y = h @ readout.T
        return (u * y).sum() / batch, torch.stack(q)

    grads = vmap(grad(loss, argnums=(0, 1, 2), has_aux=True))
    sigma_w = torch.as_tensor(np.sqrt(sweep.sigma_w2), dtype=torch.float32)
    configs = torch.as_tensor(sweep.subset(n))

    def one_chunk(index: int, members: torch.Tensor) -> np.ndarray:
        c = len(members)
        g = torch.Generator().manual_seed(index)
        scale = (sigma_w[members] / math.sqrt(width))[:, None, None, None]
        weights = scale * torch.randn(c, depth, width, width, generator=g)
        biases = torch.zeros(c, depth, width)  # sigma_b = 0 in the sweep
        readout = torch.randn(c, width, width, generator=g) / math.sqrt(width)
        perturbations = torch.zeros(c, depth, batch, width)
        (g_w, g_b, g_z), q = grads(weights, biases, perturbations, readout)
        with torch.no_grad():
            stats = torch.stack(
                [
                    torch.linalg.vector_norm(g_z, dim=(-2, -1)),
                    torch.linalg.vector_norm(g_w, dim=(-2, -1)),
                    torch.linalg.vector_norm(g_b, dim=-1),
                    q,
                ],
                dim=1,
            ).log10()
        return stats.numpy()

    def closure() -> list[np.ndarray]:
        return [one_chunk(i, m) for i, m in enumerate(torch.split(configs, chunk))]

    return closure
