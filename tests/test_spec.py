"""Sweep files: the accepted forms, and every error a user can make (exit status 2, nothing written)."""

import json
import os
from pathlib import Path

import pytest

from gradbench import cli
from gradbench.errors import SpecError
from gradbench.sweep import axes, grid
from gradbench.sweep import spec as spec_module

ROOT = Path(__file__).resolve().parent.parent

BASE = """
name = "s"
[model]
width = 8
batch = 2
[axes]
activation = ["tanh"]
sigma_w2 = [1.0]
depth = [2]
"""


def test_forms_expand_as_documented():
    spec = spec_module.parse(
        """
name = "forms"
seed = 5
[model]
width = 8
[axes]
activation = ["tanh", "relu"]
sigma_w = { linspace = [0.5, 2.0, 4] }
sigma_b2 = { logspace = [-2, 0, 3] }
depth = { range = [2, 8, 3] }
replicate = { count = 2 }
"""
    )
    assert spec.axis("sigma_w2") == pytest.approx([0.25, 1.0, 2.25, 4.0])
    assert spec.sigma_w_given == "sigma_w"
    assert spec.axis("sigma_b2") == pytest.approx([0.01, 0.1, 1.0])
    assert spec.axes["sigma_b2"].scale == "log"
    assert spec.axis("depth") == (2, 5)
    assert spec.axis("replicate") == (0, 1)
    assert spec.axis("batch") == (64,)
    configs = grid.expand(spec)
    assert len(configs) == 2 * 4 * 3 * 2 * 2 == spec.n_configs
    assert configs["config_id"].is_unique
    assert configs["sigma_w"].to_numpy() ** 2 == pytest.approx(configs["sigma_w2"].to_numpy())
    assert configs["sigma_b"].to_numpy() ** 2 == pytest.approx(configs["sigma_b2"].to_numpy())


def test_config_ids_are_stable_and_ignore_dtype():
    a = grid.expand(spec_module.parse(BASE))
    b = grid.expand(spec_module.parse(BASE + '[run]\ndtype = "float64"\nmeasure = "plain"\n'))
    assert list(a["config_id"]) == list(b["config_id"])
    c = grid.expand(spec_module.parse(BASE.replace('name = "s"', 'name = "s"\nseed = 1')))
    assert set(a["config_id"]).isdisjoint(c["config_id"])
    # A fixed value: the hash of the canonical config must not drift between versions.
    assert a["config_id"].iloc[0] == grid.config_id(a.iloc[0].to_dict())


def test_presets_set_sigma_w2():
    spec = spec_module.parse(
        BASE.replace("sigma_w2 = [1.0]", 'init = ["he", "torch-default", "lecun"]')
    )
    configs = grid.expand(spec)
    assert dict(zip(configs["init"], configs["sigma_w2"], strict=True)) == pytest.approx(
        {"he": 2.0, "torch-default": 1 / 3, "lecun": 1.0}
    )
    assert set(configs["init_family"]) == {"gaussian", "uniform"}


def test_depth_buckets_bound_padding():
    buckets = grid.depth_buckets([1, 2, 3, 4, 6, 8, 16, 17, 64], 1.5)
    for depth, top in buckets.items():
        assert depth <= top <= 1.5 * depth
    assert grid.depth_buckets([4, 6], 1.5) == {4: 6, 6: 6}
    assert grid.depth_buckets([8, 16], 1.5) == {8: 8, 16: 16}


def test_list_axes_take_the_one_log_axis_rule():
    spec = spec_module.parse(
        BASE.replace(
            "sigma_w2 = [1.0]", "sigma_w2 = [1.0, 2.0, 3.0]\nsigma_b2 = [0.01, 1.0]"
        ).replace("depth = [2]", "depth = [8, 16, 32, 64]")
        + "[train]\nlr = { logspace = [-3, -2, 2] }\noptimizer = ['sgd', 'adam']\n"
        + "clip = ['none', 'value']\nclip_threshold = [0.01, 0.1, 1.0]\n"
    )
    assert spec.axes["depth"].scale == "log"  # evenly spaced in log over a factor of 8
    assert spec.axes["sigma_w2"].scale == "linear"
    assert spec.axes["sigma_b2"].scale == "linear"  # two values
    assert spec.swept_axes() == {
        "sigma_w2": {"values": [1.0, 2.0, 3.0], "scale": "linear"},
        "sigma_b2": {"values": [0.01, 1.0], "scale": "linear"},
        "depth": {"values": [8, 16, 32, 64], "scale": "log"},
        "optimizer": {"values": ["sgd", "adam"], "scale": "linear"},
        "lr": {"values": [0.001, 0.01], "scale": "log"},  # a logspace, whatever its values
        "clip": {"values": ["none", "value"], "scale": "linear"},
        "clip_threshold": {"values": [0.01, 0.1, 1.0], "scale": "log"},
    }
    assert spec_module.parse(BASE).swept_axes() == {}


# Axes that `gradbench.schema.axis_scale` calls "log" (evenly spaced in log over a factor of 8 or
# more) where a gallery manifest written when only a factor of 100 made an axis log says "linear".
LOG_BY_EVEN_SPACING = {
    ("init-schemes", "depth"),
    ("smoke", "sigma_w2"),
    ("trainability", "depth"),
    ("vanishing-vs-exploding", "depth"),
}


@pytest.mark.parametrize("name", sorted(spec_module.built_in_sweeps()))
def test_swept_axes_are_the_manifest_axes_of_the_gallery(name):
    recorded = json.loads((ROOT / "reports" / name / "manifest.json").read_text())["axes"]
    swept = spec_module.load(name).swept_axes()
    assert list(swept) == list(recorded)
    for axis, entry in swept.items():
        assert entry["values"] == recorded[axis]["values"], axis
        if (name, axis) in LOG_BY_EVEN_SPACING:
            assert entry["scale"] == "log", axis
        else:
            assert entry["scale"] == recorded[axis]["scale"], axis


BAD = [
    # (replace this, with that, the key the message must name, a fragment of what is allowed)
    ('activation = ["tanh"]', 'activation = ["tanhh"]', "axes.activation", "relu"),
    ("depth = [2]", "depth = [-3]", "axes.depth", ">= 1"),
    ("depth = [2]", "depth = [0]", "axes.depth", ">= 1"),
    ("depth = [2]", "depth = [2.5]", "axes.depth", "integer"),
    ("width = 8", "width = 0", "model.width", ">= 1"),  # BASE sets width in [model]
    ("sigma_w2 = [1.0]", "sigma_w2 = [nan]", "axes.sigma_w2", "finite"),
    ("sigma_w2 = [1.0]", "sigma_w2 = [-1.0]", "axes.sigma_w2", ">= 0"),
    ("sigma_w2 = [1.0]", "sigma_w2 = [inf]", "axes.sigma_w2", "finite"),
    ("sigma_w2 = [1.0]", "sigma_w2 = []", "axes.sigma_w2", "at least one"),
    ("sigma_w2 = [1.0]", "sigma_w2 = [1.0]\nsigma_w = [1.0]", "axes.sigma_w", "not both"),
    (
        "sigma_w2 = [1.0]",
        "sigma_w2 = [1.0]\nsigma_b = [0.1]\nsigma_b2 = [0.1]",
        "axes.sigma_b",
        "not both",
    ),
    ("sigma_w2 = [1.0]", 'sigma_w2 = [1.0]\ninit = ["he"]', "axes.sigma_w2", "preset"),
    ("sigma_w2 = [1.0]", 'init = ["gaussian"]', "axes.sigma_w2", "sigma_w"),
    ("sigma_w2 = [1.0]", 'sigma_w2 = [1.0]\ninit = ["kaimingg"]', "axes.init", "orthogonal"),
    ("depth = [2]", "depth = [2]\ndepht = [3]", "axes.depht", "axis names"),
    ("[model]", "[model]\nwidht = 3", "model.widht", "keys"),
    ('name = "s"', 'name = "s"\n[run]\ndtype = "float16"', "run.dtype", "float64"),
    ('name = "s"', 'name = "s"\n[run]\nmeasure = "exact"', "run.measure", "log"),
    ('name = "s"', 'name = "s"\n[classify]\nthreshold = -1', "classify.threshold", "positive"),
    ('name = "s"', 'name = "../x"', "name", "directory"),
    ("sigma_w2 = [1.0]", "sigma_w2 = { linspace = [0, 1] }", "axes.sigma_w2.linspace", "count"),
    ("depth = [2]", "depth = { range = [1, 5, 0] }", "axes.depth.range", "non-zero"),
    ("depth = [2]", "depth = [2, 2]", "axes.depth", "distinct"),
    ("depth = [2]", "depth = [2]\nreplicate = { count = 0 }", "axes.replicate.count", ">= 1"),
    ('activation = ["tanh"]', 'activation = ["os:getcwd"]', "axes.activation", "--allow-imports"),
    ("[model]", '[model]\nloss = "hinge"', "model.loss", "mse"),
    ("depth = [2]", "", "axes.depth", "a value or list"),
]


@pytest.mark.parametrize("old,new,key,allowed", BAD, ids=[b[2] + ":" + b[1][:20] for b in BAD])
def test_bad_input_names_key_value_and_allowed(old, new, key, allowed, tmp_path, capsys):
    assert old in BASE
    text = BASE.replace(old, new)
    with pytest.raises(SpecError) as info:
        spec_module.parse(text, source="bad.toml")
    message = str(info.value)
    assert message.startswith(f"bad.toml: {key}:"), message
    assert allowed in message

    path = tmp_path / "bad.toml"
    path.write_text(text)
    out = tmp_path / "out"
    assert cli.main(["run", str(path), "--out", str(out), "--quiet"]) == 2
    assert key in capsys.readouterr().err
    assert not out.exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["bad.toml"]


def test_malformed_toml_and_missing_file(tmp_path, capsys):
    path = tmp_path / "broken.toml"
    path.write_text("name = \n[axes")
    assert cli.main(["run", str(path), "--out", str(tmp_path / "o")]) == 2
    assert "valid TOML" in capsys.readouterr().err
    assert cli.main(["run", str(tmp_path / "nope.toml")]) == 2
    assert "default" in capsys.readouterr().err  # lists the built-in sweeps
    assert sorted(p.name for p in tmp_path.iterdir()) == ["broken.toml"]


def test_unwritable_output_is_bad_input_and_writes_nothing(tmp_path, capsys):
    path = tmp_path / "ok.toml"
    path.write_text(BASE)
    blocker = tmp_path / "file"
    blocker.write_text("x")
    assert cli.main(["run", str(path), "--out", str(blocker), "--quiet"]) == 2
    assert "--out" in capsys.readouterr().err
    assert cli.main(["run", str(path), "--out", str(blocker / "run"), "--quiet"]) == 2
    assert "not writable" in capsys.readouterr().err
    locked = tmp_path / "locked"
    locked.mkdir(mode=0o500)
    if not os.access(locked, os.W_OK):  # root can write anywhere
        assert cli.main(["run", str(path), "--out", str(locked / "run"), "--quiet"]) == 2
        assert "writ" in capsys.readouterr().err
    assert blocker.read_text() == "x"


def test_bad_cli_values_exit_2(capsys):
    with pytest.raises(SystemExit) as info:
        cli.main(["theory", "--activation", "tanh", "--sigma-b2", "nan"])
    assert info.value.code == 2
    assert "finite" in capsys.readouterr().err
    assert cli.main(["theory", "--activation", "tanhh"]) == 2
    assert "tanhh" in capsys.readouterr().err


# Values of the wrong type: each was a traceback (exit 1) before. (old, new, key, value as shown,
# what is allowed)
WRONG_TYPES = [
    ("sigma_w2 = [1.0]", 'sigma_w2 = ["1.0"]', "axes.sigma_w2", "'1.0'", "a number (written without quotes)"),
    ("sigma_w2 = [1.0]", 'sigma_w2 = [1.0]\nsigma_b2 = "0.1"', "axes.sigma_b2", "'0.1'", "a number"),
    ("sigma_w2 = [1.0]", 'sigma_w = ["fast"]', "axes.sigma_w", "'fast'", "a number"),
    ("sigma_w2 = [1.0]", "sigma_w2 = { logspace = [0, 400, 3] }", "axes.sigma_w2.logspace",
     "[0, 400, 3]", "exponents up to 308"),
    ("[model]", '[model]\nloss = ["mse"]', "model.loss", "['mse']", "one of ['probe', 'mse']"),
    ('name = "s"', 'name = "s"\n[run]\ndtype = { float = 32 }', "run.dtype", "{'float': 32}",
     "one of ['float32', 'float64']"),
    ("depth = [2]", "depth = [2]\nreplicate = { count = 100000000 }", "axes.replicate.count",
     "100000000", "<= 10,000,000"),
    ("depth = [2]", "depth = { range = [1, 100000000000] }", "axes.depth.range",
     "[1, 100000000000]", "at most 10,000,000 values"),
    ('name = "s"', 'name = "s"\nseed = 4294967296', "seed", "4294967296", "<= 4,294,967,295"),
    ("depth = [2]", "depth = [2147483648]", "axes.depth", "2147483648", "<= 2,147,483,647"),
]  # fmt: skip
# Booleans and floats where an integer is needed, names where a number is needed and the reverse.
WRONG_KINDS = [
    ("depth = [2]", "depth = [true]", "axes.depth", "True", "an integer, not a boolean"),
    ("depth = [2]", "depth = [8.5]", "axes.depth", "8.5", "an integer"),
    ("depth = [2]", "depth = [8.0]", "axes.depth", "8.0", "an integer (write 8, not 8.0)"),
    ("width = 8", "width = 8.0", "model.width", "8.0", "an integer (write 8, not 8.0)"),
    ("sigma_w2 = [1.0]", "sigma_w2 = [true]", "axes.sigma_w2", "True", "a number, not a boolean"),
    ("depth = [2]", "depth = [2]\nreplicate = [0.5]", "axes.replicate", "0.5", "an integer"),
    ("depth = [2]", "depth = [2]\nreplicate = { count = true }", "axes.replicate.count", "True",
     "an integer, not a boolean"),
    ('activation = ["tanh"]', "activation = [1]", "axes.activation", "1", "a name"),
    ('activation = ["tanh"]', "activation = { linspace = [1, 2, 3] }", "axes.activation",
     "{'linspace': [1, 2, 3]}", "a name or a list of names"),
    ('activation = ["tanh"]', 'activation = ["tanh"]\ninit = [["gaussian"]]', "axes.init",
     "['gaussian']", "a name"),
    ("depth = [2]", "[axes.depth]\nvalues = [2]", "axes.depth", "{'values': [2]}",
     "{range = [start, stop, step]}"),
    ('name = "s"', 'name = "s"\n[run]\nchunk_size = true', "run.chunk_size", "True", "an integer"),
    ('name = "s"', 'name = "s"\n[classify]\nthreshold = "2"', "classify.threshold", "'2'",
     "a number (written without quotes)"),
    ('name = "s"', 'name = "s"\n[train]\nlr = ["0.1"]', "train.lr", "'0.1'", "a number"),
    ('name = "s"', 'name = "s"\n[train]\nlr = 0.1\nsteps = 10.0', "train.steps", "10.0",
     "write 10, not 10.0"),
    ('name = "s"', 'name = "s"\n[train]\nlr = 0.1\nclip = [1]', "train.clip", "1", "a name"),
    ('name = "s"', 'name = "s"\n[train]\nlr = 0.1\nclip = "value"\nclip_threshold = ["1"]',
     "train.clip_threshold", "'1'", "a number"),
]  # fmt: skip
# Imported objects that are not activations (with --allow-imports): what was found is named.
NOT_ACTIVATIONS = [
    ("os:system", "posix.system called on a float32[2,3] raised TypeError"),
    ("math:pi", "found float 3.141592653589793, which is not callable"),
    ("jax.numpy:sum", "jax.numpy.sum maps a float32[2,3] to float32[]"),
    ("..:x", "an importable 'package.module:function'"),
]


def exits_2_naming(path, key, shown, allowed, capsys, *extra) -> None:
    out = path.parent / "out"
    assert cli.main(["run", str(path), "--out", str(out), "--quiet", *extra]) == 2
    err = capsys.readouterr().err
    assert f"{path}: {key}: got {shown}; allowed: " in err, err
    assert allowed in err, err
    assert "Traceback" not in err and not out.exists()


@pytest.mark.parametrize(
    "old,new,key,shown,allowed",
    WRONG_TYPES + WRONG_KINDS,
    ids=[b[1] for b in WRONG_TYPES + WRONG_KINDS],
)
def test_wrong_types_exit_2_naming_file_key_value(old, new, key, shown, allowed, tmp_path, capsys):
    assert old in BASE
    path = tmp_path / "bad.toml"
    path.write_text(BASE.replace(old, new))
    exits_2_naming(path, key, shown, allowed, capsys)


@pytest.mark.parametrize("name,found", NOT_ACTIVATIONS, ids=[n for n, _ in NOT_ACTIVATIONS])
def test_an_import_that_is_no_activation_exits_2(name, found, tmp_path, capsys):
    path = tmp_path / "bad.toml"
    path.write_text(BASE.replace('activation = ["tanh"]', f'activation = ["{name}"]'))
    exits_2_naming(path, "axes.activation", repr(name), found, capsys, "--allow-imports")


# A quick fuzz: every key of every section, given malformed values of every TOML type.
FUZZ_KEYS = {section: sorted(keys) for section, keys in spec_module.SECTION_KEYS.items()}
FUZZ_KEYS["axes"] = list(axes.AXIS_KEYS)
FUZZ_KEYS[""] = ["name", "seed", "description"]
FUZZ_VALUES = [
    '"1.0"', '"x"', "true", "8.5", "8.0", "-1", "0", "1e308", "nan", "inf", "9223372036854775807",
    "1979-05-27", "[]", "{}", "[[1]]", "[[]]", "[{}]", "[{ a = 1 }]", '["tanh", 1]', "[true]", "[1, 1.0]",
    "{ a = 1 }", "{ x = { y = 1 } }", "{ linspace = [0, 1, 3] }", "{ logspace = [0, 400, 3] }",
    "{ range = [1.5, 4] }", "{ count = 2 }", "{ count = true }", "{ linspace = { a = 1 } }",
    "{ linspace = [1, 2, 3], range = [1, 2] }", '{ global_norm = "a" }', '["os:system"]', '[":b"]',
]  # fmt: skip


def fuzzed(section: str, key: str, value: str) -> str:
    tables = {
        "": {"name": '"s"'},
        "model": {"width": "8", "batch": "2"},
        "axes": {"activation": '["tanh"]', "sigma_w2": "[1.0]", "depth": "[2]"},
    }
    tables.setdefault(section, {})[key] = value
    if section == "axes" and key in ("width", "batch"):
        del tables["model"][key]
    if section == "axes" and key == "sigma_w":
        del tables["axes"]["sigma_w2"]
    if section == "train" and key != "lr":
        tables["train"]["lr"] = "0.1"
    lines = [f"{k} = {v}" for k, v in tables.pop("").items()]
    for name, table in tables.items():
        lines += [f"[{name}]", *(f"{k} = {v}" for k, v in table.items())]
    return "\n".join(lines) + "\n"


def test_malformed_values_are_spec_errors_naming_the_key():
    checked = 0
    for section, keys in FUZZ_KEYS.items():
        for key in keys:
            where = f"{section}.{key}" if section else key
            for value in FUZZ_VALUES:
                try:
                    spec_module.parse(
                        fuzzed(section, key, value), source="f.toml", allow_imports=True
                    )
                except SpecError as exc:
                    assert str(exc).startswith(f"f.toml: {where}"), (where, value, str(exc))
                    checked += 1
    assert checked > 1000
