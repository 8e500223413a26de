"""The bounds experiment and bounds.tail_check against numpy/scipy: known tails, closed
forms, float64 reruns of the same draws, and scipy's principal angles."""

from __future__ import annotations

import functools

import jax
import numpy as np
import pytest
import reference as ref
import scipy.linalg
import scipy.stats

from experiments import bounds as bx
from experiments.common import CONTEXT, FAILS, HOLDS, execute, read_claims
from jaxdsm import bounds, results, sinkhorn, sweep

SMALL = bx.Config(n=16, samples=20_000, grid_points=20, lemma2_trials=8, lemma2_vectors=4,
                  temperature_min=0.01, temperature_max=1.0, temperatures=3,
                  lemma3_samples=2_000, wedin_samples=16, chunk_size=8)


@pytest.fixture(scope="module")
def small_run(tmp_path_factory):
    run_dir = execute(bx.EXPERIMENT, SMALL, out=tmp_path_factory.mktemp("bounds"), run_id="r",
                      progress=False)
    rows = results.read_csv(run_dir / "summary.csv")
    return run_dir, results.read_npz(run_dir / "arrays.npz"), rows


def _rows(rows, check, case=None):
    return [r for r in rows if r["check"] == check and (case is None or r["case"] == case)]


def _column(rows, name):
    return np.array([float(r[name]) for r in rows])


# ---------------------------------------------------------------- tail_check


def test_tail_check_holds_for_a_valid_bound_and_detects_a_wrong_one(rng):
    values = np.abs(rng.normal(size=200_000))
    x = np.linspace(0.1, 4, 40)
    truth = 2 * scipy.stats.norm.sf(x)
    valid = bounds.tail_check(values, x, 2 * truth)
    assert not valid.violated.any()
    assert valid.holds[x <= 3].all()  # resolvable: >= 500 samples beyond x
    exact = bounds.tail_check(values, x, truth)
    assert np.all((exact.lower <= truth) & (truth <= exact.upper))
    wrong = bounds.tail_check(values, x, truth / 2)
    assert wrong.violated[x <= 2.5].all() and not wrong.holds.any()
    np.testing.assert_array_equal(valid.count, [(values >= e).sum() for e in x])


def test_tail_check_informative_range_of_a_chi_bound(rng):
    t = np.linspace(0.05, 5, 100)
    samples = scipy.stats.chi(15).rvs(size=10_000, random_state=rng) - np.sqrt(15)
    check = bounds.tail_check(np.abs(samples), t, 2 * np.exp(-t**2 / 2))
    low, high = check.informative_range()
    assert low == pytest.approx(t[t > np.sqrt(2 * np.log(2))].min()) and high == t[-1]
    assert bounds.tail_check(np.abs(samples), t, 1.5).informative_range() is None


def test_clopper_pearson_limits():
    alpha, samples = 0.01, 50
    lower, upper = bounds.clopper_pearson(np.array([0, 3, 50]), samples, alpha)
    np.testing.assert_allclose(upper[0], 1 - alpha ** (1 / samples), rtol=1e-10)
    np.testing.assert_allclose(lower[2], alpha ** (1 / samples), rtol=1e-10)
    assert lower[0] == 0 and upper[2] == 1
    # The limits are where the binomial tail probabilities equal alpha.
    np.testing.assert_allclose(scipy.stats.binom.cdf(3, samples, upper[1]), alpha, rtol=1e-8)
    np.testing.assert_allclose(scipy.stats.binom.sf(2, samples, lower[1]), alpha, rtol=1e-8)


def test_tail_check_shares_its_confidence_over_the_stated_comparisons(rng):
    values = rng.normal(size=5_000)
    x = np.linspace(0, 2, 10)
    single = bounds.tail_check(values, x, 0.5, confidence=0.99)
    pooled = bounds.tail_check(values, x, 0.5, confidence=0.99, comparisons=30)
    count = np.array([(values >= e).sum() for e in x])
    # Each limit is where the binomial tail equals 0.01 / comparisons.
    for check, comparisons in ((single, 10), (pooled, 30)):
        np.testing.assert_allclose(scipy.stats.binom.cdf(count, values.size, check.upper),
                                   0.01 / comparisons, rtol=1e-6)
    assert np.all(pooled.upper > single.upper) and np.all(pooled.lower < single.lower)
    with pytest.raises(ValueError):
        bounds.tail_check(values, x, 0.5, comparisons=5)


@pytest.mark.parametrize("kwargs", [
    {"values": [], "x": [0.1]},
    {"values": [0.1, np.nan], "x": [0.1]},
    {"values": [0.1], "x": [[0.1]]},
    {"values": [0.1], "x": [0.1], "confidence": 1.0},
])
def test_tail_check_rejects_bad_input(kwargs):
    with pytest.raises(ValueError):
        bounds.tail_check(bound=0.5, **kwargs)


# ---------------------------------------------------------------- the run against references


def test_levy_and_lemma1_against_scipy_and_a_rerun(small_run):
    run_dir, arrays, rows = small_run
    n, eps = SMALL.n, SMALL.eps_grid()
    inner = arrays["levy_inner"].astype(np.float64)
    for i in (0, 7, SMALL.samples - 1):
        key = jax.random.fold_in(bx._check_key(SMALL.seed, "tails"), i)
        g = np.asarray(jax.random.normal(jax.random.split(key)[0], (2, n), np.float32), np.float64)
        g -= g.mean(axis=1, keepdims=True)
        u, v = g / np.linalg.norm(g, axis=1, keepdims=True)
        np.testing.assert_allclose(inner[i], u @ v, atol=1e-6)
        np.testing.assert_allclose(arrays["lemma1_projection"][i], u[0] * np.sqrt(n / (n - 1)),
                                   atol=1e-6)
    levy = _rows(rows, "levy")
    np.testing.assert_allclose(_column(levy, "x"), eps)
    np.testing.assert_allclose(_column(levy, "empirical"),
                               [np.mean(np.abs(inner) >= e) for e in eps])
    np.testing.assert_allclose(_column(levy, "bound"), 2 * np.exp(-(n - 2) * eps**2 / 2), rtol=1e-6)
    exact = scipy.stats.beta(0.5, (n - 2) / 2).sf(eps**2)  # <u, v>^2 on S^{n-2}
    np.testing.assert_allclose(_column(levy, "exact"), exact, rtol=1e-5, atol=1e-12)
    # The simulation follows the exact law, and Levy's bound is above it.
    assert np.all((_column(levy, "lower") <= exact) & (exact <= _column(levy, "upper")))
    assert not any(r["violated"] == "True" for r in levy)
    stats = results.read_json(run_dir / "statistics.json")
    proj = arrays["lemma1_projection"].astype(np.float64)
    law = scipy.stats.beta(0.5, (n - 2) / 2)
    ks = scipy.stats.kstest(proj, lambda x: np.where(x >= 0, 1 - law.sf(x**2) / 2,
                                                     law.sf(x**2) / 2))
    np.testing.assert_allclose(stats["lemma1_ks_p"], ks.pvalue, rtol=1e-6)
    assert ks.pvalue > 0.001


def test_appendix_a_and_remark1_against_the_chi_law(small_run):
    run_dir, arrays, rows = small_run
    n, nu, t = SMALL.n, SMALL.nu, SMALL.t_grid()
    norm = arrays["noise_norm"].astype(np.float64)
    key = jax.random.fold_in(bx._check_key(SMALL.seed, "tails"), 3)
    xi = nu / np.sqrt(n) * np.asarray(jax.random.normal(jax.random.split(key)[1], (n,), np.float32),
                                      np.float64)
    np.testing.assert_allclose(norm[3], np.linalg.norm(xi - xi.mean()), rtol=1e-5)
    z = (norm - nu * np.sqrt((n - 1) / n)) * np.sqrt(n) / nu
    chi = scipy.stats.chi(n - 1)
    exact = chi.sf(np.sqrt(n - 1) + t) + chi.cdf(np.sqrt(n - 1) - t)
    two = _rows(rows, "appendix_a_two_sided")
    np.testing.assert_allclose(_column(two, "empirical"), [np.mean(np.abs(z) >= x) for x in t])
    np.testing.assert_allclose(_column(two, "bound"), 2 * np.exp(-t**2 / 2), rtol=1e-6)
    np.testing.assert_allclose(_column(two, "exact"), exact, rtol=1e-8)
    assert np.all((_column(two, "lower") <= exact) & (exact <= _column(two, "upper")))
    upper = _rows(rows, "appendix_a_upper")
    np.testing.assert_allclose(_column(upper, "empirical"), [np.mean(z >= x) for x in t])
    np.testing.assert_allclose(_column(upper, "bound"), np.exp(-t**2 / 2), rtol=1e-6)
    # One claim pools the upper and lower grids: each limit at (1 - confidence) / (2 points).
    alpha = (1 - SMALL.confidence) / (2 * t.size)
    count = np.array([np.sum(z >= x) for x in t])
    resolved = count < z.size
    np.testing.assert_allclose(
        scipy.stats.binom.cdf(count, z.size, _column(upper, "upper"))[resolved], alpha, rtol=1e-6)
    eps_rows = _rows(rows, "appendix_a_eps")
    eps = SMALL.eps_grid()
    np.testing.assert_allclose(_column(eps_rows, "empirical"),
                               [np.mean(np.abs(z) >= np.sqrt(n) * e) for e in eps])
    np.testing.assert_allclose(_column(eps_rows, "bound"), 2 * np.exp(-n * eps**2 / 2), rtol=1e-6)
    stats = results.read_json(run_dir / "statistics.json")
    np.testing.assert_allclose(stats["noise_norm_mean"], norm.mean(), rtol=1e-12)
    np.testing.assert_allclose(stats["exact_mean"], nu / np.sqrt(n) * chi.mean(), rtol=1e-10)
    np.testing.assert_allclose(stats["remark1_value"], nu * np.sqrt((n - 1) / n), rtol=1e-12)
    # The simulated mean is the chi mean, not Remark 1's value (1.6% apart at n = 16).
    assert abs(norm.mean() - stats["exact_mean"]) < 5 * stats["noise_norm_sem"]
    assert stats["remark1_value"] - norm.mean() > 10 * stats["noise_norm_sem"]


def test_lemma2_against_a_float64_rerun(small_run, x64):
    _, arrays, rows = small_run
    n = SMALL.n
    for ti, temperature in enumerate(SMALL.temperature_grid()):
        for trial in (0, SMALL.lemma2_trials - 1):
            key = sweep.trial_key(trial, seed=SMALL.seed)
            k_cost, k_x = jax.random.split(key)
            sinkhorn_m = ref.algorithm1(np.asarray(sinkhorn.random_cost(k_cost, n)), temperature,
                                        SMALL.iterations)
            # The exactly doubly stochastic matrix the lemma is judged on, from its definition.
            p = np.eye(n) - 1 / n
            m = p @ sinkhorn_m @ p + 1 / n
            mix = max(0.0, -m.min() / (1 / n - m.min()))
            m = (1 - mix) * m + mix / n
            np.testing.assert_allclose(m.sum(axis=0), 1, atol=1e-13)
            np.testing.assert_allclose(m.sum(axis=1), 1, atol=1e-13)
            assert m.min() > -1e-15
            sv = ref.singular_values(m)
            x = np.array(jax.random.normal(k_x, (SMALL.lemma2_vectors, n)))
            x -= x.mean(axis=1, keepdims=True)
            ratio = np.linalg.norm(x @ m.T, axis=1) / (sv[1] * np.linalg.norm(x, axis=1))
            restricted = scipy.linalg.svd(m - m.mean(axis=1, keepdims=True), compute_uv=False)[0]
            raw = scipy.linalg.svd(sinkhorn_m @ p, compute_uv=False)[0] \
                / ref.singular_values(sinkhorn_m)[1]
            np.testing.assert_allclose(arrays["lemma2_sigma2"][ti, trial], sv[1], rtol=1e-8)
            np.testing.assert_allclose(arrays["lemma2_mix"][ti, trial], mix, atol=1e-12)
            np.testing.assert_allclose(arrays["lemma2_raw_sup_ratio"][ti, trial], raw, rtol=1e-8)
            np.testing.assert_allclose(arrays["lemma2_ratio_max"][ti, trial], ratio.max(),
                                       rtol=1e-8)
            np.testing.assert_allclose(arrays["lemma2_sup_ratio"][ti, trial], restricted / sv[1],
                                       rtol=1e-8)
            np.testing.assert_allclose(arrays["lemma2_marginal_error"][ti, trial],
                                       ref.marginal_errors(sinkhorn_m)[2], atol=1e-10)
    exact = _rows(rows, "lemma2_sup", "exact DSM")
    assert len(exact) == len(SMALL.temperature_grid())
    assert all(r["holds"] == "True" for r in exact)
    assert np.all(arrays["lemma2_ratio_max"] <= arrays["lemma2_sup_ratio"] * (1 + 1e-12))
    # At T = 0.01 K = 200 sweeps leave marginal errors > 1e-6: the raw ratio exceeds 1 there.
    assert _rows(rows, "lemma2_raw_sup", "not converged")


def test_lemma3_against_numpy_and_its_sharp_constant(small_run, x64):
    _, arrays, rows = small_run
    ratios = np.concatenate(bx.lemma3_ratios(SMALL))
    assert np.sum(ratios == 0.5) >= SMALL.lemma3_samples // 10 and ratios.max() == 5.0
    for i in (0, 1999, 2000, len(ratios) - 1):
        key = jax.random.fold_in(bx._check_key(SMALL.seed, "lemma3"), i)
        a, b = (np.asarray(v) for v in bx.lemma3_pair(key, ratios[i], SMALL.n))
        lhs = np.linalg.norm(a / np.linalg.norm(a) - b / np.linalg.norm(b))
        np.testing.assert_allclose(arrays["lemma3_lhs"][i], lhs, rtol=1e-10)
        np.testing.assert_allclose(arrays["lemma3_ratio"][i], ratios[i], rtol=1e-10)
        np.testing.assert_allclose(arrays["lemma3_rhs"][i], 4 * np.linalg.norm(a - b)
                                   / np.linalg.norm(b), rtol=1e-10)
    assert all(r["holds"] == "True" for r in _rows(rows, "lemma3"))
    # The sharp ratio against a brute-force search in the plane of a and b.
    phi = np.linspace(0, np.pi, 200_001)
    for r in (0.1, 0.5, 0.9, 1.5, 3.0):
        a = np.stack([1 + r * np.cos(phi), r * np.sin(phi)])
        lhs = np.linalg.norm(a / np.linalg.norm(a, axis=0) - [[1], [0]], axis=0)
        np.testing.assert_allclose(bx.lemma3_sharp_ratio(r), lhs.max() / r, rtol=1e-6)
    np.testing.assert_allclose(bx.lemma3_sharp_ratio(0.5), 4 * np.sin(np.pi / 12))


def test_lemma3_condition_follows_the_designed_ratio(small_run, x64):
    """float32 rounding puts measured ratios of pairs drawn at 1/2 on either side of it; the
    condition and the count at 1/2 follow the design, not the rounding."""
    _, arrays, _ = small_run
    arrays = dict(arrays)
    design = arrays["lemma3_design_ratio"]
    at_half = design == 0.5
    assert at_half.sum() == SMALL.lemma3_samples // 10 + 1  # the spread part ends at 1/2 too
    arrays["lemma3_ratio"] = np.where(at_half, 0.5 * (1 + 6e-8), arrays["lemma3_ratio"])
    stats = bx.statistics(arrays, SMALL)
    assert stats["lemma3_boundary_samples"] == at_half.sum()
    inside = _rows(bx.summarize(arrays, SMALL), "lemma3", "inside")
    assert sum(r["samples"] for r in inside) == SMALL.lemma3_samples
    # Where the sharp constant is measured outside the condition: an argmax by hand.
    sharp = arrays["lemma3_lhs"] / arrays["lemma3_ratio"]
    worst = np.argmax(np.where(design > 0.5, sharp, -np.inf))
    assert stats["lemma3_sharp_outside_at"] == design[worst]
    assert stats["lemma3_sharp_outside"] == pytest.approx(sharp[worst])


def test_sin_theta_matches_scipy_subspace_angles(rng, x64):
    for r in (1, 2, 3):
        qa = np.linalg.qr(rng.normal(size=(12, r)))[0]
        qb = np.linalg.qr(qa + 0.3 * rng.normal(size=(12, r)))[0]
        expected = np.sin(scipy.linalg.subspace_angles(qa, qb).max())
        np.testing.assert_allclose(bounds.sin_theta(qa, qb), expected, rtol=1e-10)
    matrix = rng.normal(size=(10, 10))
    u, _, v = (np.asarray(x) for x in bx.leading_singular_subspaces(matrix, 3, 2))
    u_ref, _, vt_ref = scipy.linalg.svd(matrix)
    assert np.abs(scipy.linalg.subspace_angles(u[:, :2], u_ref[:, :2])).max() < 1e-8
    assert np.abs(scipy.linalg.subspace_angles(v[:, :2], vt_ref[:2].T)).max() < 1e-8
    np.testing.assert_array_equal(u[:, 2], 0)


def test_wedin_against_scipy(small_run, x64):
    _, arrays, rows = small_run
    family, rank, rho = bx.wedin_design(SMALL)
    pair = jax.jit(functools.partial(bx.wedin_pair, n=SMALL.n))
    for i in range(0, len(rho), 9):
        key = jax.random.fold_in(bx._check_key(SMALL.seed, "wedin"), i)
        a, e = (np.asarray(x) for x in pair(key, family[i], rank[i], rho[i], SMALL.nu))
        r = int(rank[i])
        u_a, s_a, vt_a = scipy.linalg.svd(a)
        u_b, s_b, vt_b = scipy.linalg.svd(a + e)
        sin = max(np.sin(scipy.linalg.subspace_angles(u_a[:, :r], u_b[:, :r]).max()),
                  np.sin(scipy.linalg.subspace_angles(vt_a[:r].T, vt_b[:r].T).max()))
        gap = s_a[r - 1] - s_a[r]
        np.testing.assert_allclose(np.linalg.norm(e, 2), rho[i] * gap, rtol=1e-8)
        np.testing.assert_allclose(arrays["wedin_sin_theta"][i], sin, rtol=1e-6, atol=1e-12)
        np.testing.assert_allclose(arrays["wedin_gap"][i], gap, rtol=1e-10)
        np.testing.assert_allclose(arrays["wedin_mixed_gap"][i], s_b[r - 1] - s_a[r], rtol=1e-8,
                                   atol=1e-12)
        if family[i] == 1:  # the noise matrix's columns lie in 1^perp
            np.testing.assert_allclose(a.sum(axis=0), 0, atol=1e-12)
    assert all(r["holds"] == "True" for r in _rows(rows, "wedin_textbook"))
    sin, bound = bx.wedin_counterexample(0.4)
    np.testing.assert_allclose(sin, np.sin(np.arcsin(0.8) / 2))
    assert sin > bound == pytest.approx(0.4)


def test_run_folder_claims_and_summary(small_run):
    run_dir, _, rows = small_run
    claims = read_claims(run_dir)
    assert {c.source for c in claims} == {"Theorem 1 (Levy)", "Lemma 1", "Appendix A", "Remark 1",
                                          "Lemma 2", "Lemma 3", "Appendix B", "Theorem 1"}
    verdicts = {(c.source, c.claim.split(":")[0]): c.verdict for c in claims}
    assert verdicts[("Remark 1", "E||P xi|| = nu sqrt((n-1)/n)")] == "fails"
    assert verdicts[("Appendix B", "Wedin")] == "fails"  # the closed-form counterexample
    # Rows that are not paper claims are context, never tallied.
    for c in claims:
        if c.claim.startswith(("(not claimed)", "(constants)")):
            assert c.verdict == CONTEXT, c
    assert {"check", "x", "empirical", "bound", "holds", "informative"} <= set(rows[0])
    expected = {"bounds_levy.png", "bounds_chi.png", "bounds_lemma3.png", "bounds_wedin.png"}
    assert expected <= {p.name for p in run_dir.iterdir()}


def _lemma2_verdicts(arrays):
    rows, stats = bx.summarize(arrays, SMALL), bx.statistics(arrays, SMALL)
    claims = bx.judge(rows, stats, SMALL)
    return [c.verdict for c in claims if c.source == "Lemma 2"]


def test_lemma2_verdicts_follow_the_exact_dsms(small_run, x64):
    _, arrays, _ = small_run
    assert _lemma2_verdicts(arrays) == [HOLDS, HOLDS, CONTEXT]
    # Sinkhorn's own inexact outputs do not decide the verdict ...
    raw = dict(arrays, lemma2_raw_sup_ratio=arrays["lemma2_raw_sup_ratio"] + 1e-3)
    assert _lemma2_verdicts(raw) == [HOLDS, HOLDS, CONTEXT]
    # ... an exact DSM above its sigma_2 by more than the float slack does.
    over = 1 + 10 * bx.float_tolerance(SMALL)
    broken = dict(arrays, lemma2_sup_ratio=arrays["lemma2_sup_ratio"].copy())
    broken["lemma2_sup_ratio"][1, 0] = over
    assert _lemma2_verdicts(broken) == [FAILS, FAILS, CONTEXT]
    below = dict(arrays, lemma2_sup_ratio=np.full_like(arrays["lemma2_sup_ratio"], 1 / over))
    assert _lemma2_verdicts(below)[1] == FAILS  # not tight


def test_draw_compiles_once_per_shape():
    key = jax.random.PRNGKey(0)
    ratios = np.full(10, 0.3)
    bx.draw(bx.lemma3_trial, key, 10, per_sample=(ratios,), n=8)
    size = bx._draw_jit._cache_size()
    again = bx.draw(bx.lemma3_trial, key, 10, per_sample=(ratios + 0.1,), n=8)
    assert bx._draw_jit._cache_size() == size
    np.testing.assert_allclose(again["ratio"], 0.4, rtol=1e-5)


@pytest.mark.parametrize("kwargs", [
    {"n": 3}, {"samples": 0}, {"eps_max": 1.5}, {"rho_min": 1.0}, {"confidence": 1.0},
    {"temperature_min": 1.0, "temperature_max": 0.1}, {"wedin_samples": 4}, {"nu": -0.1},
])
def test_invalid_config_raises(kwargs):
    with pytest.raises(ValueError):
        bx.Config(**kwargs)
