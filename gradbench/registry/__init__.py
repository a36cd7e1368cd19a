"""The one place where names become implementations: architectures, activations, weight-init families
and presets, the measured losses, and the [train] section's optimisers, clipping rules and tasks.

Everything downstream asks this package; nothing else maps strings to callables. Each map takes a
name to a NamedTuple of the implementation, its facts and the one-line description `gradbench list`
prints. Importing the registry imports neither JAX nor optax, so that a sweep file can be validated
and a stored run's activations described without them: an implementation imports JAX or optax when
it is first called.
"""

from gradbench.registry.activations import (
    ACTIVATIONS,
    Activation,
    activation,
    is_import_path,
)
from gradbench.registry.architectures import (
    ARCHITECTURES,
    BRANCH_SCALE_RULES,
    NORM_POSITIONS,
    NORMS,
    NOT_APPLICABLE,
    Architecture,
    branch_scale,
)
from gradbench.registry.initializers import (
    INIT_FAMILIES,
    INIT_PRESETS,
    PREDRAWN_FAMILIES,
    InitFamily,
    InitPreset,
    init_family,
    init_names,
)
from gradbench.registry.losses import LOSSES, Loss
from gradbench.registry.training import (
    ADAPTIVE_EPS,
    CLIP_RULES,
    MOMENTUM,
    OPTIMIZERS,
    TASKS,
    ClipRule,
    Optimizer,
    Task,
    clip_rule,
    optimizer,
)

__all__ = [
    "ACTIVATIONS",
    "ARCHITECTURES",
    "ADAPTIVE_EPS",
    "BRANCH_SCALE_RULES",
    "CLIP_RULES",
    "INIT_FAMILIES",
    "INIT_PRESETS",
    "LOSSES",
    "MOMENTUM",
    "NORMS",
    "NORM_POSITIONS",
    "NOT_APPLICABLE",
    "OPTIMIZERS",
    "PREDRAWN_FAMILIES",
    "TASKS",
    "Activation",
    "Architecture",
    "ClipRule",
    "InitFamily",
    "InitPreset",
    "Loss",
    "Optimizer",
    "Task",
    "activation",
    "branch_scale",
    "clip_rule",
    "init_family",
    "init_names",
    "is_import_path",
    "optimizer",
]
