"""The tables of a sweep's training, from the trainers' raw records: per log step, per log step and
layer, and one outcome row per config (whether it trained, diverged, how often it was clipped).

Host-side numpy and pandas only; the columns are those of docs/results.md.
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np
import pandas as pd

from gradbench import registry


class Training(NamedTuple):
    """Host-side results of a sweep's training: the tables of docs/results.md and per-group facts."""

    steps: pd.DataFrame  # data/training.parquet: config x log step
    layers: pd.DataFrame  # data/training_layers.parquet: config x log step x layer
    outcomes: pd.DataFrame  # one row per config, merged into the summary
    facts: list[dict]


def log_steps(steps: int, log_every: int) -> np.ndarray:
    """The steps at which the trainer records (`gradbench.training.trainer.Record`): 0, e, 2e, ...
    below K, and K."""
    return np.append(np.arange(0, steps, log_every), steps)


def _log10(x) -> np.ndarray:
    """log10 of norms and losses; NaN where the value is zero or not finite (never a number)."""
    x = np.asarray(x, np.float64)
    ok = np.isfinite(x) & (x > 0)
    return np.where(ok, np.log10(np.where(ok, x, 1.0)), np.nan)


def training_tables(
    records, steps: int, log_every: int, trained_below: float, facts=()
) -> Training:
    """training / training_layers / outcome tables from (config rows, Record, baseline loss) triples;
    the baseline is one number, or one per config row (a sequence task's, per depth).

    A config is `trained` when it did not diverge and its final loss is below `trained_below` times
    the task's baseline loss (`gradbench.training.datasets.baseline_loss`: the loss of the best
    input-independent prediction). The baseline, not the initial loss, is the yardstick: an
    exploding ReLU net starts with a loss of 1e9, and shrinking its outputs to zero would "reduce
    the loss 1e9-fold" without learning anything.
    """
    logged = log_steps(steps, log_every)
    step_tables, layer_tables, outcome_tables = [], [], []
    for part, rec, baseline in records:
        ids = part["config_id"].to_numpy()
        depth = part["depth"].to_numpy()
        n, t = len(ids), len(logged)
        diverged_step = np.asarray(rec.diverged_step)
        diverged = diverged_step >= 0
        column = lambda a: np.asarray(a, np.float64).ravel()  # noqa: E731
        live = np.asarray(rec.live_steps, np.float64)
        with np.errstate(invalid="ignore", divide="ignore"):
            fraction = np.where(live > 0, np.asarray(rec.clipped_steps) / live, np.nan)
        grad_w = _log10(rec.grad_w)  # (n, t, L)
        first = grad_w[:, :, 0]
        last = np.take_along_axis(grad_w, (depth - 1)[:, None, None], axis=2)[:, :, 0]
        step_tables.append(
            pd.DataFrame(
                {
                    "config_id": np.repeat(ids, t),
                    "step": np.tile(logged, n),
                    "loss": column(rec.loss),
                    "log10_loss": _log10(rec.loss).ravel(),
                    "log10_grad_norm": _log10(rec.grad_norm).ravel(),
                    "log10_clipped_norm": _log10(rec.clipped_norm).ravel(),
                    "log10_update_norm": _log10(rec.update_norm).ravel(),
                    "log10_grad_w_first": first.ravel(),
                    "log10_grad_w_last": last.ravel(),
                    "clipped_fraction": fraction.ravel(),
                    "log10_grad_norm_max": _log10(rec.grad_norm_max).ravel(),
                    "log10_clipped_norm_max": _log10(rec.clipped_norm_max).ravel(),
                    "log10_update_norm_max": _log10(rec.update_norm_max).ravel(),
                    "diverged": (
                        diverged[:, None] & (logged[None, :] >= diverged_step[:, None])
                    ).ravel(),
                }
            )
        )
        n_layers = grad_w.shape[2]
        keep = np.arange(n_layers)[None, None, :] < depth[:, None, None]
        keep = np.broadcast_to(keep, grad_w.shape)
        layer_tables.append(
            pd.DataFrame(
                {
                    "config_id": np.broadcast_to(ids[:, None, None], keep.shape)[keep],
                    "step": np.broadcast_to(logged[None, :, None], keep.shape)[keep],
                    "layer": np.broadcast_to(np.arange(1, n_layers + 1), keep.shape)[keep],
                    "log10_grad_w": grad_w[keep],
                    "log10_grad_b": _log10(rec.grad_b)[keep],
                }
            )
        )
        loss = np.asarray(rec.loss, np.float64)
        with np.errstate(invalid="ignore", divide="ignore"):
            ratio = np.where(diverged, np.nan, loss[:, -1] / loss[:, 0])
            fit = np.where(diverged, np.nan, loss[:, -1] / baseline)
            total = np.asarray(rec.clipped_steps).sum(1) / np.maximum(live.sum(1), 1)
        outcome_tables.append(
            pd.DataFrame(
                {
                    "config_id": ids,
                    "loss_initial": loss[:, 0],
                    "loss_final": loss[:, -1],
                    "loss_baseline": baseline,
                    "loss_ratio": ratio,
                    "fit_ratio": fit,
                    "trained": ~diverged & (fit < trained_below),
                    "diverged": diverged,
                    "diverged_step": pd.array(np.where(diverged, diverged_step, 0), "Int64"),
                    "clipped_fraction": np.where(live.sum(1) > 0, total, np.nan),
                    "log10_grad_norm_initial": _log10(rec.grad_norm[:, 0]),
                    "log10_grad_norm_max": _row_max(_log10(rec.grad_norm_max)),
                    "log10_clipped_norm_max": _row_max(_log10(rec.clipped_norm_max)),
                    "log10_update_norm_max": _row_max(_log10(rec.update_norm_max)),
                    "trained_below": float(trained_below),
                }
            )
        )
        outcome_tables[-1].loc[~diverged, "diverged_step"] = pd.NA
    return Training(
        pd.concat(step_tables, ignore_index=True),
        pd.concat(layer_tables, ignore_index=True),
        pd.concat(outcome_tables, ignore_index=True),
        list(facts),
    )


def _row_max(a: np.ndarray) -> np.ndarray:
    """Largest non-NaN value of each row; NaN for a row without one."""
    top = np.where(np.isnan(a), -np.inf, a).max(axis=1)
    return np.where(np.isneginf(top), np.nan, top)


def with_outcomes(summary: pd.DataFrame, training: Training) -> pd.DataFrame:
    """The summary with the training outcome columns of each config."""
    return summary.merge(training.outcomes, on="config_id", how="left", validate="1:1")


def manifest_entry(train, training: Training) -> dict:
    """The manifest's `training` entry: the [train] settings and per-group compile and run facts."""
    return {
        "optimizer": list(train.optimizer.values),
        "momentum": registry.MOMENTUM,
        "lr": {"values": list(train.lr.values), "scale": train.lr.scale},
        "clip": {rule: list(thresholds) for rule, thresholds in train.clip},
        "steps": train.steps,
        "log_every": train.log_every,
        "task": train.task,
        "samples": train.samples,
        "batch": train.batch,
        "outputs": train.outputs,
        "trained_below": train.trained_below,
        "groups": training.facts,
    }
