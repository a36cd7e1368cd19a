"""Headline ratios, the issue's targets, and the results as a console table and as Markdown."""

from __future__ import annotations

import math

GB = 1e9

# (ratio name, which width: "wide" | "narrow" | None, comparison, threshold)
TARGETS = (
    ("efficiency", "wide", ">=", 0.6),
    ("efficiency", "narrow", ">=", 0.4),
    ("speedup_vs_torch_loop", "wide", ">=", 3.0),
    ("speedup_vs_torch_loop", "narrow", ">=", 5.0),
    ("speedup_vs_torch_vmap", "wide", ">=", 1.5),
    ("speedup_vs_torch_vmap", "narrow", ">=", 2.0),
    ("speedup_vs_jax_loop", "wide", ">=", 10.0),
    ("speedup_vs_jax_loop", "narrow", ">=", 5.0),
    ("compile_ratio_deepest_vs_shallowest", None, "<=", 1.5),
    ("peak_memory_gb_deepest", None, "<", 4.0),
)
PEERS = {
    "torch_loop": ("torch_loop", "torch_loop_1t"),
    "torch_vmap": ("torch_vmap",),
    "jax_loop": ("jax_loop",),
}


def _ok(case: dict | None) -> bool:
    return bool(case) and case.get("status") == "ok"


def ratios(results: dict, widths: tuple[int, ...], compile_depths, memory_depths) -> dict:
    """The headline figures; a ratio whose inputs are missing is absent."""
    cases = results["cases"]
    out: dict[str, float] = {}
    ceiling = results.get("matmul_flops_per_s")
    for width in widths:
        ours = cases.get(f"gradbench/w{width}")
        if not _ok(ours):
            continue
        if ceiling:
            out[f"efficiency/w{width}"] = ours["flops"] / ours["seconds"] / ceiling
        for peer, variants in PEERS.items():
            # Against the fastest variant of the peer (PyTorch: default threads or one thread).
            theirs = [cases.get(f"{v}/w{width}") for v in variants]
            times = [c["per_config_seconds"] for c in theirs if _ok(c)]
            if times:
                out[f"speedup_vs_{peer}/w{width}"] = min(times) / ours["per_config_seconds"]
        out[f"cold_over_warm/w{width}"] = ours["first_seconds"] / ours["seconds"]
    shallow, deep = (
        cases.get(f"compile/L{compile_depths[0]}"),
        cases.get(f"compile/L{compile_depths[-1]}"),
    )
    if _ok(shallow) and _ok(deep):
        out["compile_ratio_deepest_vs_shallowest"] = (
            deep["compile_seconds"] / shallow["compile_seconds"]
        )
    for depth in memory_depths:
        mem = cases.get(f"memory/L{depth}")
        if _ok(mem):
            out[f"peak_memory_gb/L{depth}"] = mem["peak_rss_bytes"] / GB
    deepest = cases.get(f"memory/L{memory_depths[-1]}")
    if _ok(deepest):
        out["peak_memory_gb_deepest"] = deepest["peak_rss_bytes"] / GB
    return out


def targets(figures: dict, widths: tuple[int, ...], *, assessed: bool) -> list[dict]:
    """Each target with its value, met or missed, and by how much."""
    narrow, wide = min(widths), max(widths)
    rows = []
    for name, which, op, threshold in TARGETS:
        key = name if which is None else f"{name}/w{wide if which == 'wide' else narrow}"
        value = figures.get(key)
        row = {"name": key, "op": op, "target": threshold, "value": value, "assessed": assessed}
        if value is None or not math.isfinite(value):
            row.update(met=None, gap="not measured")
        elif op == ">=":
            row.update(
                met=value >= threshold,
                gap=f"x{threshold / value:.2f} short" if value < threshold else "",
            )
        else:
            met = value <= threshold if op == "<=" else value < threshold
            row.update(met=met, gap="" if met else f"{value / threshold:.2f}x over")
        rows.append(row)
    return rows


def _fmt(value, unit="", digits=3) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:.{digits}g}{unit}"
    return f"{value}{unit}"


CASE_COLUMNS = (
    "case",
    "status",
    "configs",
    "first s",
    "median s",
    "per config ms",
    "GFLOP/s",
    "note",
)


def case_rows(results: dict) -> list[list[str]]:
    rows = []
    for name, case in results["cases"].items():
        status = case.get("status")
        if status != "ok":
            rows.append([name, status, "", "", "", "", "", case.get("reason", "")[:120]])
            continue
        per = case.get("per_config_seconds")
        note = case.get("note", "")
        if "peak_rss_bytes" in case:
            peak, floor = case["peak_rss_bytes"] / GB, case["import_rss_bytes"] / GB
            note = (
                f"peak RSS {peak:.2f} GB (after imports {floor:.2f}), chunk {case['chunk_shape']},"
                f" compile {case['compile_seconds']:.1f} s"
            )
        elif "chunk_seconds" in case:
            note = (
                f"{note}: compile {case['cold_compile_seconds']:.1f} s; warm: chunks"
                f" {case['chunk_seconds']:.2f} s of {case['seconds']:.2f} s, {case['chunks']} x"
                f" {case['chunk_shape']}"
            )
        elif "compile_seconds" in case:
            note = f"compile {case['compile_seconds']:.2f} s (manifest)"
        rows.append(
            [
                name,
                "ok",
                _fmt(case.get("configs")),
                _fmt(case.get("first_seconds")),
                _fmt(case.get("seconds")),
                _fmt(per * 1e3 if per else None),
                _fmt(case.get("gflops_per_s")),
                note,
            ]
        )
    return rows


def target_rows(rows: list[dict]) -> list[list[str]]:
    out = []
    for t in rows:
        verdict = {True: "met", False: "MISSED", None: "not measured"}[t["met"]]
        if not t["assessed"]:
            verdict = f"({verdict}; quick mode, not assessed)"
        out.append([t["name"], f"{t['op']} {t['target']:g}", _fmt(t["value"]), verdict, t["gap"]])
    return out


def markdown_table(header, rows) -> str:
    """A Markdown table; a `|` inside a cell becomes `/`."""
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(str(x).replace("|", "/") for x in r) + " |" for r in rows]
    return "\n".join(lines)


def console(results: dict) -> str:
    def table(header, rows):
        widths = [max(len(str(x)) for x in col) for col in zip(header, *rows, strict=True)]
        lines = [
            "  ".join(str(x).ljust(w) for x, w in zip(r, widths, strict=True))
            for r in [header, *rows]
        ]
        lines.insert(1, "  ".join("-" * w for w in widths))
        return "\n".join(lines)

    figures = "\n".join(f"  {k:40s} {v:.3g}" for k, v in results["ratios"].items())
    return "\n\n".join(
        [
            table(CASE_COLUMNS, case_rows(results)),
            "headline figures:\n" + figures,
            table(("target", "want", "value", "verdict", "gap"), target_rows(results["targets"])),
        ]
    )


def markdown(results: dict) -> str:
    table = markdown_table
    m = results["machine"]
    facts = [
        ["mode", results["mode"]],
        ["command", results["command"]],
        ["cpu", f"{m['cpu_model']}, {m['cpus']} cpus"],
        ["versions", ", ".join(f"{k} {v}" for k, v in m["versions"].items())],
        ["load average (start, end)", f"{m['load_start']}, {m['load_end']}"],
        [
            "dense matmul ceiling",
            f"{results['matmul_flops_per_s'] / 1e9:.1f} GFLOP/s (best 2048 product: start, rounds, end of run)",
        ],
        ["sweep", results["sweep"]],
    ]
    figures = [[k, f"{v:.3g}"] for k, v in results["ratios"].items()]
    return "\n\n".join(
        [
            table(("fact", "value"), facts),
            table(CASE_COLUMNS, case_rows(results)),
            table(("headline figure", "value"), figures),
            table(("target", "want", "value", "verdict", "gap"), target_rows(results["targets"])),
        ]
    )
