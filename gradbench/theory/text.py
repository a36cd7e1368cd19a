"""`gradbench theory`'s output: the theory as plain data, and as the text printed.

`describe` gathers one activation's edge of chaos, the fixed points at one sigma_w^2 or a scan of
depth scales around the edge; `gains` the edge of chaos of every registered activation at one
sigma_b^2, with the PyTorch-style gain. Both are floats, strings and lists (what `--json` prints);
`format_description` and `format_gains` turn them into plain-text tables, from the dict alone.
"""

from __future__ import annotations

import numpy as np

from gradbench import registry
from gradbench.theory.edge_of_chaos import SIGMA_W2_LIMIT, critical_sigma_w2
from gradbench.theory.quantities import MeanField, as_activation, mean_field
from gradbench.theory.tables import tables_for


def describe(activation, sigma_b2: float = 0.0, sigma_w2: float | None = None) -> dict:
    """The theory of one activation as plain data (floats, str, None, lists) for the CLI.

    Keys: activation, description, sigma_b2, critical (a list of `CriticalPoint` dicts, every
    sigma_w2 > 0 with chi_1 = 1), sigma_w2, and, when sigma_w2 is given (None otherwise): q_star,
    q_status, length_slope, chi1, phase, c_star, chi_c, xi_q, xi_c, xi_grad; when sigma_w2 is not
    given, also scan (depth scales on a few sigma_w2 about the first critical point). Infinities
    stay floats (`json.dumps` writes them as Infinity).
    """
    act = as_activation(activation)
    at = MeanField._fields
    d = {
        "activation": act.name,
        "description": act.description,
        "sigma_b2": float(sigma_b2),
        "critical": [p._asdict() for p in critical_sigma_w2(act, sigma_b2)],
        "sigma_w2": None if sigma_w2 is None else float(sigma_w2),
    }
    mf = None if sigma_w2 is None else mean_field(act, sigma_w2, sigma_b2)
    d |= {key: None if mf is None else getattr(mf, key).item() for key in at}
    if sigma_w2 is None:
        d["scan"] = _depth_scale_scan(act, sigma_b2, [p["sigma_w2"] for p in d["critical"]])
    return d


SCAN_FACTORS = (0.25, 0.5, 0.8, 0.9, 0.95, 1.05, 1.1, 1.25, 2.0)  # of the critical sigma_w^2


def _depth_scale_scan(
    act: registry.Activation, sigma_b2: float, critical: list[float]
) -> list[dict]:
    """Depth scales at multiples of the first critical sigma_w^2 (or at 0.5..4 when there is none)."""
    centre = critical[0] if critical else None
    grid = np.array(
        [centre * f for f in SCAN_FACTORS] if centre else [0.5, 1.0, 1.5, 2.0, 3.0, 4.0]
    )
    mf = mean_field(act, grid, np.full_like(grid, float(sigma_b2)))
    keys = ("q_star", "chi1", "phase", "xi_q", "xi_c", "xi_grad")
    return [
        {"sigma_w2": float(w)} | {k: getattr(mf, k)[i].item() for k in keys}
        for i, w in enumerate(grid)
    ]


def _number(x: float) -> str:
    return f"{x:.6g}"


def format_description(d: dict) -> str:
    """A plain-text table of a `describe` result."""
    lines = [
        f"mean-field theory: {d['activation']} ({d['description']}), sigma_b^2 = {d['sigma_b2']:g}",
        "conventions: Var(W_ij) = sigma_w^2 / fan_in, Var(b) = sigma_b^2;"
        " xi = -1 / ln(slope) layers (negative: growth, inf: critical)",
        "",
        "edge of chaos (chi_1 = 1):",
    ]
    if not d["critical"]:
        lines.append(f"  none: chi_1 < 1 for every sigma_w^2 up to {SIGMA_W2_LIMIT:g}")
    for p in d["critical"]:
        sw2, q = _number(p["sigma_w2"]), _number(p["q_star"])
        lines.append(f"  sigma_w^2 = {sw2:<10} q* = {q:<10} {p['note']}")
    if d.get("scan"):
        lines += [
            "",
            "depth scales (layers; xi_grad: ||delta||^2 changes by e per xi_grad layers):",
        ]
        lines.append(
            f"  {'sigma_w^2':<10} {'q*':<10} {'chi_1':<10} {'xi_q':<10} {'xi_c':<10} {'xi_grad':<10} phase"
        )
        for row in d["scan"]:
            cells = [
                _number(row[k]) for k in ("sigma_w2", "q_star", "chi1", "xi_q", "xi_c", "xi_grad")
            ]
            lines.append("  " + " ".join(f"{c:<10}" for c in cells) + f" {row['phase']}")
    if d["sigma_w2"] is not None:
        slope = d["length_slope"]
        settles = "q_l settles at q*" if slope < 1 else "q_l does not settle"
        rows = [
            ("q*", _number(d["q_star"]), d["q_status"]),
            ("V'(q*)", _number(slope), f"length-map slope; {settles}"),
            ("chi_1", _number(d["chi1"]), f"{d['phase']}; factor of ||delta||^2 per layer"),
            ("c*", _number(d["c_star"]), "correlation fixed point"),
            ("chi_c", _number(d["chi_c"]), "correlation-map slope at c*"),
            ("xi_q", _number(d["xi_q"]), "depth scale of q_l"),
            ("xi_c", _number(d["xi_c"]), "depth scale of correlations"),
            ("xi_grad", _number(d["xi_grad"]), "depth scale of ||delta||^2"),
        ]
        lines += ["", f"at sigma_w^2 = {d['sigma_w2']:g}:"]
        lines += [f"  {name:<8} {value:<12} {what}" for name, value, what in rows]
    return "\n".join(lines)


GAIN_CONVENTION = (
    "gain = sqrt(sigma_w^2): std(W_ij) = gain / sqrt(fan_in), the convention of torch.nn.init's"
    " gains (kaiming_normal_ with mode='fan_in')"
)


def gains(sigma_b2: float = 0.0) -> dict:
    """The edge of chaos of every registered activation at one sigma_b^2, as plain data.

    Keys: sigma_b2, convention (what the gain means), activations: one dict per registered name
    with activation, description, critical (the `CriticalPoint` dicts, each with its gain
    sqrt(sigma_w2)) and note ("" for one critical point, else how many, or that there is none).
    """
    tables_for(list(registry.ACTIVATIONS.values()))  # one kernel for all those new here
    rows = []
    for name, act in registry.ACTIVATIONS.items():
        points = [p._asdict() | {"gain": p.sigma_w2**0.5} for p in critical_sigma_w2(act, sigma_b2)]
        note = ""
        if not points:
            note = f"none: chi_1 < 1 for every sigma_w^2 up to {SIGMA_W2_LIMIT:g}"
        elif len(points) > 1:
            note = f"{len(points)} critical points"
        rows.append(
            {"activation": name, "description": act.description, "critical": points, "note": note}
        )
    return {"sigma_b2": float(sigma_b2), "convention": GAIN_CONVENTION, "activations": rows}


def format_gains(d: dict) -> str:
    """A plain-text table of a `gains` result: one line per critical point."""
    lines = [
        f"edge of chaos (chi_1 = 1) of every activation at sigma_b^2 = {d['sigma_b2']:g}",
        d["convention"],
        "",
        f"  {'activation':<12} {'gain':<10} {'sigma_w^2':<10} {'q*':<10} note",
    ]
    for row in d["activations"]:
        if not row["critical"]:
            lines.append(f"  {row['activation']:<12} {'-':<10} {'-':<10} {'-':<10} {row['note']}")
        for k, p in enumerate(row["critical"]):
            name = row["activation"] if k == 0 else ""
            which = f"{k + 1} of {len(row['critical'])}: " if len(row["critical"]) > 1 else ""
            cells = [_number(p[key]) for key in ("gain", "sigma_w2", "q_star")]
            lines.append(
                f"  {name:<12} " + " ".join(f"{c:<10}" for c in cells) + f" {which}{p['note']}"
            )
    return "\n".join(lines)
