"""JAX's persistent compilation cache in the user's cache directory, and counts of what it saved.

Every compiled kernel (gradient chunks, trainers, theory) is written to the cache, so a second run,
`gradbench verify` or a test run loads what an earlier process compiled instead of compiling it again.

Where: `$GRADBENCH_CACHE_DIR` if set (`off` disables the cache), else a directory already given to JAX
(`JAX_COMPILATION_CACHE_DIR`), else `$XDG_CACHE_HOME/gradbench`, else `~/.cache/gradbench`. The cache is
JAX's own LRU file cache, keyed on the program, the backend and the versions of jax and jaxlib, so a
stale entry is never loaded; it is capped at `MAX_BYTES`.

JAX decides once per process whether it uses a cache, at its first compile: `enable()` must run before
anything is compiled, which is why every entry point that compiles calls it first.
"""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import jax
from jax import monitoring

ENV = "GRADBENCH_CACHE_DIR"
DISABLED = "off"
MAX_BYTES = 4 << 30
_HIT = "/jax/compilation_cache/cache_hits"
_MISS = "/jax/compilation_cache/cache_misses"

_lock = threading.Lock()
_events = {_HIT: 0, _MISS: 0}
_enabled: Path | None = None
_listening = False


def cache_dir() -> Path | None:
    """The cache directory these settings choose, or None when the cache is disabled."""
    chosen = os.environ.get(ENV)
    if chosen is not None:
        return None if chosen.strip().lower() in (DISABLED, "") else Path(chosen).expanduser()
    if jax.config.jax_compilation_cache_dir:
        return Path(jax.config.jax_compilation_cache_dir)
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "gradbench"


def enable() -> Path | None:
    """Points JAX at the cache directory (idempotent) and starts counting hits and misses.

    Returns:
        The directory in use, or None when the cache is disabled or the directory cannot be created
        (then every kernel is compiled, as without a cache).
    """
    global _enabled, _listening
    with _lock:
        if not _listening:
            monitoring.register_event_listener(_count)
            _listening = True
        directory = cache_dir()
        if directory is None or directory == _enabled:
            return _enabled
        try:
            directory.mkdir(parents=True, exist_ok=True)
        except OSError:
            return _enabled
        jax.config.update("jax_compilation_cache_dir", str(directory))
        # Every kernel, however quick to compile: a sweep's many small compiles add up.
        jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.0)
        jax.config.update("jax_persistent_cache_min_entry_size_bytes", 0)
        jax.config.update("jax_compilation_cache_max_size", MAX_BYTES)
        _enabled = directory
        return directory


def _count(event: str, **_) -> None:
    if event in _events:
        with _lock:
            _events[event] += 1


@dataclass
class CacheCounts:
    """Cache lookups during a `counting()` block: `hits` loaded, `misses` compiled (and stored)."""

    hits: int = 0
    misses: int = 0


class counting:  # noqa: N801 (used as a context manager, like contextlib's)
    """`with counting() as counts:` counts the cache hits and misses of the compiles inside the block.

    Without a cache both stay 0: JAX reports lookups only when it uses one.
    """

    def __enter__(self) -> CacheCounts:
        with _lock:
            self._start = dict(_events)
        self.counts = CacheCounts()
        return self.counts

    def __exit__(self, *exc) -> None:
        with _lock:
            self.counts.hits = _events[_HIT] - self._start[_HIT]
            self.counts.misses = _events[_MISS] - self._start[_MISS]


class Executables:
    """Executables compiled ahead of time, once per key, with what each compile cost.

    The sweep's gradient kernels and the trainers both go through here, so that a group's facts
    (`compile_seconds`, `compiles`, `cache_hits`) mean the same everywhere: seconds spent lowering and
    compiling, kernels this process compiled, and kernels it loaded from the persistent cache instead.
    """

    def __init__(self):
        self._compiled: dict = {}

    def get(self, key, lower: Callable[[], jax.stages.Lowered], fact: dict) -> jax.stages.Compiled:
        """The executable of `lower()` for `key`, compiled on first use and counted in `fact`."""
        if key not in self._compiled:
            t0 = time.perf_counter()
            lowered = lower()
            with counting() as cache:
                self._compiled[key] = lowered.compile()
            fact["compile_seconds"] = round(fact["compile_seconds"] + time.perf_counter() - t0, 3)
            fact["compiles"] += 1 - cache.hits
            fact["cache_hits"] += cache.hits
        return self._compiled[key]
