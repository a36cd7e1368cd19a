"""Training tasks, generated in-process from the sweep's seed: nothing is downloaded, ever.

- `teacher`: regression onto a random teacher network, t = V tanh(U x) with U ~ N(0, 1/width),
  V ~ N(0, 1/width), x ~ N(0, I_width); each target column standardised to mean 0, variance 1 over
  the data set. Loss: 0.5 mean((y - t)^2) over examples and outputs.
- `classification`: labels = argmax of such a teacher's `outputs` scores (roughly balanced classes).
  Loss: mean softmax cross-entropy.
- `digits`: scikit-learn's bundled 8x8 digits (1797 images, 10 classes; shipped inside the
  scikit-learn wheel, no download), features standardised, then mapped to the network width by a
  fixed random projection (the identity when width = 64). Needs scikit-learn installed.
- `adding`: the adding problem (Hochreiter & Schmidhuber 1997) in the variant of Le et al. (2015)
  and Arjovsky et al. (2016), for the RNN: sequences of T steps of 2 features, a value ~ U(0, 1)
  and a marker that is 1 at exactly two steps, one uniform in the first half [0, T // 2) and one in
  the second [T // 2, T), else 0; the target is the sum of the two marked values. Loss: the plain
  mean squared error, whose baseline (predicting the mean) is the target's variance, 1/6.

The task names, and what each needs to run, are `gradbench.registry.TASKS`; `GENERATORS` holds the
data generator of each. A task depends only on (seed, task, samples, width, outputs), and a
sequence task on its length T, the config's depth, instead of the width: every configuration,
replicate and optimiser of a sweep (of one depth, for a sequence task) trains on the same data, so
differences between configs are never data noise. The sequences of each length are drawn apart
(stream `fold_in(..., T)`): length T is no prefix of a longer one.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax

from gradbench import registry

# Task data is drawn from fold_in(key(seed), TASK_SALT): a stream that replicate keys
# (fold_in(key(seed), replicate) with small replicate indices) never reach.
TASK_SALT = 0x7A5C0DE
DIGITS_SAMPLES = registry.TASKS["digits"].max_samples
DIGITS_FEATURES, DIGITS_CLASSES = 64, 10


class TaskData(NamedTuple):
    """Inputs `x` (samples, width) and targets: (samples, outputs) floats or (samples,) int labels.

    A sequence task's inputs are (samples, T, features); the trainer of a depth bucket gets the data
    of every depth it trains stacked (`sequences`): (lengths, samples, T_max, features) and
    (lengths, samples, outputs).
    """

    x: jax.Array
    target: jax.Array


class TaskKeys(NamedTuple):
    """The task's random streams: inputs, the teacher's two layers, the digits' order and projection."""

    x: jax.Array
    u: jax.Array
    v: jax.Array
    digits: jax.Array


def outputs_of(task: str, outputs: int) -> int:
    """Width of the network's readout for `task` (digits always has 10 classes, adding 1 output)."""
    return {"digits": DIGITS_CLASSES, "adding": 1}.get(task, outputs)


def make_task(
    task: str,
    *,
    seed: int,
    samples: int,
    width: int,
    outputs: int,
    length: int | None = None,
    dtype=jnp.float32,
) -> TaskData:
    """The data set of `task` (see the module docstring); deterministic in its arguments.

    `length`: the sequence length T of a sequence task (`registry.Task.sequence_features`).
    """
    if registry.TASKS[task].sequence_features and length is None:
        raise ValueError(f"task {task!r} needs a sequence length")
    key = jax.random.fold_in(jax.random.key(int(seed)), TASK_SALT)
    keys = TaskKeys(*jax.random.split(key, 4))
    return GENERATORS[task](keys, samples, width, outputs, length, dtype)


def sequences(
    task: str, *, seed: int, samples: int, lengths, steps: int, dtype=jnp.float32
) -> TaskData:
    """The data of a sequence task for each of `lengths`, stacked and zero-padded to `steps` steps:
    x (len(lengths), samples, steps, features). The network reads sequence i for exactly
    `lengths[i]` steps, so the padding is never seen."""
    xs, targets = [], []
    for length in lengths:
        data = make_task(
            task, seed=seed, samples=samples, width=0, outputs=1, length=int(length), dtype=dtype
        )
        xs.append(jnp.pad(data.x, ((0, 0), (0, steps - int(length)), (0, 0))))
        targets.append(data.target)
    return TaskData(jnp.stack(xs), jnp.stack(targets))


def _teacher_scores(keys: TaskKeys, samples: int, width: int, outputs: int):
    """Inputs x ~ N(0, I) and the random teacher's scores V tanh(U x), in float32."""
    x = jax.random.normal(keys.x, (samples, width), jnp.float32)
    u = jax.random.normal(keys.u, (width, width), jnp.float32) / math.sqrt(width)
    v = jax.random.normal(keys.v, (width, outputs), jnp.float32) / math.sqrt(width)
    return x, jnp.tanh(x @ u) @ v


def _teacher(keys: TaskKeys, samples: int, width: int, outputs: int, length, dtype) -> TaskData:
    x, scores = _teacher_scores(keys, samples, width, outputs)
    mean, std = scores.mean(0, keepdims=True), scores.std(0, keepdims=True)
    target = (scores - mean) / jnp.maximum(std, 1e-12)
    return TaskData(x.astype(dtype), target.astype(dtype))


def _classification(
    keys: TaskKeys, samples: int, width: int, outputs: int, length, dtype
) -> TaskData:
    x, scores = _teacher_scores(keys, samples, width, outputs)
    return TaskData(x.astype(dtype), jnp.argmax(scores, axis=1).astype(jnp.int32))


def _digits(keys: TaskKeys, samples: int, width: int, outputs: int, length, dtype) -> TaskData:
    from sklearn.datasets import load_digits  # bundled with the package: no download

    images, labels = load_digits(return_X_y=True)
    order = np.asarray(jax.random.permutation(keys.digits, DIGITS_SAMPLES))[:samples]
    x = images[order].astype(np.float64)
    x = (x - images.mean(0)) / np.where(images.std(0) > 0, images.std(0), 1.0)
    if width != DIGITS_FEATURES:
        proj = jax.random.normal(
            jax.random.fold_in(keys.digits, 1), (DIGITS_FEATURES, width), jnp.float32
        )
        x = x @ np.asarray(proj, np.float64) / math.sqrt(DIGITS_FEATURES)
    return TaskData(jnp.asarray(x, dtype), jnp.asarray(labels[order], jnp.int32))


def _adding(keys: TaskKeys, samples: int, width: int, outputs: int, length, dtype) -> TaskData:
    values_key, first_key, second_key = jax.random.split(jax.random.fold_in(keys.x, length), 3)
    step_values, position = _adding_draws(samples)
    values = np.stack([np.asarray(step_values(values_key, t)) for t in range(length)], axis=1)
    half = length // 2
    first = np.asarray(position(first_key, 0, half))
    second = np.asarray(position(second_key, half, length))
    markers = np.zeros((samples, length), np.float32)
    markers[np.arange(samples), first] = 1.0
    markers[np.arange(samples), second] = 1.0
    x = np.stack([values, markers], axis=-1).astype(dtype)
    target = np.sum(x[..., 0] * x[..., 1], axis=1, keepdims=True)
    return TaskData(jnp.asarray(x), jnp.asarray(target))


@functools.cache
def _adding_draws(samples: int):
    """The adding problem's draws of one step's values and of marker positions in [low, high), jitted
    with the step and the bounds traced: threefry compiles once per sample count, not per length."""
    values = jax.jit(
        lambda key, t: jax.random.uniform(jax.random.fold_in(key, t), (samples,), jnp.float32)
    )
    positions = jax.jit(lambda key, low, high: jax.random.randint(key, (samples,), low, high))
    return values, positions


# The data generator of each task of `gradbench.registry.TASKS`: (keys, samples, width, outputs,
# length, dtype) -> TaskData; `length` is a sequence task's T (None for the others).
GENERATORS: dict[str, Callable[..., TaskData]] = {
    "teacher": _teacher,
    "classification": _classification,
    "digits": _digits,
    "adding": _adding,
}


def loss(task: str, y: jax.Array, target: jax.Array) -> jax.Array:
    """The task's training loss of outputs `y` (examples, outputs) against `target`."""
    spec = registry.TASKS[task]
    if spec.classification:
        return optax.softmax_cross_entropy_with_integer_labels(y, target).mean()
    return spec.mse_factor * jnp.mean(jnp.square(y - target))


def baseline_loss(task: str, data: TaskData) -> float:
    """The loss of the best input-independent prediction: what a net that learned nothing reaches.

    Regression: predict the target mean (the loss's factor times the mean of the centred squares:
    0.5 for `teacher`, whose targets are standardised; the targets' variance, about 1/6, for
    `adding`). Classification: predict the class frequencies (their entropy). `data` is one data
    set, not a stack of `sequences`.
    """
    target = np.asarray(data.target)
    spec = registry.TASKS[task]
    if spec.classification:
        freq = np.bincount(target) / target.size
        freq = freq[freq > 0]
        return float(-(freq * np.log(freq)).sum())
    return float(spec.mse_factor * np.mean(np.square(target - target.mean(0))))
