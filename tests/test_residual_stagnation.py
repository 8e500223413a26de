"""signal.residual_metrics and the residual-stagnation experiment (Proposition 1) against a
numpy float64 loop x_{l+1} = x_l + phi(M x_l), and Lemma 2 on the first layer as a
property over random DSMs, inputs and activations."""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import reference as ref

from experiments import paper
from experiments import residual_stagnation as rs
from experiments.common import (
    CONTEXT,
    FAILS,
    HOLDS,
    PARTLY,
    UNRESOLVED,
    execute,
    read_claims,
)
from jaxdsm import results, signal, sinkhorn, sweep

PHI = {"relu": lambda v: np.maximum(v, 0), "identity": lambda v: v, "tanh": np.tanh}


def exact_dsm_operator(m):
    """J/n + P M P in float64: the operator residual_metrics applies (M up to its marginal
    error)."""
    n = m.shape[-1]
    p = np.eye(n) - 1.0 / n
    return p @ np.asarray(m, np.float64) @ p + 1.0 / n


def angle(u, v):
    cos = u @ v / (np.linalg.norm(u) * np.linalg.norm(v))
    return np.arccos(np.clip(cos, -1, 1))


def reference_metrics(operator, x0, depth, phi):
    """The stack in float64, measured exactly as residual_metrics documents."""
    n = len(x0)
    x = np.asarray(x0, np.float64)
    out = {k: [] for k in rs.METRICS}
    center = lambda v: v - v.mean()  # noqa: E731
    for _ in range(depth):
        update = phi(operator @ x)
        nxt = x + update
        out["update_ratio"].append(np.linalg.norm(update) / np.linalg.norm(x))
        out["detail_update_ratio"].append(np.linalg.norm(center(update)) / np.linalg.norm(center(x)))
        out["step_angle"].append(angle(x, nxt))
        out["total_angle"].append(angle(np.asarray(x0, np.float64), nxt))
        out["detail_total_angle"].append(angle(center(np.asarray(x0, np.float64)), center(nxt)))
        out["mean_cosine"].append(nxt.sum() / (np.sqrt(n) * np.linalg.norm(nxt)))
        x = nxt
    return {k: np.array(v) for k, v in out.items()}


def compare(got, expected):
    # float32 vs float64; angles near 0 are resolved to ~1e-7 rad by the asin form.
    for name in rs.METRICS:
        np.testing.assert_allclose(np.asarray(got[name], np.float64), expected[name], rtol=2e-5,
                                   atol=2e-6, err_msg=name)


N, DEPTH = 16, 12


@jax.jit
def all_metrics(m, g):
    """Every activation, mean-free (mean 0) and general (g's own mean): one compilation."""
    return {act: {"mean_free": signal.residual_metrics(m, g, DEPTH, act, mean=0.0),
                  "general": signal.residual_metrics(m, g, DEPTH, act)}
            for act in signal.RESIDUAL_ACTIVATIONS}


def test_residual_metrics_match_a_float64_loop(rng):
    for t in (0.02, 0.3, 5.0):
        solve = ref.algorithm1_log if t < 0.05 else ref.algorithm1
        m = solve(rng.random((N, N)), t, 200).astype(np.float32)
        g = rng.normal(size=N).astype(np.float32)
        got = all_metrics(m, g)
        op, g64 = exact_dsm_operator(m), g.astype(np.float64)
        for act, phi in PHI.items():
            compare(got[act]["general"], reference_metrics(op, g64, DEPTH, phi))
            compare(got[act]["mean_free"], reference_metrics(op, g64 - g64.mean(), DEPTH, phi))


def test_operator_is_m_up_to_its_marginal_error(rng):
    """Over a few layers the exact-sum operator and the Sinkhorn matrix itself agree."""
    m = ref.algorithm1(rng.random((N, N)), 0.2, 200).astype(np.float32)
    g = rng.normal(size=N).astype(np.float32)
    got = {k: v[:4] for k, v in all_metrics(m, g)["relu"]["general"].items()}
    compare(got, reference_metrics(m.astype(np.float64), g.astype(np.float64), 4, PHI["relu"]))


def test_increments_are_accurate_where_tanh_saturates():
    mu = np.array([-30.0, -8.0, -1.0, 0.0, 0.5, 8.0, 30.0])[:, None]
    z = np.array([-40.0, -5.0, -1e-3, 1e-6, 2.0, 9.0, 45.0])[None, :]
    for name, (_, increment) in signal.RESIDUAL_ACTIVATIONS.items():
        got = jax.jit(increment)(jnp.asarray(mu, jnp.float32), jnp.asarray(z, jnp.float32))
        expected = PHI[name](mu + z) - PHI[name](mu)
        if name == "tanh":  # float64 tanh rounds to +-1 here; use the identity
            expected = np.sinh(z) / (np.cosh(mu) * np.cosh(mu + z))
        got = np.broadcast_to(np.asarray(got), expected.shape)
        assert np.all(np.isfinite(got)), name
        np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-30, err_msg=name)


def test_angle_between_is_accurate_for_small_and_large_angles(rng):
    u = rng.normal(size=(5, 8))
    for scale in (1e-6, 1e-3, 1.0, 10.0):
        v = u + scale * rng.normal(size=(5, 8))
        got = np.asarray(signal.angle_between(jnp.asarray(u), jnp.asarray(v)), np.float64)
        expected = []
        for a, b in zip(u, v):  # atan2(|perpendicular part|, cos), float64
            a, b = a / np.linalg.norm(a), b / np.linalg.norm(b)
            expected.append(np.arctan2(np.linalg.norm(b - (a @ b) * a), a @ b))
        np.testing.assert_allclose(got, expected, rtol=2e-4, atol=1e-7)


def test_lemma2_on_the_first_layer(rng):
    """Property over random DSMs, temperatures, input scales and activations:
    ||phi(M x)|| <= ||M x|| <= sigma_2 ||x|| for x in 1^perp (|phi(a)| <= |a|), and for any
    x the detail part obeys ||P phi(M x)|| <= sigma_2 ||P x||."""
    for _ in range(30):
        t = float(np.exp(rng.uniform(np.log(0.03), np.log(10))))
        m = ref.algorithm1(rng.random((N, N)), t, 200)
        x = rng.normal(size=N) * rng.uniform(0.1, 10)
        sigma2 = ref.singular_values(m)[1]
        got = all_metrics(m.astype(np.float32), x.astype(np.float32))
        detail = x - x.mean()
        for name, phi in PHI.items():
            assert got[name]["mean_free"]["update_ratio"][0] <= sigma2 * (1 + 1e-5), name
            assert got[name]["general"]["detail_update_ratio"][0] <= sigma2 * (1 + 1e-5), name
            assert np.linalg.norm(phi(m @ detail)) <= sigma2 * np.linalg.norm(detail) * (1 + 1e-9)
            update = phi(m @ x)  # general x: only the detail part is bounded
            assert (np.linalg.norm(update - update.mean())
                    <= sigma2 * np.linalg.norm(detail) * (1 + 1e-9) + 1e-12)


# Two activations keep the compile short; all three are compared with float64 above.
SMALL = rs.Config(n=16, trials=24, trials_per_seed=12, temperatures=3, t_min=0.05, t_max=10.0,
                  depth=10, activations=("relu", "identity"), chunk_size=16)


def test_run_matches_a_float64_rerun(tmp_path):
    run_dir = execute(rs.EXPERIMENT, SMALL, out=tmp_path, run_id="r", progress=False)
    arrays = results.read_npz(run_dir / "arrays.npz")
    n = SMALL.n
    for ti, t in enumerate(SMALL.temperature_grid()):
        for trial in (0, 17):
            key = sweep.trial_key(trial, seed=SMALL.seed, trials_per_seed=SMALL.trials_per_seed)
            k_cost, k_x = jax.random.split(key)
            cost = np.asarray(sinkhorn.random_cost(k_cost, n), np.float64)
            op = exact_dsm_operator(ref.algorithm1(cost, t, SMALL.iterations))
            g = np.asarray(jax.random.normal(k_x, (n,)), np.float64)  # drawn by jax
            np.testing.assert_allclose(arrays["input_mean"][ti, trial], g.mean(), atol=1e-7)
            sigma2 = ref.singular_values(op - 1.0 / n)[0]  # ||P M P||
            np.testing.assert_allclose(arrays["sigma2"][ti, trial], sigma2, rtol=1e-5)
            for ai, act in enumerate(SMALL.activations):
                for ki, x0 in enumerate((g - g.mean(), g)):
                    expected = reference_metrics(op, x0, SMALL.depth, PHI[act])
                    got = {k: arrays[k][ti, trial, ai, ki] for k in rs.METRICS}
                    # the float32 Sinkhorn matrix differs from float64 Algorithm 1 by ~1e-7
                    for name in rs.METRICS:
                        np.testing.assert_allclose(got[name], expected[name], rtol=1e-4,
                                                   atol=1e-5, err_msg=f"{act} {ki} {name}")
    rows = results.read_csv(run_dir / "summary.csv")
    assert len(rows) == 3 * len(SMALL.activations) * len(rs.INPUTS)
    row = rows[0]
    ratio = arrays["update_ratio"][0, :, 0, 0].astype(np.float64)
    assert row["activation"] == "relu" and row["input"] == "mean_free"
    np.testing.assert_allclose(float(row["first_update_ratio_mean"]), ratio[:, 0].mean(), rtol=1e-6)
    claims = read_claims(run_dir)
    assert {c.source for c in claims} == {"Proposition 1"}
    assert not paper.unknown_sources({"residual-stagnation": claims})
    assert claims[0].claim.startswith("proof step") and claims[-1].claim.startswith("detail part")
    assert {"residual_layers.png", "residual_activations.png"} <= {p.name for p in run_dir.iterdir()}


@pytest.mark.parametrize("kwargs", [dict(depth=101), dict(activations=("relu", "gelu")),
                                    dict(activations=()), dict(activations=("relu", "relu")),
                                    dict(t_min=2.0, t_max=1.0), dict(n=1), dict(angle_threshold=0)])
def test_invalid_config_raises(kwargs):
    with pytest.raises(ValueError):
        rs.Config(**kwargs)


def test_unknown_activation_raises():
    with pytest.raises(ValueError, match="activation"):
        signal.residual_metrics(jnp.eye(4), jnp.ones(4), 3, "gelu")


def reference_split_metrics(operator, x0, depth, act):
    """The stack in float64 carried as x = mu 1 + d (d in 1^perp), for states whose mean
    outgrows the detail part by more than float64 resolves (2^100 against ~1.2^100 here).
    The update phi(mu + z), z = (M d) with mean 0, is mu' 1 + w with w = z exactly where phi
    is linear on every entry (the identity; ReLU once mu + z >= 0), else computed directly."""
    n = len(x0)
    detail_operator = operator - 1.0 / n  # P M P: M on 1^perp
    mu, d = x0.mean(), x0 - x0.mean()
    embed = lambda mu, d: np.concatenate([[np.sqrt(n) * mu], d])  # noqa: E731
    first, d_first = embed(mu, d), d
    out = {k: [] for k in rs.METRICS}
    for _ in range(depth):
        z = detail_operator @ d
        if act == "identity" or (mu >= 0 and np.all(mu + z >= 0)):
            update_mu, update_d = mu, z  # phi(mu + z) = mu + z
        else:
            update = PHI[act](mu + z)
            update_mu, update_d = update.mean(), update - update.mean()
        new_mu, new_d = mu + update_mu, d + update_d
        x, nxt = embed(mu, d), embed(new_mu, new_d)
        out["update_ratio"].append(np.linalg.norm(embed(update_mu, update_d)) / np.linalg.norm(x))
        out["detail_update_ratio"].append(np.linalg.norm(update_d) / np.linalg.norm(d))
        out["step_angle"].append(angle(x, nxt))
        out["total_angle"].append(angle(first, nxt))
        out["detail_total_angle"].append(angle(d_first, new_d))
        out["mean_cosine"].append(nxt[0] / np.linalg.norm(nxt))
        mu, d = new_mu, new_d
    return {k: np.array(v) for k, v in out.items()}


@pytest.mark.parametrize("act", ["relu", "identity"])
def test_deep_stack_whose_mean_doubles_stays_finite_and_accurate(rng, act):
    """Mean 0.5: ReLU and the identity double the mean every layer, to ~2^100 at L = 100; the
    squares of a plain float32 norm overflow from layer ~62 on."""
    depth_ = 100
    m = ref.algorithm1(rng.random((N, N)), 0.3, 200).astype(np.float32)
    g = rng.normal(size=N).astype(np.float32)
    got = jax.jit(lambda m, g: signal.residual_metrics(m, g, depth_, act, mean=0.5))(m, g)
    x0 = g.astype(np.float64) - g.mean() + 0.5
    expected = reference_split_metrics(exact_dsm_operator(m), x0, depth_, act)
    # the first 12 layers also against the plain loop
    plain = reference_metrics(exact_dsm_operator(m), x0, 12, PHI[act])
    for name in rs.METRICS:
        np.testing.assert_allclose(expected[name][:12], plain[name], rtol=1e-9, atol=1e-12)
    assert expected["update_ratio"][-1] > 0.99 and expected["mean_cosine"][-1] > 0.999
    for name in rs.METRICS:
        values = np.asarray(got[name], np.float64)
        assert np.all(np.isfinite(values)), name
        # float32 rounding accumulates over 100 layers
        np.testing.assert_allclose(values, expected[name], rtol=1e-4, atol=1e-5, err_msg=name)


def test_non_finite_metrics_are_refused():
    arrays = {name: np.ones((2, 3, 1, 2, 4), np.float32) for name in rs.METRICS}
    arrays["sigma2"] = np.full((2, 3), 0.5)
    rs.check_finite(arrays)
    arrays["mean_cosine"][1, 2, 0, 1, 3] = np.nan
    with pytest.raises(FloatingPointError, match="1 of 6 trials"):
        rs.check_finite(arrays)


JUDGE = rs.Config(activations=("relu", "identity"), small_sigma2=0.1, depth=32)


def crafted_rows(changes=None):
    """Summary rows at T = 0.1 (sigma_2 0.5) and T = 10 (sigma_2 0.01) where everything the
    paper claims holds; changes[(T, act, input)] overrides fields of one row."""
    rows = []
    for t, s2 in ((0.1, 0.5), (10.0, 0.01)):
        for act in JUDGE.activations:
            for kind in rs.INPUTS:
                row = {
                    "temperature": t, "activation": act, "input": kind, "sigma2_mean": s2,
                    "first_bound_holds_fraction": 1.0, "all_layers_bound_holds_fraction": 1.0,
                    "first_failing_layer_median": np.inf, "update_ratio_last_mean": s2 / 2,
                    "stagnant_fraction": 1.0, "total_angle_deg_mean": 1.0,
                    "abs_mean_cosine_last_mean": 0.1, "detail_bound_holds_fraction": 1.0,
                    "detail_ratio_over_sigma2_max": 0.9, "detail_total_angle_deg_mean": 1.0,
                    "detail_stagnant_fraction": 1.0,
                }
                row.update((changes or {}).get((t, act, kind), {}))
                rows.append(row)
    return rows


def verdict_of(claims, start):
    found = [c.verdict for c in claims if c.claim.startswith(start)]
    assert len(found) == 1, start
    return found[0]


def test_judge_verdicts_on_crafted_rows():
    all_layers = "proof step, phi = relu, mean-free x_0"
    stagnation = "phi = relu, general x_0, sigma_2 << 1"
    first_general = "proof step: ||phi(M x)|| <= sigma_2 ||x|| at the first layer, general"
    claims = rs.judge(crafted_rows(), JUDGE)
    assert all(c.verdict == HOLDS for c in claims if not c.claim.startswith("detail part"))
    assert [c.verdict for c in claims if c.claim.startswith("detail part")] == [CONTEXT] * 2

    fail = {"all_layers_bound_holds_fraction": 0.0, "first_failing_layer_median": 3.0}
    claims = rs.judge(crafted_rows({(0.1, "relu", "mean_free"): fail}), JUDGE)
    assert verdict_of(claims, all_layers) == FAILS
    some = {"all_layers_bound_holds_fraction": 0.5, "first_failing_layer_median": 3.0}
    claims = rs.judge(crafted_rows({(10.0, "relu", "mean_free"): some}), JUDGE)
    assert verdict_of(claims, all_layers) == PARTLY

    claims = rs.judge(crafted_rows({(t, a, "general"): {"first_bound_holds_fraction": 0.0}
                                      for t in (0.1, 10.0) for a in JUDGE.activations}), JUDGE)
    assert verdict_of(claims, first_general) == FAILS
    claims = rs.judge(crafted_rows({(0.1, "relu", "general"): {
        "first_bound_holds_fraction": 0.0}}), JUDGE)
    assert verdict_of(claims, first_general) == PARTLY

    # Only T = 10 is in the sigma_2 << 1 regime: the rows at T = 0.1 do not count.
    turned = {"update_ratio_last_mean": 1.0, "stagnant_fraction": 0.0,
              "abs_mean_cosine_last_mean": 1.0}
    claims = rs.judge(crafted_rows({(10.0, "relu", "general"): turned}), JUDGE)
    assert verdict_of(claims, stagnation) == FAILS
    claims = rs.judge(crafted_rows({(0.1, "relu", "general"): turned}), JUDGE)
    assert verdict_of(claims, stagnation) == HOLDS
    claims = rs.judge(crafted_rows({(10.0, "relu", "general"): {"stagnant_fraction": 0.6}}),
                      JUDGE)
    assert verdict_of(claims, stagnation) == PARTLY

    # No temperature with sigma_2 << 1: the premise is never met.
    claims = rs.judge(crafted_rows(), dataclasses.replace(JUDGE, small_sigma2=0.001))
    assert verdict_of(claims, "identity stagnation") == UNRESOLVED
