"""gradbench: where do gradients vanish or explode, measured for whole grids of networks at once.

    run = gradbench.run("sweeps/my.toml")        # or a built-in sweep's name; writes runs/<name>/
    run.summary                                  # one row per config: ratios, growth, regime, theory
    again = gradbench.load("runs/my")            # a run directory read back (no JAX needed)
    gradbench.theory.predict(activation="tanh", sigma_w2=1.5, sigma_b2=0.05, depth=50)

The names are imported on first use, so that reading and reporting stored runs never imports JAX.
"""

import importlib

__version__ = "0.1.0"

_EXPORTS = {
    "run": "gradbench.pipeline",
    "run_shard": "gradbench.pipeline",
    "merge": "gradbench.pipeline",
    "verify": "gradbench.pipeline",
    "load": "gradbench.results",
    "Run": "gradbench.results",
    "load_sweep": "gradbench.sweep.spec:load",
    "SweepSpec": "gradbench.sweep.spec",
    "SpecError": "gradbench.errors",
    "write_report": "gradbench.report",
}
_SUBPACKAGES = ("theory",)
__all__ = [*_EXPORTS, *_SUBPACKAGES, "__version__"]


def __getattr__(name: str):
    if name in _SUBPACKAGES:
        return importlib.import_module(f"gradbench.{name}")
    if name in _EXPORTS:
        module, _, attribute = _EXPORTS[name].partition(":")
        return getattr(importlib.import_module(module), attribute or name)
    raise AttributeError(f"module 'gradbench' has no attribute {name!r}")
