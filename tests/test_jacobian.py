"""The input-output Jacobian: probe estimates against exact singular values, free probability's
prediction against an independent quadrature and against measurement, and the `[run] jacobian`
plumbing (spec, config ids, parts, shards, merge, verify)."""

import math
import tomllib

import jax
import jax.numpy as jnp
import numpy as np
import pandas as pd
import pytest

from gradbench import registry
from gradbench.batch.plan import JACOBIAN, plan_tasks
from gradbench.engine import compilation_cache
from gradbench.engine.jacobian import jacobian_moments, make_jacobian_kernel, probe_draws
from gradbench.engine.kernel import Chunk, make_weight_draw, new_workspace
from gradbench.engine.model import Branch, layer_draws, replicate_key, shared_draws
from gradbench.errors import SpecError
from gradbench.pipeline import merge, run, run_shard, verify
from gradbench.schema import JACOBIAN_COLUMNS, SPECTRUM_COLUMNS
from gradbench.sweep import grid
from gradbench.sweep import spec as spec_module
from gradbench.sweep.keys import KernelKey
from gradbench.theory import chi1
from gradbench.theory.spectrum import predict_spectrum

ACTIVATIONS = ("linear", "relu", "tanh")  # one kernel's switch branches
MEAN, SPREAD = JACOBIAN_COLUMNS
PREDICTED_MEAN, PREDICTED_SPREAD = SPECTRUM_COLUMNS


def measure(
    activation, family, *, width, batch, depths, sigma_w2, sigma_b2, probes, replicates=(0,)
):
    """(log10 m1, spread) of a chunk of (len(replicates), len(depths)) configs, by the Jacobian kernel.

    One KernelKey per (width, batch, family kind), whatever the activation and depths, so the
    tests compile a handful of kernels; the configs of a chunk differ in depth (masking).
    """
    compilation_cache.enable()
    families = ("orthogonal",) if family == "orthogonal" else ("gaussian", "uniform")
    key = KernelKey(
        "mlp", width, batch, max(depths), "probe", "float32", "log", ACTIVATIONS, families
    )
    seed, reps = np.uint32(0), np.asarray(replicates, np.int32)
    cells = (len(reps), len(depths))
    weights = None
    if family == "orthogonal":
        weights = make_weight_draw(width, key.depth, family)(seed, reps)
    chunk = Chunk(
        replicate=jnp.asarray(reps),
        sigma_w=jnp.full(cells, math.sqrt(sigma_w2), jnp.float32),
        sigma_b=jnp.full(cells, math.sqrt(sigma_b2), jnp.float32),
        depth=jnp.broadcast_to(jnp.asarray(depths, jnp.int32), cells),
        branch=Branch(
            jnp.int32(ACTIVATIONS.index(activation)),
            jnp.int32(families.index(family)),
            jnp.int32(max(depths)),
        ),
        weights=weights,
    )
    raw, _ = make_jacobian_kernel(key, probes)(seed, chunk, new_workspace(key, chunk))
    return jacobian_moments(jax.device_get(raw), width)


def exact_jacobians(
    activation, family, *, width, batch, depth, sigma_w2, sigma_b2, seed=0, replicate=0
):
    """(batch, width, width): J = dh_L/dx of each input, by jax.jacfwd through a plain float64
    forward pass with explicit weights (the kernel's standard draws)."""
    phi = registry.ACTIVATIONS[activation].fn
    key = replicate_key(seed, replicate)
    with jax.enable_x64(True):
        layers = []
        for layer in range(depth):
            z_std, beta = layer_draws(key, layer, width, family)
            w = math.sqrt(sigma_w2 / width) * jnp.asarray(z_std, jnp.float64)
            layers.append((w, math.sqrt(sigma_b2) * jnp.asarray(beta, jnp.float64)))

        def forward(x):
            for w, b in layers:
                x = phi(w @ x + b)
            return x

        x = jnp.asarray(shared_draws(key, batch, width).x, jnp.float64)
        return np.asarray(jax.vmap(jax.jacfwd(forward))(x))


def squared_singular_values(jacobians):
    """(batch, width): the squared singular values of each input's Jacobian, by np.linalg.svd."""
    return np.linalg.svd(jacobians, compute_uv=False) ** 2


def probe_law(s2, probes):
    """The exact m1 and spread of squared singular values `s2` (batch, width), and the standard errors
    of their estimates from `probes` spherical probes per input.

    For v uniform on the sphere of radius sqrt(n), A symmetric n x n: E[v^T A v] = tr A and
    Cov(v^T A v, v^T B v) = 2n / (n + 2) (tr AB - tr A tr B / n); here A = J^T J and B = A^2, so
    ||J v||^2 = v^T A v and ||J^T J v||^2 = v^T A^2 v. The spread's error is the delta method's.
    """
    batch, n = s2.shape
    traces = {k: np.sum(s2**k, axis=1) for k in (1, 2, 3, 4)}

    def covariance(j, k):
        return 2 * n / (n + 2) * np.sum(traces[j + k] - traces[j] * traces[k] / n)

    scale = 1.0 / (batch**2 * probes * n**2)
    v11, v12, v22 = (scale * covariance(j, k) for j, k in ((1, 1), (1, 2), (2, 2)))
    m1, m2 = traces[1].sum() / (batch * n), traces[2].sum() / (batch * n)
    g1, g2 = -2 * m2 / m1**3, 1 / m1**2
    se_spread = math.sqrt(max(g1 * g1 * v11 + 2 * g1 * g2 * v12 + g2 * g2 * v22, 0.0))
    return math.log10(m1), m2 / m1**2 - 1, math.sqrt(v11) / (m1 * math.log(10)), se_spread


CASES = [  # activation, family, sigma_w2, sigma_b2
    ("linear", "gaussian", 1.3, 0.0),
    ("linear", "uniform", 0.8, 0.2),
    ("relu", "gaussian", 2.0, 0.1),
    ("relu", "orthogonal", 2.5, 0.0),
    ("tanh", "gaussian", 1.8, 0.05),
    ("tanh", "orthogonal", 1.2, 0.01),
    ("tanh", "uniform", 3.0, 0.3),
]


@pytest.mark.parametrize("index", range(len(CASES)), ids=["-".join(c[:2]) for c in CASES])
def test_probe_estimates_agree_with_exact_singular_values(index):
    """Width 24, 512 probes per input, both depths of a chunk (the depth-4 config runs masked beside
    a depth-7 one). The kernel's estimates equal those of the explicit Jacobians applied to the same
    probes (to float32 rounding), and lie within 4 of the estimator's own standard errors (from the
    exact spectrum) of the exact moments. Each case has a replicate of its own: one replicate's
    probes are shared by every case of a shape, which would make the cases a single trial."""
    activation, family, sigma_w2, sigma_b2 = CASES[index]
    width, batch, probes, depths, replicate = 24, 3, 512, (4, 7), index + 1
    log10_mean, spread = measure(
        activation, family, width=width, batch=batch, depths=depths, sigma_w2=sigma_w2,
        sigma_b2=sigma_b2, probes=probes, replicates=(replicate,),
    )  # fmt: skip
    v = np.asarray(probe_draws(replicate_key(0, replicate), batch, probes, width), np.float64)
    for column, depth in enumerate(depths):
        jacobians = exact_jacobians(
            activation, family, width=width, batch=batch, depth=depth, sigma_w2=sigma_w2,
            sigma_b2=sigma_b2, replicate=replicate,
        )  # fmt: skip
        jv = np.einsum("bij,bpj->bpi", jacobians, v)
        jtjv = np.einsum("bji,bpj->bpi", jacobians, jv)
        m1, m2 = (np.mean(np.sum(u**2, axis=-1)) / width for u in (jv, jtjv))
        assert log10_mean[0, column] == pytest.approx(np.log10(m1), abs=1e-5)
        assert spread[0, column] == pytest.approx(m2 / m1**2 - 1, rel=1e-5)

        exact_mean, exact_spread, se_mean, se_spread = probe_law(
            squared_singular_values(jacobians), probes
        )
        assert exact_spread > 0.1  # a spectrum the probes must resolve, not an isometry
        assert abs(log10_mean[0, column] - exact_mean) <= 4 * se_mean, depth
        assert abs(spread[0, column] - exact_spread) <= 4 * se_spread, depth


def test_orthogonal_linear_nets_are_exactly_isometric():
    """J = sigma_w^L Q_L ... Q_1 has every squared singular value sigma_w^(2L): spherical probes
    measure m1 exactly and spread 0, to float32 rounding over 32 layers; Gaussian weights do not."""
    settings = dict(width=32, batch=2, depths=(16, 32), sigma_w2=1.5, sigma_b2=0.3, probes=4)
    log10_mean, spread = measure("linear", "orthogonal", **settings)
    np.testing.assert_allclose(log10_mean[0], np.log10(1.5) * np.array([16, 32]), atol=1e-5)
    np.testing.assert_allclose(spread[0], 0.0, atol=1e-5)
    _, gaussian = measure("linear", "gaussian", **settings)
    assert (gaussian[0] > 5).all()


@pytest.mark.parametrize(
    ("activation", "family", "sigma_w2", "sigma_b2"),
    [
        ("linear", "gaussian", 1.0, 0.0),
        ("relu", "gaussian", 2.0, 0.0),
        ("relu", "orthogonal", 2.0, 0.0),
        ("tanh", "gaussian", 2.0, 0.1037798052),
        ("tanh", "uniform", 2.0, 0.1037798052),
        ("tanh", "orthogonal", 2.0, 0.1037798052),
        ("tanh", "orthogonal", 1.0, 0.0),
    ],
)
def test_free_probability_predicts_the_measured_spectrum(activation, family, sigma_w2, sigma_b2):
    """Width 256, depth 16, 8 replicates: the replicates' mean within finite-width corrections plus 4
    standard errors (of the mean over replicates) of the infinite-width prediction.

    Finite width shifts the spread by O(L / n). For Gaussian linear nets it is exact to work out:
    E tr((W M W^T)^2) = (1 + 1/n) tr(M^2) + (tr M)^2 / n for W of variance 1/n, so m2 grows like
    sum_k (1 + 1/n)^k and the spread is L (1 + (L + 1) / (2n)) to first order, 3 % above L here.
    The seven cases measured 2 % to 12 % above their predictions (L / n = 1/16), so the tolerance
    is 2 L / n of the prediction (12.5 %), in log10 for m1. Orthogonal against Gaussian weights, or
    ReLU against tanh, differ by 100 % and more.
    """
    width, depth, replicates = 256, 16, 8
    log10_mean, spread = measure(
        activation, family, width=width, batch=4, depths=(depth,), sigma_w2=sigma_w2,
        sigma_b2=sigma_b2, probes=16, replicates=range(replicates),
    )  # fmt: skip
    predicted = predict_spectrum([activation], [family], [sigma_w2], [sigma_b2], [depth])
    allowance = 2 * depth / width
    for measured, expected, finite_width in (
        (log10_mean[:, 0], predicted[PREDICTED_MEAN][0], math.log10(1 + allowance)),
        (spread[:, 0], predicted[PREDICTED_SPREAD][0], allowance * predicted[PREDICTED_SPREAD][0]),
    ):
        standard_error = measured.std(ddof=1) / math.sqrt(replicates)
        assert abs(measured.mean() - expected) <= finite_width + 4 * standard_error


def trapezoid_moments(sigma_w2, sigma_b2, depth):
    """tanh's orbit q_l and mu_1, mu_2 along it by a trapezoid rule on a fine z grid (spectrally
    accurate for smooth integrands): a reference independent of gradbench's quadrature and tables."""
    z = np.linspace(-14.0, 14.0, 40001)
    weight = np.exp(-(z**2) / 2) / math.sqrt(2 * math.pi) * (z[1] - z[0])
    q, mu_1, mu_2 = sigma_w2 + sigma_b2, [], []
    for _ in range(depth):
        slope2 = 1.0 / np.cosh(math.sqrt(q) * z) ** 4
        mu_1.append(np.sum(weight * slope2))
        mu_2.append(np.sum(weight * slope2**2))
        q = sigma_w2 * np.sum(weight * np.tanh(math.sqrt(q) * z) ** 2) + sigma_b2
    return np.array(mu_1), np.array(mu_2)


def test_prediction_equals_closed_forms_and_an_independent_quadrature():
    depth = np.array([1, 5, 40])
    for family, weights in (("gaussian", 1.0), ("uniform", 1.0), ("orthogonal", 0.0)):
        for activation, sigma_w2, excess, gain in (
            ("linear", 1.7, 0.0, 1.7),
            ("relu", 3.0, 1.0, 1.5),  # relu: mu_1 = mu_2 = 1/2 at every q
        ):
            p = predict_spectrum([activation] * 3, [family] * 3, [sigma_w2] * 3, [0.4] * 3, depth)
            np.testing.assert_allclose(p[PREDICTED_MEAN], depth * math.log10(gain), atol=1e-12)
            np.testing.assert_allclose(p[PREDICTED_SPREAD], depth * (excess + weights), atol=1e-9)
    for sigma_w2, sigma_b2 in ((1.0, 0.0), (2.0, 0.1037798052), (3.443210912, 1.0), (0.5, 0.2)):
        mu_1, mu_2 = trapezoid_moments(sigma_w2, sigma_b2, 30)
        p = predict_spectrum(["tanh"] * 2, ["orthogonal", "gaussian"], [sigma_w2] * 2,
                             [sigma_b2] * 2, [30, 30])  # fmt: skip
        mean = np.sum(np.log10(sigma_w2 * mu_1))
        spread = np.sum(mu_2 / mu_1**2 - 1)
        np.testing.assert_allclose(p[PREDICTED_MEAN], mean, rtol=1e-9, atol=1e-9)
        np.testing.assert_allclose(p[PREDICTED_SPREAD], [spread, spread + 30], rtol=1e-8)
    unknown = predict_spectrum(["tanh"], ["some_family"], [1.0], [0.0], [3])
    assert np.isnan(unknown[PREDICTED_SPREAD][0]) and np.isfinite(unknown[PREDICTED_MEAN][0])


def test_every_pair_of_the_isometry_sweep_is_on_the_edge_of_chaos():
    """The sweep file's i-th sigma_w2 and i-th sigma_b2 are tanh-critical (its comment says so), and
    its grid holds ReLU's and the linear net's critical points: checked, not trusted."""
    text = spec_module.built_in_sweeps()["isometry"].read_text()
    axes = tomllib.loads(text)["axes"]
    pairs = list(zip(axes["sigma_w2"], axes["sigma_b2"], strict=True))
    assert len(pairs) >= 3
    for sigma_w2, sigma_b2 in pairs:
        assert abs(chi1("tanh", sigma_w2, sigma_b2) - 1) < 1e-6, (sigma_w2, sigma_b2)
        assert f"sigma_w2 = {sigma_w2!r}" in text and f"sigma_b2 = {sigma_b2!r}" in text
    assert abs(chi1("relu", 2.0, 0.0) - 1) < 1e-12 and abs(chi1("linear", 1.0, 0.0) - 1) < 1e-12
    assert {2.0, 1.0} <= set(axes["sigma_w2"]) and 0.0 in axes["sigma_b2"]
    spec = spec_module.load("isometry")
    assert spec.jacobian and set(spec.axis("init")) == {"gaussian", "orthogonal"}
    assert set(spec.axis("activation")) == {"tanh", "relu", "linear"}


SWEEP = """
name = "jacobian-plumbing"
seed = 4
[model]
width = 16
batch = 2
[axes]
activation = ["tanh"]
init = ["gaussian"]
sigma_w2 = [1.0, 2.5]
sigma_b2 = [0.05]
depth = [3, 5]
replicate = { count = 2 }
[run]
chunk_size = 2
"""
JACOBIAN_RUN = SWEEP + "jacobian = true\njacobian_probes = 64\n"


@pytest.mark.parametrize(
    ("run_section", "key", "allowed"),
    [
        ('jacobian = "yes"', "run.jacobian", "true or false"),
        ("jacobian = 1", "run.jacobian", "true or false"),
        ("jacobian = true\njacobian_probes = 0", "run.jacobian_probes", ">= 1"),
        ("jacobian = true\njacobian_probes = 8.0", "run.jacobian_probes", "write 8"),
        ("jacobian = true\njacobian_probes = 2000", "run.jacobian_probes", "<= 1,024"),
        ("jacobian_probes = 8", "run.jacobian_probes", "only with run.jacobian = true"),
        ("jacobian = false\njacobian_probes = 8", "run.jacobian_probes", "only with"),
        ("jacobain = true", "run.jacobain", "keys"),
    ],
)
def test_bad_jacobian_settings_name_the_key(run_section, key, allowed):
    with pytest.raises(SpecError) as info:
        spec_module.parse(SWEEP + run_section + "\n", source="j.toml")
    assert str(info.value).startswith(f"j.toml: {key}:") and allowed in str(info.value)


def test_the_jacobian_changes_no_config_id_and_no_gradient_part():
    """It is a second measurement of the same networks: the configs, their ids and the gradient
    parts' names stay; each chunk gains one Jacobian part."""
    plain, measured = spec_module.parse(SWEEP), spec_module.parse(JACOBIAN_RUN)
    assert plain.jacobian_probes is None and measured.jacobian_probes == 64
    assert spec_module.parse(SWEEP + "jacobian = true\n").jacobian_probes == 8
    pd.testing.assert_frame_equal(grid.expand(plain), grid.expand(measured))
    before = plan_tasks(plain, grid.expand(plain), 1)
    after = plan_tasks(measured, grid.expand(measured), 1)
    gradient = [t.key for t in after if t.measurement != JACOBIAN]
    assert gradient == [t.key for t in before] and len(after) == 2 * len(before)
    assert len({t.key for t in after}) == len(after)


def test_runs_shards_merge_and_verify_carry_the_jacobian(tmp_path):
    """Every config's measured m1 is its own (exact SVD, within 4 standard errors: rows are not
    mixed up), the shards' merge equals the run, a resumed run reuses the Jacobian parts, verify
    passes and catches an altered spread; without `jacobian` the summary has no such columns."""
    spec = spec_module.parse(JACOBIAN_RUN)
    whole = run(spec, tmp_path / "whole", progress=False, report=False)
    summary = whole.summary
    assert summary[[MEAN, SPREAD, PREDICTED_MEAN, PREDICTED_SPREAD]].notna().all().all()
    for config in summary.to_dict("records"):
        jacobians = exact_jacobians(
            "tanh", "gaussian", width=16, batch=2, depth=config["depth"],
            sigma_w2=config["sigma_w2"], sigma_b2=config["sigma_b2"], seed=config["seed"],
            replicate=config["replicate"],
        )  # fmt: skip
        exact_mean, _, se_mean, _ = probe_law(squared_singular_values(jacobians), 64)
        assert abs(config[MEAN] - exact_mean) <= 4 * se_mean, config["config_id"]
    groups = {g["group"]: g for g in whole.manifest["groups"]}
    assert len(groups) == 2 and any(name.endswith("-jacobian") for name in groups)

    for index in range(2):
        run_shard(spec, tmp_path / f"shard{index}", (index, 2), progress=False)
    merged = merge([tmp_path / "shard0", tmp_path / "shard1"], tmp_path / "merged", report=False)
    pd.testing.assert_frame_equal(merged.summary, summary)

    run_shard(spec, tmp_path / "resumed.parts", (0, 1), progress=False)
    resumed = run(spec, tmp_path / "resumed", progress=False, report=False)
    assert all(g["chunks_resumed"] == g["chunks"] for g in resumed.manifest["groups"])
    pd.testing.assert_frame_equal(resumed.summary, summary)

    assert verify(tmp_path / "whole").ok
    table = tmp_path / "whole" / "data" / "summary.parquet"
    altered = pd.read_parquet(table)
    altered.loc[0, SPREAD] += 0.5
    altered.to_parquet(table)
    outcome = verify(tmp_path / "whole")
    assert not outcome.ok and set(outcome.mismatches["column"]) == {SPREAD}

    plain = run(spec_module.parse(SWEEP), tmp_path / "plain", progress=False, report=False)
    assert not {*JACOBIAN_COLUMNS, *SPECTRUM_COLUMNS} & set(plain.summary.columns)
    assert list(plain.summary["config_id"]) == list(summary["config_id"])
