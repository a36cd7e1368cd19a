"""The PyTorch program's training runs (`benchmarks.torch_sweep`): the rnn on the adding problem.

What gradbench's `[train]` section does for the recurrent sweep (docs/results.md, "Training runs"),
written the way a PyTorch user writes it: per run (one network and one clip setting) the
`torch_nets.RNN` of its structure, re-initialised in place, `torch.optim.SGD` at the run's lr
(`momentum`: SGD with momentum 0.9; `adam`: Adam), and for the clip rule `global_norm`
`torch.nn.utils.clip_grad_norm_` (`value`: `clip_grad_value_`), for `steps` steps on the whole
data set (or a random minibatch of `train_batch` examples per step).

The adding problem (Hochreiter & Schmidhuber 1997, the variant of Le et al. 2015): sequences of T
steps of 2 features, a value ~ U(0, 1) and a marker that is 1 at one step uniform in [0, T // 2)
and one uniform in [T // 2, T); the target is the sum of the two marked values, the loss
mean((y - t)^2). Drawn once per (T, samples) with this program's own generator: every run of one
depth trains on the same sequences, as in gradbench, but not on gradbench's.

Recorded at steps 0, e, 2e, ... and after the last step K (`networks_file.TRAIN_STATS`): the loss
before step s, the step's pre-clip global gradient norm, its clipped norm and the norm of the
parameter change (NaN at K), the per-step weight gradient norms of the first and last step,
and over the steps up to the next log point the share that clipping changed and the largest
norms; per step t of the unrolled network, ||dL/dW_t||_F = ||delta_t^T h_{t-1}|| and ||dL/db_t||
(computed at log points only). A run whose loss or gradient is not finite stops there
(`diverged_step`); its later log points stay NaN.
"""

from __future__ import annotations

import math

import numpy as np
import torch
from torch.nn import functional

from benchmarks.torch_nets import RNN, log10

OPTIMIZERS = {
    "sgd": lambda params, lr: torch.optim.SGD(params, lr=lr),
    "momentum": lambda params, lr: torch.optim.SGD(params, lr=lr, momentum=0.9),
    "adam": lambda params, lr: torch.optim.Adam(params, lr=lr),
}


def adding_problem(samples: int, steps: int, g: torch.Generator):
    """Inputs (steps, samples, 2), time-major as `RNN.forward` reads them, and targets (samples, 1)."""
    values = torch.rand(samples, steps, generator=g)
    half = steps // 2
    rows = torch.arange(samples)
    markers = torch.zeros(samples, steps)
    markers[rows, torch.randint(0, half, (samples,), generator=g)] = 1.0
    markers[rows, torch.randint(half, steps, (samples,), generator=g)] = 1.0
    target = (values * markers).sum(1, keepdim=True)
    return torch.stack([values, markers], -1).transpose(0, 1).contiguous(), target


def clip_gradients(params: list, rule: str, threshold: float) -> tuple[torch.Tensor, bool]:
    """Clips the gradients in place by `rule`; returns the pre-clip global norm and whether
    clipping changed them."""
    if rule == "global_norm":
        norm = torch.nn.utils.clip_grad_norm_(params, threshold)
        return norm, bool(norm > threshold)
    norm = torch.nn.utils.get_total_norm([p.grad for p in params])
    if rule == "value":
        changed = any(bool(p.grad.abs().max() > threshold) for p in params)
        torch.nn.utils.clip_grad_value_(params, threshold)
        return norm, changed
    return norm, False


def train(net: RNN, data, run: dict, log_every: int, g: torch.Generator) -> dict:
    """One training run; its record (see the module docstring): `steps` (n_logs,), every
    `TRAIN_STATS` name (n_logs,), `diverged` (n_logs,), `grad_w` and `grad_b` (n_logs, T)."""
    x, target = data
    net.draw(run, g)
    params = list(net.parameters())
    optimizer = OPTIMIZERS[run["optimizer"]](params, float(run["lr"]))
    rule, threshold = run["clip"], float(run["clip_threshold"] or math.nan)
    steps, samples, batch = int(run["steps"]), int(run["samples"]), int(run["train_batch"])
    logs = [*range(0, steps, log_every), steps]
    n, length = len(logs), x.shape[0]
    raw = {name: np.full(n, np.nan) for name in ("loss", "grad", "clipped", "update")}
    raw.update({f"{name}_max": np.full(n, -np.inf) for name in ("grad", "clipped", "update")})
    grad_w, grad_b = np.full((n, length), np.nan), np.full((n, length), np.nan)
    live, clipped_steps = np.zeros(n), np.zeros(n)
    diverged, row = -1, -1
    for step in range(steps + 1):
        logged = row + 1 < n and logs[row + 1] == step
        row += logged
        net.keep = logged
        pick = slice(None) if batch == samples else torch.randperm(samples, generator=g)[:batch]
        optimizer.zero_grad(set_to_none=True)
        loss = functional.mse_loss(net(x[:, pick]), target[pick])
        loss.backward()
        if step == steps:
            norm, changed = torch.nn.utils.get_total_norm([p.grad for p in params]), False
        else:
            norm, changed = clip_gradients(params, rule, threshold)
        if not (torch.isfinite(loss) and torch.isfinite(norm)):
            diverged = step
            break
        if logged:
            if batch != samples:
                with torch.no_grad():
                    loss = functional.mse_loss(net(x), target)
            raw["loss"][row], raw["grad"][row] = loss.item(), norm.item()
            _, per_step_w, per_step_b = net.step_gradients()
            grad_w[row] = torch.linalg.vector_norm(per_step_w, dim=(1, 2)).numpy()
            grad_b[row] = torch.linalg.vector_norm(per_step_b, dim=1).numpy()
        if step == steps:
            break
        clipped = torch.nn.utils.get_total_norm([p.grad for p in params]) if changed else norm
        before = [p.detach().clone() for p in params]
        optimizer.step()
        with torch.no_grad():
            update = math.sqrt(
                sum(float((p - b).square().sum()) for p, b in zip(params, before, strict=True))
            )
        if logged:
            raw["clipped"][row], raw["update"][row] = float(clipped), update
        for name, value in (("grad", float(norm)), ("clipped", float(clipped)), ("update", update)):
            raw[f"{name}_max"][row] = max(raw[f"{name}_max"][row], value)
        live[row] += 1
        clipped_steps[row] += changed
    return _record(raw, grad_w, grad_b, live, clipped_steps, logs, diverged)


def _record(raw, grad_w, grad_b, live, clipped_steps, logs, diverged) -> dict:
    def lg(values):
        return log10(torch.from_numpy(np.asarray(values, np.float64)))

    with np.errstate(invalid="ignore", divide="ignore"):
        fraction = np.where(live > 0, clipped_steps / live, np.nan)
    steps = np.asarray(logs)
    return {
        "step": steps,
        "loss": raw["loss"],
        "log10_grad_norm": lg(raw["grad"]),
        "log10_clipped_norm": lg(raw["clipped"]),
        "log10_update_norm": lg(raw["update"]),
        "log10_grad_w_first": lg(grad_w[:, 0]),
        "log10_grad_w_last": lg(grad_w[:, -1]),
        "clipped_fraction": fraction,
        "log10_grad_norm_max": lg(raw["grad_max"]),
        "log10_clipped_norm_max": lg(raw["clipped_max"]),
        "log10_update_norm_max": lg(raw["update_max"]),
        "diverged": (diverged >= 0) & (steps >= diverged),
        "grad_w": lg(grad_w),
        "grad_b": lg(grad_b),
    }


def training_runs(training: dict, seed: int, column) -> list[dict]:
    """Every run of `training` (a networks file's entry), grouped by structure so that each
    `RNN` is built once and each (T, samples) data set drawn once; in the order of the file.
    `column(columns, name)` reads a column (`networks_file.column`)."""
    columns, log_every = training["columns"], int(training["log_every"])
    names = list(columns)
    n = len(columns["depth"])
    rows = [{name: column(columns, name)[i] for name in names} for i in range(n)]
    g = torch.Generator().manual_seed(seed + 1)
    nets: dict[tuple, RNN] = {}
    data: dict[tuple, tuple] = {}
    out: list[dict | None] = [None] * n
    key = lambda i: (rows[i]["activation"], int(rows[i]["width"]), int(rows[i]["depth"]))  # noqa: E731
    for i in sorted(range(n), key=key):
        activation, width, depth = key(i)
        if (activation, width) not in nets:
            nets.clear()
            nets[activation, width] = RNN(activation, width, inputs=2, outputs=1)
        task = (depth, int(rows[i]["samples"]))
        if task not in data:
            data[task] = adding_problem(task[1], depth, g)
        out[i] = train(nets[activation, width], data[task], rows[i], log_every, g)
    return out
