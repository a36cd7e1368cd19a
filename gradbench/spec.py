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
from pathlib import Path

from gradbench import registry
from gradbench.errors import SpecError

SWEEPS_DIR = Path(__file__).resolve().parent.parent / "sweeps"

DTYPES = ("float32", "float64")
MEASURES = ("log", "plain")
ARCHITECTURES = ("mlp",)

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
    "": {"name", "seed", "description", "model", "axes", "classify", "run"},
    "model": {"architecture", "width", "batch", "loss"},
    "classify": {"threshold"},
    "run": {"dtype", "measure", "chunk_size", "depth_bucket_ratio"},
}
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*$")


@dataclass(frozen=True)
class Axis:
    """The values of one swept quantity and how they were written (`log` for logspace)."""

    values: tuple
    scale: str = "linear"


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

    @property
    def sha256(self) -> str:
        return hashlib.sha256(self.text.encode()).hexdigest()

    def axis(self, key: str) -> tuple:
        return self.axes[key].values

    @property
    def n_configs(self) -> int:
        return math.prod(len(a.values) for a in self.axes.values())


def resolve_path(spec: str | Path) -> Path:
    """A sweep file path, or the name of a built-in sweep in `sweeps/`."""
    path = Path(spec)
    if path.suffix != ".toml" and not path.exists() and (SWEEPS_DIR / f"{spec}.toml").exists():
        return SWEEPS_DIR / f"{spec}.toml"
    return path


def load(spec: str | Path, *, allow_imports: bool = False) -> SweepSpec:
    """Reads and validates a sweep file (or a built-in sweep by name)."""
    path = resolve_path(spec)
    try:
        text = path.read_text()
    except FileNotFoundError:
        builtin = sorted(p.stem for p in SWEEPS_DIR.glob("*.toml"))
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
        for section in ("model", "classify", "run", "axes"):
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
        seed = self.integer(doc.get("seed", 0), "seed", minimum=0)
        description = doc.get("description", "")
        if not isinstance(description, str):
            raise self.error("description", description, "a string")

        architecture = model.get("architecture", "mlp")
        if architecture not in ARCHITECTURES:
            raise self.error("model.architecture", architecture, f"one of {list(ARCHITECTURES)}")
        loss = model.get("loss", "probe")
        if loss not in registry.LOSSES:
            raise self.error("model.loss", loss, f"one of {list(registry.LOSSES)}")

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

        axes, imports = self.axes(raw, allow_imports)
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
        dtype = run.get("dtype", "float32")
        if dtype not in DTYPES:
            raise self.error("run.dtype", dtype, f"one of {list(DTYPES)}")
        measure = run.get("measure", "log")
        if measure not in MEASURES:
            raise self.error("run.measure", measure, f"one of {list(MEASURES)}")
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
        )

    def check_keys(self, table: dict, section: str) -> None:
        allowed = SECTION_KEYS[section]
        for key in table:
            if key not in allowed:
                where = f"{section}.{key}" if section else key
                raise self.error(
                    where, key, f"keys {sorted(allowed)} (a typo must not change a sweep)"
                )

    def axes(self, raw: dict, allow_imports: bool) -> tuple[dict[str, Axis], list[str]]:
        axes: dict[str, Axis] = {}
        imports: list[str] = []
        for key, value in raw.items():
            where = f"axes.{key}"
            axis = self.axis_values(
                value, where, integer=key in ("depth", "width", "batch", "replicate")
            )
            if key == "activation":
                for v in axis.values:
                    if not isinstance(v, str):
                        raise self.error(where, v, "activation names (strings)")
                    if registry.is_import_path(v):
                        if not allow_imports:
                            raise self.error(
                                where,
                                v,
                                "registered activations only, unless imports are allowed "
                                "(--allow-imports, or allow_imports=True in the Python API)",
                            )
                        registry.activation(v, allow_imports=True)
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
                    if not math.isfinite(v) or v < 0:
                        raise self.error(where, v, "finite numbers >= 0")
                    if key.startswith("sigma_w") and v == 0:
                        raise self.error(
                            where, v, "weight scales > 0 (zero weights pass no gradient)"
                        )
            axes[key] = axis
        return axes, imports

    def axis_values(self, value: object, where: str, *, integer: bool) -> Axis:
        scale = "linear"
        if isinstance(value, dict):
            if where == "axes.replicate" and set(value) == {"count"}:
                count = self.integer(value["count"], f"{where}.count", minimum=1)
                return Axis(tuple(range(count)))
            if len(value) != 1 or next(iter(value)) not in ("linspace", "logspace", "range"):
                raise self.error(
                    where,
                    value,
                    "a list, a single value, {linspace = [a, b, n]}, {logspace = [a, b, n]} or "
                    "{range = [start, stop, step]}"
                    + (", or {count = N}" if "replicate" in where else ""),
                )
            kind, args = next(iter(value.items()))
            values = self.generated(kind, args, f"{where}.{kind}")
            scale = "log" if kind == "logspace" else "linear"
        elif isinstance(value, list):
            values = value
            if len(values) > 2 and all(_is_number(v) and v > 0 for v in values):
                if max(values) >= 100 * min(values):  # plotted on a log axis, like a logspace
                    scale = "log"
        else:
            values = [value]
        if not values:
            raise self.error(where, value, "at least one value (an empty axis makes an empty grid)")
        checked = []
        for v in values:
            if integer:
                checked.append(self.integer(v, where))
            elif isinstance(v, str):
                checked.append(v)
            else:
                checked.append(self.number(v, where))
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
            return list(range(*args))
        if len(args) != 3 or not isinstance(args[2], int) or args[2] < 1:
            raise self.error(
                where, args, f"[start, stop, count] with an integer count >= 1 ({kind})"
            )
        a, b, n = float(args[0]), float(args[1]), args[2]
        if not (math.isfinite(a) and math.isfinite(b)):
            raise self.error(where, args, "finite bounds")
        points = [a + (b - a) * i / (n - 1) for i in range(n)] if n > 1 else [a]
        return [10.0**p for p in points] if kind == "logspace" else points

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

    def integer(self, value: object, where: str, minimum: int | None = None) -> int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise self.error(where, value, "an integer")
        if minimum is not None and value < minimum:
            raise self.error(where, value, f"an integer >= {minimum}")
        return value

    def number(self, value: object, where: str) -> float:
        if not _is_number(value):
            raise self.error(where, value, "a number")
        if not math.isfinite(value):
            raise self.error(where, value, "a finite number")
        return float(value)


def _is_number(value: object) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)
