"""The affine-ablation experiment (sec. 4.2 / sec. 5): affine LN and the training loss against
numpy float64 formulas and finite differences, and a run against a float64 re-evaluation of
its trained parameters, on the run's own held-out pairs and on fresh numpy pairs."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import reference as ref
import scipy.stats

from experiments import affine_ablation as af
from experiments import paper
from experiments.common import (
    CONTEXT,
    FAILS,
    HOLDS,
    PARTLY,
    UNRESOLVED,
    execute,
    read_claims,
)
from jaxdsm import results, signal, sinkhorn

SMALL = af.Config(n=16, layers=3, temperatures=3, t_min=0.05, t_max=50.0, steps=80, batch=64,
                  eval_pairs=1000, control_block=4, control_gamma=0.5)
# One compiled draw for several keys, shared by the tests below (same shapes: one compile).
draw_many = jax.jit(jax.vmap(af.draw_inputs, in_axes=(0, None, None, None, None)),
                    static_argnums=(1, 2))


def ln(y):
    """Assumption 3 in float64: sqrt(n) P y / ||P y||."""
    d = y - y.mean(-1, keepdims=True)
    return np.sqrt(y.shape[-1]) * d / np.linalg.norm(d, axis=-1, keepdims=True)


def cos(u, v):
    return (u * v).sum(-1) / (np.linalg.norm(u, axis=-1) * np.linalg.norm(v, axis=-1))


def numpy_loss(scale, bias, y_a, y_b, target):
    return np.mean((cos(scale * ln(y_a) + bias, scale * ln(y_b) + bias) - target) ** 2)


def expected_noise_norm(n, nu):
    """E||P xi|| = (nu / sqrt(n)) E chi_{n-1}."""
    return nu / np.sqrt(n) * scipy.stats.chi(n - 1).mean()


def numpy_control(config):
    """The control DSM from its definition, rho chosen so that E||M a||^2 = (gamma E||P xi||)^2."""
    n, k = config.n, config.control_block
    rho = config.control_gamma * expected_noise_norm(n, config.nu) * np.sqrt((n - 1) / k) \
        / config.input_norm
    d = np.zeros((n, n))
    d[:k, :k] = np.eye(k)
    d[k:, k:] = 1 / (n - k)
    return rho * d + (1 - rho) / n, rho


def numpy_pairs(rng, n, count, nu, input_norm):
    """Fresh pairs drawn with numpy: c ~ U[-1, 1], a uniform on the detail sphere, b at cosine c."""
    c = rng.uniform(-1, 1, count)
    g = rng.normal(size=(2, count, n))
    g -= g.mean(-1, keepdims=True)
    a = g[0] / np.linalg.norm(g[0], axis=-1, keepdims=True)
    w = g[1] - (g[1] * a).sum(-1, keepdims=True) * a
    w /= np.linalg.norm(w, axis=-1, keepdims=True)
    b = c[:, None] * a + np.sqrt(1 - c[:, None] ** 2) * w
    xi = nu / np.sqrt(n) * rng.normal(size=(2, count, n))
    return c, input_norm * a, input_norm * b, xi[0], xi[1]


def test_affine_layer_norm_matches_the_formula(rng):
    y = rng.normal(size=(5, 16)).astype(np.float32) + 3.0
    scale = rng.normal(size=16).astype(np.float32)
    bias = rng.normal(size=16).astype(np.float32)
    got = np.asarray(signal.affine_layer_norm(jnp.asarray(y), scale, bias), np.float64)
    np.testing.assert_allclose(got, scale * ln(y.astype(np.float64)) + bias, atol=2e-5)
    # Scalar parameters broadcast; scale 1, bias 0 is plain LN.
    plain = signal.affine_layer_norm(jnp.asarray(y), 1.0, 0.0)
    np.testing.assert_allclose(plain, signal.layer_norm(jnp.asarray(y)), atol=1e-6)


def test_loss_gradient_matches_finite_differences(rng, x64):
    n, batch = 5, 7
    y_a, y_b = rng.normal(size=(2, batch, n))
    target = rng.uniform(-1, 1, batch)
    scale, bias = 1 + 0.3 * rng.normal(size=n), 0.2 * rng.normal(size=n)
    loss, (g_scale, g_bias) = jax.value_and_grad(af.similarity_loss)(
        (jnp.asarray(scale), jnp.asarray(bias)), jnp.asarray(y_a), jnp.asarray(y_b),
        jnp.asarray(target))
    assert np.asarray(g_scale).dtype == np.float64
    np.testing.assert_allclose(loss, numpy_loss(scale, bias, y_a, y_b, target), rtol=1e-12)
    h = 1e-6
    for which, grad in ((0, g_scale), (1, g_bias)):
        numeric = np.empty(n)
        for i in range(n):
            params = [scale.copy(), bias.copy()]
            params[which][i] += h
            up = numpy_loss(*params, y_a, y_b, target)
            params[which][i] -= 2 * h
            numeric[i] = (up - numpy_loss(*params, y_a, y_b, target)) / (2 * h)
        np.testing.assert_allclose(grad, numeric, rtol=1e-6, atol=1e-9)


def test_draw_inputs_has_the_stated_law():
    n, nu, r = SMALL.n, 0.3, 2.0
    x = draw_many(jax.random.split(jax.random.PRNGKey(3), 3), n, SMALL.eval_pairs, nu, r)
    c, a, b, xa, xb = (np.asarray(v, np.float64).reshape((-1,) + v.shape[2:]) for v in x)
    count = len(c)
    np.testing.assert_allclose(np.linalg.norm(a, axis=-1), r, rtol=1e-5)
    np.testing.assert_allclose(np.linalg.norm(b, axis=-1), r, rtol=1e-5)
    np.testing.assert_allclose(cos(a, b), c, atol=1e-5)
    np.testing.assert_allclose(a.sum(-1), 0, atol=1e-4)
    assert scipy.stats.kstest(c, "uniform", args=(-1, 2)).pvalue > 1e-3
    # a uniform on the detail sphere: E[a a^T] = r^2 P / (n - 1); entry sampling sd ~ 0.005.
    p = np.eye(n) - 1 / n
    np.testing.assert_allclose(a.T @ a / count, r**2 * p / (n - 1), atol=0.03)
    # Noise variance nu^2 / n per entry (relative sampling sd ~ 0.6%), independent of a, b.
    for xi in (xa, xb):
        np.testing.assert_allclose(xi.var(), nu**2 / n, rtol=0.03)
    assert abs(np.corrcoef(xa.ravel(), xb.ravel())[0, 1]) < 0.02


def test_chance_direction():
    assert af.chance_direction(4) == pytest.approx(0.5, abs=1e-12)  # uniform on [-1, 1] (S^2)
    rng = np.random.default_rng(0)
    u = rng.normal(size=(50_000, 63))
    sim = np.abs(u[:, 0] / np.linalg.norm(u, axis=1))
    assert af.chance_direction(64) == pytest.approx(sim.mean(), abs=5 * sim.std() / np.sqrt(len(u)))


def test_control_matrix_is_the_stated_dsm():
    config = af.Config(n=12, control_block=3, control_gamma=0.4)
    expected, rho = numpy_control(config)
    m = af.control_matrix(config)
    np.testing.assert_allclose(m, expected, rtol=1e-6)  # rho uses a float32 E||P xi||
    assert ref.marginal_errors(m)[2] < 1e-12 and m.min() > 0  # doubly stochastic, primitive
    sv = ref.singular_values(m)
    np.testing.assert_allclose(sv, [1] + [rho] * 3 + [0] * 8, atol=1e-6)
    # rho gives E||M a||^2 = (gamma E||P xi||)^2 (numpy simulation, ~0.5% sampling error).
    rng = np.random.default_rng(1)
    _, a, _, _, _ = numpy_pairs(rng, 12, 100_000, config.nu, config.input_norm)
    energy = (np.linalg.norm(a @ m.T, axis=-1) ** 2).mean()
    assert energy == pytest.approx((0.4 * expected_noise_norm(12, config.nu)) ** 2, rel=0.02)


@pytest.mark.parametrize("changes", [
    dict(n=2), dict(layers=1), dict(t_min=1.0, t_max=0.5), dict(nu=0.0), dict(steps=0),
    dict(eval_pairs=2), dict(control_block=63), dict(control_gamma=100.0), dict(seed=-1),
    dict(learning_rate=float("nan")),
])
def test_invalid_config_raises(changes):
    with pytest.raises(ValueError):
        af.Config(**changes)


@pytest.fixture(scope="module")
def small_run(tmp_path_factory):
    run_dir = execute(af.EXPERIMENT, SMALL, out=tmp_path_factory.mktemp("affine"), run_id="r",
                      progress=False)
    return run_dir, results.read_npz(run_dir / "arrays.npz")


def _layer_keys(layer):
    key = jax.random.fold_in(jax.random.PRNGKey(SMALL.seed), layer)
    return jax.random.split(key, 3)  # cost, train, eval


def _numpy_metrics(m, x, scale, bias, nu):
    """Float64 evaluation of one layer on the inputs x = (c, a, b, xi_a, xi_b)."""
    c, a, b, xa, xb = x
    s_a, s_b = a @ m.T, b @ m.T
    y_a, y_b = s_a + xa, s_b + xb
    plain_a, plain_b = ln(y_a), ln(y_b)
    ratio = np.linalg.norm(s_a - s_a.mean(-1, keepdims=True), axis=-1) \
        / np.linalg.norm(xa - xa.mean(-1, keepdims=True), axis=-1)
    scaled = np.linalg.norm(scale * (s_a - s_a.mean(-1, keepdims=True)), axis=-1) \
        / np.linalg.norm(scale * (xa - xa.mean(-1, keepdims=True)), axis=-1)
    return {
        "c_in": c,
        "cos_plain": cos(plain_a, plain_b),
        "cos_affine": cos(scale * plain_a + bias, scale * plain_b + bias),
        "cos_clean": cos(ln(s_a), ln(s_b)),
        "direction_plain": np.abs(cos(plain_a, ln(s_a))),
        "direction_affine": np.abs(cos(scale * plain_a, ln(s_a))),
        "log_snr_gain": np.log(scaled / ratio),
        "gamma": np.mean(np.linalg.norm(s_a, axis=-1)) / expected_noise_norm(m.shape[0], nu),
    }


def test_run_matches_a_float64_reevaluation_of_its_trained_parameters(small_run):
    run_dir, arrays = small_run
    n, nu = SMALL.n, SMALL.nu
    temperatures = SMALL.temperature_grid()
    control, _ = numpy_control(SMALL)
    per_layer = {}  # (stack index, layer) -> float64 metrics; stack index T is the control
    keys = [_layer_keys(layer) for layer in range(SMALL.layers)]
    # The held-out inputs are drawn by the code under test; their law is tested above.
    inputs = draw_many(jnp.stack([k[2] for k in keys]), n, SMALL.eval_pairs, nu, SMALL.input_norm)
    for layer in range(SMALL.layers):
        cost = np.asarray(sinkhorn.random_cost(keys[layer][0], n), np.float64)
        x = [np.asarray(v[layer], np.float64) for v in inputs]
        for ti in range(len(temperatures) + 1):
            if ti < len(temperatures):
                m = ref.algorithm1(cost, temperatures[ti], SMALL.iterations)
                np.testing.assert_allclose(arrays["sigma2"][ti, layer], ref.singular_values(m)[1],
                                           atol=1e-5)
                prefix, index = "", (ti, layer)
            else:
                m, prefix, index = control, "control_", (layer,)
            scale = arrays[prefix + "scale"][index].astype(np.float64)
            bias = arrays[prefix + "bias"][index].astype(np.float64)
            got = _numpy_metrics(m, x, scale, bias, nu)
            for name, value in got.items():
                np.testing.assert_allclose(arrays[prefix + name][index], value, atol=1e-4,
                                           rtol=1e-4, err_msg=f"{prefix}{name} {index}")
            per_layer[ti, layer] = got

    rows = results.read_csv(run_dir / "summary.csv")
    assert [r["layer"] for r in rows] == ["sinkhorn"] * 3 + ["control"]
    for ti, row in enumerate(rows):
        layers = [per_layer[ti, layer] for layer in range(SMALL.layers)]
        corr_by_variant = {}
        for variant in ("plain", "affine"):
            corr = [np.corrcoef(g["cos_" + variant], g["c_in"])[0, 1] for g in layers]
            corr_by_variant[variant] = corr
            rmse = [np.sqrt(np.mean((g["cos_" + variant] - g["c_in"]) ** 2)) for g in layers]
            direction = [g["direction_" + variant].mean() for g in layers]
            np.testing.assert_allclose(float(row[f"corr_{variant}_mean"]), np.mean(corr), atol=1e-4)
            np.testing.assert_allclose(float(row[f"rmse_{variant}_mean"]), np.mean(rmse), atol=1e-4)
            np.testing.assert_allclose(float(row[f"direction_{variant}_mean"]), np.mean(direction),
                                       atol=1e-4)
        # The 90% t interval over layer seeds of the affine - plain correlation (TOST at 5%).
        gain = np.array(corr_by_variant["affine"]) - np.array(corr_by_variant["plain"])
        lo, hi = scipy.stats.t.interval(0.9, len(gain) - 1, loc=gain.mean(),
                                        scale=scipy.stats.sem(gain))
        np.testing.assert_allclose([float(row["corr_gain_lo"]), float(row["corr_gain_hi"])],
                                   [lo, hi], atol=2e-4)
        gain = np.mean([np.exp(g["log_snr_gain"].mean()) for g in layers])
        np.testing.assert_allclose(float(row["snr_gain_mean"]), gain, rtol=1e-4)
        np.testing.assert_allclose(float(row["gamma"]), np.mean([g["gamma"] for g in layers]),
                                   rtol=1e-4)
    claims = read_claims(run_dir)
    assert [c.source for c in claims] == ["Section 4.2"] * 3
    assert claims[1].verdict == CONTEXT  # high SNR: a measurement beside the claims
    assert not paper.unknown_sources({af.NAME: claims})
    assert (run_dir / "affine_ablation.png").exists()


def test_trained_parameters_on_fresh_numpy_pairs(small_run):
    """Independent of the run's draws: the trained scale helps on the control layer, and on
    Sinkhorn layers it neither helps nor changes the SNR at collapsed SNR."""
    _, arrays = small_run
    n, nu = SMALL.n, SMALL.nu
    rng = np.random.default_rng(7)
    x = numpy_pairs(rng, n, 20_000, nu, SMALL.input_norm)
    control, _ = numpy_control(SMALL)
    t_low = SMALL.temperature_grid()[-1]
    for layer in range(SMALL.layers):
        scale = arrays["control_scale"][layer].astype(np.float64)
        bias = arrays["control_bias"][layer].astype(np.float64)
        g = _numpy_metrics(control, x, scale, bias, nu)
        corr = {v: np.corrcoef(g["cos_" + v], g["c_in"])[0, 1] for v in ("plain", "affine")}
        # Correlations from 20000 pairs have sampling sd < 0.01; the trained gain is ~0.1.
        assert corr["affine"] > corr["plain"] + 0.04
        assert np.exp(g["log_snr_gain"].mean()) > 1.2
        # It learned where the signal is: the noise-only block is scaled down.
        assert np.abs(scale[SMALL.control_block:]).mean() < 0.8 * np.abs(
            scale[:SMALL.control_block]).mean()

        k_cost = _layer_keys(layer)[0]
        m = ref.algorithm1(np.asarray(sinkhorn.random_cost(k_cost, n), np.float64), t_low,
                           SMALL.iterations)
        g = _numpy_metrics(m, x, arrays["scale"][-1, layer].astype(np.float64),
                           arrays["bias"][-1, layer].astype(np.float64), nu)
        assert g["gamma"] < 0.05
        corr = {v: np.corrcoef(g["cos_" + v], g["c_in"])[0, 1] for v in ("plain", "affine")}
        assert abs(corr["affine"]) < 0.04 and abs(corr["affine"] - corr["plain"]) < 0.03
        assert abs(np.exp(g["log_snr_gain"].mean()) - 1) < 0.02
        direction = g["direction_affine"].mean()
        assert direction == pytest.approx(af.chance_direction(n), abs=0.02)


# ---------------------------------------------------------------- verdicts from crafted rows


def test_equivalence_agrees_with_two_one_sided_t_tests():
    """``equivalence`` on ``mean_interval`` is a TOST: equivalent iff both one-sided scipy
    t-tests against the margins reject at 5%; different iff one against the centre + or -
    the margin rejects the other way."""
    rng = np.random.default_rng(5)
    margin, seen = 0.05, set()
    for shift in np.linspace(-0.12, 0.12, 25):
        values = shift + 0.03 * rng.normal(size=5)
        _, _, lo, hi = af.mean_interval(values)
        above = scipy.stats.ttest_1samp(values, -margin, alternative="greater").pvalue < 0.05
        below = scipy.stats.ttest_1samp(values, margin, alternative="less").pvalue < 0.05
        beyond = scipy.stats.ttest_1samp(values, margin, alternative="greater").pvalue < 0.05
        short = scipy.stats.ttest_1samp(values, -margin, alternative="less").pvalue < 0.05
        outcome = af.equivalence(lo, hi, 0.0, margin)
        assert (outcome == "equivalent") == (above and below), (shift, lo, hi)
        assert (outcome == "different") == (beyond or short), (shift, lo, hi)
        seen.add(outcome)
    assert seen == {"equivalent", "different", "undecided"}


VERDICT_CONFIG = af.Config()
CHANCE = af.chance_direction(VERDICT_CONFIG.n)


def _crafted_row(layer="sinkhorn", gamma=0.01, temperature=10.0, shift=None, width=0.005,
                 snr_gain=1.0):
    """A summary row whose 90% intervals are centred on chance (plus ``shift`` per metric)."""
    shift = shift or {}
    row = {"layer": layer, "temperature": temperature, "gamma": gamma, "sigma2": 0.01,
           "direction_chance": CHANCE, "snr_gain_mean": snr_gain, "scale_block_ratio": 1.0,
           "corr_clean_mean": 0.99}
    centres = {"corr_gain": 0.0, "direction_gain": 0.0, "corr_plain": 0.0, "corr_affine": 0.0,
               "direction_plain": CHANCE, "direction_affine": CHANCE}
    for key, centre in centres.items():
        mid = centre + shift.get(key, 0.0)
        row[key + "_lo"], row[key + "_hi"] = mid - width, mid + width
        row[key + "_mean"] = mid
    return row


def _verdicts(layers, control=None):
    control = control or _crafted_row("control", gamma=0.3, temperature=float("nan"))
    high = _crafted_row(gamma=7.0, temperature=0.01, shift={"corr_plain": 0.99,
                                                            "corr_affine": 0.99,
                                                            "direction_plain": 0.9,
                                                            "direction_affine": 0.9})
    return [c.verdict for c in af.judge([high] + layers + [control], VERDICT_CONFIG)]


def test_collapsed_claim_verdicts_from_crafted_rows():
    margin = VERDICT_CONFIG.corr_margin
    equivalent = _crafted_row()
    gain = _crafted_row(temperature=30.0, shift={"corr_gain": margin + 0.02})
    above_chance = _crafted_row(temperature=100.0,
                                shift={"direction_affine": 0.2 * CHANCE,
                                       "direction_gain": 0.15 * CHANCE})
    wide = _crafted_row(temperature=100.0, width=2 * margin)
    assert _verdicts([equivalent, _crafted_row(temperature=30.0)])[0] == HOLDS
    assert _verdicts([equivalent, gain])[0] == PARTLY
    assert _verdicts([gain, above_chance])[0] == FAILS
    assert _verdicts([equivalent, wide])[0] == UNRESOLVED  # too few seeds to tell
    # A significant gain inside the margin is no gain at the stated margin.
    small = _crafted_row(shift={"corr_gain": margin / 2})  # interval [0.02, 0.03]
    assert _verdicts([small])[0] == HOLDS
    # No collapsed temperature: nothing to judge.
    assert _verdicts([_crafted_row(gamma=0.5)])[0] == UNRESOLVED


def test_snr_gain_and_high_snr_verdicts_from_crafted_rows():
    layers = [_crafted_row(), _crafted_row(temperature=30.0)]
    control = _crafted_row("control", gamma=0.3, temperature=float("nan"), snr_gain=2.0)
    assert _verdicts(layers)[1:] == [CONTEXT, HOLDS]
    assert _verdicts(layers, control)[1:] == [CONTEXT, PARTLY]
    unequal = [_crafted_row(), _crafted_row(temperature=30.0, snr_gain=1.2)]
    assert _verdicts(unequal)[2] == FAILS
