"""The plain PyTorch program that `benchmarks.end_to_end` races gradbench against, as a whole process.

`python -m benchmarks.torch_sweep CONFIGS.json [--threads N] [--out STATS.npz]` computes, for every
network listed in CONFIGS.json, what gradbench measures at initialisation: log10 of ||dJ/dz_l||,
||dJ/dW_l||_F, ||dJ/db_l|| and q_l = mean(z_l^2) per hidden layer, for the probe loss
J = mean_b <u_b, W_out h_L,b>. It is written the way a user would write it, favourably: one
`nn.Sequential` per (activation, depth, width), its weights re-initialised in place per config
(which spares PyTorch's default initialisation and the allocations), pre-activations kept with
forward hooks and `retain_grad`. It draws its own weights: same distributions as gradbench, not the
same numbers.

It imports numpy and torch only, never JAX or gradbench, so the process pays what a PyTorch user's
pays. CONFIGS.json is `benchmarks.networks_file`'s format; the last line printed is a JSON object
with the loop's seconds.
"""

from __future__ import annotations

import argparse
import json
import math
import time
from pathlib import Path

import numpy as np
import torch
from torch import nn

# Standard deviation of N(0, 1) truncated to [-2, 2] (gradbench's truncated_normal has unit variance).
_TRUNCATED_STD = math.sqrt(
    1.0 - 4.0 * math.exp(-2.0) / math.sqrt(2.0 * math.pi) / math.erf(2.0 / math.sqrt(2.0))
)


class Erf(nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.erf(x)


ACTIVATIONS = {
    "linear": nn.Identity,
    "relu": nn.ReLU,
    "leaky_relu": lambda: nn.LeakyReLU(0.01),
    "tanh": nn.Tanh,
    "sigmoid": nn.Sigmoid,
    "erf": Erf,
    "elu": nn.ELU,
    "selu": nn.SELU,
    "celu": nn.CELU,
    "gelu": nn.GELU,
    "gelu_tanh": lambda: nn.GELU(approximate="tanh"),
    "silu": nn.SiLU,
    "swish": nn.SiLU,
    "softplus": nn.Softplus,
    "softsign": nn.Softsign,
    "relu6": nn.ReLU6,
    "hard_tanh": nn.Hardtanh,
    "mish": nn.Mish,
}


def init_weight(weight: torch.Tensor, family: str, sigma_w: float, g: torch.Generator) -> None:
    """Draws a square hidden layer's weights in place, Var(W_ij) = sigma_w^2 / fan_in, as gradbench."""
    fan_in = weight.shape[1]
    std = sigma_w / math.sqrt(fan_in)
    if family == "gaussian":
        weight.normal_(0.0, std, generator=g)
    elif family == "uniform":
        weight.uniform_(-std * math.sqrt(3.0), std * math.sqrt(3.0), generator=g)
    elif family == "truncated_normal":
        nn.init.trunc_normal_(weight, 0.0, 1.0, -2.0, 2.0, generator=g)
        weight.mul_(std / _TRUNCATED_STD)
    elif family == "orthogonal":
        nn.init.orthogonal_(weight, gain=sigma_w, generator=g)
    else:
        raise ValueError(
            f"init family {family!r}: one of gaussian, uniform, truncated_normal, orthogonal"
        )


class Network:
    """One `nn.Sequential` of a shape, reused for every config of that shape."""

    def __init__(self, activation: str, depth: int, width: int):
        self.hidden = [nn.Linear(width, width) for _ in range(depth)]
        self.readout = nn.Linear(width, width, bias=False)
        layers = [m for lin in self.hidden for m in (lin, ACTIVATIONS[activation]())]
        self.model = nn.Sequential(*layers, self.readout)
        self.pre_activations: list[torch.Tensor] = []
        for lin in self.hidden:
            lin.register_forward_hook(self._keep)

    def _keep(self, module, inputs, output: torch.Tensor) -> None:
        output.retain_grad()
        self.pre_activations.append(output)

    def statistics(
        self, family: str, sigma_w: float, sigma_b: float, x, u, g: torch.Generator
    ) -> torch.Tensor:
        """(4, depth) statistics in `benchmarks.networks_file.STATS` order for freshly drawn weights."""
        with torch.no_grad():
            for lin in self.hidden:
                init_weight(lin.weight, family, sigma_w, g)
                lin.bias.normal_(0.0, sigma_b, generator=g)
            self.readout.weight.normal_(0.0, 1.0 / math.sqrt(self.readout.in_features), generator=g)
        self.model.zero_grad(set_to_none=True)
        self.pre_activations.clear()
        loss = (u * self.model(x)).sum() / x.shape[0]
        loss.backward()
        with torch.no_grad():
            return torch.stack(
                [
                    torch.stack([z.grad.norm() for z in self.pre_activations]),
                    torch.stack([lin.weight.grad.norm() for lin in self.hidden]),
                    torch.stack([lin.bias.grad.norm() for lin in self.hidden]),
                    torch.stack([z.square().mean() for z in self.pre_activations]),
                ]
            ).log10()


def layer_statistics(columns: dict[str, list], seed: int) -> list[np.ndarray]:
    """The (4, depth) statistics of every network, in the order of `columns`.

    Networks are visited grouped by shape so that each `Network` is built once; inputs x and probe
    directions u ~ N(0, 1) are drawn once per (replicate, batch, width), as gradbench shares them
    within a replicate.
    """
    n = len(columns["depth"])
    shape_of = [
        (columns["activation"][i], int(columns["depth"][i]), int(columns["width"][i]))
        for i in range(n)
    ]
    g = torch.Generator().manual_seed(seed)
    networks: dict[tuple, Network] = {}
    data: dict[tuple, tuple[torch.Tensor, torch.Tensor]] = {}
    out: list[np.ndarray | None] = [None] * n
    for i in sorted(range(n), key=lambda i: shape_of[i]):
        activation, depth, width = shape_of[i]
        batch = int(columns["batch"][i])
        if shape_of[i] not in networks:
            networks.clear()  # one shape at a time: its modules' memory is freed
            networks[shape_of[i]] = Network(activation, depth, width)
        data_key = (int(columns["replicate"][i]), batch, width)
        if data_key not in data:
            data[data_key] = (
                torch.randn(batch, width, generator=g),
                torch.randn(batch, width, generator=g),
            )
        stats = networks[shape_of[i]].statistics(
            columns["init_family"][i],
            math.sqrt(float(columns["sigma_w2"][i])),
            math.sqrt(float(columns["sigma_b2"][i])),
            *data[data_key],
            g,
        )
        out[i] = stats.numpy()
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.torch_sweep", description=__doc__)
    parser.add_argument("configs", type=Path, help="the JSON file benchmarks.end_to_end writes")
    parser.add_argument("--threads", type=int, help="torch threads (default: PyTorch's own)")
    parser.add_argument("--out", type=Path, help="write the statistics here (.npz)")
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    document = json.loads(args.configs.read_text())
    start = time.perf_counter()
    stats = layer_statistics(document["columns"], int(document["seed"]))
    seconds = time.perf_counter() - start
    if args.out:
        np.savez(
            args.out,
            stats=np.concatenate([s.T for s in stats]),  # (total layers, 4)
            depth=np.array([s.shape[1] for s in stats]),
        )
    facts = {"networks": len(stats), "loop_seconds": seconds, "threads": torch.get_num_threads()}
    print(json.dumps(facts))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
