"""A run's report: findings computed from its tables, its figures, and the HTML and Markdown pages.

Reads only a run's tables (`gradbench.results.Run`) and imports no JAX. The text modules
(`findings`, `training`, `render`) import no matplotlib either, so a report's statements can be
computed and checked without drawing; `page` and `training_sections` draw with `gradbench.plots`.
"""


def __getattr__(name: str):
    if name == "write_report":  # on demand: it draws, so it imports matplotlib
        from gradbench.report.page import write_report

        return write_report
    raise AttributeError(f"module 'gradbench.report' has no attribute {name!r}")


__all__ = ["write_report"]
