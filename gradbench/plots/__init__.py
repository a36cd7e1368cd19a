"""Figures from run tables: phase diagrams, regime maps, ratio curves and layer profiles.

The only gradbench module that imports matplotlib. Every function takes pandas DataFrames with the
columns of docs/results.md and returns a `matplotlib.figure.Figure`; nothing here touches JAX, so a
stored run can be re-plotted without compiling anything. Figures are built with `Figure` rather than
pyplot, so they hold no global state and need no closing.

A figure has at most `MAX_PANELS` panels, one per facet (activation, init, ...). A sweep with more
facets is summarised by `facet_map` and `layer_map`: one heatmap row per facet, so every facet stays
visible in one panel. Statistics are aggregated with one pandas groupby per panel and drawn with plain
matplotlib: seaborn's per-point estimators (and its scipy import) took most of a report's time.
"""

from __future__ import annotations

import sys
from collections.abc import Mapping, Sequence
from pathlib import Path

import matplotlib

if "matplotlib.pyplot" not in sys.modules:  # respect a backend the user already chose (notebooks)
    matplotlib.use("Agg")

import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
from matplotlib import patheffects  # noqa: E402
from matplotlib.collections import LineCollection, PatchCollection, PolyCollection  # noqa: E402
from matplotlib.colors import BoundaryNorm, ListedColormap, Normalize, SymLogNorm  # noqa: E402
from matplotlib.figure import Figure  # noqa: E402
from matplotlib.lines import Line2D  # noqa: E402
from matplotlib.patches import Patch, Rectangle  # noqa: E402
from matplotlib.ticker import FuncFormatter, MaxNLocator, NullLocator  # noqa: E402
from matplotlib.transforms import blended_transform_factory  # noqa: E402

from gradbench.schema import ID_COLUMNS, REGIMES, SCALE_AXES, SEVERITY, config_axes  # noqa: E402

REGIME_COLOURS = {
    "vanishing": "#2c7bb6",
    "stable": "#a6d96a",
    "exploding": "#d7191c",
    "nonfinite": "#1a1a1a",
    "unmeasured": "#bdbdbd",
}
NONFINITE_STYLE = {"facecolor": REGIME_COLOURS["nonfinite"], "linewidth": 0}
UNMEASURED_STYLE = {"facecolor": "0.85", "edgecolor": "0.45", "hatch": "///", "linewidth": 0}
MAX_PANELS = 6  # more facets than this are drawn as rows of one heatmap (`facet_map`, `layer_map`)
RASTER_CELLS = 2_000  # heatmaps with more cells, and scatters with more points, are bitmaps in SVG
THEORY = {"color": "#00a050", "lw": 2}
LABELS = {
    "sigma_w2": "σ_w²",
    "sigma_w": "σ_w",
    "sigma_b2": "σ_b²",
    "sigma_b": "σ_b",
    "depth": "depth L",
    "layer": "layer l (1 = first hidden)",
    "log10_delta_ratio": "r = log₁₀(‖δ_1‖ / ‖δ_L‖)",
    "log10_grad_w_ratio": "log₁₀(‖∂J/∂W_1‖ / ‖∂J/∂W_L‖)",
    "log10_grad_b_ratio": "log₁₀(‖∂J/∂b_1‖ / ‖∂J/∂b_L‖)",
    "log10_delta": "log₁₀‖δ_l‖ = log₁₀‖∂J/∂z_l‖",
    "log10_grad_w": "log₁₀‖∂J/∂W_l‖_F",
    "log10_grad_b": "log₁₀‖∂J/∂b_l‖",
    "log10_q": "log₁₀ q_l (forward second moment)",
    "lr": "learning rate",
    "clip_threshold": "clip threshold",
    "step": "step",
    "fit": "loss / baseline loss",
    "log10_update_norm": "log₁₀ update norm ‖Δθ‖",
    "log10_grad_norm": "log₁₀‖∇L‖ before clipping",
}


def label(name: str) -> str:
    """The axis label of a column, in plain Unicode (mathtext costs a parse per label, size and
    renderer: a seventh of a report's time)."""
    return LABELS.get(name, name)


def _fmt(v: object) -> str:
    return f"{v:.3g}" if isinstance(v, float | np.floating) else str(v)


SYMBOLS = {"sigma_w2": "σ_w²", "sigma_w": "σ_w", "sigma_b2": "σ_b²", "sigma_b": "σ_b"}


def facet_label(columns: Sequence[str], key: object) -> str:
    """ "relu/he, σ_b² = 0.05": the names of categorical values, then numeric ones by symbol."""
    values = key if isinstance(key, tuple) else (key,)
    pairs = list(zip(columns, values, strict=True))
    words = [str(v) for _, v in pairs if isinstance(v, str)]
    rest = [f"{SYMBOLS.get(c, c)} = {_fmt(v)}" for c, v in pairs if not isinstance(v, str)]
    return ", ".join(["/".join(words)] * bool(words) + rest)


def _ramp(n: int, cmap: str = "viridis") -> list[tuple]:
    """n colours evenly inside `cmap`, leaving out its two ends (as seaborn's color_palette does)."""
    colours = matplotlib.colormaps[cmap](np.linspace(0, 1, n + 2)[1:-1])
    return [tuple(c) for c in colours]


def _categorical(n: int) -> list:
    """n distinguishable colours: matplotlib's ten, its twenty, or evenly from viridis."""
    if n <= 10:
        return [f"C{i}" for i in range(n)]
    if n <= 20:
        return list(matplotlib.colormaps["tab20"].colors[:n])
    return _ramp(n)


def thin(values: np.ndarray, n: int) -> np.ndarray:
    """At most n of the sorted `values`, evenly chosen, the first and the last always included."""
    if len(values) <= n:
        return values
    return values[np.unique(np.linspace(0, len(values) - 1, n).round().astype(int))]


def panel_count(df: pd.DataFrame, facet: str | Sequence[str] | None) -> int:
    """How many panels a facet grid over `facet` draws."""
    cols = _facet_cols(facet)
    return len(df.groupby(cols, observed=True, dropna=False)) if cols else 1


def config_columns(df: pd.DataFrame) -> list[str]:
    """The columns of `df` that describe a configuration (axes), not ids and not results."""
    return config_axes(df.columns)


def _facet_cols(facet: str | Sequence[str] | None) -> list[str]:
    return [facet] if isinstance(facet, str) else list(facet or [])


def _facets(df: pd.DataFrame, facet: str | Sequence[str] | None) -> list[tuple[str, pd.DataFrame]]:
    """Split `df` into (title, part), one per combination of the facet columns."""
    cols = _facet_cols(facet)
    if not cols:
        return [("", df)]
    out = []
    for key, part in df.groupby(cols, sort=True, observed=True, dropna=False):
        pairs = zip(cols, key if isinstance(key, tuple) else (key,), strict=True)
        out.append((", ".join(f"{label(c)} = {_fmt(v)}" for c, v in pairs), part))
    return out


TICKS = 5  # at most this many intervals between major ticks: each tick costs about a line of text


def _grid(n: int, extra_w: float = 1.4) -> tuple[Figure, list]:
    """n panels on a grid of up to 3 columns sharing both axes; ticks shown on the outer panels."""
    ncols = min(n, 3)
    nrows = -(-n // ncols)
    fig = Figure(figsize=(4.2 * ncols + extra_w, 3.3 * nrows + 1.4), layout="constrained")
    axes = fig.subplots(nrows, ncols, squeeze=False, sharex=True, sharey=True).ravel()
    for ax in axes[n:]:
        fig.delaxes(ax)
    for i, ax in enumerate(axes[:n]):  # a panel with no panel below it keeps its x tick labels
        ax.tick_params(labelbottom=i + ncols >= n, labelleft=i % ncols == 0)
        ax.locator_params(nbins=TICKS)
    return fig, list(axes[:n])


def _finish(fig: Figure, axes, x: str, y: str, suptitle: str, handles, **legend) -> Figure:
    ncols = axes[0].get_subplotspec().get_gridspec().ncols
    for i, ax in enumerate(axes):
        ax.set_xlabel(label(x) if i + ncols >= len(axes) else "")
        ax.set_ylabel(label(y) if i % ncols == 0 else "")
    if handles:
        fig.legend(handles=handles, frameon=False, fontsize=8, **legend)
    fig.suptitle(suptitle, fontsize=11)
    return fig


def _edges(values: np.ndarray, log: bool) -> np.ndarray:
    """Cell edges around sorted cell centres (geometric midpoints on a log axis)."""
    v = np.asarray(values, dtype=float)
    if log:
        return 10.0 ** _edges(np.log10(v), False)
    if v.size == 1:
        return v[0] + np.array([-0.5, 0.5]) * (abs(v[0]) or 1.0)
    mid = (v[1:] + v[:-1]) / 2
    return np.concatenate([[2 * v[0] - mid[0]], mid, [2 * v[-1] - mid[-1]]])


def _usable_log(values, log: bool) -> bool:
    return bool(log) and bool(np.all(np.asarray(values, dtype=float) > 0))


_SUPERSCRIPTS = str.maketrans("-0123456789", "⁻⁰¹²³⁴⁵⁶⁷⁸⁹")


def _power_label(value: float, _position=None) -> str:
    """ "10⁻²" at powers of ten, 3 significant digits elsewhere: plain text, because a mathtext
    label costs a parse per label, font size and renderer."""
    exponent = np.log10(value) if value > 0 else np.nan
    if np.isfinite(exponent) and abs(exponent - round(exponent)) < 1e-9:
        return "10" + str(round(exponent)).translate(_SUPERSCRIPTS)
    return _fmt(float(value))


def _log_scale(ax, which: str) -> None:
    """A log scale on axis `which` ("x" or "y") with plain-text labels and no minor ticks."""
    (ax.set_xscale if which == "x" else ax.set_yscale)("log")
    axis = ax.xaxis if which == "x" else ax.yaxis
    axis.set_major_formatter(FuncFormatter(_power_label))
    axis.set_minor_locator(NullLocator())


def _axis_style(ax, which: str, values, log: bool) -> None:
    """Log scale where asked; ticks at the swept values when there are few of them, no minor
    ticks (on a heatmap they mark nothing, and each costs as much to draw as a major one)."""
    axis = ax.xaxis if which == "x" else ax.yaxis
    if log:
        _log_scale(ax, which)
    if len(values) <= 10:
        axis.set_ticks(list(values), labels=[_fmt(float(v)) for v in values])
    axis.set_minor_locator(NullLocator())


def is_log_axis(manifest: Mapping, summary: pd.DataFrame, name: str | None) -> bool:
    """Whether to draw axis `name` on a log scale.

    Log when the sweep declared it logspace, or when its positive values are evenly spaced in log
    and not in linear terms (a depth list such as 8, 16, 32, 64).
    """
    if name is None or name not in summary:
        return False
    v = np.unique(pd.to_numeric(summary[name], errors="coerce").dropna().to_numpy(dtype=float))
    if v.size == 0 or np.any(v <= 0):
        return False
    if ((manifest.get("axes") or {}).get(name) or {}).get("scale") == "log":
        return True
    if v.size < 3 or v[-1] / v[0] < 8:
        return False
    dlin, dlog = np.diff(v), np.diff(np.log(v))
    return bool(np.ptp(dlog) < 0.1 * dlog.mean() and np.ptp(dlin) > 0.5 * dlin.mean())


def infer_axes(
    summary: pd.DataFrame, manifest: Mapping | None = None
) -> tuple[str | None, str | None, list[str] | None]:
    """Choose (x, y, facet) for the diagrams from the swept axes.

    x prefers the weight scale (in the units the sweep used), y prefers depth, then the bias scale;
    every other axis with more than one value becomes a facet column (several are combined into one
    facet label). x or y is None when fewer numeric axes were swept.
    """
    declared = (manifest or {}).get("axes") or {}
    swept = [
        a
        for a, spec in declared.items()
        if a in summary and a not in ID_COLUMNS and len((spec or {}).get("values", [])) > 1
    ]
    if not swept:  # no manifest: what varies in the table, one of each sigma pair
        swept = [c for c in config_columns(summary) if c != "init_family"]
        swept = [c for c in swept if summary[c].nunique(dropna=False) > 1]
        swept = [c for c in swept if not (c in ("sigma_w", "sigma_b") and f"{c}2" in swept)]
    numeric = [a for a in swept if pd.api.types.is_numeric_dtype(summary[a])]
    x = next((a for a in ("sigma_w2", "sigma_w", "sigma_b2", "sigma_b") if a in numeric), None)
    x = x or (numeric[0] if numeric else None)
    rest = [a for a in numeric if a != x]
    order_y = ("depth", "sigma_b2", "sigma_b", "width")
    y = next((a for a in order_y if a in rest), rest[0] if rest else None)
    facet = [a for a in swept if a not in (x, y)]
    return x, y, facet or None


def _cells(part: pd.DataFrame, x: str, y: str, value: str, bad: pd.Series | None = None):
    """Per (y, x) cell: the mean over replicates (NaN unless every replicate is finite) and flags.

    `bad` marks the rows that produced NaN/Inf (by default the nonfinite regime). Returns (xs, ys,
    grid) with grid columns (quantity, x value) and rows y values.
    """
    v = part[value].astype(float)
    if bad is None:
        bad = part["regime"].eq("nonfinite") if "regime" in part else np.isinf(v)
    tmp = pd.DataFrame({y: part[y], x: part[x], "v": v.where(np.isfinite(v)), "bad": bad})
    agg = tmp.groupby([y, x], sort=True).agg(
        mean=("v", "mean"), finite=("v", "count"), n=("v", "size"), nonfinite=("bad", "any")
    )
    agg["mean"] = agg["mean"].where(agg["finite"] == agg["n"])
    agg["unmeasured"] = agg["mean"].isna() & ~agg["nonfinite"]
    xs = np.sort(part[x].unique()).astype(float)
    ys = np.sort(part[y].unique()).astype(float)
    return xs, ys, agg.unstack(x).reindex(index=ys)


def _mark(ax, xe, ye, mask: np.ndarray, gid: str, style: Mapping) -> int:
    """Cover the masked cells with one PatchCollection tagged `gid`; returns the number marked."""
    rows, cols = np.nonzero(mask)
    rects = [
        Rectangle((xe[j], ye[i]), xe[j + 1] - xe[j], ye[i + 1] - ye[i])
        for i, j in zip(rows, cols, strict=True)
    ]
    if rects:
        coll = PatchCollection(rects, **style)
        coll.set_gid(gid)
        ax.add_collection(coll)
    return len(rects)


def crossing(xs: np.ndarray, f: np.ndarray, level: float) -> float | None:
    """First x where f crosses `level` (linear interpolation), or None."""
    ok = np.isfinite(f)
    xs, g = np.asarray(xs, dtype=float)[ok], f[ok] - level
    for i in range(len(g)):
        if g[i] == 0:
            return float(xs[i])
        if i + 1 < len(g) and g[i] * g[i + 1] < 0:
            return float(xs[i] - g[i] * (xs[i + 1] - xs[i]) / (g[i + 1] - g[i]))
    return None


def _symlog_ticks(t: float, vmax: float) -> list[float]:
    """0, +-t and the powers of ten beyond t up to vmax, for a symlog axis with linthresh t."""
    mags = [t, *(10.0**k for k in range(1, 8) if t < 10.0**k <= vmax)]
    return sorted({0.0, *mags, *(-m for m in mags)})


def _in_range(z: np.ndarray, levels: Sequence[float]) -> list[float]:
    z = z[np.isfinite(z)]
    return [lv for lv in levels if z.size and z.min() < lv < z.max()]


def _theory(ax, part, x, y, xs, ys, threshold: float | None) -> list[Line2D]:
    """Overlay mean-field predictions when the summary carries them; returns legend handles.

    chi_1 = 1, interpolated along x for every y value; and, when `threshold` is given, the contour
    where the predicted r reaches -t and +t (the depth where |predicted r| = t on a depth diagram).
    """
    handles = []
    if "chi1" in part and x in SCALE_AXES:
        chi = part.groupby([y, x])["chi1"].mean().unstack(x).reindex(index=ys, columns=xs)
        pts = [(c, yv) for yv in ys if (c := crossing(xs, chi.loc[yv].to_numpy(float), 1.0))]
        if pts:
            px, py = zip(*pts, strict=True)
            ax.plot(px, py, ls="-.", marker="o" if len(pts) == 1 else "", gid="chi1", **THEORY)
            handles.append(Line2D([], [], ls="-.", label="theory χ₁ = 1", **THEORY))
    pred = "predicted_log10_delta_ratio"
    if threshold is not None and pred in part and len(xs) > 1 and len(ys) > 1:
        p = part.groupby([y, x])[pred].mean().unstack(x).reindex(index=ys, columns=xs)
        p = np.ma.masked_invalid(p.to_numpy(float))
        if levels := _in_range(p.filled(np.nan), (-threshold, threshold)):
            cs = ax.contour(
                xs,
                ys,
                p,
                levels=levels,
                colors=THEORY["color"],
                linestyles=":",
                linewidths=THEORY["lw"],
            )
            cs.set_gid("theory")
            handles.append(Line2D([], [], ls=":", label=f"theory |r| = {threshold:g}", **THEORY))
    return handles


def _raster(cells: int) -> bool:
    """Whether an artist of this many cells or points is embedded as a bitmap in SVG files."""
    return cells > RASTER_CELLS


def _ratio_norm(values: np.ndarray, t: float, short: str = "|r|") -> tuple[SymLogNorm, str]:
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


def _ratio_colourbar(fig: Figure, mesh, axes, text: str, why: str) -> None:
    """A colour bar for `_ratio_norm` colours with ticks at 0, ±t, powers of ten and lines at ±t."""
    norm = mesh.norm
    t, vmax = norm.linthresh, norm.vmax
    cbar = fig.colorbar(mesh, ax=axes, extend="both", shrink=0.9)
    ticks = _symlog_ticks(t, vmax)
    cbar.set_ticks(ticks, labels=[f"{v:g}" for v in ticks])
    cbar.minorticks_off()
    cbar.set_label(
        f"{text}\nsymlog colours (linear within ±t), clipped at ±{vmax:.3g} ({why})", fontsize=8
    )
    for lv in (-t, t):
        cbar.ax.axhline(lv, color="black", lw=1, ls="--" if lv < 0 else "-")


def _flag_handles(seen: Mapping[str, int]) -> list[Patch]:
    """Legend entries for the kinds of marked cells a figure has (the counts of `_mark_flags`)."""
    handles = []
    if seen.get("nonfinite"):
        handles.append(Patch(**NONFINITE_STYLE, label="NaN/Inf in a replicate"))
    if seen.get("unmeasured"):
        handles.append(Patch(**UNMEASURED_STYLE, label="not measurable (underflow or zero)"))
    return handles


def _mark_flags(ax, xe, ye, grid: pd.DataFrame, xs) -> dict[str, int]:
    """Black cells where a replicate had NaN/Inf, hatched ones where one could not be measured."""
    seen = {}
    for kind, style in (("nonfinite", NONFINITE_STYLE), ("unmeasured", UNMEASURED_STYLE)):
        mask = grid[kind].reindex(columns=xs).eq(True).to_numpy()
        seen[kind] = _mark(ax, xe, ye, mask, kind, style)
    return seen


def phase_diagram(
    summary: pd.DataFrame,
    x: str,
    y: str,
    *,
    threshold: float,
    facet: str | Sequence[str] | None = None,
    value: str = "log10_delta_ratio",
    log_x: bool = False,
    log_y: bool = False,
) -> Figure:
    """Heatmap of the mean over replicates of `value` over two swept axes, one panel per facet.

    Colours: a diverging map centred at 0, linear within +-t and logarithmic beyond (so r = -2 and
    r = -60 both read), clipped symmetrically at the 98th percentile of |value| (at least 1.5 t).
    Black lines are the contours at -t (dashed, "vanishing") and +t (solid, "exploding"). Cells
    where a replicate produced NaN/Inf are black; cells with a replicate that could not be measured
    (underflow) are hatched.
    Mean-field predictions are overlaid in green where the summary carries them (theory predicts
    the delta, so the predicted-r contours appear only for `value="log10_delta_ratio"`).
    """
    t = float(threshold)
    short = "|r|" if value == "log10_delta_ratio" else "|value|"
    norm, why = _ratio_norm(summary[value].to_numpy(float), t, short)
    log_x, log_y = _usable_log(summary[x], log_x), _usable_log(summary[y], log_y)
    parts = _facets(summary, facet)
    fig, axes = _grid(len(parts))
    seen, handles, mesh = {"nonfinite": 0, "unmeasured": 0, "contours": 0}, {}, None
    for ax, (title, part) in zip(axes, parts, strict=True):
        xs, ys, grid = _cells(part, x, y, value)
        z = grid["mean"].reindex(columns=xs).to_numpy(float)
        xe, ye = _edges(xs, log_x), _edges(ys, log_y)
        mesh = ax.pcolormesh(
            xe, ye, np.ma.masked_invalid(z), cmap="RdBu_r", norm=norm, rasterized=_raster(z.size)
        )
        for kind, n in _mark_flags(ax, xe, ye, grid, xs).items():
            seen[kind] += n
        levels = _in_range(z, (-t, t)) if len(xs) > 1 and len(ys) > 1 else []
        if levels:
            cs = ax.contour(
                xs,
                ys,
                np.ma.masked_invalid(z),
                levels=levels,
                colors="black",
                linestyles=["--" if lv < 0 else "-" for lv in levels],
                linewidths=1.3,
            )
            cs.set_gid("threshold")
            seen["contours"] += 1
            ax.clabel(cs, fmt={-t: "vanishing", t: "exploding"}, fontsize=8)
        on_delta = t if value == "log10_delta_ratio" else None
        handles.update((h.get_label(), h) for h in _theory(ax, part, x, y, xs, ys, on_delta))
        _axis_style(ax, "x", xs, log_x)
        _axis_style(ax, "y", ys, log_y)
        ax.set_title(title, fontsize=9)
    _ratio_colourbar(fig, mesh, axes, f"{label(value)}, mean over replicates", why)
    legend = [
        Line2D([], [], color="black", ls="--", label=f"{-t:g}: vanishing below"),
        Line2D([], [], color="black", ls="-", label=f"+{t:g}: exploding above"),
    ][: 2 * bool(seen["contours"])] + list(handles.values())
    legend += _flag_handles(seen)
    title = f"{label(value)} over {label(x)} and {label(y)}; threshold t = {t:g}"
    return _finish(
        fig, axes, x, y, title, legend, loc="outside lower center", ncols=min(len(legend), 3)
    )


def regime_map(
    summary: pd.DataFrame,
    x: str,
    y: str,
    *,
    facet: str | Sequence[str] | None = None,
    log_x: bool = False,
    log_y: bool = False,
) -> Figure:
    """Categorical map of the majority regime over replicates (ties go to the more severe regime).

    Cells where the replicates disagree carry a white dot.
    """
    cmap = ListedColormap([REGIME_COLOURS[r] for r in REGIMES])
    norm = BoundaryNorm(np.arange(len(REGIMES) + 1) - 0.5, len(REGIMES))
    log_x, log_y = _usable_log(summary[x], log_x), _usable_log(summary[y], log_y)
    parts = _facets(summary, facet)
    fig, axes = _grid(len(parts))
    shown = [r for r in REGIMES if r != "unmeasured" or summary["regime"].eq(r).any()]
    legend = [Patch(color=REGIME_COLOURS[r], label=r) for r in shown]
    extra: dict[str, Line2D] = {}
    for ax, (title, part) in zip(axes, parts, strict=True):
        counts = part.groupby([y, x])["regime"].value_counts().unstack(fill_value=0)
        counts = counts.reindex(columns=list(SEVERITY), fill_value=0)  # idxmax: the first maximum
        total = counts.sum(axis=1)
        code = counts.idxmax(axis=1).map(REGIMES.index).where(total > 0)
        xs = np.sort(part[x].unique()).astype(float)
        ys = np.sort(part[y].unique()).astype(float)
        z = code.unstack(x).reindex(index=ys, columns=xs).to_numpy(float)
        xe, ye = _edges(xs, log_x), _edges(ys, log_y)
        ax.pcolormesh(
            xe, ye, np.ma.masked_invalid(z), cmap=cmap, norm=norm, rasterized=_raster(z.size)
        )
        mixed = counts[(counts.max(axis=1) < total) & (total > 0)].index
        if len(mixed):
            my, mx = zip(*mixed, strict=True)
            ax.scatter(
                mx, my, s=9, color="white", edgecolors="0.3", linewidths=0.5, zorder=3, gid="mixed"
            )
            extra["mixed"] = Line2D(
                [], [], ls="", marker="o", mfc="white", mec="0.3", label="replicates disagree"
            )
        extra.update((h.get_label(), h) for h in _theory(ax, part, x, y, xs, ys, None))
        _axis_style(ax, "x", xs, log_x)
        _axis_style(ax, "y", ys, log_y)
        ax.set_title(title, fontsize=9)
    n_rep = summary["replicate"].nunique() if "replicate" in summary else 1
    title = f"Regime of the backward signal (majority of {n_rep} replicates)"
    return _finish(
        fig,
        axes,
        x,
        y,
        title,
        legend + list(extra.values()),
        loc="outside right center",
        title="regime",
    )


def _representative(
    df: pd.DataFrame, keep: Sequence[str | None], axes: Sequence[str]
) -> tuple[pd.DataFrame, list[str]]:
    """Fix every varying column of `axes` outside `keep` at one value (depth at its largest).

    Columns determined by `keep` (sigma_w by sigma_w2, init_family by init) are left alone, so
    lines never silently average over an axis. Returns the filtered frame and "name = value" notes.
    """
    keep = [k for k in keep if k]
    free = [c for c in axes if c not in ID_COLUMNS and c not in keep]
    notes = []
    for col in sorted(free, key=lambda c: c != "depth"):
        if df[col].nunique(dropna=False) <= 1:
            continue
        if keep and df.groupby(keep, observed=True)[col].nunique(dropna=False).max() <= 1:
            continue
        pick = df[col].max() if col == "depth" else df[col].mode().sort_values().iloc[0]
        df = df[df[col] == pick]
        notes.append(f"{label(col)} = {_fmt(pick)}")
    return df, notes


def _hue_palette(df: pd.DataFrame, hue: str | None, max_lines: int) -> dict:
    """hue value -> colour for at most `max_lines` evenly chosen values; empty without a hue."""
    if hue is None or hue not in df:
        return {}
    values = thin(np.sort(df[hue].unique()), max_lines)
    return dict(zip(values.tolist(), _ramp(len(values)), strict=True))


def _runs(ok: np.ndarray) -> list[tuple[int, int]]:
    """(start, stop) of each maximal run of True in `ok`."""
    edges = np.flatnonzero(np.diff(np.concatenate([[0], ok.astype(np.int8), [0]])))
    return list(zip(edges[::2].tolist(), edges[1::2].tolist(), strict=True))


def _band(x: np.ndarray, low: np.ndarray, high: np.ndarray) -> list[np.ndarray]:
    """Polygons between `low` and `high` over each run of x where both are finite."""
    return [
        np.column_stack([np.concatenate([x[a:b], x[a:b][::-1]]),
                         np.concatenate([low[a:b], high[a:b][::-1]])])
        for a, b in _runs(np.isfinite(low) & np.isfinite(high))
    ]  # fmt: skip


def _lines(df, x, value, hue, facet, max_lines, title, threshold=None, log_x=False) -> Figure:
    """Panels of `value` against `x`: per (thinned) hue value the mean over replicates as a line and
    a band from the smallest to the largest replicate (NaN skipped)."""
    colours = _hue_palette(df, hue, max_lines)
    if colours:
        df = df[df[hue].isin(list(colours))]
    parts = _facets(df, facet)
    fig, axes = _grid(len(parts), extra_w=1.8)
    marker = "o" if df[x].nunique() <= 20 else ""
    crosses = False
    for ax, (name, part) in zip(axes, parts, strict=True):
        if threshold is not None:
            ax.axhspan(-threshold, threshold, color="0.92", zorder=0)
            for lv in (-threshold, threshold):
                ax.axhline(lv, color="black", lw=1, ls="--" if lv < 0 else "-")
        keys = [hue, x] if colours else [x]
        stats = part.groupby(keys, sort=True)[value].agg(["mean", "min", "max"])
        lines = stats.groupby(level=0, sort=True) if colours else [(None, stats)]
        bands, band_colours = [], []
        for key, line in lines:
            at = line.index.get_level_values(x).to_numpy(float)
            colour = colours[key] if colours else "C0"
            found = _band(at, line["min"].to_numpy(float), line["max"].to_numpy(float))
            bands += found
            band_colours += [colour] * len(found)
            ax.plot(at, line["mean"], color=colour, marker=marker, markersize=3, lw=1.5)
        # one collection for every band of the panel: fill_between per line costs ten times more
        ax.add_collection(PolyCollection(bands, facecolors=band_colours, alpha=0.2, linewidths=0))
        if threshold is not None and "regime" in part:
            bad = np.sort(part.loc[part["regime"].eq("nonfinite"), x].unique())
            if bad.size:
                crosses = True
                ax.plot(
                    bad,
                    np.full(bad.size, 0.97),
                    "x",
                    color="black",
                    gid="nonfinite",
                    transform=ax.get_xaxis_transform(),
                )
        if log_x:
            _log_scale(ax, "x")  # no minor ticks: the markers sit at the swept values
        if threshold is not None:  # linear within the stable band, logarithmic beyond
            ticks = _symlog_ticks(threshold, float(np.nanmax(np.abs(df[value]), initial=0.0)))
            ax.set_yscale("symlog", linthresh=threshold)
            ax.set_yticks(ticks, labels=[f"{v:g}" for v in ticks])
            ax.yaxis.set_minor_locator(NullLocator())
        ax.set_title(name, fontsize=9)
    legend = [
        Line2D([], [], color=c, marker=marker, markersize=3, label=_fmt(k))
        for k, c in colours.items()
    ]
    if threshold is not None:
        legend.append(Line2D([], [], color="black", label=f"±t = ±{threshold:g}"))
        if crosses:
            legend.append(Line2D([], [], ls="", marker="x", color="black", label="NaN/Inf"))
    return _finish(
        fig,
        axes,
        x,
        value,
        title,
        legend,
        loc="outside right center",
        title=label(hue) if colours else None,
    )


def _chosen_layers(
    layers: pd.DataFrame, configs: pd.DataFrame, keep: Sequence[str | None]
) -> tuple[pd.DataFrame, list[str]]:
    """The layers of the configs `_representative` keeps, with their config columns; and its notes."""
    chosen, notes = _representative(configs, keep, list(configs.columns))
    columns = ["config_id", *dict.fromkeys(k for k in [*keep, "replicate"] if k in chosen)]
    rows = layers[layers["config_id"].isin(chosen["config_id"])]
    return rows.merge(chosen[columns], on="config_id", how="inner"), notes


def layer_profiles(
    layers: pd.DataFrame,
    configs: pd.DataFrame,
    *,
    hue: str | None = "sigma_w2",
    facet: str | Sequence[str] | None = None,
    value: str = "log10_delta",
    max_lines: int = 8,
) -> Figure:
    """`value` (log10 ||delta_l||, log10_grad_w, log10_q ...) against the layer index.

    One line per value of `hue` (at most `max_lines`, evenly chosen), a band from the smallest to
    the largest replicate, one panel per facet. Axes that are neither hue nor facet are held at one
    value (depth at its largest), which the title states.
    """
    df, notes = _chosen_layers(layers, configs, [hue, *_facet_cols(facet)])
    n_rep = df["replicate"].nunique() if "replicate" in df else 1
    fixed = f"; {', '.join(notes)}" if notes else ""
    title = f"{label(value)} by layer; band: min to max over {n_rep} replicates{fixed}"
    return _lines(df, "layer", value, hue, facet, max_lines, title)


def ratio_curves(
    summary: pd.DataFrame,
    x: str,
    *,
    threshold: float,
    hue: str | None = None,
    facet: str | Sequence[str] | None = None,
    value: str = "log10_delta_ratio",
    log_x: bool = False,
    max_lines: int = 8,
) -> Figure:
    """`value` against one swept axis, a line per `hue` value, the stable band |value| < t shaded.

    x positions where a replicate produced NaN/Inf are marked with a cross at the top of the panel.
    Axes that are neither x, hue nor facet are held at one value (depth at its largest).
    """
    keep = [x, hue, *_facet_cols(facet)]
    df, notes = _representative(summary, keep, config_columns(summary))
    n_rep = df["replicate"].nunique() if "replicate" in df else 1
    fixed = f"; {', '.join(notes)}" if notes else ""
    title = f"{label(value)} against {label(x)}; band: min to max over {n_rep} replicates{fixed}"
    log_x = _usable_log(df[x], log_x)
    return _lines(df, x, value, hue, facet, max_lines, title, float(threshold), log_x)


RELATIVE_LABELS = {
    "log10_delta": "log₁₀(‖δ_l‖ / ‖δ_L‖)",
    "log10_grad_w": "log₁₀(‖∂J/∂W_l‖ / ‖∂J/∂W_L‖)",
    "log10_grad_b": "log₁₀(‖∂J/∂b_l‖ / ‖∂J/∂b_L‖)",
}
CELL_TEXT_LIMIT = 600  # heatmap cells labelled with their value up to this many per panel


def _facet_rows(df: pd.DataFrame, cols: list[str]) -> tuple[pd.DataFrame, list[str]]:
    """`df` with a `_row` column numbering the facets in sorted order, and the facets' labels."""
    if not cols:
        return df.assign(_row=0), ["all configs"]
    grouped = df.groupby(cols, sort=True, observed=True, dropna=False)
    names = [facet_label(cols, key) for key in grouped.size().index]
    return df.assign(_row=grouped.ngroup()), names


def _row_axes(fig: Figure, n_panels: int, names: list[str], width_ratios=None) -> list:
    """Side-by-side heatmap panels with one row per facet, the first facet at the top.

    The facets' names are texts left of the first panel rather than tick labels: a tick is
    five artists, and a map can have dozens of rows.
    """
    axes = fig.subplots(1, n_panels, squeeze=False, sharey=True, width_ratios=width_ratios)
    axes = list(axes.ravel())
    axes[0].set_ylim(len(names) - 0.5, -0.5)
    axes[0].set_yticks([])
    left = blended_transform_factory(axes[0].transAxes, axes[0].transData)
    for i, name in enumerate(names):
        axes[0].text(-0.02, i, name, transform=left, ha="right", va="center", fontsize=7)
    return axes


def _label_cells(ax, z: np.ndarray, norm, columns) -> None:
    """Write each finite value into its cell (white on dark colours) when the panel has room."""
    if z.size > CELL_TEXT_LIMIT or z.shape[1] > 16:
        return
    shade = np.abs(norm(np.ma.masked_invalid(z)).filled(0.5) - 0.5)
    for i, j in zip(*np.nonzero(np.isfinite(z)), strict=True):
        ax.text(columns[j], i, _fmt(float(z[i, j])), ha="center", va="center", fontsize=6.5,
                color="white" if shade[i, j] > 0.3 else "black", gid="cell_value")  # fmt: skip


def facet_map(
    summary: pd.DataFrame,
    x: str,
    facet: str | Sequence[str] | None,
    *,
    threshold: float,
    values: Sequence[str] = ("log10_delta_ratio", "log10_grad_w_ratio"),
) -> Figure:
    """The gradient ratios of every facet at once: a heatmap row per facet, a column per x value.

    What `ratio_curves` draws in one panel per facet, for sweeps with more facets than a reader
    can compare side by side; one panel per column of `values` that the summary has. Colour: the
    mean over replicates on `phase_diagram`'s scale (linear within ±t, logarithmic beyond; one
    scale for every panel); black cells had NaN/Inf in a replicate, hatched cells could not be
    measured; cells carry their value when there is room. Axes that are neither x nor a facet are
    held at one value (depth at its largest), which the title states.
    """
    t = float(threshold)
    cols = _facet_cols(facet)
    df, notes = _representative(summary, [x, *cols], config_columns(summary))
    df, names = _facet_rows(df, cols)
    values = [v for v in values if v in df]
    norm, why = _ratio_norm(df[values].to_numpy(float).ravel(), t, "|value|")
    n_x = df[x].nunique()
    panel_w = min(max(1.4, 0.42 * n_x), 7.0)
    fig = Figure(
        figsize=(len(values) * panel_w + 3.6, 0.2 * len(names) + 2.2), layout="constrained"
    )
    axes = _row_axes(fig, len(values), names)
    seen, mesh = {"nonfinite": 0, "unmeasured": 0}, None
    for ax, value in zip(axes, values, strict=True):
        xs, _, grid = _cells(df, x, "_row", value)
        z = grid["mean"].reindex(columns=xs).to_numpy(float)
        xe, ye = np.arange(len(xs) + 1) - 0.5, np.arange(len(names) + 1) - 0.5
        mesh = ax.pcolormesh(
            xe, ye, np.ma.masked_invalid(z), cmap="RdBu_r", norm=norm, rasterized=_raster(z.size)
        )
        for kind, n in _mark_flags(ax, xe, ye, grid, xs).items():
            seen[kind] += n
        _label_cells(ax, z, norm, range(len(xs)))
        shown = thin(np.arange(len(xs)), 12)
        ax.set_xticks(shown, labels=[_fmt(xs[i].item()) for i in shown], fontsize=8)
        ax.set_xlabel(label(x))
        ax.set_title(label(value), fontsize=9)
    _ratio_colourbar(fig, mesh, axes, "mean over replicates", why)
    if legend := _flag_handles(seen):
        fig.legend(handles=legend, frameon=False, fontsize=8, loc="outside lower center",
                   ncols=len(legend))  # fmt: skip
    n_rep = df["replicate"].nunique() if "replicate" in df else 1
    fixed = f"; {', '.join(notes)}" if notes else ""
    fig.suptitle(
        f"Ratio of the first to the last layer's gradient per facet, threshold t = {t:g} "
        f"(mean over {n_rep} replicates{fixed})",
        fontsize=10,
    )
    return fig


def layer_map(
    layers: pd.DataFrame,
    configs: pd.DataFrame,
    *,
    facet: str | Sequence[str] | None,
    hue: str | None = "sigma_w2",
    value: str = "log10_delta",
    threshold: float = 2.0,
    max_panels: int = 4,
) -> Figure:
    """`layer_profiles` for many facets: a heatmap row per facet, a column per layer.

    For gradient norms the colour is the norm relative to the last layer's, log10(‖·_l‖ / ‖·_L‖),
    which at layer 1 is the ratio r, on `facet_map`'s scale; for log10_q it is the value itself.
    Mean over replicates; black cells had NaN/Inf in a replicate, hatched ones could not be
    measured. One panel per value of `hue` (at most `max_panels`, evenly chosen); axes that are
    neither hue nor facet are held at one value (depth at its largest), which the title states.
    """
    cols = _facet_cols(facet)
    df, notes = _chosen_layers(layers, configs, [hue, *cols])
    v = df[value].astype(float)
    relative = value in RELATIVE_LABELS
    if relative:
        last = v.where(df["layer"] == df.groupby("config_id")["layer"].transform("max"))
        v = v - last.groupby(df["config_id"]).transform("max")
    bad = df["flag"].eq("nonfinite") if "flag" in df else pd.Series(False, df.index)
    df, names = _facet_rows(df.assign(_v=v, _bad=bad), cols)
    if relative:
        norm, why = _ratio_norm(df["_v"].to_numpy(float), float(threshold), "|value|")
        cmap = "RdBu_r"
    else:
        finite = df["_v"].to_numpy(float)
        finite = finite[np.isfinite(finite)]
        low, high = np.percentile(finite, [2, 98]) if finite.size else (0.0, 1.0)
        norm, cmap = Normalize(float(low), float(max(high, low + 1e-9))), "viridis"
    keys = thin(np.sort(df[hue].unique()), max_panels).tolist() if hue in df else [None]
    parts = [df if key is None else df[df[hue] == key] for key in keys]
    depths = [int(part["layer"].max()) for part in parts]
    fig = Figure(
        figsize=(min(max(0.09 * sum(depths), 4.0), 11.0) + 3.6, 0.2 * len(names) + 2.2),
        layout="constrained",
    )
    axes = _row_axes(fig, len(parts), names, width_ratios=[max(d, 12) for d in depths])
    seen, mesh = {"nonfinite": 0, "unmeasured": 0}, None
    for ax, key, part in zip(axes, keys, parts, strict=True):
        xs, _, grid = _cells(part, "layer", "_row", "_v", bad=part["_bad"])
        z = grid["mean"].reindex(columns=xs).to_numpy(float)
        xe, ye = np.append(xs, xs[-1] + 1) - 0.5, np.arange(len(names) + 1) - 0.5
        mesh = ax.pcolormesh(
            xe, ye, np.ma.masked_invalid(z), cmap=cmap, norm=norm, rasterized=_raster(z.size)
        )
        for kind, n in _mark_flags(ax, xe, ye, grid, xs).items():
            seen[kind] += n
        ax.xaxis.set_major_locator(MaxNLocator(nbins=TICKS, integer=True))
        ax.set_xlabel("layer l")
        ax.set_title(f"{label(hue)} = {_fmt(key)}" if key is not None else "", fontsize=9)
    text = RELATIVE_LABELS.get(value, label(value)) + ", mean over replicates"
    if relative:
        _ratio_colourbar(fig, mesh, axes, text, why)
    else:
        fig.colorbar(mesh, ax=axes, shrink=0.9, extend="both").set_label(
            f"{text}\n(colours clipped at the 2nd and 98th percentiles)", fontsize=8
        )
    if legend := _flag_handles(seen):
        fig.legend(handles=legend, frameon=False, fontsize=8, loc="outside lower center",
                   ncols=len(legend))  # fmt: skip
    n_rep = df["replicate"].nunique() if "replicate" in df else 1
    fixed = f"; {', '.join(notes)}" if notes else ""
    what = RELATIVE_LABELS.get(value, label(value))
    fig.suptitle(f"{what} by layer, per facet (mean over {n_rep} replicates{fixed})", fontsize=10)
    return fig


def save(fig: Figure, directory: str | Path, stem: str, *, dpi: int = 130) -> list[Path]:
    """Write `fig` as `<stem>.png` and `<stem>.svg` into `directory`; returns both paths."""
    if not stem or Path(stem).name != stem or stem in (".", ".."):
        raise ValueError(f"`plots.save`: stem must be a plain file name, got {stem!r}")
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    png, svg = directory / f"{stem}.png", directory / f"{stem}.svg"
    if fig.get_layout_engine() is not None:
        # With a layout engine every savefig lays the figure out in a draw of its own: lay it out
        # once, at the PNG's resolution, and let both files share that layout.
        fig.set_dpi(dpi)
        fig.get_layout_engine().execute(fig)
        fig.set_layout_engine(None)
    fig.savefig(png, dpi=dpi)
    # A fixed salt makes the SVG's element ids, and so the file, the same on every render.
    with matplotlib.rc_context({"svg.hashsalt": stem}):
        fig.savefig(svg, metadata={"Date": None})
    return [png, svg]


def theory_agreement(cells: pd.DataFrame, *, hue: str = "activation") -> Figure:
    """Measured per-layer factor 10^(2 x delta_growth) against mean-field chi_1, log-log, one point a cell.

    `cells` is `gradbench.analysis.agreement.cells(summary)`; the identity line is perfect agreement, the grey
    band the agreement tolerance.
    """
    from gradbench.analysis.agreement import TOLERANCE

    data = cells.dropna(subset=["measured", "chi1"])
    data = data[(data["measured"] > 0) & (data["chi1"] > 0)]
    fig = Figure(figsize=(5.6, 4.8), layout="constrained")
    ax = fig.add_subplot()
    if not data.empty:
        lo = float(min(data["measured"].min(), data["chi1"].min())) / 1.5
        hi = float(max(data["measured"].max(), data["chi1"].max())) * 1.5
        line = np.geomspace(lo, hi, 50)
        ax.fill_between(line, line * (1 - TOLERANCE), line * (1 + TOLERANCE), color="0.88", lw=0)
        ax.plot(line, line, color="0.3", lw=1, label="measured = theory")
        groups = list(data.groupby(hue, sort=True)) if hue in data else [("", data)]
        colours = _categorical(len(groups))
        handles = [Line2D([], [], color="0.3", lw=1, label="measured = theory")]
        for (name, part), colour in zip(groups, colours, strict=True):
            for agrees, marker in ((True, "o"), (False, "X")):
                points = part[part["agrees"] == agrees]
                if len(points):
                    ax.scatter(points["chi1"], points["measured"], s=28, marker=marker,
                               color=colour, edgecolors="white", linewidths=0.5,
                               rasterized=_raster(len(data)))  # fmt: skip
            if name != "":
                handles.append(Line2D([], [], ls="", marker="o", color=colour, label=str(name)))
        for agrees, marker in ((True, "o"), (False, "X")):
            if data["agrees"].eq(agrees).any():
                what = "within tolerance" if agrees else "disagrees"
                handles.append(Line2D([], [], ls="", marker=marker, color="0.4", label=what))
        ax.legend(handles=handles, fontsize=7, frameon=False, ncols=1 + (len(handles) > 12))
        _log_scale(ax, "x")
        _log_scale(ax, "y")
    ax.set_xlabel("mean-field χ₁ = σ_w² E[φ′(z)²] at q*")
    ax.set_ylabel("measured 10^(2 delta_growth) (mean over replicates)")
    ax.set_title(f"Measured per-layer factor vs theory (band: ±{TOLERANCE:.0%})")
    return fig


# --- training dynamics (runs with a [train] section) -------------------------------------------

DEPTH_SCALE_MULTIPLE = 6.0  # Schoenholz et al. (2017): networks train up to depth ~6 xi_c
TRAINED_MARK = {"marker": "o", "s": 14, "color": "white", "edgecolors": "0.2", "linewidths": 0.6}
DIVERGED_STYLE = {"facecolor": "#1a1a1a", "linewidth": 0}


def clip_setting(clip: pd.Series, threshold: pd.Series) -> pd.Series:
    """ "none", or the rule and its threshold ("global_norm 1"): one label per clipping setting."""
    shown = threshold.map(lambda t: "" if pd.isna(t) else f" {float(t):.3g}")
    return clip.astype(str) + shown.where(clip.astype(str) != "none", "")


def _trained_cells(part: pd.DataFrame, x: str, y: str):
    """Per (y, x): mean log10 final/initial loss (finite replicates), trained and diverged shares."""
    tmp = part.assign(
        _v=np.log10(part["loss_ratio"].where(part["loss_ratio"] > 0)),
        _t=part["trained"].astype(float),
        _d=part["diverged"].astype(float),
    )
    agg = tmp.groupby([y, x], sort=True).agg(mean=("_v", "mean"), trained=("_t", "mean"),
                                             diverged=("_d", "mean"))  # fmt: skip
    xs = np.sort(part[x].unique()).astype(float)
    ys = np.sort(part[y].unique()).astype(float)
    return xs, ys, agg.unstack(x).reindex(index=ys)


def trainability_diagram(
    summary: pd.DataFrame,
    x: str,
    y: str,
    *,
    facet: str | Sequence[str] | None = None,
    log_x: bool = False,
    log_y: bool = False,
    multiple: float = DEPTH_SCALE_MULTIPLE,
) -> Figure:
    """Trainability phase diagram: colour = log10(final loss / initial loss), mean over replicates.

    White dots mark cells where most replicates trained (the summary's `trained`: final loss below
    `trained_below` times the task's baseline loss); black cells diverged in a replicate. Green:
    the theory's depth scale, depth = `multiple` x xi_c at each x (Schoenholz et al. 2017 found
    networks trainable up to about 6 xi_c), drawn when the summary carries `xi_c` and y is depth.
    """
    log_x, log_y = _usable_log(summary[x], log_x), _usable_log(summary[y], log_y)
    ratio = np.log10(summary["loss_ratio"].where(summary["loss_ratio"] > 0)).to_numpy(float)
    ratio = ratio[np.isfinite(ratio)]
    vmin = min(-1.0, float(np.percentile(ratio, 2))) if ratio.size else -3.0
    vmax = max(0.0, float(np.percentile(ratio, 98))) if ratio.size else 0.0
    parts = _facets(summary, facet)
    fig, axes = _grid(len(parts))
    mesh, handles = None, {}
    for ax, (title, part) in zip(axes, parts, strict=True):
        xs, ys, grid = _trained_cells(part, x, y)
        xe, ye = _edges(xs, log_x), _edges(ys, log_y)
        z = grid["mean"].reindex(columns=xs).to_numpy(float)
        mesh = ax.pcolormesh(
            xe, ye, np.ma.masked_invalid(z), cmap="viridis", vmin=vmin, vmax=vmax,
            rasterized=_raster(z.size),
        )  # fmt: skip
        diverged = grid["diverged"].reindex(columns=xs).to_numpy(float) > 0
        if _mark(ax, xe, ye, diverged, "diverged", DIVERGED_STYLE):
            handles["diverged"] = Patch(**DIVERGED_STYLE, label="diverged in a replicate")
        trained = grid["trained"].reindex(columns=xs).to_numpy(float) > 0.5
        rows, cols = np.nonzero(trained)
        if rows.size:
            ax.scatter(xs[cols], ys[rows], zorder=3, gid="trained", **TRAINED_MARK)
            handles["trained"] = Line2D([], [], ls="", label="trained (most replicates)",
                                        markerfacecolor="white", markeredgecolor="0.2",
                                        marker="o")  # fmt: skip
        if "xi_c" in part and y == "depth":
            xi = part.groupby(x)["xi_c"].mean().reindex(xs).to_numpy(float)
            scale = multiple * xi
            ok = np.isfinite(scale) & (scale > 0)
            if ok.any():
                top = np.where(ok, np.minimum(scale, ye[-1] * 10), np.nan)
                halo = [patheffects.withStroke(linewidth=4.5, foreground="white")]
                ax.plot(xs, top, ls="-", marker="o", ms=3, gid="depth_scale", path_effects=halo,
                        **THEORY)  # fmt: skip
                handles["theory"] = Line2D(
                    [], [], ls="-", label=f"theory: depth = {multiple:g} ξ_c", **THEORY
                )
        handles.update((h.get_label(), h) for h in _theory(ax, part, x, y, xs, ys, None))
        ax.set_xlim(xe[0], xe[-1])
        ax.set_ylim(ye[0], ye[-1])
        _axis_style(ax, "x", xs, log_x)
        _axis_style(ax, "y", ys, log_y)
        ax.set_title(title, fontsize=9)
    cbar = fig.colorbar(mesh, ax=axes, shrink=0.9)
    cbar.set_label("log₁₀(final loss / initial loss), mean over replicates", fontsize=8)
    n_rep = summary["replicate"].nunique() if "replicate" in summary else 1
    title = f"Trainability over {label(x)} and {label(y)} ({n_rep} replicates per cell)"
    legend = list(handles.values())
    return _finish(
        fig, axes, x, y, title, legend, loc="outside lower center", ncols=max(1, len(legend))
    )


def clipping_map(
    summary: pd.DataFrame,
    x: str,
    *,
    value: str = "fit_ratio",
    facet: str | Sequence[str] | None = None,
) -> Figure:
    """Clipping effect map: one row per clipping setting, one column per x value, per facet.

    `value` is drawn as log10 of its mean over replicates ("fit_ratio": final loss / baseline;
    "update": the largest parameter update of the run, 10^log10_update_norm_max). Each cell states
    what happened: "T" = every replicate trained, "t" = some did, "·" = none, "D" = every replicate
    diverged, "d" = some did.
    """
    df = summary.assign(setting=clip_setting(summary["clip"], summary["clip_threshold"]))
    if value == "update":
        df = df.assign(_v=df["log10_update_norm_max"])
        bar = "log₁₀ largest update norm max_t ‖Δθ_t‖ (mean over replicates)"
        cmap = "magma"
    else:
        df = df.assign(_v=np.log10(df[value].where(df[value] > 0)))
        bar = f"log₁₀ {value} (final loss / baseline loss; mean over finite replicates)"
        cmap = "viridis"
    settings = list(dict.fromkeys(df.sort_values(["clip", "clip_threshold"])["setting"]))
    settings = sorted(settings, key=lambda s: (s != "none", s))
    v = df["_v"].to_numpy(float)
    v = v[np.isfinite(v)]
    lo, hi = (float(v.min()), float(v.max())) if v.size else (0.0, 1.0)
    parts = _facets(df, facet)
    ncols = min(len(parts), 2)
    nrows = -(-len(parts) // ncols)
    xs = np.sort(df[x].unique())
    fig = Figure(
        figsize=(0.75 * len(xs) * ncols + 3.2, 0.42 * len(settings) * nrows + 2.2),
        layout="constrained",
    )
    axes = fig.subplots(nrows, ncols, squeeze=False).ravel()
    for ax in axes[len(parts) :]:
        fig.delaxes(ax)
    mesh = None
    for ax, (title, part) in zip(axes, parts, strict=True):
        agg = part.groupby(["setting", x]).agg(
            v=("_v", "mean"), t=("trained", "mean"), d=("diverged", "mean")
        )
        grid = agg.unstack(x).reindex(index=settings)
        z = grid["v"].reindex(columns=xs).to_numpy(float)
        mesh = ax.pcolormesh(np.ma.masked_invalid(z), cmap=cmap, vmin=lo, vmax=hi)
        t = grid["t"].reindex(columns=xs).to_numpy(float)
        d = grid["d"].reindex(columns=xs).to_numpy(float)
        for i in range(len(settings)):
            for j in range(len(xs)):
                mark = _outcome_mark(t[i, j], d[i, j])
                if mark:
                    ax.text(j + 0.5, i + 0.5, mark, ha="center", va="center", fontsize=9,
                            color="white" if not np.isfinite(z[i, j]) or z[i, j] < (lo + hi) / 2
                            else "black", gid="outcome")  # fmt: skip
        ax.set_facecolor("0.2")  # all replicates diverged: no finite value
        ax.set_xticks(np.arange(len(xs)) + 0.5, labels=[_fmt(float(v)) for v in xs])
        ax.set_yticks(np.arange(len(settings)) + 0.5, labels=settings, fontsize=8)
        ax.set_xlabel(label(x))
        ax.set_title(title, fontsize=9)
    cbar = fig.colorbar(mesh, ax=list(axes[: len(parts)]), shrink=0.9)
    cbar.set_label(bar, fontsize=8)
    what = "updates" if value == "update" else "final loss"
    fig.suptitle(
        f"Clipping effect on the {what}: T/t = all/some replicates trained, D/d = all/some "
        "diverged, · = none trained (dark cells: no finite value)",
        fontsize=10,
    )
    return fig


def _outcome_mark(trained: float, diverged: float) -> str:
    if not np.isfinite(trained):
        return ""
    if diverged >= 1:
        return "D"
    if diverged > 0:
        return "d"
    if trained >= 1:
        return "T"
    return "t" if trained > 0 else "·"


def _config_lines(ax, part: pd.DataFrame, value: str, hue_col, palette, log_y: bool) -> None:
    """One line per config of `part` (sorted by config and step) in a single LineCollection; for
    a config that diverged, a dot at its last value before and a cross (gid "diverged") at the
    top of the panel at its step."""
    ids = part["config_id"].to_numpy()
    starts = np.flatnonzero(np.concatenate([[True], ids[1:] != ids[:-1]]))
    steps, ys = part["step"].to_numpy(float), part[value].to_numpy(float)
    gone = part["diverged"].to_numpy(bool)
    keys = part[hue_col].to_numpy() if hue_col else None
    diverged_at = part["diverged_step"].to_numpy(float) if "diverged_step" in part else None
    segments, colours, dots, dot_colours, crosses = [], [], [], [], []
    for a, b in zip(starts, [*starts[1:], len(ids)], strict=True):
        colour = palette[keys[a]] if palette else "0.3"
        x, y = steps[a:b], ys[a:b]
        drawn = np.isfinite(y) & ((y > 0) if log_y else True)
        runs = [np.column_stack([x[i:j], y[i:j]]) for i, j in _runs(drawn)]
        segments += runs
        colours += [colour] * len(runs)
        if gone[a:b].any():  # the last value before divergence, and a cross at its step
            ok = np.flatnonzero(np.isfinite(y) & ~gone[a:b])
            if ok.size:
                dots.append((x[ok[-1]], y[ok[-1]]))
                dot_colours.append(colour)
            step = x[gone[a:b]][0]
            if diverged_at is not None and np.isfinite(diverged_at[a]):
                step = diverged_at[a]
            crosses.append(step)
    ax.add_collection(LineCollection(segments, colors=colours, linewidths=0.9, alpha=0.8))
    if dots:
        ax.scatter(*zip(*dots, strict=True), s=16, color=dot_colours, zorder=3)
    if crosses:
        ax.plot(crosses, np.ones(len(crosses)), "x", color="black", ls="",
                transform=ax.get_xaxis_transform(), gid="diverged")  # fmt: skip


def training_curves(
    steps: pd.DataFrame,
    summary: pd.DataFrame,
    *,
    value: str = "fit",
    hue: str | None = "sigma_w2",
    facet: str | Sequence[str] | None = "regime",
    fixed: Mapping[str, object] | None = None,
    max_lines: int = 12,
) -> Figure:
    """`value` against the training step, one thin line per config, coloured by `hue`.

    "fit" is the loss over the task's baseline loss (1 = no better than an input-independent
    prediction); any column of training.parquet works too. Facets by `regime` (of the gradient at
    initialisation) by default. `fixed` holds other axes at one value (e.g. {"depth": 32}).
    """
    keep = ["config_id", "replicate", "loss_baseline", "regime", "diverged_step"]
    keep += _facet_cols(facet)
    keep += [hue] if hue else []
    keep += list(fixed or {})
    summary = summary[list(dict.fromkeys(c for c in keep if c in summary))]
    for col, v in (fixed or {}).items():
        summary = summary[summary[col] == v]
    df = steps.merge(summary, on="config_id", how="inner")
    if value == "fit":
        df = df.assign(fit=df["loss"] / df["loss_baseline"])
    log_y = value in ("fit", "loss")
    if "regime" in df:
        order = [r for r in REGIMES if r in set(df["regime"])]
        df = df.assign(regime=pd.Categorical(df["regime"], categories=order, ordered=True))
    hue_col = palette = None
    if hue is not None and hue in df:
        values = np.sort(df[hue].unique())
        if len(values) > max_lines:
            values = values[
                np.unique(np.linspace(0, len(values) - 1, max_lines).round().astype(int))
            ]
        df = df[df[hue].isin(values)].assign(_hue=lambda d: d[hue].map(_fmt))
        hue_col = "_hue"
        order = [_fmt(v) for v in values]
        colours = _ramp(len(order)) if len(order) > 4 else _categorical(len(order))
        palette = dict(zip(order, colours, strict=True))
    parts = _facets(df.sort_values(["config_id", "step"], kind="stable"), facet)
    fig, axes = _grid(len(parts), extra_w=1.8)
    for ax, (name, part) in zip(axes, parts, strict=True):
        _config_lines(ax, part, value, hue_col, palette, log_y)
        if log_y:
            _log_scale(ax, "y")
            ax.axhline(1.0, color="0.5", lw=0.8, ls="--")
        ax.set_title(name, fontsize=9)
    legend = [Line2D([], [], color=c, label=k) for k, c in (palette or {}).items()]
    if df["diverged"].any():
        legend.append(Line2D([], [], ls="", marker="x", color="black", label="diverged (step)"))
        legend.append(Line2D([], [], ls="", marker="o", color="0.3", label="last value before it"))
    notes = ", ".join(f"{label(k)} = {_fmt(v)}" for k, v in (fixed or {}).items())
    title = f"{label(value)} during training, one line per config" + (f"; {notes}" if notes else "")
    return _finish(
        fig, axes, "step", value, title, legend, loc="outside right center",
        title=label(hue) if hue_col else None,
    )  # fmt: skip
