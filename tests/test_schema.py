"""The run directory's contract is written once: gradbench.schema, docs/results.md and the code that
reads or compares the tables agree on every column."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from gradbench import schema
from gradbench.analysis import compare

DOCS = Path(__file__).resolve().parent.parent / "docs" / "results.md"


def documented(heading: str) -> set[str]:
    """Column names in the docs/results.md table under `heading`, or, for a section without a
    table, in its first paragraph."""
    text = DOCS.read_text().split(f"{heading}\n", 1)[1]
    text = re.split(r"\n#{2,3} ", text, maxsplit=1)[0]
    rows = [line.split("|")[1] for line in text.splitlines() if line.startswith("| `")]
    if not rows:
        rows = [text.strip().split("\n\n", 1)[0]]
    return {name for row in rows for name in re.findall(r"`([a-z0-9_]+)`", row)}


@pytest.mark.parametrize(
    ("heading", "columns"),
    [
        ("## configs.parquet", schema.CONFIG_COLUMNS),
        ("## layers.parquet", schema.LAYER_COLUMNS),
        ("## summary.parquet", (*schema.MEASURED_COLUMNS, *schema.THEORY_COLUMNS)),
        ("### configs.parquet, extra columns", (*schema.TRAIN_CONFIG_COLUMNS, "train_group")),
        ("### training.parquet (one row per config x logged step)", schema.TRAINING_COLUMNS),
        (
            "### training_layers.parquet (config x logged step x layer)",
            schema.TRAINING_LAYER_COLUMNS,
        ),
        ("### summary.parquet, outcome columns", schema.OUTCOME_COLUMNS),
        (
            "### summary.parquet, Jacobian columns",
            (*schema.JACOBIAN_COLUMNS, *schema.SPECTRUM_COLUMNS),
        ),
    ],
)
def test_docs_list_exactly_the_schema_columns(heading, columns):
    assert documented(heading) == set(columns)


def test_compare_knows_how_to_compare_every_result_column():
    """A result column without a comparison kind would silently never be compared (verify, compare)."""
    tables = {
        "layers": [c for c in schema.LAYER_COLUMNS if c not in compare.KEYS["layers"]],
        "summary": [
            c
            for c in (
                *schema.MEASURED_COLUMNS,
                *schema.THEORY_COLUMNS,
                *schema.JACOBIAN_COLUMNS,
                *schema.SPECTRUM_COLUMNS,
            )
            if c != "regime"
        ],
        "outcomes": schema.OUTCOME_COLUMNS,
        "training": [c for c in schema.TRAINING_COLUMNS if c not in compare.KEYS["training"]],
        "training_layers": [
            c for c in schema.TRAINING_LAYER_COLUMNS if c not in compare.KEYS["training_layers"]
        ],
    }
    for table, columns in tables.items():
        assert set(compare.KINDS[table]) == set(columns), table


def test_results_are_never_config_axes():
    """Results are never facets; the training table's `loss` shares its name with the sweep's loss
    function, a config column, which stays an axis."""
    result_columns = {
        *schema.LAYER_STATS, *schema.MEASURED_COLUMNS, *schema.THEORY_COLUMNS,
        *schema.OUTCOME_COLUMNS, *schema.TRAINING_COLUMNS[3:], *schema.TRAINING_LAYER_COLUMNS[3:],
        *schema.JACOBIAN_COLUMNS, *schema.SPECTRUM_COLUMNS,
    }  # fmt: skip
    assert all(schema.is_result(c) for c in result_columns)
    ids = set(schema.ID_COLUMNS)
    configs = (*schema.CONFIG_COLUMNS, *schema.TRAIN_CONFIG_COLUMNS)
    derived = set(schema.DERIVED_COLUMNS)
    axes = [c for c in configs if c not in ids and c not in derived]
    assert "loss" in axes and derived <= set(configs)
    assert schema.config_axes([*axes, *result_columns, *schema.ID_COLUMNS, "layer"]) == axes


def test_regimes_and_severity_name_the_same_values():
    assert set(schema.SEVERITY) == set(schema.REGIMES) == {r.value for r in schema.Regime}
    assert schema.FLAGS == tuple(f.value for f in schema.Flag)


@pytest.mark.parametrize(
    ("values", "scale"),
    [
        ([8, 16, 32, 64], "log"),  # evenly spaced in log, a factor of 8
        ([1, 10, 100], "log"),  # a factor of 100
        ([0.25, 0.5, 1, 2, 4], "log"),
        ([1, 2, 3, 4], "linear"),  # evenly spaced in linear terms
        ([2, 4, 8], "linear"),  # log-spaced, but only a factor of 4
        ([0.5, 1.0], "linear"),  # two values: nothing to infer
        ([0, 1, 10, 100], "linear"),  # a value <= 0 has no log
        (["relu", "tanh", "gelu"], "linear"),
    ],
)
def test_one_log_axis_rule(values, scale):
    assert schema.axis_scale(values) == scale
