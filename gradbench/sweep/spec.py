"""Sweep files: TOML in, a validated, frozen `SweepSpec` out.

`load` resolves a path or the name of a built-in sweep and reads it; `parse` reads TOML text. Every
error a user can make in a sweep file is raised while reading it, as a `SpecError` that names the file,
the key, the value and what is allowed; nothing downstream validates user input again.

A sweep file has top-level `name`, `seed` and `description`, and the sections `[model]` and `[axes]`
(the network and the axes swept: `gradbench.sweep.axes`), `[train]` (optional training runs:
`gradbench.sweep.train_section`), `[classify]` (`threshold`: the regime threshold in log10 units) and
`[run]` (`dtype`, `measure`, `chunk_size`, `depth_bucket_ratio`, and the opt-in `jacobian` with its
`jacobian_probes`: `gradbench.engine.jacobian`). Unknown keys are errors, so that a typo cannot
silently change a sweep. README.md ("Sweep files") shows a complete file.
"""

from __future__ import annotations

import re
import tomllib
from importlib.resources.abc import Traversable
from pathlib import Path

from gradbench.errors import SpecError
from gradbench.sweep.axes import MODEL_KEYS, check_axis_names, read_network
from gradbench.sweep.builtin import SWEEPS_DIR, built_in_sweeps
from gradbench.sweep.train_section import TRAIN_KEYS, check_task, read_train
from gradbench.sweep.types import Axis, SweepSpec, TrainSpec
from gradbench.sweep.values import ValueReader

__all__ = [
    "SECTION_KEYS",
    "SWEEPS_DIR",
    "Axis",
    "SweepSpec",
    "TrainSpec",
    "built_in_sweeps",
    "load",
    "parse",
    "resolve_path",
]

DTYPES = ("float32", "float64")
MEASURES = ("log", "plain")
# The keys of the top level ("") and of each section; `[axes]` takes the axis names instead.
SECTION_KEYS = {
    "": {"name", "seed", "description", "model", "axes", "classify", "run", "train"},
    "model": MODEL_KEYS,
    "classify": {"threshold"},
    "run": {"dtype", "measure", "chunk_size", "depth_bucket_ratio", "jacobian", "jacobian_probes"},
    "train": TRAIN_KEYS,
}
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*$")
SEED_MAX = 2**32 - 1  # the root key keeps 32 bits of a seed: larger ones would repeat smaller ones
DEFAULT_JACOBIAN_PROBES = 8
# The Jacobian kernel holds a few (probes x batch, width) arrays per config: at 1024 probes, 1024
# times a layer's (batch, width) activations.
MAX_JACOBIAN_PROBES = 1024


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
    """Validates sweep TOML text (`source` names it in errors; `name` defaults to `default_name`).

    An activation given as an import path is refused unless `allow_imports`."""
    try:
        doc = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise SpecError(source, "<malformed TOML>", f"valid TOML ({exc})") from None
    return _build(ValueReader(source), doc, text, default_name, allow_imports)


def _build(
    reader: ValueReader, doc: dict, text: str, default_name: str, allow_imports: bool
) -> SweepSpec:
    # Keys first, in every section: a typo is reported before any value.
    reader.check_keys(doc, "", SECTION_KEYS[""])
    for section in ("model", "classify", "run", "axes", "train"):
        if section in doc and not isinstance(doc[section], dict):
            raise reader.error(section, doc[section], "a table, e.g. [" + section + "]")
    model = doc.get("model", {})
    axes_doc = doc.get("axes", {})
    classify = doc.get("classify", {})
    run = doc.get("run", {})
    reader.check_keys(model, "model", SECTION_KEYS["model"])
    reader.check_keys(classify, "classify", SECTION_KEYS["classify"])
    reader.check_keys(run, "run", SECTION_KEYS["run"])
    check_axis_names(reader, axes_doc)

    name = doc.get("name", default_name)
    if not isinstance(name, str) or not _NAME.match(name) or ".." in name:
        raise reader.error("name", name, "letters, digits, '.', '_' and '-' (a directory name)")
    seed = reader.integer(doc.get("seed", 0), "seed", minimum=0, maximum=SEED_MAX)
    description = doc.get("description", "")
    if not isinstance(description, str):
        raise reader.error("description", description, "a string")

    network = read_network(reader, model, axes_doc, allow_imports=allow_imports)

    dtype = reader.choice(run.get("dtype", "float32"), "run.dtype", DTYPES)
    measure = reader.choice(run.get("measure", "log"), "run.measure", MEASURES)
    chunk_size = run.get("chunk_size")
    if chunk_size is not None:
        chunk_size = reader.integer(chunk_size, "run.chunk_size", minimum=1)
    ratio = reader.number(run.get("depth_bucket_ratio", 1.5), "run.depth_bucket_ratio")
    if ratio < 1.0:
        raise reader.error("run.depth_bucket_ratio", ratio, "a number >= 1")
    jacobian_probes = _jacobian_probes(reader, run)
    others = [a for a in network.axes["architecture"].values if a != "mlp"]
    if jacobian_probes is not None and others:
        raise reader.error(
            "run.jacobian",
            True,
            f"the Jacobian of architecture 'mlp' only (the sweep runs {others})",
        )
    threshold = reader.number(classify.get("threshold", 2.0), "classify.threshold")
    if threshold <= 0:
        raise reader.error("classify.threshold", threshold, "a positive number (log10 units)")
    train = read_train(reader, doc["train"]) if "train" in doc else None
    if train is not None:
        architectures = network.axes["architecture"].values
        check_task(reader, train.task, architectures, network.axes["depth"].values)

    return SweepSpec(
        name=name,
        seed=seed,
        description=description,
        source=reader.source,
        text=text,
        **network._asdict(),
        threshold=threshold,
        dtype=dtype,
        measure=measure,
        chunk_size=chunk_size,
        depth_bucket_ratio=ratio,
        jacobian_probes=jacobian_probes,
        train=train,
    )


def _jacobian_probes(reader: ValueReader, run: dict) -> int | None:
    """`[run] jacobian = true` measures the Jacobian with `jacobian_probes` probes per input (default
    `DEFAULT_JACOBIAN_PROBES`); None when it is not measured. Probes without the Jacobian are refused:
    they would suggest a measurement that never happens."""
    measured = reader.boolean(run.get("jacobian", False), "run.jacobian")
    if "jacobian_probes" not in run:
        return DEFAULT_JACOBIAN_PROBES if measured else None
    probes = reader.integer(
        run["jacobian_probes"], "run.jacobian_probes", minimum=1, maximum=MAX_JACOBIAN_PROBES
    )
    if not measured:
        raise reader.error(
            "run.jacobian_probes", probes, "a probe count only with run.jacobian = true"
        )
    return probes
