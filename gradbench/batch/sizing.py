"""Size before work: what a sweep will hold in memory, checked against what this machine has.

A sweep is sized from its axes alone, before any table is built: a grid that cannot fit is refused
at once (a `SpecError`, exit status 2) with the numbers and the way out, instead of being expanded
until the operating system's OOM killer ends the run.

Two budgets are checked:
- host memory, for the tables a run holds (config table, layer rows, summary, and the copies made
  while they are sorted, merged and written), against MemAvailable and any cgroup limit;
- device memory, for the smallest chunk a config can run in (one config on each device), against
  the device's `bytes_limit` (on CPU: host memory, which its devices share).
"""

from __future__ import annotations

import math
import tomllib
from pathlib import Path
from typing import NamedTuple

import jax
import numpy as np
import pandas as pd

from gradbench.errors import SpecError
from gradbench.registry import PREDRAWN_FAMILIES, init_family
from gradbench.sweep.spec import SweepSpec

# Peak resident bytes of a run (`gradbench run --no-report`, ru_maxrss): a fit to runs of 200 to
# 40,000 configs at depth 2 to 64 gave 0.61 GB + 1,067 B per config + 314 B per layer row (config
# table, layers, summary with its theory columns, their sorted and merged copies, the parquet files
# being written), and it predicted a 200,000-config, 800,000-row run's 1.09 GB within 1.2 %.
HOST_BASE_BYTES = 700_000_000  # the interpreter, JAX and compiled kernels
HOST_BYTES_PER_CONFIG = 1_100
HOST_BYTES_PER_LAYER_ROW = 320


class Size(NamedTuple):
    """What a run holds: its row counts and the host memory they take at the run's peak."""

    configs: int
    layer_rows: int
    training_rows: int

    @property
    def host_bytes(self) -> int:
        rows = self.layer_rows + self.training_rows
        return (
            HOST_BASE_BYTES + HOST_BYTES_PER_CONFIG * self.configs + HOST_BYTES_PER_LAYER_ROW * rows
        )


def sweep_size(spec: SweepSpec, configs: pd.DataFrame | None = None) -> Size:
    """Row counts of a whole sweep from its axes alone, or of a given subset of its configs.

    The grid is a product, so the layer rows are the configs times the mean depth. Training tables
    (config x logged step, and x layer) count as layer rows: a key and a few numbers per row.
    """
    if configs is None:
        n_configs = spec.n_configs
        depths = spec.axis("depth")
        layer_rows = n_configs // len(depths) * sum(depths) * _rows_per_layer(spec)
    else:
        n_configs = len(configs)
        rows = 1 + configs["branch_layers"] if "branch_layers" in configs else 1
        layer_rows = int((configs["depth"] * rows).sum())
    training_rows = 0
    if spec.train is not None:
        logged = len(range(0, spec.train.steps, spec.train.log_every)) + 1
        training_rows = logged * (n_configs + layer_rows)
    return Size(n_configs, layer_rows, training_rows)


def _rows_per_layer(spec: SweepSpec) -> int:
    """Layer rows per layer of the sweep's widest architecture: a residual block has a row for
    itself and one per dense layer of its branch (`gradbench.engine.chunks.layer_table`)."""
    if "resmlp" not in spec.architectures:
        return 1
    return 1 + max(spec.axis("branch_layers"))


def host_memory() -> tuple[int | None, str]:
    """Bytes this process may still allocate, and where the figure comes from.

    The smaller of MemAvailable (/proc/meminfo) and the room left under a cgroup memory limit (v2
    `memory.max`, v1 `memory.limit_in_bytes`); None where neither can be read (not Linux).
    """
    found: list[tuple[int, str]] = []
    available = _meminfo_available()
    if available is not None:
        found.append((available, "MemAvailable in /proc/meminfo"))
    for limit_file, usage_file in _cgroup_files():
        limit, usage = _read_int(limit_file), _read_int(usage_file)
        if limit is not None and limit < 1 << 60:  # "max" / an unset v1 limit read as 2^63
            found.append((max(0, limit - (usage or 0)), f"the cgroup limit in {limit_file}"))
    if not found:
        return None, "unknown (no /proc/meminfo)"
    return min(found)


def device_memory() -> tuple[int | None, str]:
    """Bytes of memory one device has for a kernel call, and what that figure is."""
    device = jax.local_devices()[0]
    if device.platform == "cpu":
        available, source = host_memory()
        return available, f"this machine's CPU devices share {_bytes(available)} ({source})"
    stats = device.memory_stats() or {}
    if "bytes_limit" not in stats:
        return None, f"{device.device_kind}: unknown"
    return int(stats["bytes_limit"]), f"one {device.device_kind} has {_bytes(stats['bytes_limit'])}"


def config_device_bytes(
    width: int,
    batch: int,
    depth: int,
    dtype: str,
    family: str,
    architecture: str = "mlp",
    branch_layers: int = 1,
) -> int:
    """A lower bound on the device memory one config's kernel call needs.

    Its workspace (one (batch, width) array per layer, block or step) and two float32 (width,
    width) matrices: the readout and the layer draw in use (plus every dense layer's draw for
    pre-drawn families: `gradbench.engine.kernel.dense_layers`); an RNN also holds its input
    weights and the running sum of its shared weight's gradient. XLA's compiled kernels measured
    1.1-3.5x this bound for MLPs (tests/test_sizing.py checks it is one).
    """
    workspace = depth * batch * width * np.dtype(dtype).itemsize
    dense = {"rnn": 1, "resmlp": depth * branch_layers}.get(architecture, depth)
    matrices = 2 + (dense if family in PREDRAWN_FAMILIES else 0) + 2 * (architecture == "rnn")
    return workspace + 4 * width * width * matrices


def check(spec: SweepSpec, configs: pd.DataFrame | None = None, *, shards: int = 1) -> Size:
    """Refuses, before any table is built, a sweep (or subset) that cannot fit this machine.

    Args:
        spec: the sweep.
        configs: a subset of its configs to run (e.g. verify's sample); default the whole grid.
        shards: the run is one of this many `--shard` jobs, which hold only their share of the
            layer rows (every job still builds the whole config table).

    Raises:
        SpecError: the tables would not fit in host memory, or one config does not fit a device.
    """
    check_device(spec)
    size = sweep_size(spec, configs)
    available, source = host_memory()
    layer_rows = size.layer_rows + size.training_rows
    needed = size._replace(layer_rows=-(-layer_rows // shards), training_rows=0).host_bytes
    if available is None or needed <= available:
        return size
    raise SpecError(
        f"{spec.source}: axes",
        f"<{size.configs:,} configs{_grid_text(spec) if configs is None else ''}>",
        f"a sweep whose tables fit in this machine's memory: this one would hold about "
        f"{_bytes(needed)} ({size.configs:,} configs x {HOST_BYTES_PER_CONFIG:,} B, "
        f"{layer_rows:,} layer rows x {HOST_BYTES_PER_LAYER_ROW} B{_per_shard(shards)}, "
        f"{_bytes(HOST_BASE_BYTES)} for the runtime) and {_bytes(available)} is available "
        f"({source}). {_way_out(size, available)}",
    )


def check_device(spec: SweepSpec) -> None:
    """Refuses a sweep whose largest config cannot run even alone (a chunk of one per device)."""
    width, batch, depth = (max(spec.axis(k)) for k in ("width", "batch", "depth"))
    families = sorted({init_family(i).name for i in spec.axis("init")})
    family = next((f for f in families if f in PREDRAWN_FAMILIES), families[0])  # the largest
    branch_layers = max(spec.axis("branch_layers")) if "branch_layers" in spec.axes else 1
    per_config = max(
        config_device_bytes(width, batch, depth, spec.dtype, family, arch, max(1, branch_layers))
        for arch in spec.architectures
    )
    available, description = device_memory()
    device = jax.local_devices()[0]
    sharing = len(jax.local_devices()) if device.platform == "cpu" else 1
    if available is None or per_config * sharing <= available:
        return
    matrices = per_config - depth * batch * width * np.dtype(spec.dtype).itemsize
    where, given = width_key(spec), width
    if matrices * sharing <= available:  # the workspace is what does not fit
        where, given = f"{spec.source}: axes.depth", depth
    raise SpecError(
        where,
        given,
        f"configs that fit in device memory: the largest (width {width:,}, batch {batch:,}, "
        f"depth {depth:,}, {spec.dtype}, {family}) needs at least {_bytes(per_config)} on each of "
        f"{sharing} device(s) ({_bytes(matrices)} for its (width, width) matrices, "
        f"{_bytes(per_config - matrices)} for its per-layer workspace), and {description}; "
        "use a smaller width, batch or depth",
    )


def too_large_alone(spec: SweepSpec, kernel_key, error: Exception) -> SpecError:
    """The refusal of a config that ran out of device memory in a chunk of its own (`kernel_key`: its
    `gradbench.sweep.keys.KernelKey`): the bound of `check_device` is only a lower bound."""
    detail = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
    return SpecError(
        width_key(spec),
        kernel_key.width,
        f"configs that fit in device memory: one config of {kernel_key.label} ran out of it alone "
        f"({detail}); use a smaller width, batch or depth",
    )


def _way_out(size: Size, available: int) -> str:
    """How to proceed when the tables do not fit: shards if they help, else fewer axis values."""
    fixed = size._replace(layer_rows=0, training_rows=0).host_bytes
    rows = size.layer_rows + size.training_rows
    room = available - fixed
    if room > 0 and rows:
        shards = math.ceil(rows * HOST_BYTES_PER_LAYER_ROW / room)
        return (
            f"Run it as {shards} or more jobs with `gradbench run SPEC --shard I/{shards} --out "
            "parts-I` (each holds its share of the layer rows; `merge` then needs the whole "
            "estimate), or use fewer axis values."
        )
    return (
        "The config table alone does not fit, so --shard cannot help: use fewer axis values, or "
        "split the sweep into several sweep files."
    )


def _grid_text(spec: SweepSpec) -> str:
    counts = [f"{len(a.values):,} {k}" for k, a in spec.axes.items() if len(a.values) > 1]
    if spec.train is not None and spec.train.n_runs > 1:
        counts.append(f"{spec.train.n_runs} training runs")
    return ": " + " x ".join(counts) if counts else ""


def _per_shard(shards: int) -> str:
    return f", 1/{shards} of them per shard" if shards > 1 else ""


def width_key(spec: SweepSpec) -> str:
    """Where the sweep file sets the width: `model.width` or `axes.width`."""
    try:
        in_model = "width" in tomllib.loads(spec.text).get("model", {})
    except (tomllib.TOMLDecodeError, AttributeError):
        in_model = False
    return f"{spec.source}: {'model' if in_model else 'axes'}.width"


def _bytes(n: float | None) -> str:
    if n is None:
        return "unknown"
    for unit in ("B", "KB", "MB", "GB", "TB"):
        if abs(n) < 1000 or unit == "TB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1000
    raise AssertionError("unreachable")


def _meminfo_available() -> int | None:
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemAvailable:"):
                return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        return None
    return None


def _cgroup_files() -> list[tuple[Path, Path]]:
    """(limit, usage) files of this process's memory cgroup, v2 and v1, where they exist."""
    root = Path("/sys/fs/cgroup")
    pairs = [(root / "memory.max", root / "memory.current")]
    pairs.append(
        (root / "memory" / "memory.limit_in_bytes", root / "memory" / "memory.usage_in_bytes")
    )
    try:
        lines = Path("/proc/self/cgroup").read_text().splitlines()
    except OSError:
        lines = []
    for line in lines:
        _, controllers, path = line.split(":", 2)
        relative = path.lstrip("/")
        if controllers == "":
            pairs.append((root / relative / "memory.max", root / relative / "memory.current"))
        elif "memory" in controllers.split(","):
            base = root / "memory" / relative
            pairs.append((base / "memory.limit_in_bytes", base / "memory.usage_in_bytes"))
    return [(limit, usage) for limit, usage in pairs if limit.is_file()]


def _read_int(path: Path) -> int | None:
    try:
        return int(path.read_text().strip())
    except (OSError, ValueError):
        return None  # "max" (no v2 limit) or unreadable
