"""Sweep files: TOML in, a validated, frozen `SweepSpec` out.

Every error a user can make in a sweep file is raised here, as a `SpecError` that names the file, the
key, the value and what is allowed. Nothing downstream validates user input again.
"""

from __future__ import annotations

import hashlib
import math
import re
import tomllib
from dataclasses import dataclass, field
from importlib.resources import files
from importlib.resources.abc import Traversable
from pathlib import Path

from gradbench import registry
from gradbench.errors import SpecError

# Package data, so that a wheel install has them too; a Path except for exotic (zipped) installs.
SWEEPS_DIR = files("gradbench") / "sweeps"


def built_in_sweeps() -> dict[str, Traversable]:
    """The sweep files shipped with gradbench, by name (`gradbench run <name>`), sorted by name."""
    entries = sorted(SWEEPS_DIR.iterdir(), key=lambda entry: entry.name)
    return {e.name.removesuffix(".toml"): e for e in entries if e.name.endswith(".toml")}


DTYPES = ("float32", "float64")
MEASURES = ("log", "plain")
ARCHITECTURES = ("mlp",)
OPTIMIZERS = ("sgd", "momentum", "adam")  # built from optax in gradbench.training.train
CLIPS = ("none", "global_norm", "value", "adaptive")
TASKS = ("teacher", "classification", "digits")

# Axes a sweep may vary. Each may also be given as a single value.
AXIS_KEYS = (
    "activation",
    "init",
    "sigma_w",
    "sigma_w2",
    "sigma_b",
    "sigma_b2",
    "depth",
    "width",
    "batch",
    "replicate",
)
SECTION_KEYS = {
    "": {"name", "seed", "description", "model", "axes", "classify", "run", "train"},
    "model": {"architecture", "width", "batch", "loss"},
    "classify": {"threshold"},
    "run": {"dtype", "measure", "chunk_size", "depth_bucket_ratio"},
    "train": {
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
    },
}
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*$")
INT32_MAX = 2**31 - 1  # depth, width, batch, replicate and step counts reach the device as int32
SEED_MAX = 2**32 - 1  # the root key keeps 32 bits of a seed: larger ones would repeat smaller ones
MAX_AXIS_VALUES = 10_000_000  # one axis; the grid's size and memory are checked when it is expanded


@dataclass(frozen=True)
class Axis:
    """The values of one swept quantity and how they were written (`log` for logspace)."""

    values: tuple
    scale: str = "linear"


@dataclass(frozen=True)
class TrainSpec:
    """The `[train]` section: K optimiser steps for every config (gradbench.training.train).

    Attributes:
        optimizer: optimiser names (an axis; static: one compiled trainer per name).
        lr: learning rates (an axis; dynamic: vmapped, never recompiles).
        clip: (rule, thresholds) per clipping rule; thresholds are empty for "none" and are a
            dynamic, vmapped axis otherwise.
        steps: K; log_every: record every this many steps (and after the last one).
        task: "teacher", "classification" or "digits" (gradbench.training.datasets); samples: data set size;
            batch: examples per step (= samples: full-batch); outputs: regression targets or classes
            (digits: always 10).
        trained_below: a config "trained" when it did not diverge and its final loss is below this
            fraction of the task's baseline loss (gradbench.training.datasets.baseline_loss).
        chunk_size: configs per trainer call (default: from a memory estimate).
    """

    optimizer: Axis
    lr: Axis
    clip: tuple[tuple[str, tuple[float, ...]], ...]
    steps: int
    log_every: int
    task: str
    samples: int
    batch: int
    outputs: int
    trained_below: float
    chunk_size: int | None

    @property
    def n_runs(self) -> int:
        """Training runs per network configuration."""
        rules = sum(max(1, len(t)) for _, t in self.clip)
        return len(self.optimizer.values) * len(self.lr.values) * rules


@dataclass(frozen=True)
class SweepSpec:
    """A validated sweep. Scale axes are stored squared (`sigma_w2`, `sigma_b2`) whatever the file used.

    Attributes:
        sigma_w_given: "sigma_w" or "sigma_w2", whichever the file used (None when only presets are used).
    """

    name: str
    seed: int
    description: str
    source: str
    text: str
    architecture: str
    loss: str
    axes: dict[str, Axis]
    sigma_w_given: str | None
    sigma_b_given: str
    threshold: float
    dtype: str
    measure: str
    chunk_size: int | None
    depth_bucket_ratio: float
    imports: tuple[str, ...] = field(default=())
    train: TrainSpec | None = None

    @property
    def sha256(self) -> str:
        return hashlib.sha256(self.text.encode()).hexdigest()

    def axis(self, key: str) -> tuple:
        return self.axes[key].values

    @property
    def n_configs(self) -> int:
        networks = math.prod(len(a.values) for a in self.axes.values())
        return networks * (self.train.n_runs if self.train else 1)


def resolve_path(spec: str | Path) -> Path | Traversable:
    """A sweep file path, or the name of a built-in sweep (`gradbench/sweeps/<name>.toml`).

    A file of that name (relative to the working directory) wins over a built-in sweep; a directory
    does not, so `gradbench run default --out default` can be run again.
    """
    path = Path(spec)
    built_in = built_in_sweeps()
    if path.suffix != ".toml" and not path.is_file() and str(spec) in built_in:
        return built_in[str(spec)]
    return path


def load(spec: str | Path, *, allow_imports: bool = False) -> SweepSpec:
    """Reads and validates a sweep file (or a built-in sweep by name)."""
    path = resolve_path(spec)
    try:
        text = path.read_text()
    except FileNotFoundError:
        builtin = list(built_in_sweeps())
        raise SpecError(
            str(spec), "<missing file>", f"an existing .toml file or one of {builtin}"
        ) from None
    except (OSError, UnicodeDecodeError) as exc:
        raise SpecError(
            str(spec), "<unreadable file>", f"a readable UTF-8 TOML file ({exc})"
        ) from None
    return parse(text, source=str(path), default_name=path.stem, allow_imports=allow_imports)


def parse(
    text: str, *, source: str = "<string>", default_name: str = "sweep", allow_imports: bool = False
) -> SweepSpec:
    """Validates sweep TOML text; see DESIGN.md section 2b for the format."""
    try:
        doc = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise SpecError(source, "<malformed TOML>", f"valid TOML ({exc})") from None
    return _Parser(source).build(doc, text, default_name, allow_imports)


class _Parser:
    def __init__(self, source: str):
        self.source = source

    def error(self, key: str, given: object, allowed: str) -> SpecError:
        return SpecError(f"{self.source}: {key}", given, allowed)

    def build(self, doc: dict, text: str, default_name: str, allow_imports: bool) -> SweepSpec:
        self.check_keys(doc, "")
        for section in ("model", "classify", "run", "axes", "train"):
            if section in doc and not isinstance(doc[section], dict):
                raise self.error(section, doc[section], "a table, e.g. [" + section + "]")
        model = doc.get("model", {})
        axes_doc = doc.get("axes", {})
        self.check_keys(model, "model")
        self.check_keys(doc.get("classify", {}), "classify")
        self.check_keys(doc.get("run", {}), "run")
        unknown = set(axes_doc) - set(AXIS_KEYS)
        if unknown:
            key = sorted(unknown)[0]
            raise self.error(f"axes.{key}", key, f"axis names {list(AXIS_KEYS)}")

        name = doc.get("name", default_name)
        if not isinstance(name, str) or not _NAME.match(name) or ".." in name:
            raise self.error("name", name, "letters, digits, '.', '_' and '-' (a directory name)")
        seed = self.integer(doc.get("seed", 0), "seed", minimum=0, maximum=SEED_MAX)
        description = doc.get("description", "")
        if not isinstance(description, str):
            raise self.error("description", description, "a string")

        architecture = self.choice(
            model.get("architecture", "mlp"), "model.architecture", ARCHITECTURES
        )
        loss = self.choice(model.get("loss", "probe"), "model.loss", tuple(registry.LOSSES))

        raw = dict(axes_doc)
        for key in ("width", "batch"):
            if key in model:
                if key in axes_doc:
                    raise self.error(
                        f"model.{key}", model[key], f"{key} in [model] or [axes], not both"
                    )
                raw[key] = model[key]
        raw.setdefault("batch", 64)
        raw.setdefault("init", "gaussian")
        raw.setdefault("replicate", {"count": 1})
        for required in ("activation", "depth", "width"):
            if required not in raw:
                raise self.error(f"axes.{required}", "<missing>", f"a value or list for {required}")

        from_model = {key for key in ("width", "batch") if key in model}
        axes, imports = self.axes(raw, allow_imports, from_model)
        sigma_w_given = self.scale_pair(raw, axes, "sigma_w")
        sigma_b_given = self.scale_pair(raw, axes, "sigma_b") or "sigma_b2"
        if "sigma_b2" not in axes:
            axes["sigma_b2"] = Axis((0.0,))
        self.check_inits(axes, sigma_w_given)
        order = [
            "activation",
            "init",
            "width",
            "batch",
            "sigma_w2",
            "sigma_b2",
            "depth",
            "replicate",
        ]
        axes = {k: axes[k] for k in order if k in axes}

        run = doc.get("run", {})
        dtype = self.choice(run.get("dtype", "float32"), "run.dtype", DTYPES)
        measure = self.choice(run.get("measure", "log"), "run.measure", MEASURES)
        chunk_size = run.get("chunk_size")
        if chunk_size is not None:
            chunk_size = self.integer(chunk_size, "run.chunk_size", minimum=1)
        ratio = self.number(run.get("depth_bucket_ratio", 1.5), "run.depth_bucket_ratio")
        if ratio < 1.0:
            raise self.error("run.depth_bucket_ratio", ratio, "a number >= 1")
        threshold = self.number(doc.get("classify", {}).get("threshold", 2.0), "classify.threshold")
        if threshold <= 0:
            raise self.error("classify.threshold", threshold, "a positive number (log10 units)")

        return SweepSpec(
            name=name,
            seed=seed,
            description=description,
            source=self.source,
            text=text,
            architecture=architecture,
            loss=loss,
            axes=axes,
            sigma_w_given=sigma_w_given,
            sigma_b_given=sigma_b_given,
            threshold=threshold,
            dtype=dtype,
            measure=measure,
            chunk_size=chunk_size,
            depth_bucket_ratio=ratio,
            imports=tuple(imports),
            train=self.train(doc["train"]) if "train" in doc else None,
        )

    def train(self, table: dict) -> TrainSpec:
        """The `[train]` section; see `TrainSpec`."""
        self.check_keys(table, "train")
        optimizer = self.axis_values(table.get("optimizer", "sgd"), "train.optimizer", kind="name")
        for v in optimizer.values:
            if v not in OPTIMIZERS:
                raise self.error("train.optimizer", v, f"one of {list(OPTIMIZERS)}")
        if "lr" not in table:
            raise self.error("train.lr", "<missing>", "a learning rate or list of them, e.g. 0.01")
        lr = self.axis_values(table["lr"], "train.lr", kind="number")
        for v in lr.values:
            if v <= 0:
                raise self.error("train.lr", v, "finite numbers > 0")
        steps = self.integer(table.get("steps", 200), "train.steps", minimum=1)
        log_every = self.integer(
            table.get("log_every", max(1, steps // 50)), "train.log_every", minimum=1
        )
        if log_every > steps:
            raise self.error("train.log_every", log_every, f"an integer from 1 to steps = {steps}")
        task = self.choice(table.get("task", "teacher"), "train.task", TASKS)
        if task == "digits":
            from gradbench.training import datasets as tasks

            if not tasks.digits_available():
                raise self.error(
                    "train.task",
                    task,
                    "'teacher' or 'classification'; 'digits' needs scikit-learn installed "
                    "(pip install scikit-learn: its digits are bundled, nothing is downloaded)",
                )
        most = 1797 if task == "digits" else None
        samples = self.integer(table.get("samples", 256), "train.samples", minimum=1)
        if most is not None and samples > most:
            raise self.error("train.samples", samples, f"an integer from 1 to {most} (digits)")
        batch = self.integer(table.get("batch", samples), "train.batch", minimum=1)
        if batch > samples:
            raise self.error("train.batch", batch, f"an integer from 1 to samples = {samples}")
        outputs = self.integer(table.get("outputs", 4), "train.outputs", minimum=1)
        if task == "classification" and outputs < 2:
            raise self.error("train.outputs", outputs, "at least 2 classes for classification")
        below = self.number(table.get("trained_below", 0.1), "train.trained_below")
        if not 0 < below < 1:
            raise self.error(
                "train.trained_below", below, "a fraction of the baseline loss, in (0, 1)"
            )
        chunk_size = table.get("chunk_size")
        if chunk_size is not None:
            chunk_size = self.integer(chunk_size, "train.chunk_size", minimum=1)
        return TrainSpec(
            optimizer=optimizer,
            lr=lr,
            clip=self.clip_rules(table),
            steps=steps,
            log_every=log_every,
            task=task,
            samples=samples,
            batch=batch,
            outputs=outputs,
            trained_below=below,
            chunk_size=chunk_size,
        )

    def clip_rules(self, table: dict) -> tuple[tuple[str, tuple[float, ...]], ...]:
        """`clip` (rules) with `clip_threshold`: one axis for every rule, or a table per rule."""
        rules = self.axis_values(table.get("clip", "none"), "train.clip", kind="name").values
        for rule in rules:
            if rule not in CLIPS:
                raise self.error("train.clip", rule, f"one of {list(CLIPS)}")
        clipping = [r for r in rules if r != "none"]
        given = table.get("clip_threshold")
        if given is None:
            if clipping:
                raise self.error(
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
                raise self.error(
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
                raise self.error(where, "<missing>", f"thresholds for every rule in {clipping}")
            axis = self.axis_values(given[rule] if per_rule else given, where, kind="number")
            for v in axis.values:
                if v <= 0:
                    raise self.error(where, v, "finite numbers > 0")
            out.append((rule, tuple(axis.values)))
        return tuple(out)

    def check_keys(self, table: dict, section: str) -> None:
        allowed = SECTION_KEYS[section]
        for key in table:
            if key not in allowed:
                where = f"{section}.{key}" if section else key
                raise self.error(
                    where, key, f"keys {sorted(allowed)} (a typo must not change a sweep)"
                )

    def axes(
        self, raw: dict, allow_imports: bool, from_model: set[str]
    ) -> tuple[dict[str, Axis], list[str]]:
        axes: dict[str, Axis] = {}
        imports: list[str] = []
        for key, value in raw.items():
            where = f"model.{key}" if key in from_model else f"axes.{key}"
            axis = self.axis_values(value, where, kind=AXIS_KINDS[key])
            if key == "activation":
                for v in axis.values:
                    if registry.is_import_path(v):
                        if not allow_imports:
                            raise self.error(
                                where,
                                v,
                                "registered activations only, unless imports are allowed "
                                "(--allow-imports, or allow_imports=True in the Python API)",
                            )
                        try:
                            registry.activation(v, allow_imports=True)
                        except SpecError as exc:
                            raise self.error(where, v, exc.allowed) from None
                        imports.append(v)
                    elif v not in registry.ACTIVATIONS:
                        raise self.error(where, v, f"one of {sorted(registry.ACTIVATIONS)}")
            elif key == "init":
                for v in axis.values:
                    if v not in registry.init_names():
                        raise self.error(where, v, f"one of {registry.init_names()}")
            elif key in ("depth", "width", "batch"):
                for v in axis.values:
                    if v < 1:
                        raise self.error(where, v, f"integers >= 1 ({key} < 1 has no layers)")
            elif key == "replicate":
                for v in axis.values:
                    if v < 0:
                        raise self.error(where, v, "replicate indices >= 0")
            else:  # scales
                for v in axis.values:
                    if v < 0:
                        raise self.error(where, v, "finite numbers >= 0")
                    if key.startswith("sigma_w") and v == 0:
                        raise self.error(
                            where, v, "weight scales > 0 (zero weights pass no gradient)"
                        )
            axes[key] = axis
        return axes, imports

    def axis_values(self, value: object, where: str, *, kind: str) -> Axis:
        """An axis of `kind` "name" (strings), "integer" or "number" (finite), in any accepted form."""
        scale = "linear"
        if isinstance(value, dict):
            if where == "axes.replicate" and set(value) == {"count"}:
                count = self.integer(
                    value["count"], f"{where}.count", minimum=1, maximum=MAX_AXIS_VALUES
                )
                return Axis(tuple(range(count)))
            generators = ("linspace", "logspace", "range")
            if kind == "name" or len(value) != 1 or next(iter(value)) not in generators:
                allowed = (
                    "a name or a list of names"
                    if kind == "name"
                    else "a list, a single value, {linspace = [a, b, n]}, {logspace = [a, b, n]} "
                    "or {range = [start, stop, step]}"
                    + (", or {count = N}" if where == "axes.replicate" else "")
                )
                raise self.error(where, value, allowed)
            generator, args = next(iter(value.items()))
            values = self.generated(generator, args, f"{where}.{generator}")
            scale = "log" if generator == "logspace" else "linear"
        elif isinstance(value, list):
            values = value
            if len(values) > 2 and all(_is_number(v) and v > 0 for v in values):
                if max(values) >= 100 * min(values):  # plotted on a log axis, like a logspace
                    scale = "log"
        else:
            values = [value]
        if not values:
            raise self.error(where, value, "at least one value (an empty axis makes an empty grid)")
        checked = [VALUE_CHECKS[kind](self, v, where) for v in values]
        if len(set(checked)) != len(checked):
            raise self.error(where, values, "distinct values (a repeated value repeats configs)")
        return Axis(tuple(checked), scale)

    def generated(self, kind: str, args: object, where: str) -> list:
        if not isinstance(args, list) or not all(_is_number(a) for a in args):
            raise self.error(where, args, "a list of numbers")
        if kind == "range":
            if len(args) not in (2, 3) or not all(isinstance(a, int) for a in args):
                raise self.error(
                    where, args, "[start, stop] or [start, stop, step] integers (stop excluded)"
                )
            if len(args) == 3 and args[2] == 0:
                raise self.error(where, args, "a non-zero step")
            values = range(*args)
            if len(values) > MAX_AXIS_VALUES:
                raise self.error(where, args, f"at most {MAX_AXIS_VALUES:,} values per axis")
            return list(values)
        if len(args) != 3 or not isinstance(args[2], int) or not 1 <= args[2] <= MAX_AXIS_VALUES:
            raise self.error(
                where,
                args,
                f"[start, stop, count] with an integer count from 1 to {MAX_AXIS_VALUES:,} ({kind})",
            )
        a, b, n = float(args[0]), float(args[1]), args[2]
        if not (math.isfinite(a) and math.isfinite(b)):
            raise self.error(where, args, "finite bounds")
        points = [a + (b - a) * i / (n - 1) for i in range(n)] if n > 1 else [a]
        if kind == "linspace":
            return points
        try:
            return [10.0**p for p in points]
        except OverflowError:
            raise self.error(
                where, args, "exponents up to 308 (10^a must be a finite number)"
            ) from None

    def scale_pair(self, raw: dict, axes: dict[str, Axis], base: str) -> str | None:
        """Accepts `base` xor `base2` and stores the squared form under `base2`."""
        squared = base + "2"
        if base in raw and squared in raw:
            raise self.error(f"axes.{base}", raw[base], f"{base} or {squared}, not both")
        if base in raw:
            axis = axes.pop(base)
            axes[squared] = Axis(tuple(v * v for v in axis.values), axis.scale)
            return base
        return squared if squared in raw else None

    def check_inits(self, axes: dict[str, Axis], sigma_w_given: str | None) -> None:
        inits = axes["init"].values
        presets = [i for i in inits if i in registry.INIT_PRESETS]
        families = [i for i in inits if i in registry.INIT_FAMILIES]
        if presets and sigma_w_given:
            raise self.error(
                f"axes.{sigma_w_given}",
                list(axes["sigma_w2"].values) if sigma_w_given == "sigma_w2" else "<given>",
                f"no weight scale with preset inits {presets} (a preset fixes sigma_w^2); "
                "use a family (gaussian, uniform, ...) to sweep sigma_w",
            )
        if families and not sigma_w_given:
            raise self.error(
                "axes.sigma_w2",
                "<missing>",
                f"a sigma_w or sigma_w2 axis for init families {families}",
            )

    def integer(
        self, value: object, where: str, minimum: int | None = None, maximum: int = INT32_MAX
    ) -> int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise self.error(where, value, "an integer" + _hint(value))
        if minimum is not None and value < minimum:
            raise self.error(where, value, f"an integer >= {minimum}")
        if value > maximum:
            raise self.error(where, value, f"an integer <= {maximum:,}")
        return value

    def number(self, value: object, where: str) -> float:
        if not _is_number(value):
            raise self.error(where, value, "a number" + _hint(value))
        if not math.isfinite(value):
            raise self.error(where, value, "a finite number")
        return float(value)

    def name(self, value: object, where: str) -> str:
        if not isinstance(value, str):
            raise self.error(where, value, "a name (a quoted string)")
        return value

    def choice(self, value: object, where: str, options: tuple[str, ...]) -> str:
        if not isinstance(value, str) or value not in options:
            raise self.error(where, value, f"one of {list(options)}")
        return value


def _hint(value: object) -> str:
    """Why a TOML value that looks numeric is not the number wanted."""
    if isinstance(value, bool):
        return ", not a boolean"
    if isinstance(value, str) and _parses_as_number(value):
        return " (written without quotes)"
    if isinstance(value, float) and value.is_integer() and abs(value) < 1e15:
        return f" (write {int(value)}, not {value})"
    return ""


AXIS_KINDS = {
    "activation": "name",
    "init": "name",
    "sigma_w": "number",
    "sigma_w2": "number",
    "sigma_b": "number",
    "sigma_b2": "number",
    "depth": "integer",
    "width": "integer",
    "batch": "integer",
    "replicate": "integer",
}
VALUE_CHECKS = {"name": _Parser.name, "integer": _Parser.integer, "number": _Parser.number}


def _parses_as_number(text: str) -> bool:
    try:
        float(text)
    except ValueError:
        return False
    return True


def _is_number(value: object) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)
