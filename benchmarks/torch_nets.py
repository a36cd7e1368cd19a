"""The PyTorch program's networks (`benchmarks.torch_sweep`), written the way a user writes them.

One module per structure (architecture, activation, depth, width, and a residual block's variant),
reused for every config of that structure: `draw(config, g)` re-initialises its weights in place
(which spares PyTorch's default initialisation and the allocations: the favourable way), and
`measure(...)` runs one probe loss J = mean_b <u_b, y_b> forward and backward and returns log10 of
what gradbench measures (README, "What is measured" and "Residual, normalised and recurrent
networks"). Hidden vectors keep their gradients with `retain_grad` (forward hooks on the dense
layers, or in `forward`); weight gradients are the parameters' own `.grad`.

- `MLP`: `nn.Sequential` of `nn.Linear` and the activation; (4, depth): ||dJ/dz_l||, ||dJ/dW_l||_F,
  ||dJ/db_l||, q_l = mean(z_l^2).
- `ResMLP`: h_l = h_{l-1} + alpha F(N(h_{l-1})) with a final N before the readout (pre), or
  h_l = N(h_{l-1} + alpha F(h_{l-1})) (post), F(a) = W phi(a) + b or W2 phi(W1 phi(a) + b1) + b2,
  N `nn.LayerNorm` / `nn.RMSNorm` without epsilon or gain (`nn.Identity` for norm "none", the pre
  form). (4, depth, 1 + branch_layers): sublayer 0 the stream signal ||dJ/dh_{l-1}||, the branch's
  weight and bias gradients together and mean(h_l^2); sublayer k dense layer k's ||dJ/dz_k||,
  ||dJ/dW_k||, ||dJ/db_k||, mean(z_k^2).
- `RNN`: z_t = W h_{t-1} + U x_t + b, h_t = phi(z_t), h_0 = 0, y = W_out h_T, one W for every
  step. (5, T): ||dJ/dz_t||, step t's contribution ||delta_t^T h_{t-1}|| to the shared W's gradient
  (zero, stored NaN, at t = 1), ||dJ/db_t||, mean(z_t^2), and the contributions' sum from t up
  (at t = 1 the shared W's whole gradient). `benchmarks.torch_training` trains it.

The draws have gradbench's distributions, not its numbers: Var(W_ij) = sigma_w^2 / fan_in,
Var(b_i) = sigma_b^2, Var(U_ij) = input_scale^2 / fan_in, Var(W_out) = 1 / width. Norms that are
0 or not finite are NaN, as in gradbench's tables. Arithmetic is plain float32: where a deep net
overflows or underflows, so does this program (gradbench's log domain does not).
"""

from __future__ import annotations

import math

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

# No epsilon, no gain: exactly scale-invariant, as gradbench's norms.
NORMS = {
    "none": lambda width: nn.Identity(),
    "layernorm": lambda width: nn.LayerNorm(width, eps=0.0, elementwise_affine=False),
    "rmsnorm": lambda width: nn.RMSNorm(width, eps=0.0, elementwise_affine=False),
}


def init_weight(weight: torch.Tensor, family: str, sigma_w: float, g: torch.Generator) -> None:
    """Draws a layer's weights in place, Var(W_ij) = sigma_w^2 / fan_in, as gradbench."""
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


def draw_dense(linear: nn.Linear, config: dict, g: torch.Generator) -> None:
    """A hidden layer's weights and bias in place, at the config's sigma_w^2 and sigma_b^2."""
    init_weight(linear.weight, config["init_family"], math.sqrt(config["sigma_w2"]), g)
    linear.bias.normal_(0.0, math.sqrt(config["sigma_b2"]), generator=g)


def draw_readout(readout: nn.Linear, g: torch.Generator) -> None:
    readout.weight.normal_(0.0, 1.0 / math.sqrt(readout.in_features), generator=g)


def probe_loss(y: torch.Tensor, u: torch.Tensor) -> torch.Tensor:
    """J = mean_b <u_b, y_b>."""
    return (u * y).sum() / u.shape[0]


def log10(stats: torch.Tensor) -> np.ndarray:
    """log10 of norms, NaN where a norm is 0 or not finite."""
    with np.errstate(divide="ignore", invalid="ignore"):
        out = np.log10(stats.double().numpy())
    out[~np.isfinite(out)] = np.nan
    return out


class MLP:
    """`nn.Sequential` of (nn.Linear, activation) x depth and a bias-free readout."""

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

    @torch.no_grad()
    def draw(self, config: dict, g: torch.Generator) -> None:
        for lin in self.hidden:
            draw_dense(lin, config, g)
        draw_readout(self.readout, g)

    def measure(self, x: torch.Tensor, u: torch.Tensor) -> np.ndarray:
        """(4, depth) statistics of the current weights, `networks_file.STATS` order."""
        self.model.zero_grad(set_to_none=True)
        self.pre_activations.clear()
        probe_loss(self.model(x), u).backward()
        with torch.no_grad():
            return log10(
                torch.stack(
                    [
                        torch.stack([z.grad.norm() for z in self.pre_activations]),
                        torch.stack([lin.weight.grad.norm() for lin in self.hidden]),
                        torch.stack([lin.bias.grad.norm() for lin in self.hidden]),
                        torch.stack([z.square().mean() for z in self.pre_activations]),
                    ]
                )
            )


class ResMLP(nn.Module):
    """`depth` residual blocks of `branch_layers` dense layers each, pre- or post-norm."""

    def __init__(
        self, activation: str, depth: int, width: int, branch_layers: int, norm: str, position: str
    ):
        super().__init__()
        self.blocks = nn.ModuleList(
            nn.ModuleList(nn.Linear(width, width) for _ in range(branch_layers))
            for _ in range(depth)
        )
        self.readout = nn.Linear(width, width, bias=False)
        self.phi = ACTIVATIONS[activation]()
        self.norm = NORMS[norm](width)
        self.post = norm != "none" and position == "post"
        self.final_norm = norm != "none" and not self.post
        self.alpha = 1.0
        self.streams: list[torch.Tensor] = []  # h_{l-1}, block l's input
        self.outputs: list[torch.Tensor] = []  # h_l
        self.dense: list[torch.Tensor] = []  # every block's z_1 .. z_branch_layers, in order
        for block in self.blocks:
            for lin in block:
                lin.register_forward_hook(self._keep)

    def _keep(self, module, inputs, output: torch.Tensor) -> None:
        output.retain_grad()
        self.dense.append(output)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = x
        for block in self.blocks:
            h.retain_grad()
            self.streams.append(h)
            a = h if self.post else self.norm(h)
            for lin in block:
                a = lin(self.phi(a))
            h = self.norm(h + self.alpha * a) if self.post else h + self.alpha * a
            self.outputs.append(h)
        return self.readout(self.norm(h) if self.final_norm else h)

    @torch.no_grad()
    def draw(self, config: dict, g: torch.Generator) -> None:
        for block in self.blocks:
            for lin in block:
                draw_dense(lin, config, g)
        draw_readout(self.readout, g)
        self.alpha = float(config["alpha"])

    def measure(self, x: torch.Tensor, u: torch.Tensor) -> np.ndarray:
        """(4, depth, 1 + branch_layers) statistics, `networks_file.STATS` order."""
        self.zero_grad(set_to_none=True)
        for kept in (self.streams, self.outputs, self.dense):
            kept.clear()
        x = x.detach().requires_grad_()  # its gradient is the stream signal at block 1
        probe_loss(self(x), u).backward()
        with torch.no_grad():
            shape = (len(self.blocks), len(self.blocks[0]))
            lins = [lin for block in self.blocks for lin in block]
            dense = [
                torch.stack([z.grad.norm() for z in self.dense]),
                torch.stack([lin.weight.grad.norm() for lin in lins]),
                torch.stack([lin.bias.grad.norm() for lin in lins]),
                torch.stack([z.square().mean() for z in self.dense]),
            ]
            dense = [d.view(shape) for d in dense]
            block = [
                torch.stack([h.grad.norm() for h in self.streams]),
                dense[1].norm(dim=1),  # the branch's weight gradients together
                dense[2].norm(dim=1),
                torch.stack([h.square().mean() for h in self.outputs]),
            ]
            return log10(
                torch.stack(
                    [torch.cat([b[:, None], d], 1) for b, d in zip(block, dense, strict=True)]
                )
            )


class RNN(nn.Module):
    """Elman network: W, b shared by every step (`recurrent`), U (`input`), readout from h_T.

    `forward(xs)` runs len(xs) steps of xs (steps, batch, inputs); with `keep` set it keeps each
    step's input state h_{t-1} and pre-activation z_t (with its gradient) for `step_gradients`.
    """

    def __init__(self, activation: str, width: int, inputs: int | None = None, outputs=None):
        super().__init__()
        self.recurrent = nn.Linear(width, width)
        self.input = nn.Linear(inputs or width, width, bias=False)
        self.readout = nn.Linear(width, outputs or width, bias=False)
        self.phi = ACTIVATIONS[activation]()
        self.keep = True
        self.states: list[torch.Tensor] = []
        self.pre_activations: list[torch.Tensor] = []

    def forward(self, xs: torch.Tensor) -> torch.Tensor:
        self.states.clear()
        self.pre_activations.clear()
        # U x_t + b of every step in one product, then one addmm a step: 1.6x faster than
        # `self.recurrent(h) + U x_t` on 2 cores (width 32, batch 64).
        drive = self.input(xs) + self.recurrent.bias
        weight_t = self.recurrent.weight.T
        h = xs.new_zeros(xs.shape[1], self.recurrent.in_features)
        for drive_t in drive:
            z = torch.addmm(drive_t, h, weight_t)
            if self.keep:
                z.retain_grad()
                self.states.append(h)
                self.pre_activations.append(z)
            h = self.phi(z)
        return self.readout(h)

    @torch.no_grad()
    def draw(self, config: dict, g: torch.Generator) -> None:
        draw_dense(self.recurrent, config, g)
        init_weight(self.input.weight, "gaussian", float(config["input_scale"]), g)
        draw_readout(self.readout, g)

    @torch.no_grad()
    def step_gradients(self) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Per step t of the last backward pass: dJ/dz_t (T, batch, width), the gradient of step
        t's use of W, dJ/dW_t = sum_b delta_t h_{t-1}^T (T, width, width), and of b (T, width)."""
        deltas = torch.stack([z.grad for z in self.pre_activations])
        per_step_w = deltas.transpose(1, 2) @ torch.stack(self.states)
        return deltas, per_step_w, deltas.sum(1)

    def measure(self, xs: torch.Tensor, u: torch.Tensor) -> np.ndarray:
        """(5, T) statistics, `networks_file.RNN_STATS` order."""
        self.zero_grad(set_to_none=True)
        self.keep = True
        probe_loss(self(xs), u).backward()
        deltas, per_step_w, per_step_b = self.step_gradients()
        with torch.no_grad():
            suffix_sums = per_step_w.flip(0).cumsum(0).flip(0)
            z = torch.stack(self.pre_activations)
            return log10(
                torch.stack(
                    [
                        torch.linalg.vector_norm(deltas, dim=(1, 2)),
                        torch.linalg.vector_norm(per_step_w, dim=(1, 2)),
                        torch.linalg.vector_norm(per_step_b, dim=1),
                        z.square().mean((1, 2)),
                        torch.linalg.vector_norm(suffix_sums, dim=(1, 2)),
                    ]
                )
            )
