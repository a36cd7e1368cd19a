"""The `[train]` section of a sweep: which optimisers, learning rates and clipping rules to train
every network with, on which task, for how many steps.

`optimizer`, `lr`, `clip` and `clip_threshold` are axes; the rest are settings shared by every run.
`clip_threshold` is one axis for every clipping rule in `clip`, or a table of one axis per rule.
Which architectures train on a task, and how short its sequences may be, depend on the `[axes]` too:
`check_task` (called once both are read).
"""

from __future__ import annotations

from gradbench import registry
from gradbench.sweep.types import TrainSpec
from gradbench.sweep.values import ValueReader

OPTIMIZERS = tuple(registry.OPTIMIZERS)
CLIPS = tuple(registry.CLIP_RULES)
TASKS = tuple(registry.TASKS)
TRAIN_KEYS = {
    "optimizer",
    "lr",
    "clip",
    "clip_threshold",
    "steps",
    "log_every",
    "task",
    "samples",
    "batch",
    "outputs",
    "trained_below",
    "chunk_size",
}


def read_train(reader: ValueReader, table: dict) -> TrainSpec:
    """The `[train]` section; see `TrainSpec`."""
    reader.check_keys(table, "train", TRAIN_KEYS)
    optimizer = reader.axis(table.get("optimizer", "sgd"), "train.optimizer", kind="name")
    for v in optimizer.values:
        if v not in OPTIMIZERS:
            raise reader.error("train.optimizer", v, f"one of {list(OPTIMIZERS)}")
    if "lr" not in table:
        raise reader.error("train.lr", "<missing>", "a learning rate or list of them, e.g. 0.01")
    lr = reader.axis(table["lr"], "train.lr", kind="number")
    for v in lr.values:
        if v <= 0:
            raise reader.error("train.lr", v, "finite numbers > 0")
    steps = reader.integer(table.get("steps", 200), "train.steps", minimum=1)
    log_every = reader.integer(
        table.get("log_every", max(1, steps // 50)), "train.log_every", minimum=1
    )
    if log_every > steps:
        raise reader.error("train.log_every", log_every, f"an integer from 1 to steps = {steps}")
    task = reader.choice(table.get("task", "teacher"), "train.task", TASKS)
    if task == "digits":
        if not registry.TASKS["digits"].available():
            others = ", ".join(repr(t) for t in TASKS if t != "digits")
            raise reader.error(
                "train.task",
                task,
                f"{others}; 'digits' needs scikit-learn installed "
                "(pip install scikit-learn: its digits are bundled, nothing is downloaded)",
            )
    samples = reader.integer(table.get("samples", 256), "train.samples", minimum=1)
    most = registry.TASKS[task].max_samples
    if most is not None and samples > most:
        raise reader.error("train.samples", samples, f"an integer from 1 to {most} ({task})")
    batch = reader.integer(table.get("batch", samples), "train.batch", minimum=1)
    if batch > samples:
        raise reader.error("train.batch", batch, f"an integer from 1 to samples = {samples}")
    outputs = reader.integer(table.get("outputs", 4), "train.outputs", minimum=1)
    if task == "classification" and outputs < 2:
        raise reader.error("train.outputs", outputs, "at least 2 classes for classification")
    below = reader.number(table.get("trained_below", 0.1), "train.trained_below")
    if not 0 < below < 1:
        raise reader.error(
            "train.trained_below", below, "a fraction of the baseline loss, in (0, 1)"
        )
    chunk_size = table.get("chunk_size")
    if chunk_size is not None:
        chunk_size = reader.integer(chunk_size, "train.chunk_size", minimum=1)
    return TrainSpec(
        optimizer=optimizer,
        lr=lr,
        clip=_clip_rules(reader, table),
        steps=steps,
        log_every=log_every,
        task=task,
        samples=samples,
        batch=batch,
        outputs=outputs,
        trained_below=below,
        chunk_size=chunk_size,
    )


def check_task(reader: ValueReader, task: str, architectures, depths) -> None:
    """Refuses a [train] task that some architecture of the sweep does not train on
    (`registry.Task.architectures`: the rnn trains on the adding problem only, and only it does), or
    a depth below the task's shortest sequence (`registry.Task.min_depth`)."""
    wrong = [a for a in architectures if a not in registry.TASKS[task].architectures]
    if wrong:
        fitting = {
            a: [t for t in TASKS if a in registry.TASKS[t].architectures] for a in architectures
        }
        allowed = "a task of every architecture the sweep trains: " + "; ".join(
            f"{a}: {names}" for a, names in fitting.items()
        )
        if len(architectures) > 1 and not set.intersection(*map(set, fitting.values())):
            allowed += " (none fits all of them: train them in separate sweeps)"
        raise reader.error("train.task", task, allowed)
    shortest = registry.TASKS[task].min_depth
    too_short = sorted(d for d in depths if d < shortest)
    if too_short:
        raise reader.error(
            "axes.depth",
            too_short[0],
            f"depths >= {shortest} with train.task {task!r} (its sequences are depth steps long)",
        )


def _clip_rules(reader: ValueReader, table: dict) -> tuple[tuple[str, tuple[float, ...]], ...]:
    """`clip` (rules) with `clip_threshold`: one axis for every rule, or a table per rule."""
    rules = reader.axis(table.get("clip", "none"), "train.clip", kind="name").values
    for rule in rules:
        if rule not in CLIPS:
            raise reader.error("train.clip", rule, f"one of {list(CLIPS)}")
    clipping = [r for r in rules if r != "none"]
    given = table.get("clip_threshold")
    if given is None:
        if clipping:
            raise reader.error(
                "train.clip_threshold",
                "<missing>",
                f"a threshold (or list) for clip rules {clipping}, or a table per rule, e.g. "
                "{ global_norm = [1.0], value = [0.01] }",
            )
        return tuple((r, ()) for r in rules)
    per_rule = isinstance(given, dict) and given and set(given) <= set(CLIPS)
    if per_rule:
        extra = sorted(set(given) - set(clipping))
        if extra:
            raise reader.error(
                f"train.clip_threshold.{extra[0]}", given[extra[0]],
                f"thresholds only for the clip rules in train.clip ({clipping})",
            )  # fmt: skip
    out = []
    for rule in rules:
        if rule == "none":
            out.append((rule, ()))
            continue
        where = f"train.clip_threshold.{rule}" if per_rule else "train.clip_threshold"
        if per_rule and rule not in given:
            raise reader.error(where, "<missing>", f"thresholds for every rule in {clipping}")
        axis = reader.axis(given[rule] if per_rule else given, where, kind="number")
        for v in axis.values:
            if v <= 0:
                raise reader.error(where, v, "finite numbers > 0")
        out.append((rule, tuple(axis.values)))
    return tuple(out)
