"""gradbench: where do gradients vanish or explode, measured for whole grids of networks at once.

`gradbench.run(spec, out=...)` runs a sweep; `gradbench.load(path)` reads a run directory back. Both are
imported lazily so that reading and reporting stored runs never imports JAX.
"""

__version__ = "0.1.0"
__all__ = ["run", "load", "__version__"]


def __getattr__(name):
    if name == "run":
        from gradbench.batch.runner import run

        return run
    if name == "load":
        from gradbench.results import load

        return load
    raise AttributeError(f"module 'gradbench' has no attribute {name!r}")
