"""jaxdsm.spectra against numpy/scipy float64 references and closed forms.

The float32 matrices measured by jaxdsm are cast to float64 for the references, so the
references measure exactly the same matrices.

Tolerances (EPS32 = 1.19e-7):
- fast (sigma_1, sigma_2) vs the float64 full SVD: 2e-6 absolute (~17 ulps at 1.0), the
  accuracy the sweep relies on. Observed max over 16 temperatures x 200 DSMs (n = 64):
  3.5e-7 (sigma_1), 4.8e-7 (sigma_2).
- full float32 SVD (jnp.linalg.svd): backward stable, |d sigma| <= c * n * EPS32 * ||M||;
  n * EPS32 * sigma_1 (7.6e-6 at n = 64). Observed <= 1.8e-6.
- entropy of random DSMs: relative 1e-6 (~8 EPS32; n^2 terms of random-signed rounding).
  Observed 2.1e-7. Sums of equal terms: ENTROPY_SUM_RTOL below.
- |lambda_2| from float32 eig: 2 * n * EPS32 (backward error n * EPS32 * ||M||_2 with
  ||M||_2 ~ 1, times a condition number <= 2 for these matrices). Observed <= 3e-6.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import reference as ref

from jaxdsm import spectra
from jaxdsm.sinkhorn import random_dsm, sinkhorn

EPS32 = ref.EPS32
FAST_ATOL = 2e-6
# float32 sum of n^2 EQUAL terms (J/n, block matrices): rounding errors do not cancel as
# they do for a random DSM; XLA:CPU reduces with a few hundred sequential adds per lane,
# so ~500 * EPS32 / 2 = 3e-5 worst case. Observed 7e-6 at n = 64.
ENTROPY_SUM_RTOL = 3e-5

N = 64
TRIALS = 200
TEMPERATURES = np.geomspace(0.01, 10.0, 16).astype(np.float32)


@jax.jit
def _measure(m):
    """Every measurement at once: one compilation per shape and dtype."""
    return {
        "singular_values": spectra.singular_values(m),
        "top_two": spectra.top_two_singular_values(m),
        "sigma2": spectra.sigma2(m),
        "entropy": spectra.entropy(m),
        "lambda2": spectra.lambda2_modulus(m),
        "double_center": spectra.double_center(m),
    }


@functools.cache
def _sinkhorn_batch(mode: str):
    return jax.jit(jax.vmap(lambda c, t: sinkhorn(c, t, mode=mode).matrix, in_axes=(0, None)))


@pytest.fixture(scope="module")
def dsm_grid():
    """(16, 200, 64, 64) float32 Sinkhorn DSMs (K = 200) at 16 log-spaced T in [0.01, 10].

    At T = 0.01 about half are not converged after K = 200 (marginal error up to ~5e-3).
    The log form is used where exp(-d/T) would underflow, the scaling form elsewhere
    (what "auto" picks, without running both branches under vmap).
    """
    rng = np.random.default_rng(20260102)
    d32, _ = ref.uniform_cost(rng, (TRIALS, N, N))
    mats = []
    for t in TEMPERATURES:
        mode = "scaling" if 1.0 / t <= 30.0 else "log"
        mats.append(np.asarray(_sinkhorn_batch(mode)(d32, t)))
    mats = np.stack(mats)
    assert np.all(np.isfinite(mats))
    full = np.linalg.svd(mats.astype(np.float64), compute_uv=False)  # LAPACK gesdd, float64
    return mats, full


# ---------------------------------------------------------------------------------------
# Singular values


def test_singular_values_match_scipy(rng):
    d32, _ = ref.uniform_cost(rng, (4, N, N))
    for t in (0.01, 0.1, 1.0):
        mats = np.asarray(_sinkhorn_batch("log")(d32, np.float32(t)))
        got = np.asarray(jax.jit(spectra.singular_values)(mats))
        assert got.dtype == np.float32 and got.shape == (4, N)
        expected = ref.singular_values(mats)
        assert np.all(np.diff(got, axis=-1) <= 0)  # descending
        assert np.all(np.abs(got - expected) <= N * EPS32 * expected[:, :1]), (
            t,
            np.abs(got - expected).max(),
        )
    general = rng.standard_normal((5, 7)).astype(np.float32)  # not square, not a DSM
    np.testing.assert_allclose(
        spectra.singular_values(general), ref.singular_values(general), rtol=4e-6
    )


def test_fast_top_two_matches_full_svd_across_temperatures(dsm_grid):
    mats, full = dsm_grid
    fast = np.asarray(jax.jit(spectra.top_two_singular_values)(mats))
    assert fast.dtype == np.float32 and fast.shape == (len(TEMPERATURES), TRIALS, 2)
    # every matrix passes the residual check, so this is the iteration's answer, not the
    # full-SVD fallback's
    _, converged = jax.jit(spectra._top_two_ritz_values)(mats)
    assert np.all(converged)
    errors = np.abs(fast - full[..., :2])
    worst = errors.max(axis=(1, 2))
    assert worst.max() <= FAST_ATOL, {
        f"T={t:.3g}": f"{e:.2e}" for t, e in zip(TEMPERATURES, worst) if e > FAST_ATOL
    }
    # the grid does contain unconverged low-T matrices (what the fast path must also handle)
    marginal = ref.marginal_errors(mats)[2]
    assert marginal[0].max() > 1e-4
    # and spans the whole range of sigma_2, from ~0.97 (T=0.01) to ~0.007 (T=10)
    assert full[0, :, 1].mean() > 0.9 and full[-1, :, 1].mean() < 0.01


@pytest.mark.parametrize("n, sweeps, t", ((64, 200, 0.003), (64, 3, 0.03), (128, 10, 0.01),
                                           (32, 30, 0.02)))
def test_top_two_falls_back_where_the_iteration_misses(n, sweeps, t, monkeypatch):
    """Sinkhorn matrices far from doubly stochastic (few sweeps, or T below 0.01): M's top
    singular vectors mix the mean direction with all of B's, the block misses them and the
    Ritz values fall short by more than 1e-5. The residual check catches the batch and the
    full SVD answers, within float32 SVD accuracy."""
    keys = jax.random.split(jax.random.PRNGKey(1), 32)
    mats = np.asarray(jax.jit(jax.vmap(
        lambda k: random_dsm(k, n, t, max_iterations=sweeps).matrix))(keys))
    expected = ref.singular_values(mats)[:, :2]

    def worst():
        got = jax.jit(jax.vmap(spectra.top_two_singular_values))(mats)
        return np.abs(np.asarray(got, np.float64) - expected).max()

    assert worst() <= FAST_ATOL
    _, converged = jax.jit(jax.vmap(spectra._top_two_ritz_values))(mats)
    assert not np.all(converged)
    monkeypatch.setattr(spectra, "for_whole_batch", lambda ok: jnp.asarray(True))  # no check
    assert worst() > 1e-5


def test_top_two_under_vmap_keeps_the_fallback_a_real_branch(monkeypatch):
    """Under vmap the check's flag is one flag for the batch, so the full SVD sits in one
    branch of a real ``cond`` and runs only when taken. With a per-matrix flag vmap would
    turn the cond into a select that runs the full SVD for every batch."""

    def fallback_branches():
        jaxpr = jax.make_jaxpr(jax.vmap(spectra.top_two_singular_values))(
            jnp.zeros((4, N, N))).jaxpr
        return [e for e in jaxpr.eqns if e.primitive.name == "cond"
                and sorted("svd" in str(b) for b in e.params["branches"]) == [False, True]]

    assert len(fallback_branches()) == 1
    monkeypatch.setattr(spectra, "for_whole_batch", lambda ok: ok)
    assert not fallback_branches()


def test_top_two_of_small_matrices_at_low_temperature():
    """n = 16 at T = 0.01: many singular values near 1, and a block of 8 is half the space.
    Subspace iteration missed sigma_2 by more than 1e-5 in 19 of 2000 such trials (up to
    2.2e-4); for n <= 3 * block the full SVD answers, within float32 SVD accuracy."""
    n, t = 16, np.float32(0.01)
    d32, _ = ref.uniform_cost(np.random.default_rng(16), (2000, n, n))
    mats = np.asarray(_sinkhorn_batch("log")(d32, t))
    errors = np.abs(np.asarray(jax.jit(spectra.top_two_singular_values)(mats))
                    - ref.singular_values(mats)[:, :2])
    assert errors.max() <= 1e-5, (errors.max(), np.sum(errors > 1e-5))


def test_sigma2_is_the_fast_second_singular_value(dsm_grid):
    mats, full = dsm_grid
    sub = mats[:, :16]
    s2 = np.asarray(jax.jit(spectra.sigma2)(sub))
    top = np.asarray(jax.jit(spectra.top_two_singular_values)(sub))
    np.testing.assert_allclose(s2, top[..., 1], rtol=0, atol=4 * EPS32)  # jit fusion may differ
    np.testing.assert_allclose(s2, full[:, :16, 1], rtol=0, atol=FAST_ATOL)


def test_sigma1_of_dsm_is_one(dsm_grid):
    """Appendix C: sigma_1 = 1 for a DSM. For a float32 matrix with marginal error e,
    1 - e <= 1^T M 1 / n <= sigma_1 <= sqrt(||M||_1 ||M||_inf) <= 1 + e, exactly."""
    mats, full = dsm_grid
    _, _, err = ref.marginal_errors(mats)
    s1 = full[..., 0]
    assert np.all(s1 >= 1 - err - 1e-12) and np.all(s1 <= 1 + err + 1e-12)
    converged = err <= 1e-6
    assert converged.mean() > 0.8
    assert np.max(np.abs(s1[converged] - 1)) <= 1e-6
    fast_s1 = np.asarray(jax.jit(spectra.top_two_singular_values)(mats[:, :32]))[..., 0]
    assert np.max(np.abs(fast_s1[converged[:, :32]] - 1)) <= 1e-6


def test_fast_path_on_matrices_that_are_not_dsms(rng):
    """What the docstring promises beyond DSMs.

    1. Ritz values of M on an orthonormal basis Q never exceed M's singular values
       (sigma_k(M Q) <= sigma_k(M)) for ANY matrix: a lower bound, up to float32 rounding.
       Where they fall short the check fails and the answer is the full SVD's.
    2. Exact for 'generalized' DSMs J/n + P X P (rows and columns sum to 1, entries of
       either sign) with ||P X P|| < 1: the right singular vectors are 1/sqrt(n) and those
       of P X P, all in the basis, and the check passes.
    """
    top = jax.jit(spectra.top_two_singular_values)
    ritz_and_check = jax.jit(spectra._top_two_ritz_values)
    general = np.concatenate(
        [
            rng.random((20, N, N)),
            rng.standard_normal((20, N, N)),
            rng.random((20, N, N)) / (N / 2),  # row sums ~1, columns not normalized
        ]
    ).astype(np.float32)
    full = ref.singular_values(general)[:, :2]
    ritz, converged = map(np.asarray, ritz_and_check(general))
    assert np.all(ritz <= full + 4 * EPS32 * np.sqrt(N) * full[:, :1])
    assert not np.all(converged)
    np.testing.assert_allclose(top(general), full, rtol=N * EPS32)

    p = np.eye(N) - 1.0 / N
    for rank in (1, 3, 8):
        x = rng.standard_normal((20, N, rank)) @ rng.standard_normal((20, rank, N))
        detail = p @ x @ p
        detail *= (
            rng.uniform(0.05, 0.95, (20, 1, 1))
            / np.linalg.norm(detail, 2, axis=(1, 2))[:, None, None]
        )
        m = (1.0 / N + detail).astype(np.float32)
        np.testing.assert_allclose(
            np.asarray(top(m)), ref.singular_values(m)[:, :2], rtol=0, atol=FAST_ATOL
        )
        assert np.all(np.asarray(ritz_and_check(m)[1]))


# ---------------------------------------------------------------------------------------
# Closed forms


def _permutation(rng, n):
    return np.eye(n, dtype=np.float32)[rng.permutation(n)]


@pytest.mark.parametrize("n", (2, 5, 64))
def test_permutation_matrix(rng, n):
    got = _measure(_permutation(rng, n))
    np.testing.assert_allclose(got["singular_values"], np.ones(n), rtol=0, atol=1e-6)
    np.testing.assert_allclose(got["top_two"], [1, 1], rtol=0, atol=1e-6)
    assert float(got["entropy"]) == 0.0
    # every eigenvalue of a permutation is a root of unity: |lambda| = 1
    np.testing.assert_allclose(got["lambda2"], 1.0, rtol=0, atol=1e-5)


@pytest.mark.parametrize("n", (2, 7, 64))
def test_uniform_matrix(n):
    """J/n: n^2 entries 1/n, so H = -n^2 (1/n) log(1/n) = n log n; sigma = (1, 0, ..., 0);
    eigenvalues (1, 0, ..., 0)."""
    got = _measure(np.full((n, n), 1.0 / n, np.float32))
    np.testing.assert_allclose(got["entropy"], n * np.log(n), rtol=ENTROPY_SUM_RTOL)
    expected_sv = np.zeros(n)
    expected_sv[0] = 1.0
    np.testing.assert_allclose(got["singular_values"], expected_sv, rtol=0, atol=1e-6)
    np.testing.assert_allclose(got["top_two"], [1, 0], atol=1e-6)
    np.testing.assert_allclose(got["lambda2"], 0.0, atol=1e-5)


@pytest.mark.parametrize("n", (4, 64))
def test_block_diagonal_dsm_with_exact_zeros(n):
    """Two blocks of (2/n) J_{n/2}: exact zeros (0 log 0 = 0) off the blocks;
    H = n^2/2 entries * (-(2/n) log(2/n)) = n log(n/2); sigma = (1, 1, 0, ...);
    eigenvalues (1, 1, 0, ...), so |lambda_2| = 1 (a reducible DSM)."""
    h = n // 2
    m = np.zeros((n, n), np.float32)
    m[:h, :h] = m[h:, h:] = 1.0 / h
    assert np.sum(m == 0) == n * n // 2
    got = _measure(m)
    np.testing.assert_allclose(got["entropy"], n * np.log(n / 2), rtol=ENTROPY_SUM_RTOL)
    np.testing.assert_allclose(got["entropy"], ref.entropy(m), rtol=ENTROPY_SUM_RTOL)
    np.testing.assert_allclose(got["top_two"], [1, 1], atol=1e-6)
    np.testing.assert_allclose(got["lambda2"], 1.0, atol=1e-5)


def test_circulant_dsm_eigenvalues():
    """A circulant DSM c_0 I + c_1 S + ... has eigenvalues sum_j c_j w^{jk} (a DFT of c);
    |lambda_2| = max_{k != 0} |fft(c)_k|; singular values are the same moduli (normal)."""
    n = 16
    c = np.random.default_rng(3).random(n)
    c /= c.sum()
    m = np.stack([np.roll(c, i) for i in range(n)]).astype(np.float32)
    moduli = np.sort(np.abs(np.fft.fft(m[0].astype(np.float64))))[::-1]
    got = _measure(m)
    np.testing.assert_allclose(got["lambda2"], moduli[1], rtol=0, atol=2 * n * EPS32)
    np.testing.assert_allclose(got["singular_values"], moduli, rtol=0, atol=n * EPS32)
    np.testing.assert_allclose(got["top_two"], moduli[:2], atol=FAST_ATOL)


# ---------------------------------------------------------------------------------------
# Entropy and |lambda_2| on Sinkhorn DSMs


@pytest.mark.parametrize("n", (8, 64))
def test_entropy_and_lambda2_match_references(rng, n):
    d32, _ = ref.uniform_cost(rng, (8, n, n))
    for t in (0.01, 0.1, 1.0, 10.0):
        mats = np.asarray(_sinkhorn_batch("log")(d32, np.float32(t)))
        h = np.asarray(jax.jit(spectra.entropy)(mats))
        assert h.dtype == np.float32 and h.shape == (8,)
        np.testing.assert_allclose(h, ref.entropy(mats), rtol=1e-6)
        lam2 = np.asarray(jax.jit(spectra.lambda2_modulus)(mats))
        assert lam2.dtype == np.float32
        np.testing.assert_allclose(lam2, ref.lambda2_modulus(mats), rtol=0, atol=2 * n * EPS32)


def test_entropy_zero_log_zero_and_negative_entries():
    m = np.array([[0.0, 1.0], [0.5, 0.5]], np.float32)
    np.testing.assert_allclose(spectra.entropy(m), np.log(2.0), rtol=1e-6)
    np.testing.assert_allclose(spectra.entropy(m), ref.entropy(m), rtol=1e-6)
    tiny = np.array([[1e-30, 1.0], [1.0, 0.0]], np.float32)  # x log x -> 0
    np.testing.assert_allclose(spectra.entropy(tiny), ref.entropy(tiny), atol=1e-27)
    # the docstring: negative entries count as 0
    neg = np.array([[-1e-3, 0.5], [0.5, 0.5]], np.float32)
    np.testing.assert_allclose(spectra.entropy(neg), 3 * 0.5 * np.log(2.0), rtol=1e-6)
    assert spectra.entropy(np.zeros((3, 3), np.float32)) == 0.0


@pytest.mark.parametrize("as_jax", (False, True), ids=("numpy", "jax"))
def test_entropy_of_subnormal_entries_is_finite(as_jax):
    """0 < x < 1.18e-38 (float32 subnormal): x log x ~ 1e-37, so H ~ 0, never NaN.

    XLA:CPU treats subnormals as 0 (log(x) = -inf), while numpy's `x > 0` is True; the
    mask must be computed with the same semantics as the log."""
    m = np.array([[1e-39, 1.0], [1.0, 0.0]], np.float32)
    h = spectra.entropy(jnp.asarray(m) if as_jax else m)
    assert np.isfinite(float(h)) and abs(float(h)) < 1e-30


# ---------------------------------------------------------------------------------------
# Batching and dtypes


def test_double_center_of_a_dsm_is_m_minus_j_over_n(dsm_grid):
    m = dsm_grid[0][5, :4]
    centered = np.asarray(spectra.double_center(m))
    np.testing.assert_allclose(centered, m - 1.0 / N, rtol=0, atol=2e-6)
    np.testing.assert_allclose(centered.sum(-1), 0, atol=1e-5)
    np.testing.assert_allclose(centered.sum(-2), 0, atol=1e-5)


def test_batched_equals_single(dsm_grid):
    mats = dsm_grid[0][3, :4]
    batched = np.asarray(spectra.top_two_singular_values(mats))
    for i, m in enumerate(mats):
        # Batch and single matrix run differently compiled products (a few float32 ulps
        # apart on an AVX2 CPU: 1.8e-7 at sigma_2 = 0.73, 3 ulps; within 1e-7 with AVX-512).
        np.testing.assert_allclose(batched[i], spectra.top_two_singular_values(m), rtol=1e-6)
    np.testing.assert_allclose(
        spectra.lambda2_modulus(mats), [spectra.lambda2_modulus(m) for m in mats], atol=1e-6
    )


@pytest.mark.parametrize("temperature", (0.05, 0.3))
def test_sigma2_derivative_matches_finite_differences(temperature, x64):
    """d sigma_2 along a random direction, through the iteration (the check passes, so the
    cond's iteration branch is the one differentiated), against central differences of
    scipy's float64 sigma_2 (h = 1e-6: truncation ~h^2, rounding ~1e-16 / h)."""
    keys = jax.random.split(jax.random.PRNGKey(0), 2)
    mats = jax.vmap(lambda k: random_dsm(k, 32, temperature, max_iterations=2000).matrix)(keys)
    assert mats.dtype == jnp.float64
    assert np.all(np.asarray(jax.vmap(spectra._top_two_ritz_values)(mats)[1]))
    for i, m in enumerate(mats):
        direction = jax.random.normal(jax.random.PRNGKey(i + 1), m.shape, m.dtype)
        _, derivative = jax.jvp(spectra.sigma2, (m,), (direction,))
        h = 1e-6
        m64, d64 = np.asarray(m), np.asarray(direction)
        central = (ref.singular_values(m64 + h * d64)[1]
                   - ref.singular_values(m64 - h * d64)[1]) / (2 * h)
        np.testing.assert_allclose(float(derivative), central, rtol=1e-6)


def test_float64_in_float64_out(rng, x64):
    _, d64 = ref.uniform_cost(rng, (2, 16, 16))
    mats = np.asarray(
        jax.vmap(lambda c: sinkhorn(c, 0.1, max_iterations=500).matrix)(jnp.asarray(d64))
    )
    assert mats.dtype == np.float64
    got64 = _measure(mats)
    got32 = _measure(mats.astype(np.float32))
    for name in got64:
        assert got64[name].dtype == jnp.float64, name
        assert got32[name].dtype == jnp.float32, name
    np.testing.assert_allclose(got64["singular_values"], ref.singular_values(mats), atol=1e-13)
    np.testing.assert_allclose(got64["top_two"], ref.singular_values(mats)[:, :2], atol=1e-12)
    np.testing.assert_allclose(got64["entropy"], ref.entropy(mats), rtol=1e-13)
    np.testing.assert_allclose(got64["lambda2"], ref.lambda2_modulus(mats), atol=1e-12)
