"""Orchestration only: spec -> groups -> chunks -> kernel calls -> parts -> run directory. No maths here.

Every finished chunk is written as a part (gradbench.batch.parts) before the next one starts, into a work
directory beside the run directory (`<out>.parts/`). A killed run loses at most the chunk in flight;
running the same command again skips the finished chunks. Jobs of a job array (`shard=(i, n)`) and
processes of a multi-host run each compute every n-th chunk; one process, or `merge`, assembles the run.
"""

from __future__ import annotations

import contextlib
import datetime
import json
import os
import shutil
import time
from dataclasses import dataclass
from pathlib import Path

import jax
import jaxlib
import numpy as np
import pandas as pd

from gradbench import __version__, registry, results
from gradbench.analysis import classify
from gradbench.batch import sizing
from gradbench.batch.parts import PartStore, check_directory, chunk_key
from gradbench.batch.progress import Progress
from gradbench.engine import compilation_cache
from gradbench.engine.chunks import (
    ChunkPlan,
    chunk_capacity,
    chunk_inputs,
    chunk_replicates,
    chunk_shape,
    chunk_weights,
    config_mesh,
    layer_table,
    plan_chunks,
    replicate_capacity,
)
from gradbench.engine.kernel import RawStats, make_kernel, make_weight_draw, new_workspace, predrawn
from gradbench.errors import SpecError
from gradbench.schema import SCHEMA_VERSION, THEORY_COLUMNS
from gradbench.sweep import grid
from gradbench.sweep import spec as spec_module
from gradbench.sweep.spec import SweepSpec

SHARD_FILE = "shard.json"


class Interrupted(KeyboardInterrupt):
    """Ctrl-C (or SIGTERM) stopped a run; its finished chunks are saved for the same command to reuse.

    Attributes:
        directory: where the chunks are (the parts directory, or the shard's `--out`).
        saved: how many of the run's `total` chunks are there.
    """

    def __init__(self, directory: Path, saved: int, total: int):
        super().__init__(f"{saved} of {total} chunks are saved in {directory}")
        self.directory, self.saved, self.total = directory, saved, total


@dataclass(frozen=True)
class Task:
    """One chunk of one compile group (of one of its lanes), with the name of its part."""

    kernel_key: grid.KernelKey
    members: pd.DataFrame
    plan: ChunkPlan
    key: str

    @property
    def n_rows(self) -> int:
        """Rows the chunk contributes to the layer table (its real configs' depths)."""
        depths = self.members["depth"].to_numpy()[self.plan.rows]
        return int(depths[self.plan.real].sum())


def plan_tasks(spec: SweepSpec, configs: pd.DataFrame, devices: int) -> list[Task]:
    tasks = []
    platform = jax.local_devices()[0].platform
    for kernel_key, lanes in grid.kernel_groups(configs, spec):
        capacity = chunk_capacity(kernel_key, spec.chunk_size, platform)
        most = replicate_capacity(kernel_key, platform, devices)
        replicates = [lane["replicate"].to_numpy() for lane in lanes]
        shape = chunk_shape(replicates, capacity, multiple=devices, max_replicates=most)
        for lane in lanes:
            for plan in plan_chunks(lane["replicate"].to_numpy(), shape):
                ids = lane["config_id"].to_numpy()[plan.rows][plan.real]
                tasks.append(Task(kernel_key, lane, plan, chunk_key(kernel_key.label, ids)))
    return tasks


def execute(
    tasks: list[Task],
    spec: SweepSpec,
    *,
    allow_imports: bool,
    progress: bool,
    store: PartStore | None = None,
) -> tuple[list[pd.DataFrame], list[dict]]:
    """Runs the tasks (skipping those whose part is stored), compiling each group once, lazily."""
    stored = [store.load(t.key, t.n_rows) if store else None for t in tasks]
    reused = sum(table is not None for table in stored)
    bar = Progress(sum(int(t.plan.real.sum()) for t in tasks), enabled=progress)
    if reused:
        bar.note(f"resuming: {reused} of {len(tasks)} chunks already done in {store.directory}")
    kernels = _Kernels(spec, allow_imports)
    tables = []
    with jax.enable_x64(True) if spec.dtype == "float64" else contextlib.nullcontext():
        for task, table in zip(tasks, stored, strict=True):
            fact = kernels.fact(task)
            fact["chunks"] += 1
            resumed = table is not None
            if resumed:
                fact["chunks_resumed"] += 1
            else:
                t0, compiling = time.perf_counter(), fact["compile_seconds"]
                table = kernels.measure(task.kernel_key, task.members, task.plan)
                spent = time.perf_counter() - t0 - (fact["compile_seconds"] - compiling)
                fact["run_seconds"] = round(fact["run_seconds"] + spent, 3)
                if store:
                    store.save(task.key, table)
            tables.append(table)
            bar.update(int(task.plan.real.sum()), task.kernel_key.label, computed=not resumed)
    return tables, list(kernels.facts.values())


class _Kernels:
    """Compiled kernels by (group, chunk shape), and the facts the manifest records about them."""

    def __init__(self, spec: SweepSpec, allow_imports: bool):
        self.spec = spec
        self.allow_imports = allow_imports
        self.mesh = config_mesh()
        self.seed = np.uint32(spec.seed)
        self.compiled: dict = {}
        self.workspace: tuple | None = (
            None  # (key, array): the latest shape's, donated call to call
        )
        self.stack: tuple | None = None  # (key, array): the latest chunk's pre-drawn weights
        self.facts: dict[str, dict] = {}

    def fact(self, task: Task) -> dict:
        return self.facts.setdefault(
            task.kernel_key.label,
            {
                "group": task.kernel_key.label,
                "workspace_depth": task.kernel_key.depth,
                "chunk_shape": list(task.plan.rows.shape),
                "chunks": 0,
                "chunks_resumed": 0,
                "out_of_memory_splits": 0,
                "compile_seconds": 0.0,
                "compiles": 0,
                "cache_hits": 0,
                "run_seconds": 0.0,
            },
        )

    def measure(
        self, kernel_key: grid.KernelKey, members: pd.DataFrame, plan: ChunkPlan
    ) -> pd.DataFrame:
        """The chunk's layer table; a chunk that runs out of device memory is split in two and retried.

        Raises:
            SpecError: a chunk of one config per device still runs out of memory.
        """
        try:
            weights = None
            if predrawn(kernel_key):
                weights = self.weights(kernel_key, chunk_replicates(members, plan))
            inputs = chunk_inputs(kernel_key, members, plan, self.mesh, weights)
            raw = jax.device_get(self.call(kernel_key, inputs))
        except Exception as exc:  # XLA reports exhausted memory as a runtime error
            self.workspace = self.stack = None
            if "RESOURCE_EXHAUSTED" not in str(exc):
                raise
            halves = split_plan(plan, self.mesh.size)
            if halves is None:
                raise sizing.too_large_alone(self.spec, kernel_key, exc) from exc
            self.facts[kernel_key.label]["out_of_memory_splits"] += 1
            return pd.concat(
                [self.measure(kernel_key, members, h) for h in halves], ignore_index=True
            )
        return layer_table(members, plan, raw, self.spec.measure)

    def weights(self, kernel_key: grid.KernelKey, replicates: np.ndarray):
        """Pre-drawn weights of a chunk's replicates; kept while the next chunks use the same ones."""
        (family,) = kernel_key.init_families
        shape = (kernel_key.width, kernel_key.depth, family)
        key = (*shape, tuple(replicates))
        if self.stack is None or self.stack[0] != key:
            self.stack = None  # free the previous chunk's before drawing
            draw = self.compile(
                ("draw", *shape, len(replicates)),
                kernel_key,
                lambda: make_weight_draw(*shape).lower(self.seed, replicates),
            )
            self.stack = (key, chunk_weights(draw, self.seed, replicates, self.mesh))
        return self.stack[1]

    def call(self, kernel_key: grid.KernelKey, inputs) -> RawStats:
        """One kernel call. The workspace of the latest chunk shape is kept: each call donates it."""
        key = (kernel_key, inputs.sigma_w.shape)
        if self.workspace is None or self.workspace[0] != key:
            self.workspace = None  # free the previous shape's before allocating
            self.workspace = (key, new_workspace(kernel_key, inputs, self.mesh))
        kernel = self.kernel(kernel_key, inputs, self.workspace[1])
        raw, workspace = kernel(self.seed, inputs, self.workspace[1])
        self.workspace = (key, workspace)
        return raw

    def kernel(self, kernel_key: grid.KernelKey, inputs, workspace):
        return self.compile(
            (kernel_key, inputs.sigma_w.shape),
            kernel_key,
            lambda: make_kernel(kernel_key, self.allow_imports).lower(self.seed, inputs, workspace),
        )

    def compile(self, key, kernel_key: grid.KernelKey, lower):
        """The executable of `lower()` (a `jax.stages.Lowered`), compiled once per `key` and counted
        in the facts of `kernel_key`'s group."""
        if key not in self.compiled:
            t0 = time.perf_counter()
            lowered = lower()
            with compilation_cache.counting() as cache:
                self.compiled[key] = lowered.compile()
            fact = self.facts[kernel_key.label]
            fact["compile_seconds"] = round(fact["compile_seconds"] + time.perf_counter() - t0, 3)
            fact["compiles"] += 1 - cache.hits
            fact["cache_hits"] += cache.hits
        return self.compiled[key]


def split_plan(plan: ChunkPlan, multiple: int) -> list[ChunkPlan] | None:
    """Two smaller chunks covering `plan` (replicate rows first, then configs), or None if it is minimal."""
    r, c = plan.rows.shape
    if r > 1:
        cut = r // 2
        return [
            ChunkPlan(plan.rows[:cut], plan.real[:cut]),
            ChunkPlan(plan.rows[cut:], plan.real[cut:]),
        ]
    half = -(-(c // 2) // multiple) * multiple
    if half >= c or half == 0:
        return None
    keep = plan.real.copy()
    return [
        ChunkPlan(plan.rows[:, :half], keep[:, :half]),
        ChunkPlan(plan.rows[:, half:], keep[:, half:]),
    ]


def measure_configs(
    spec: SweepSpec, configs: pd.DataFrame, *, allow_imports: bool = False, progress: bool = False
) -> tuple[pd.DataFrame, list[dict]]:
    """Per-layer table of any subset of a sweep's configs, and facts about each compile group.

    Common random numbers make a config's numbers independent of which other configs run beside it, so
    a sample re-run (gradbench verify) measures the same thing as the full sweep.
    """
    sizing.check(spec, configs)
    compilation_cache.enable()
    tasks = plan_tasks(spec, configs, len(jax.local_devices()))
    tables, facts = execute(tasks, spec, allow_imports=allow_imports, progress=progress)
    return pd.concat(tables, ignore_index=True), facts


def work_dir(out: Path) -> Path:
    return out.resolve().parent / f"{out.name}.parts"


def run(
    sweep: SweepSpec | str | os.PathLike,
    out: str | os.PathLike | None = None,
    *,
    allow_imports: bool = False,
    progress: bool = True,
    report: bool = True,
    fresh: bool = False,
    shard: tuple[int, int] | None = None,
    overwrite: bool = False,
    wait_seconds: float = 24 * 3600.0,
) -> results.Run | None:
    """Runs a sweep and writes its run directory (default `runs/<name>/`).

    Args:
        sweep: a SweepSpec, a path to a sweep file, or the name of a built-in sweep.
        out: the run directory. It may be absent, empty or a run directory of the same sweep, which
            is replaced once the new run is complete; anything else is refused before any work.
        allow_imports: permit activations given as "package.module:function".
        progress: print progress to stderr.
        report: also write the HTML/Markdown report.
        fresh: discard finished chunks of an earlier, interrupted run instead of resuming.
        shard: (i, n) runs only the i-th of n disjoint parts of the sweep into `out`, a parts directory
            for `merge` (absent, empty or written by an earlier `shard` run); returns None.
        overwrite: permit replacing a run directory of a different sweep.
        wait_seconds: in a multi-process run, how long process 0 waits for the others' parts.

    Returns:
        The `Run` (tables in memory, `path` = the run directory), or None for a shard or for a process
        other than 0 of a multi-process run.

    Raises:
        SpecError: bad input (the sweep, `out`, `shard`), before any computation.
        Interrupted: Ctrl-C (or SIGTERM under the CLI); it says how many chunks are saved, and where.
    """
    spec = (
        sweep
        if isinstance(sweep, SweepSpec)
        else spec_module.load(sweep, allow_imports=allow_imports)
    )
    if spec.imports and not allow_imports:
        spec_module.parse(spec.text, source=spec.source)  # raises the refusal with its message
    out_path = Path(out) if out is not None else Path("runs") / spec.name
    if shard is not None:
        index, count = shard
        if not (count >= 1 and 0 <= index < count):
            raise SpecError("--shard", f"{index}/{count}", "I/N with 0 <= I < N")
    check_out(spec, out_path, shard=shard is not None, overwrite=overwrite)

    sizing.check(spec, shards=shard[1] if shard is not None else 1)
    compilation_cache.enable()
    configs = grid.expand(spec)
    started = _now()
    tasks = plan_tasks(spec, configs, len(jax.local_devices()))
    if shard is not None:
        store = PartStore(out_path, spec.sha256, fresh=fresh)
        (out_path / "spec.toml").write_text(spec.text)
        mine = tasks[shard[0] :: shard[1]]
        with _interruptible(store, mine):
            _, facts = execute(
                mine, spec, allow_imports=allow_imports, progress=progress, store=store
            )
        shard_facts = {
            "shard": list(shard),
            "chunks": len(mine),
            "of_chunks": len(tasks),
            "groups": facts,
        }
        (out_path / SHARD_FILE).write_text(json.dumps(shard_facts, indent=2) + "\n")
        return None

    store = PartStore(work_dir(out_path), spec.sha256, fresh=fresh)
    process, processes = jax.process_index(), jax.process_count()
    mine = tasks[process::processes]
    with _interruptible(store, tasks):
        tables, facts = execute(
            mine, spec, allow_imports=allow_imports, progress=progress, store=store
        )
        if process != 0:
            return None
        if processes > 1:
            tables = _collect(store, tasks, wait_seconds)
        layers = pd.concat(tables, ignore_index=True)
        training = _train(spec, configs, allow_imports=allow_imports, progress=progress)
        run_obj = assemble(
            spec, configs, layers, facts, started, out_path, report=report, training=training
        )
    store.remove()
    return run_obj


@contextlib.contextmanager
def _interruptible(store: PartStore, tasks: list[Task]):
    """Turns a KeyboardInterrupt into `Interrupted`, counting the chunks of `tasks` that are saved."""
    try:
        yield
    except Interrupted:
        raise
    except KeyboardInterrupt as exc:
        saved = sum(store.path(task.key).is_file() for task in tasks)
        raise Interrupted(store.directory.resolve(), saved, len(tasks)) from exc


def check_out(spec: SweepSpec, out: Path, *, shard: bool, overwrite: bool) -> None:
    """Refuses, before any computation, outputs that would replace or mix with what is not gradbench's.

    A run replaces `out` as a whole (gradbench.results.check_out) and keeps its chunks in
    `<out>.parts/`; a shard writes its chunks into `out` itself. Neither may hold the sweep file.
    """
    where = f"--out {out}"
    sweep_file = Path(spec.source)
    protected = (sweep_file,) if sweep_file.is_file() else ()
    if shard:
        results.check_location(where, out.resolve(), protected)
        check_directory(out, where)
        results.check_creatable(where, out.resolve())
    else:
        results.check_out(out, name=spec.name, overwrite=overwrite, protected=protected)
        check_directory(work_dir(out))


def merge(
    directories: list[str | os.PathLike],
    out: str | os.PathLike,
    *,
    report: bool = True,
    allow_imports: bool = False,
    overwrite: bool = False,
) -> results.Run:
    """Assembles the parts written by `run(..., shard=(i, n))` jobs into one run directory.

    Args:
        directories: the shards' `--out` directories.
        out: the run directory, as for `run` (absent, empty or a run directory of the same sweep).
        report: also write the HTML/Markdown report.
        allow_imports: permit activations given as "package.module:function" in the shards' spec.
        overwrite: permit replacing a run directory of a different sweep.

    Raises:
        SpecError: parts of different sweeps, chunks that no directory holds, a spec that imports
            code without `allow_imports`, or an `out` that may not be replaced.
    """
    if not directories:
        raise SpecError("merge", [], "one or more shard directories")
    texts = {}
    for directory in directories:
        check_directory(Path(directory))  # a shard directory holds gradbench's marker
        spec_file = Path(directory) / "spec.toml"
        if not spec_file.is_file():
            raise SpecError(
                str(directory), "<no spec.toml>", "a directory written by gradbench run --shard"
            )
        texts[str(directory)] = spec_file.read_text()
    if len(set(texts.values())) > 1:
        raise SpecError(
            "merge", sorted(texts), "shards of one sweep (their spec.toml files differ)"
        )
    first = next(iter(texts))
    spec = spec_module.parse(texts[first], source=f"{first}/spec.toml", allow_imports=allow_imports)
    out_path = Path(out)
    results.check_out(
        out_path,
        name=spec.name,
        overwrite=overwrite,
        protected=tuple(Path(d) for d in directories),
    )
    sizing.check(spec)
    configs = grid.expand(spec)
    tasks = plan_tasks(spec, configs, len(jax.local_devices()))
    stores = [PartStore(d, spec.sha256, create=False) for d in directories]
    tables, missing = [], []
    for task in tasks:
        found = next((t for s in stores if (t := s.load(task.key, task.n_rows)) is not None), None)
        if found is None:
            missing.append(task.key)
        tables.append(found)
    if missing:
        raise SpecError(
            "merge",
            f"<{len(missing)} chunks missing, e.g. {missing[0]}>",
            "every shard 0..n-1 of the sweep",
        )
    facts = []
    for directory in directories:
        shard_file = Path(directory) / SHARD_FILE
        if shard_file.is_file():
            facts.extend(json.loads(shard_file.read_text())["groups"])
    layers = pd.concat(tables, ignore_index=True)
    training = _train(spec, configs, allow_imports=allow_imports, progress=False)
    return assemble(
        spec, configs, layers, facts, _now(), out_path, report=report, training=training
    )


def _train(spec: SweepSpec, configs: pd.DataFrame, *, allow_imports: bool, progress: bool):
    """The training of a sweep with a [train] section (gradbench.training.train), else None.

    Training runs in the process that assembles the run (after the gradient chunks); it is not
    split into resumable parts: its sweeps are laptop-sized by design.
    """
    if spec.train is None:
        return None
    from gradbench.training import train

    return train.train_configs(spec, configs, allow_imports=allow_imports, progress=progress)


def assemble(
    spec, configs, layers, facts, started, out_path: Path, *, report: bool, training=None
) -> results.Run:
    """Summary, manifest and report of a complete set of layers, published atomically.

    `training` (a `gradbench.training.train.Training`, for sweeps with a [train] section) adds the outcome
    columns to the summary, `data/training.parquet`, `data/training_layers.parquet` and a
    `training` entry to the manifest.
    """
    layers = layers.sort_values(["config_id", "layer"], kind="stable", ignore_index=True)
    order = {cid: i for i, cid in enumerate(configs["config_id"])}
    layers = layers.iloc[np.argsort(layers["config_id"].map(order).to_numpy(), kind="stable")]
    layers = layers.reset_index(drop=True)
    clock = _PhaseClock()
    with clock("tables"):
        summary = classify.summarise(configs, layers, spec.threshold)
    with clock("theory"):
        summary = with_theory(summary)
    manifest = build_manifest(spec, configs, facts, started)
    if training is not None:
        from gradbench.training import train

        summary = train.with_outcomes(summary, training)
        manifest["training"] = train.manifest_entry(spec.train, training)
    staged = results.staging_dir(out_path)
    try:
        run_obj = results.Run(staged, configs, layers, summary, manifest, spec.text)
        if training is not None:
            run_obj.training, run_obj.training_layers = training.steps, training.layers
        with clock("tables"):
            run_obj.write_data()
        if report:
            from gradbench import report as report_module

            with clock("report"):
                report_module.write_report(run_obj)
        manifest["phase_seconds"] = clock.phases(manifest)
        results.write_manifest(staged, manifest)
        run_obj.path = results.publish(staged, out_path)
    except BaseException:
        shutil.rmtree(staged, ignore_errors=True)
        raise
    return run_obj


class _PhaseClock:
    """Wall seconds of the host-side phases of `assemble`, added up per phase name."""

    def __init__(self):
        self.seconds: dict[str, float] = {}

    @contextlib.contextmanager
    def __call__(self, phase: str):
        t0 = time.perf_counter()
        try:
            yield
        finally:
            self.seconds[phase] = self.seconds.get(phase, 0.0) + time.perf_counter() - t0

    def phases(self, manifest: dict) -> dict[str, float]:
        """Compile and kernel seconds of every group (training included), then the host phases."""
        groups = [*manifest["groups"], *manifest.get("training", {}).get("groups", [])]
        measured = {
            "compile": sum(g["compile_seconds"] for g in groups),
            "kernel": sum(g["run_seconds"] for g in manifest["groups"]),
            "training": sum(
                g["run_seconds"] for g in manifest.get("training", {}).get("groups", [])
            ),
            **self.seconds,
        }
        return {phase: round(seconds, 3) for phase, seconds in measured.items()}


def with_theory(summary: pd.DataFrame) -> pd.DataFrame:
    """Adds mean-field chi_1, q*, xi_c and the predicted r of each config (registered activations)."""
    from gradbench import theory

    keys = ["activation", "sigma_w2", "sigma_b2", "depth"]
    known = summary["activation"].isin(list(registry.ACTIVATIONS))
    unique = summary.loc[known, keys].drop_duplicates(ignore_index=True)
    if unique.empty:
        return summary.assign(**{c: np.nan for c in THEORY_COLUMNS})
    predicted = theory.predict(
        activation=unique["activation"].to_numpy(object),
        sigma_w2=unique["sigma_w2"].to_numpy(),
        sigma_b2=unique["sigma_b2"].to_numpy(),
        depth=unique["depth"].to_numpy(),
    )
    unique = unique.assign(**{c: np.asarray(predicted[c], float) for c in THEORY_COLUMNS})
    return summary.merge(unique, on=keys, how="left", validate="m:1")


def _collect(store: PartStore, tasks: list[Task], wait_seconds: float) -> list[pd.DataFrame]:
    """Process 0 of a multi-process run: every task's part, waiting for the other processes."""
    deadline = time.monotonic() + wait_seconds
    tables: list[pd.DataFrame | None] = [None] * len(tasks)
    while True:
        for i, task in enumerate(tasks):
            if tables[i] is None:
                tables[i] = store.load(task.key, task.n_rows)
        missing = sum(t is None for t in tables)
        if not missing:
            return tables
        if time.monotonic() > deadline:
            raise RuntimeError(
                f"{missing} chunks never appeared in {store.directory} (a process died?)"
            )
        time.sleep(0.5)


def _now() -> str:
    return datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds")


def build_manifest(spec: SweepSpec, configs: pd.DataFrame, groups: list, started: str) -> dict:
    devices = jax.devices()
    return {
        "schema_version": SCHEMA_VERSION,
        "gradbench_version": __version__,
        "name": spec.name,
        "spec_sha256": spec.sha256,
        **results.git_facts(),
        "jax_version": jax.__version__,
        "jaxlib_version": jaxlib.__version__,
        "backend": jax.default_backend(),
        "device_kind": devices[0].device_kind,
        "device_count": len(devices),
        "local_device_count": len(jax.local_devices()),
        "process_count": jax.process_count(),
        "x64": spec.dtype == "float64",
        "xla_flags": os.environ.get("XLA_FLAGS", ""),
        "dtype": spec.dtype,
        "measure": spec.measure,
        "loss": spec.loss,
        "chunk_size": spec.chunk_size,
        "started": started,
        "finished": _now(),
        "n_configs": len(configs),
        "threshold": spec.threshold,
        "axes": {
            **{
                name: {"values": list(axis.values), "scale": axis.scale}
                for name, axis in spec.axes.items()
                if len(axis.values) > 1
            },
            **_train_axes(spec),
        },
        "sigma_w_given": spec.sigma_w_given,
        "sigma_b_given": spec.sigma_b_given,
        "groups": groups,
    }


def _train_axes(spec: SweepSpec) -> dict:
    """The swept training axes (optimizer, lr, clip, clip_threshold) in the manifest's `axes` form."""
    if spec.train is None:
        return {}
    t = spec.train
    thresholds = sorted({v for _, values in t.clip for v in values})
    scale = "log" if len(thresholds) > 2 and max(thresholds) >= 100 * min(thresholds) else "linear"
    axes = {
        "optimizer": {"values": list(t.optimizer.values), "scale": "linear"},
        "lr": {"values": list(t.lr.values), "scale": t.lr.scale},
        "clip": {"values": [rule for rule, _ in t.clip], "scale": "linear"},
        "clip_threshold": {"values": thresholds, "scale": scale},
    }
    return {name: axis for name, axis in axes.items() if len(axis["values"]) > 1}
