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

from gradbench.engine.layerstats import LOG_DELTA, LOG_GRAD_B, LOG_GRAD_W, TINY_DELTA, TINY_INPUT

LN10 = math.log(10.0)


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
        Arrays of shape (..., L): `log10_delta`, `log10_grad_w`, `log10_grad_b`, `log10_q` (NaN where
        the arithmetic could not represent the value) and `flag` (index into `gradbench.schema.FLAGS`).
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
        kept = np.where(active, frame_delta, 0.0)
        with np.errstate(invalid="ignore"):
            frame_delta = np.flip(np.cumsum(np.flip(kept, -1), -1), -1)
    with np.errstate(invalid="ignore"):
        ln_delta = frame_delta + top - s_prev
        ln = {
            "log10_delta": ln_delta,
            "log10_grad_w": tags[..., LOG_GRAD_W] + ln_delta + s_prev,
            "log10_grad_b": tags[..., LOG_GRAD_B] + ln_delta,
            "log10_q": log_q,
        }
    values = np.stack(list(ln.values()))
    nonfinite = np.any(np.isnan(values) | (values == np.inf), axis=0)
    below = values == -np.inf
    # The kernel's tiny flags say which vectors were lost to underflow (`gradbench.schema.lost_below`). In
    # log mode the backward signal is renormalised every layer and cannot get there; an exact zero
    # there is a true zero (dead units).
    delta_lost = (tags[..., TINY_DELTA] > 0.5) & (measure == "plain")
    input_lost = tags[..., TINY_INPUT] > 0.5
    q_lost = np.asarray(forward.tiny_z) > 0.5
    zero = below[0] & (measure == "log")
    lost = {
        "log10_delta": nonfinite | delta_lost | below[0],
        "log10_grad_w": nonfinite | delta_lost | below[0] | input_lost,
        "log10_grad_b": nonfinite | delta_lost | below[0],
        "log10_q": q_lost,
    }
    underflow = delta_lost | input_lost | q_lost | below[3]
    flag = np.select([nonfinite, underflow, zero], [3, 2, 1], 0)

    out = {}
    for name, v in ln.items():
        out[name] = np.where(lost[name] | ~np.isfinite(v), np.nan, v / LN10)
    out["flag"] = flag
    return out
