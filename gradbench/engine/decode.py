"""Host side: raw kernel statistics -> true per-layer log10 magnitudes and flags (numpy, float64).

The kernel reports each backward signal in a frame: in log mode every layer divides the signal by its
norm and reports the log of what it removed, and homogeneous forward passes carry h = exp(s) h_hat. The
true magnitude of a layer's statistic is its frame value plus the logs removed above it, which this
module adds up in float64. In plain mode there are no frames and this is a change of units only.
"""

from __future__ import annotations

import math

import numpy as np
from jaxtyping import Float, Int, Shaped

from gradbench.engine.layerstats import (
    LOG_DELTA,
    LOG_GRAD_B,
    LOG_GRAD_W,
    LOG_GRAD_W_SUM,
    N_TAG,
    STREAM_LOG,
    STREAM_TINY,
    TINY_DELTA,
    TINY_INPUT,
)

LN10 = math.log(10.0)
nan = math.nan


def decode(
    tags: Float[np.ndarray, "*chunk L tag"],
    forward,
    depth: Int[np.ndarray, "*chunk"],
    *,
    measure: str,
) -> dict[str, Shaped[np.ndarray, "*chunk L"]]:
    """Per-layer log10 statistics and flag codes.

    Args:
        tags: (..., L, N_TAG) raw statistics from `gradbench.engine.layerstats`.
        forward: `gradbench.engine.model.Forward` arrays, (..., L) per layer and (...) for the top scale.
        depth: (...) the depth of each config; layers at index >= depth are padding.
        measure: "log" (frames to undo) or "plain".

    Returns:
        Arrays of shape (..., L): `log10_delta`, `log10_grad_w`, `log10_grad_b`, `log10_q`,
        `log10_grad_w_sum` (the RNN's; NaN where the arithmetic could not represent the value, and
        for other architectures) and `flag` (index into `gradbench.schema.FLAGS`).
    """
    tags = np.asarray(tags, np.float64)
    log_q = np.asarray(forward.log_q, np.float64)
    s_prev = np.asarray(forward.log_h_scale, np.float64)
    top = np.asarray(forward.log_top_scale, np.float64)[..., None]
    layer = np.arange(tags.shape[-2])
    active = layer < np.asarray(depth)[..., None]

    frame_delta = tags[..., LOG_DELTA]
    if measure == "log":
        # Each layer removed its norm before passing the signal down: the true log norm of layer l is
        # the sum of what layers l..L removed.
        frame_delta = _from_above(frame_delta, active)
    with np.errstate(invalid="ignore"):
        ln_delta = frame_delta + top - s_prev
        ln = {
            "log10_delta": ln_delta,
            "log10_grad_w": tags[..., LOG_GRAD_W] + ln_delta + s_prev,
            "log10_grad_b": tags[..., LOG_GRAD_B] + ln_delta,
            "log10_q": log_q,
            # The RNN's shared-weight gradient from the steps above: the same frame as grad_w.
            "log10_grad_w_sum": (
                tags[..., LOG_GRAD_W_SUM] + top if tags.shape[-1] > LOG_GRAD_W_SUM else nan
            ),
        }
    return _finish(
        ln,
        delta_lost=(tags[..., TINY_DELTA] > 0.5) & (measure == "plain"),
        input_lost=tags[..., TINY_INPUT] > 0.5,
        q_lost=np.asarray(forward.tiny_z) > 0.5,
        measure=measure,
    )


def decode_residual(
    tags: Float[np.ndarray, "*chunk L tag"],
    forward,
    depth: Int[np.ndarray, "*chunk"],
    *,
    measure: str,
    branch_layers: Int[np.ndarray, "*chunk"],
    pre_norm: Shaped[np.ndarray, "*chunk"],
) -> dict[str, Shaped[np.ndarray, "*chunk L S"]]:
    """`decode` for residual blocks (`gradbench.engine.residual`): sublayer 0 is the block, the
    residual-stream signal dJ/dh_{l-1} at its input with its branch's weight and bias gradients
    together (the Frobenius norm over the branch's dense layers) and the q of its output; sublayers
    1..branch_layers are the branch's dense layers (dJ/dz_k, their own gradients, mean z_k^2).
    S = 1 + the kernel's most dense layers; a config's sublayers past its own `branch_layers` are
    padding.

    `pre_norm`: per config, whether the branch reads N(h), at true scale rather than in the
    stream's frame.
    """
    tags = np.asarray(tags, np.float64)
    s_in = np.asarray(forward.log_h_scale, np.float64)
    top = np.asarray(forward.log_top_scale, np.float64)[..., None]
    active = np.arange(tags.shape[-2]) < np.asarray(depth)[..., None]
    n_dense = (tags.shape[-1] - 2) // N_TAG
    stream = tags[..., STREAM_LOG]
    with np.errstate(invalid="ignore"):
        if measure == "log":
            through = _from_above(stream, active)  # the norms removed at and above each block
            above = through - np.where(active, stream, 0.0)
        else:
            through, above = stream, np.zeros_like(stream)
        # A pre-norm branch is at true scale, the stream in its frame (module docstring of residual).
        dense_frame = np.where(np.asarray(pre_norm)[..., None], 0.0, s_in)
        rows, stats = [], []
        for k in range(n_dense):
            col = 2 + N_TAG * k
            ln_delta = top + above + tags[..., col + LOG_DELTA] + s_in - dense_frame
            stats.append(
                {
                    "log10_delta": ln_delta,
                    "log10_grad_w": ln_delta + tags[..., col + LOG_GRAD_W] + dense_frame,
                    "log10_grad_b": ln_delta + tags[..., col + LOG_GRAD_B],
                    "log10_q": np.asarray(forward.dense_log_q, np.float64)[..., k],
                    "log10_grad_w_sum": nan,
                }
            )
            rows.append(
                _finish(
                    stats[-1],
                    delta_lost=(tags[..., col + TINY_DELTA] > 0.5) & (measure == "plain"),
                    input_lost=tags[..., col + TINY_INPUT] > 0.5,
                    q_lost=np.asarray(forward.dense_tiny)[..., k] > 0.5,
                    measure=measure,
                )
            )
        in_branch = [k < np.asarray(branch_layers)[..., None] for k in range(n_dense)]

        def together(name):
            return _log_root_sum_squares(
                [
                    np.where(inside, d[name], -np.inf)
                    for d, inside in zip(stats, in_branch, strict=True)
                ]
            )

        block = {
            "log10_delta": top + through,
            "log10_grad_w": together("log10_grad_w"),
            "log10_grad_b": together("log10_grad_b"),
            "log10_q": np.asarray(forward.log_q, np.float64),
            "log10_grad_w_sum": nan,
        }
    lost = (tags[..., STREAM_TINY] > 0.5) & (measure == "plain")
    block_row = _finish(
        block,
        delta_lost=lost,
        input_lost=np.zeros_like(lost),
        q_lost=np.asarray(forward.tiny_z) > 0.5,
        measure=measure,
    )
    # A dense layer's trouble is its block's too: the block's gradients are made of them.
    flags = [np.where(inside, r["flag"], 0) for r, inside in zip(rows, in_branch, strict=True)]
    worst = np.maximum.reduce([block_row["flag"], *flags])
    block_row["flag"] = worst
    return {name: np.stack([block_row[name], *(r[name] for r in rows)], -1) for name in block_row}


def _from_above(values: np.ndarray, active: np.ndarray) -> np.ndarray:
    """Per layer, the sum of `values` over it and the active layers above it."""
    kept = np.where(active, values, 0.0)
    with np.errstate(invalid="ignore"):
        return np.flip(np.cumsum(np.flip(kept, -1), -1), -1)


def _log_root_sum_squares(logs: list[np.ndarray]) -> np.ndarray:
    """ln sqrt(sum_k exp(2 x_k)), the log of the Frobenius norm of blocks with log norms x_k."""
    if len(logs) == 1:
        return logs[0]
    return 0.5 * np.logaddexp.reduce(2 * np.stack(logs), axis=0)


def _finish(ln: dict, *, delta_lost, input_lost, q_lost, measure: str) -> dict:
    """log10 values (NaN where lost or not finite) and flag codes from natural-log statistics."""
    ln = {name: np.broadcast_to(v, q_lost.shape) for name, v in ln.items()}
    values = np.stack([ln[k] for k in ("log10_delta", "log10_grad_w", "log10_grad_b", "log10_q")])
    nonfinite = np.any(np.isnan(values) | (values == np.inf), axis=0)
    below = values == -np.inf
    # The kernel's tiny flags say which vectors were lost to underflow (`gradbench.schema.lost_below`). In
    # log mode the backward signal is renormalised every layer and cannot get there; an exact zero
    # there is a true zero (dead units).
    zero = below[0] & (measure == "log")
    lost = {
        "log10_delta": nonfinite | delta_lost | below[0],
        "log10_grad_w": nonfinite | delta_lost | below[0] | input_lost,
        "log10_grad_b": nonfinite | delta_lost | below[0],
        "log10_q": q_lost,
        "log10_grad_w_sum": nonfinite | delta_lost,
    }
    underflow = delta_lost | input_lost | q_lost | below[3]
    flag = np.select([nonfinite, underflow, zero], [3, 2, 1], 0)

    out = {}
    for name, v in ln.items():
        with np.errstate(invalid="ignore"):
            out[name] = np.where(lost[name] | ~np.isfinite(v), np.nan, v / LN10)
    out["flag"] = flag
    return out
