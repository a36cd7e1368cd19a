"""How values map to positions and colours: log and symlog axes with plain-text ticks, the edges of
heatmap cells, and the colour scale of gradient ratios with its colour bar.

Tick labels are plain text ("10⁻²"), never mathtext, which costs a parse per label, font size and
renderer; minor ticks are left out, since on a heatmap they mark nothing and each costs as much to
draw as a major one.
"""

from __future__ import annotations

import numpy as np
from matplotlib.colors import SymLogNorm
from matplotlib.figure import Figure
from matplotlib.ticker import FuncFormatter, NullLocator

from gradbench.notation import fmt


def cell_edges(values: np.ndarray, log: bool) -> np.ndarray:
    """Cell edges around sorted cell centres (geometric midpoints on a log axis)."""
    v = np.asarray(values, dtype=float)
    if log:
        return 10.0 ** cell_edges(np.log10(v), False)
    if v.size == 1:
        return v[0] + np.array([-0.5, 0.5]) * (abs(v[0]) or 1.0)
    mid = (v[1:] + v[:-1]) / 2
    return np.concatenate([[2 * v[0] - mid[0]], mid, [2 * v[-1] - mid[-1]]])


_SUPERSCRIPTS = str.maketrans("-0123456789", "⁻⁰¹²³⁴⁵⁶⁷⁸⁹")


def power_label(value: float, _position=None) -> str:
    """ "10⁻²" at powers of ten, 3 significant digits elsewhere (a tick formatter)."""
    exponent = np.log10(value) if value > 0 else np.nan
    if np.isfinite(exponent) and abs(exponent - round(exponent)) < 1e-9:
        return "10" + str(round(exponent)).translate(_SUPERSCRIPTS)
    return fmt(float(value))


def set_log_scale(ax, which: str) -> None:
    """A log scale on axis `which` ("x" or "y") with plain-text labels and no minor ticks."""
    (ax.set_xscale if which == "x" else ax.set_yscale)("log")
    axis = ax.xaxis if which == "x" else ax.yaxis
    axis.set_major_formatter(FuncFormatter(power_label))
    axis.set_minor_locator(NullLocator())


def style_axis(ax, which: str, values, log: bool) -> None:
    """Log scale where asked; ticks at the swept values when there are few of them; no minor ticks."""
    axis = ax.xaxis if which == "x" else ax.yaxis
    if log:
        set_log_scale(ax, which)
    if len(values) <= 10:
        axis.set_ticks(list(values), labels=[fmt(float(v)) for v in values])
    axis.set_minor_locator(NullLocator())


def symlog_ticks(t: float, vmax: float) -> list[float]:
    """0, +-t and the powers of ten beyond t up to vmax, for a symlog axis with linthresh t."""
    mags = [t, *(10.0**k for k in range(1, 8) if t < 10.0**k <= vmax)]
    return sorted({0.0, *mags, *(-m for m in mags)})


def ratio_norm(values: np.ndarray, t: float, short: str = "|r|") -> tuple[SymLogNorm, str]:
    """The colour scale of log10 ratios, and why it is clipped where it is.

    Linear within the stable band ±t and logarithmic beyond, so that both the threshold and
    r ~ -60 read; clipped symmetrically at the 98th percentile of |value|, at least 1.5 t.
    """
    size = np.abs(np.asarray(values, dtype=float))
    size = size[np.isfinite(size)]
    p98 = float(np.percentile(size, 98)) if size.size else 0.0
    vmax = max(p98, 1.5 * t)
    why = f"98th percentile of {short}" if p98 >= 1.5 * t else "1.5 t"
    return SymLogNorm(linthresh=t, linscale=1.0, vmin=-vmax, vmax=vmax, base=10), why


def ratio_colourbar(fig: Figure, mesh, axes, text: str, why: str) -> None:
    """A colour bar for `ratio_norm` colours with ticks at 0, ±t, powers of ten and lines at ±t."""
    norm = mesh.norm
    t, vmax = norm.linthresh, norm.vmax
    cbar = fig.colorbar(mesh, ax=axes, extend="both", shrink=0.9)
    ticks = symlog_ticks(t, vmax)
    cbar.set_ticks(ticks, labels=[f"{v:g}" for v in ticks])
    cbar.minorticks_off()
    cbar.set_label(
        f"{text}\nsymlog colours (linear within ±t), clipped at ±{vmax:.3g} ({why})", fontsize=8
    )
    for lv in (-t, t):
        cbar.ax.axhline(lv, color="black", lw=1, ls="--" if lv < 0 else "-")
