"""The composition of gradbench's stages: run, shard, merge and verify a sweep.

sweep file -> grid of configs -> chunks measured by the engine (batch) -> per-layer table -> summary
(analysis.classify) + theory columns (theory) [+ Jacobian, training] -> run directory [+ report].

This is the only module that imports the stages downstream of batch; each stage imports upstream
only. Every finished chunk is written as a part (gradbench.batch.parts) before the next one starts, into
a work directory beside the run directory (`<out>.parts/`): a killed run loses at most the chunk in
flight, and running the same command again skips the finished chunks. Jobs of a job array
(`run_shard`) and processes of a multi-host run each compute every n-th chunk; one process, or
`merge`, assembles the run.
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import jax
import pandas as pd

from gradbench import results, theory
from gradbench.analysis import classify, verification
from gradbench.analysis import compare as comparing
from gradbench.batch import sizing
from gradbench.batch.execute import compute_tables, execute
from gradbench.batch.manifest import build_manifest, now, setup
from gradbench.batch.parts import (
    SHARD_FILE,
    PartStore,
    check_directory,
    interruptible,
    wait_for_parts,
)
from gradbench.batch.plan import ChunkTask, measured_tables, plan_tasks
from gradbench.batch.progress import PhaseClock
from gradbench.engine import compilation_cache
from gradbench.errors import SpecError
from gradbench.schema import JACOBIAN_COLUMNS
from gradbench.sweep import grid
from gradbench.sweep import spec as spec_module
from gradbench.sweep.spec import SweepSpec


def run(
    sweep: SweepSpec | str | os.PathLike,
    out: str | os.PathLike | None = None,
    *,
    allow_imports: bool = False,
    progress: bool = True,
    report: bool = True,
    fresh: bool = False,
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
        overwrite: permit replacing a run directory of a different sweep.
        wait_seconds: in a multi-process run, how long process 0 waits for the others' parts.

    Returns:
        The `Run` (tables in memory, `path` = the run directory). In a multi-process run
        (`jax.distributed`) only process 0 assembles it; the other processes return None once their
        chunks are written.

    Raises:
        SpecError: bad input (the sweep, `out`), before any computation.
        Interrupted: Ctrl-C (or SIGTERM under the CLI); it says how many chunks are saved, and where.
    """
    spec = _load(sweep, allow_imports)
    out_path = Path(out) if out is not None else Path("runs") / spec.name
    sweep_file = _protected(spec)
    results.check_out(out_path, name=spec.name, overwrite=overwrite, protected=sweep_file)
    check_directory(work_dir(out_path))
    sizing.check(spec)
    compilation_cache.enable()
    configs = grid.expand(spec)
    started = now()
    tasks = plan_tasks(spec, configs, len(jax.local_devices()))
    store = PartStore(work_dir(out_path), spec.sha256, fresh=fresh)
    process, processes = jax.process_index(), jax.process_count()
    mine = tasks[process::processes]
    with interruptible(store, [t.key for t in tasks]):
        tables, facts = execute(
            mine, spec, allow_imports=allow_imports, progress=progress, store=store
        )
        if process != 0:
            return None
        if processes > 1:
            tables = wait_for_parts(
                store, [t.key for t in tasks], [t.n_rows for t in tasks], wait_seconds
            )
        layers, jacobian = measured_tables(tasks, tables)
        run_obj = build_run(
            spec, configs, layers, jacobian, facts, started, out_path, report=report,
            allow_imports=allow_imports, progress=progress,
        )  # fmt: skip
    store.remove()
    return run_obj


def run_shard(
    sweep: SweepSpec | str | os.PathLike,
    out: str | os.PathLike,
    shard: tuple[int, int],
    *,
    allow_imports: bool = False,
    progress: bool = True,
    fresh: bool = False,
) -> Path:
    """Computes the `shard = (i, n)`-th of n disjoint sets of a sweep's chunks into the parts
    directory `out` (absent, empty or written by an earlier shard of the sweep), for `merge`.

    Returns:
        `out`, holding the shard's parts, its spec.toml and its facts (`shard.json`).

    Raises:
        SpecError: bad input (the sweep, `out`, `shard`), before any computation.
        Interrupted: as for `run`; the same call resumes.
    """
    spec = _load(sweep, allow_imports)
    index, count = shard
    if not (count >= 1 and 0 <= index < count):
        raise SpecError("--shard", f"{index}/{count}", "I/N with 0 <= I < N")
    out_path = Path(out)
    where = f"--out {out_path}"
    results.check_location(where, out_path.resolve(), _protected(spec))
    check_directory(out_path, where)
    results.check_creatable(where, out_path.resolve())
    sizing.check(spec, shards=count)
    compilation_cache.enable()
    tasks = plan_tasks(spec, grid.expand(spec), len(jax.local_devices()))
    store = PartStore(out_path, spec.sha256, fresh=fresh)
    (out_path / "spec.toml").write_text(spec.text)
    mine = tasks[index::count]
    with interruptible(store, [t.key for t in mine]):
        _, facts = execute(mine, spec, allow_imports=allow_imports, progress=progress, store=store)
    shard_facts = {
        "shard": list(shard),
        "chunks": len(mine),
        "of_chunks": len(tasks),
        "groups": facts,
    }
    (out_path / SHARD_FILE).write_text(json.dumps(shard_facts, indent=2) + "\n")
    return out_path


def merge(
    directories: list[str | os.PathLike],
    out: str | os.PathLike,
    *,
    report: bool = True,
    allow_imports: bool = False,
    overwrite: bool = False,
) -> results.Run:
    """Assembles the parts written by `run_shard` jobs into one run directory.

    Args:
        directories: the shards' `out` directories.
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
    protected = tuple(Path(d) for d in directories)
    results.check_out(out_path, name=spec.name, overwrite=overwrite, protected=protected)
    sizing.check(spec)
    configs = grid.expand(spec)
    tasks = plan_tasks(spec, configs, len(jax.local_devices()))
    tables = _stored_parts([PartStore(d, spec.sha256, create=False) for d in directories], tasks)
    facts = []
    for directory in directories:
        shard_file = Path(directory) / SHARD_FILE
        if shard_file.is_file():
            facts.extend(json.loads(shard_file.read_text())["groups"])
    layers, jacobian = measured_tables(tasks, tables)
    return build_run(
        spec, configs, layers, jacobian, facts, now(), out_path, report=report,
        allow_imports=allow_imports, progress=False,
    )  # fmt: skip


def _stored_parts(stores: list[PartStore], tasks: list[ChunkTask]) -> list[pd.DataFrame]:
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
    return tables


def build_run(
    spec: SweepSpec,
    configs: pd.DataFrame,
    layers: pd.DataFrame,
    jacobian: pd.DataFrame | None,
    facts: list[dict],
    started: str,
    out_path: Path,
    *,
    report: bool,
    allow_imports: bool,
    progress: bool,
) -> results.Run:
    """Summary, theory, training (sweeps with a [train] section), manifest and report of a complete
    set of layers (and Jacobian rows, or None), published atomically as the run directory `out_path`.

    Training runs here, in the process that assembles the run, after the gradient chunks; it is not
    split into resumable parts: its sweeps are laptop-sized by design.
    """
    order = {cid: i for i, cid in enumerate(configs["config_id"])}
    layers = layers.assign(_order=layers["config_id"].map(order))
    layers = layers.sort_values(["_order", "layer", "sublayer"], kind="stable", ignore_index=True)
    layers = layers.drop(columns="_order")
    clock = PhaseClock()
    with clock("tables"):
        summary = classify.summarise(configs, layers, spec.threshold)
    with clock("theory"):
        summary = theory.with_theory(summary)
        if jacobian is not None:  # measured, and free probability's prediction beside it
            summary = theory.with_spectrum(summary.merge(jacobian, on="config_id"))
    manifest = build_manifest(spec, configs, facts, started)
    training = None
    if spec.train is not None:
        from gradbench import training as training_stage

        training = training_stage.train_configs(
            spec, configs, allow_imports=allow_imports, progress=progress
        )
        summary = training_stage.with_outcomes(summary, training)
        manifest["training"] = training_stage.manifest_entry(spec.train, training)
    staged = results.staging_dir(out_path)
    try:
        run_obj = results.Run(staged, configs, layers, summary, manifest, spec.text)
        if training is not None:
            run_obj.training, run_obj.training_layers = training.steps, training.layers
        with clock("tables"):
            run_obj.write_data()
        if report:
            from gradbench.report import write_report

            with clock("report"):
                write_report(run_obj)
        manifest["phase_seconds"] = clock.phases(manifest)
        results.write_manifest(staged, manifest)
        run_obj.path = results.publish(staged, out_path)
    except BaseException:
        shutil.rmtree(staged, ignore_errors=True)
        raise
    return run_obj


def verify(
    run_dir,
    *,
    sample: int | None = None,
    seed: int = 0,
    tolerance: float | None = None,
    train_tolerance: float | None = None,
    allow_imports: bool = False,
    progress: bool = False,
) -> verification.Verification:
    """Checks a stored run against its spec, and re-runs `sample` of its configs
    (`gradbench.analysis.verification` says what is checked, and within which tolerances).

    Args:
        run_dir: a run directory written by `gradbench run` or `merge`.
        sample: how many configs to re-run, chosen at random with `seed`; None = all when the run has
            at most 512 configs, else 256.
        seed: the seed of the sample.
        tolerance: for the gradient statistics, in log10; None = the documented defaults.
        train_tolerance: for training losses and norms, in log10; None = 1e-6 on the stored run's
            setup, elsewhere only what does not depend on the trajectory is compared.
        allow_imports: permit activations given as "package.module:function".
        progress: print progress to stderr.

    Returns:
        The `Verification`; `.ok` is the verdict.

    Raises:
        SpecError: not a run directory, an edited spec.toml, a bad `sample`, or training tables
            missing from a run whose spec trains.
    """
    stored = results.load(run_dir)
    spec = spec_module.parse(
        stored.spec_text, source=f"{run_dir}/spec.toml", allow_imports=allow_imports
    )
    if spec.sha256 != stored.manifest.get("spec_sha256"):
        raise SpecError(
            f"{run_dir}/spec.toml",
            "<edited>",
            "the spec.toml the run was made from (sha256 in manifest.json)",
        )
    if sample is not None and sample < 1:
        raise SpecError("--sample", sample, "a positive number of configs")
    configs = grid.expand(spec)
    chosen = verification.choose_sample(configs, sample, seed)
    stored_tables = comparing.run_tables(stored)
    if spec.train is not None:
        missing = [n for n in verification.INITIAL_TRAINING if stored_tables[n] is None]
        if missing:
            raise SpecError(
                str(run_dir),
                f"<no {', '.join(missing)} tables>",
                "a run directory written by gradbench run: its spec has a [train] section, so "
                "data/training.parquet, data/training_layers.parquet and the summary's outcome "
                "columns belong to it",
            )
    predicted = theory.with_spectrum(configs) if spec.jacobian else configs
    theory_columns = theory.with_theory(predicted).drop(columns=configs.columns.drop("config_id"))
    recomputed = verification.recomputed_summary(
        configs, stored.layers, spec.threshold, theory_columns
    )
    # The measured Jacobian columns do not follow from the layers; the re-run checks them.
    from_layers = stored.summary.drop(columns=list(JACOBIAN_COLUMNS), errors="ignore")
    same = comparing.Tolerance(verification.RECOMPUTED_TOLERANCE, verification.RECOMPUTED_TOLERANCE)
    sections = [
        (
            "configs: the stored tables against the expansion of spec.toml",
            verification.configs_check(stored, configs),
        ),
        (
            f"every config ({len(configs)}): the summary recomputed from the stored layers",
            comparing.compare(
                {"summary": from_layers}, {"summary": recomputed}, tolerance=same, complete=True
            ),
        ),
    ]
    here = setup()
    title, rerun, notes = _rerun(
        spec,
        configs,
        chosen,
        stored_tables,
        theory_columns=theory_columns,
        same_setup=verification.same_training_setup(stored.manifest, here),
        tolerance=(
            tolerance
            if tolerance is not None
            else verification.default_tolerance(stored.manifest, here)
        ),
        train_tolerance=train_tolerance,
        allow_imports=allow_imports,
        progress=progress,
    )
    sections.append((title, rerun))
    labels = comparing.config_labels(configs)
    for (_, comparison), sides in zip(sections, verification.SIDES, strict=True):
        comparison.labels, comparison.sides = labels, sides
    return verification.Verification(sections, notes)


def _rerun(
    spec: SweepSpec,
    configs: pd.DataFrame,
    chosen: pd.DataFrame,
    stored_tables: dict,
    *,
    theory_columns: pd.DataFrame,
    same_setup: bool,
    tolerance: float,
    train_tolerance: float | None,
    allow_imports: bool,
    progress: bool,
) -> tuple[str, comparing.Comparison, list[str]]:
    """The re-run check: (title, comparison, notes)."""
    layers, jacobian, _ = compute_tables(
        spec, chosen, allow_imports=allow_imports, progress=progress
    )
    if jacobian is not None:
        theory_columns = theory_columns.merge(jacobian, on="config_id", validate="1:1")
    summary = verification.recomputed_summary(chosen, layers, spec.threshold, theory_columns)
    rerun = {"layers": layers, "summary": summary}
    title = f"re-run of {len(chosen)} of {len(configs)} configs"
    trained = tolerance
    if spec.train is not None:
        from gradbench import training as training_stage

        training = training_stage.train_configs(
            spec, configs, allow_imports=allow_imports, progress=progress, only=chosen["config_id"]
        )
        rerun |= {
            "training": training.steps,
            "training_layers": training.layers,
            "outcomes": training.outcomes,
        }
        title += f" and re-training of the {len(training.outcomes)} configs of their chunks"
        trained = verification.training_tolerance(train_tolerance, same_setup)
    comparison = verification.rerun_check(stored_tables, rerun, tolerance, trained)
    notes = [verification.OTHER_SETUP_NOTE] if trained is None else []
    return title, comparison, notes


def work_dir(out: Path) -> Path:
    """Where a run keeps its finished chunks until it is assembled: `<out>.parts/` beside `out`."""
    return out.resolve().parent / f"{out.name}.parts"


def _load(sweep: SweepSpec | str | os.PathLike, allow_imports: bool) -> SweepSpec:
    spec = (
        sweep
        if isinstance(sweep, SweepSpec)
        else spec_module.load(sweep, allow_imports=allow_imports)
    )
    if spec.imports and not allow_imports:
        spec_module.parse(spec.text, source=spec.source)  # raises the refusal with its message
    return spec


def _protected(spec: SweepSpec) -> tuple[Path, ...]:
    """The sweep file itself: no output may replace or hold it."""
    sweep_file = Path(spec.source)
    return (sweep_file,) if sweep_file.is_file() else ()
