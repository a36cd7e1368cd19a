"""The network a sweep varies: the `[model]` settings and the `[axes]` it sweeps.

Rules that span keys live here: `architecture`, `width`, `batch` and the architecture settings may be
set in `[model]` (one value) or swept in `[axes]` (not both); `sigma_w` xor `sigma_w2` and `sigma_b`
xor `sigma_b2` (stored squared either way); a preset init fixes sigma_w^2, so it takes no weight scale,
and an init family needs one; an activation given as `"package.module:function"` is imported only when
imports are allowed. A setting of one architecture (`branch_layers`, `norm`, `norm_position` and
`branch_scale` of `resmlp`, `input_scale` of `rnn`) is refused unless that architecture is swept, and
`norm_position` unless some norm is.
"""

from __future__ import annotations

from typing import NamedTuple

from gradbench import registry
from gradbench.errors import SpecError
from gradbench.sweep.types import Axis
from gradbench.sweep.values import ValueReader

ARCHITECTURES = tuple(registry.ARCHITECTURES)
# The keys `[model]` accepts: the loss, and the axes that may be fixed there instead of swept.
SETTING_AXES = (
    "architecture",
    "width",
    "batch",
    "branch_layers",
    "norm",
    "norm_position",
    "branch_scale",
    "input_scale",
)
MODEL_KEYS = {*SETTING_AXES, "loss"}
# The axes a sweep may vary, with the kind of their values. Each may also be given as a single value.
AXIS_KINDS = {
    "architecture": "name",
    "branch_layers": "integer",
    "norm": "name",
    "norm_position": "name",
    "branch_scale": "scale_rule",
    "input_scale": "number",
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
AXIS_KEYS = tuple(AXIS_KINDS)
# `SweepSpec.axes` in the order the grid expands them (the last varies fastest).
AXIS_ORDER = (
    "architecture",
    "branch_layers",
    "norm",
    "norm_position",
    "branch_scale",
    "input_scale",
    "activation",
    "init",
    "width",
    "batch",
    "sigma_w2",
    "sigma_b2",
    "depth",
    "replicate",
)
DEFAULTS = {"architecture": "mlp", "batch": 64, "init": "gaussian", "replicate": {"count": 1}}
REQUIRED = ("activation", "depth", "width")
# The settings of each architecture but the MLP, with their defaults (`registry.ARCHITECTURES`).
ARCHITECTURE_SETTINGS = {
    name: arch.settings for name, arch in registry.ARCHITECTURES.items() if arch.settings
}


class Network(NamedTuple):
    """The `SweepSpec` fields that `[model]` and `[axes]` decide."""

    loss: str
    axes: dict[str, Axis]
    sigma_w_given: str | None
    sigma_b_given: str
    imports: tuple[str, ...]


def check_axis_names(reader: ValueReader, axes_doc: dict) -> None:
    """Refuses an `[axes]` key that is no axis."""
    unknown = set(axes_doc) - set(AXIS_KEYS)
    if unknown:
        key = sorted(unknown)[0]
        raise reader.error(f"axes.{key}", key, f"axis names {list(AXIS_KEYS)}")


def read_network(
    reader: ValueReader, model: dict, axes_doc: dict, *, allow_imports: bool
) -> Network:
    """`[model]` and `[axes]` (keys already checked) as validated axes and settings."""
    loss = reader.choice(model.get("loss", "probe"), "model.loss", tuple(registry.LOSSES))

    raw = dict(axes_doc)
    from_model = [key for key in SETTING_AXES if key in model]
    for key in from_model:
        if key in axes_doc:
            raise reader.error(f"model.{key}", model[key], f"{key} in [model] or [axes], not both")
        raw[key] = model[key]
    for key, default in DEFAULTS.items():
        raw.setdefault(key, default)
    _default_settings(reader, raw, from_model)
    for required in REQUIRED:
        if required not in raw:
            raise reader.error(f"axes.{required}", "<missing>", f"a value or list for {required}")

    axes: dict[str, Axis] = {}
    imports: list[str] = []
    for key, value in raw.items():
        where = f"model.{key}" if key in from_model else f"axes.{key}"
        axes[key] = reader.axis(value, where, kind=AXIS_KINDS[key], counts=key == "replicate")
        if key == "activation":
            imports += _check_activations(reader, axes[key].values, where, allow_imports)
        else:
            _check_values(reader, key, axes[key].values, where)
    sigma_w_given = _squared(reader, raw, axes, "sigma_w")
    sigma_b_given = _squared(reader, raw, axes, "sigma_b") or "sigma_b2"
    axes.setdefault("sigma_b2", Axis((0.0,)))
    _check_inits(reader, axes, sigma_w_given)
    return Network(
        loss=loss,
        axes={k: axes[k] for k in AXIS_ORDER if k in axes},
        sigma_w_given=sigma_w_given,
        sigma_b_given=sigma_b_given,
        imports=tuple(imports),
    )


def _default_settings(reader: ValueReader, raw: dict, from_model: list[str]) -> None:
    """Refuses a setting of an architecture the sweep does not run, then fills in the defaults of
    those it does (`registry.Architecture.settings`)."""
    architectures = raw["architecture"]
    architectures = architectures if isinstance(architectures, list) else [architectures]
    for arch in architectures:
        if arch not in ARCHITECTURES:
            where = "model.architecture" if "architecture" in from_model else "axes.architecture"
            raise reader.error(where, arch, f"one of {list(ARCHITECTURES)}")
    for arch, settings in ARCHITECTURE_SETTINGS.items():
        for key in settings:
            if key in raw and arch not in architectures:
                where = f"model.{key}" if key in from_model else f"axes.{key}"
                raise reader.error(where, raw[key], f"{key} only with architecture {arch!r}")
    if "norm_position" in raw and set(_as_list(raw.get("norm", "none"))) == {"none"}:
        where = "model.norm_position" if "norm_position" in from_model else "axes.norm_position"
        raise reader.error(where, raw["norm_position"], "norm_position only with a norm")
    for arch, settings in ARCHITECTURE_SETTINGS.items():
        if arch in architectures:
            for key, default in settings.items():
                raw.setdefault(key, default)


def _as_list(value) -> list:
    return value if isinstance(value, list) else [value]


def _check_activations(
    reader: ValueReader, names: tuple, where: str, allow_imports: bool
) -> list[str]:
    """Checks registered and imported activations; returns the import paths among `names`."""
    imports = []
    for v in names:
        if registry.is_import_path(v):
            if not allow_imports:
                raise reader.error(
                    where,
                    v,
                    "registered activations only, unless imports are allowed "
                    "(--allow-imports, or allow_imports=True in the Python API)",
                )
            try:
                registry.activation(v, allow_imports=True)
            except SpecError as exc:
                raise reader.error(where, v, exc.allowed) from None
            imports.append(v)
        elif v not in registry.ACTIVATIONS:
            raise reader.error(where, v, f"one of {sorted(registry.ACTIVATIONS)}")
    return imports


def _check_values(reader: ValueReader, key: str, values: tuple, where: str) -> None:
    """The range each axis but `activation` allows."""
    if key == "init":
        for v in values:
            if v not in registry.init_names():
                raise reader.error(where, v, f"one of {registry.init_names()}")
    elif key in CHOICES:
        for v in values:
            if v not in CHOICES[key]:
                raise reader.error(where, v, f"one of {list(CHOICES[key])}")
    elif key == "branch_scale":
        for v in values:
            if isinstance(v, str) and v not in registry.BRANCH_SCALE_RULES:
                raise reader.error(
                    where, v, f"a number > 0 or one of {list(registry.BRANCH_SCALE_RULES)}"
                )
            if not isinstance(v, str) and v <= 0:
                raise reader.error(
                    where, v, f"a number > 0 or one of {list(registry.BRANCH_SCALE_RULES)}"
                )
    elif key == "input_scale":
        for v in values:
            if v < 0:
                raise reader.error(where, v, "finite numbers >= 0")
    elif key in ("depth", "width", "batch"):
        for v in values:
            if v < 1:
                raise reader.error(where, v, f"integers >= 1 ({key} < 1 has no layers)")
    elif key == "replicate":
        for v in values:
            if v < 0:
                raise reader.error(where, v, "replicate indices >= 0")
    else:  # scales
        for v in values:
            if v < 0:
                raise reader.error(where, v, "finite numbers >= 0")
            if key.startswith("sigma_w") and v == 0:
                raise reader.error(where, v, "weight scales > 0 (zero weights pass no gradient)")


# The values of the name and integer settings, each a choice among a few.
CHOICES = {
    "architecture": ARCHITECTURES,
    "branch_layers": (1, 2),
    "norm": registry.NORMS,
    "norm_position": registry.NORM_POSITIONS,
}


def _squared(reader: ValueReader, raw: dict, axes: dict[str, Axis], base: str) -> str | None:
    """Accepts `base` xor `base2` and stores the squared form under `base2` (with the scale of the
    axis as written); returns whichever the file used, or None."""
    squared = base + "2"
    if base in raw and squared in raw:
        raise reader.error(f"axes.{base}", raw[base], f"{base} or {squared}, not both")
    if base in raw:
        axis = axes.pop(base)
        axes[squared] = Axis(tuple(v * v for v in axis.values), axis.scale)
        return base
    return squared if squared in raw else None


def _check_inits(reader: ValueReader, axes: dict[str, Axis], sigma_w_given: str | None) -> None:
    """A preset init fixes sigma_w^2, so it takes no weight-scale axis; a family needs one."""
    inits = axes["init"].values
    presets = [i for i in inits if i in registry.INIT_PRESETS]
    families = [i for i in inits if i in registry.INIT_FAMILIES]
    if presets and sigma_w_given:
        raise reader.error(
            f"axes.{sigma_w_given}",
            list(axes["sigma_w2"].values) if sigma_w_given == "sigma_w2" else "<given>",
            f"no weight scale with preset inits {presets} (a preset fixes sigma_w^2); "
            "use a family (gaussian, uniform, ...) to sweep sigma_w",
        )
    if families and not sigma_w_given:
        raise reader.error(
            "axes.sigma_w2",
            "<missing>",
            f"a sigma_w or sigma_w2 axis for init families {families}",
        )
