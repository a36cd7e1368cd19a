"""`benchmarks.end_to_end`'s results as Markdown: one row per sweep, then the issue's targets."""

from __future__ import annotations

import statistics

from benchmarks.report import markdown_table, target_rows

COLUMNS = (
    "sweep",
    "configs",
    "compile groups",
    "cold s",
    "warm s",
    "cold + report s",
    "warm + report s",
    "split, cold (s)",
    "split, warm (s)",
    "PyTorch loop s",
    "PyTorch split (s)",
    "gradbench / PyTorch, cold",
    "gradbench / PyTorch, warm",
)


def _fmt(value) -> str:
    if value is None:
        return "-"
    if isinstance(value, int):
        return f"{value:,}"
    return f"{value:.3g}"


def _seconds(case: dict) -> str:
    if case["status"] == "ok":
        return _fmt(case["seconds"])
    return "skipped" if case["status"] == "skipped" else "FAILED"


def split_text(case: dict) -> str:
    """The median phase seconds of a gradbench case, compiles and cache hits with the compile phase."""
    if case["status"] != "ok":
        return "-"
    calls = case["calls"]
    phases = {
        name: statistics.median(c["phase_seconds"][name] for c in calls)
        for name in calls[0]["phase_seconds"]
    }
    compiles = calls[0]["compiles"]
    hits = calls[0]["cache_hits"]
    parts = []
    for name, seconds in phases.items():
        label = name.replace("_", "/")
        if name == "compile":
            label = f"compile ({compiles} compiles, {hits} cache hits)"
        parts.append(f"{label} {seconds:.2g}")
    return ", ".join(parts)


def torch_split_text(cases: dict) -> str:
    """The faster PyTorch case's median split: statistics, training and the rest (import/other)."""
    ok = [cases[c] for c in ("torch", "torch_1t") if cases[c]["status"] == "ok"]
    if not ok:
        return "-"
    calls = min(ok, key=lambda case: case["seconds"])["calls"]
    if "statistics_seconds" not in calls[0]:
        return "-"
    parts = {
        name: statistics.median(c[f"{name}_seconds"] for c in calls)
        for name in ("statistics", "training")
    }
    parts["import/other"] = statistics.median(c["seconds"] - c["loop_seconds"] for c in calls)
    return ", ".join(f"{name} {seconds:.2g}" for name, seconds in parts.items())


def sweep_rows(results: dict) -> list[list[str]]:
    rows = []
    for name, sweep in results["sweeps"].items():
        cases, ratios = sweep["cases"], sweep["ratios"]
        torch_ok = [
            cases[c]["seconds"] for c in ("torch", "torch_1t") if cases[c]["status"] == "ok"
        ]
        if torch_ok:
            peer = _fmt(min(torch_ok))
        else:
            peer = "skipped" if cases["torch"]["status"] == "skipped" else "FAILED"
        groups = next(
            (
                c["calls"][0]["compile_groups"]
                for c in cases.values()
                if c.get("calls") and "compile_groups" in c["calls"][0]
            ),
            None,
        )
        rows.append(
            [
                name + (" (trains)" if sweep["trains"] else ""),
                _fmt(sweep["configs"]),
                _fmt(groups),
                _seconds(cases["cold"]),
                _seconds(cases["warm"]),
                _seconds(cases["cold_report"]),
                _seconds(cases["warm_report"]),
                split_text(cases["cold"]),
                split_text(cases["warm"]),
                peer,
                torch_split_text(cases),
                _fmt(ratios.get("cold_over_torch")),
                _fmt(ratios.get("warm_over_torch")),
            ]
        )
    return rows


def failures(results: dict) -> list[str]:
    """`sweep/case` of every case that failed."""
    return [
        f"{name}/{case}"
        for name, sweep in results["sweeps"].items()
        for case, record in sweep["cases"].items()
        if record["status"] == "failed"
    ]


def markdown(results: dict) -> str:
    table = markdown_table
    facts = [
        ["mode", results["mode"]],
        ["command", results["command"]],
        ["rounds", str(results["settings"]["repeats"])],
        ["load average (start, end)", f"{results['load_start']}, {results['load_end']}"],
        ["XLA_FLAGS", results["xla_flags"] or "-"],
    ]
    broken = failures(results)
    notes = [
        "Whole processes, medians over the rounds. PyTorch loop: the faster of default threads and"
        " one thread, torch import included. Split: gradbench's manifest; import/other is the rest"
        " of the process's wall time. PyTorch split: the faster PyTorch case's statistics loop,"
        " training loop and the rest of its process (import/other)."
    ]
    if broken:
        notes.append("FAILED: " + ", ".join(broken))
    return "\n\n".join(
        [
            table(("fact", "value"), facts),
            table(COLUMNS, sweep_rows(results)),
            table(("target", "want", "value", "verdict", "gap"), target_rows(results["targets"])),
            *notes,
        ]
    )
