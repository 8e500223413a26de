"""jaxdsm.signal and jaxdsm.bounds against closed forms, scipy and numpy simulations."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import reference as ref
import scipy.special
import scipy.stats

from jaxdsm import bounds, signal, spectra
from jaxdsm.sinkhorn import sinkhorn


def test_layer_norm_is_the_projection_onto_the_detail_sphere(rng):
    y = rng.normal(size=(5, 16)).astype(np.float32) + 3.0
    out = np.asarray(signal.layer_norm(jnp.asarray(y)), np.float64)
    detail = y - y.mean(axis=1, keepdims=True)
    expected = np.sqrt(16) * detail / np.linalg.norm(detail, axis=1, keepdims=True)
    np.testing.assert_allclose(out, expected, atol=2e-6)
    np.testing.assert_allclose(out.sum(axis=1), 0, atol=2e-5)
    np.testing.assert_allclose(np.linalg.norm(out, axis=1), 4.0, rtol=1e-6)


@pytest.mark.parametrize("n", [3, 16, 64])
def test_expected_projected_noise_norm_is_the_chi_mean(n):
    nu = 0.1
    expected = nu / np.sqrt(n) * scipy.stats.chi(n - 1).mean()
    got = float(signal.expected_projected_noise_norm(n, nu))
    np.testing.assert_allclose(got, expected, rtol=1e-5)
    assert got < nu * np.sqrt((n - 1) / n)  # Remark 1's value is the RMS, an upper bound


def test_isotropic_noise_has_the_stated_covariance():
    keys = jax.random.split(jax.random.PRNGKey(0), 20000)
    xi = np.asarray(jax.vmap(lambda k: signal.isotropic_noise(k, 8, 0.5))(keys), np.float64)
    cov = np.cov(xi.T)
    # nu^2 / n = 0.03125 on the diagonal; sampling error ~ 0.03125 * sqrt(2 / 20000).
    np.testing.assert_allclose(np.diag(cov), 0.25 / 8, atol=0.0015)
    np.testing.assert_allclose(cov - np.diag(np.diag(cov)), 0, atol=0.0015)


@pytest.mark.parametrize("cosine", [0.9, 0.0, -0.5])
def test_pair_with_cosine(cosine):
    a, b = signal.pair_with_cosine(jax.random.PRNGKey(1), 32, cosine)
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    np.testing.assert_allclose([a.sum(), b.sum()], 0, atol=1e-4)
    np.testing.assert_allclose(np.linalg.norm([a, b], axis=1), np.sqrt(32), rtol=1e-6)
    np.testing.assert_allclose(a @ b / 32, cosine, atol=1e-6)


def test_inner_product_tail_closed_forms_and_simulation(rng):
    eps = np.linspace(0, 1, 11)
    # On S^2 (dim 3), <u, v> is uniform on [-1, 1] (Archimedes): tail = 1 - eps.
    np.testing.assert_allclose(bounds.inner_product_tail(3, eps), 1 - eps, atol=1e-6)
    # dim 63 (the detail sphere of n = 64) against a numpy simulation.
    u = rng.normal(size=(100_000, 63))
    v = rng.normal(size=(100_000, 63))
    dots = np.abs(np.sum(u * v, 1) / np.linalg.norm(u, axis=1) / np.linalg.norm(v, axis=1))
    for e in (0.05, 0.1, 0.2, 0.3):
        p = float(bounds.inner_product_tail(63, e))
        sim = np.mean(dots >= e)
        assert abs(sim - p) <= 5 * np.sqrt(p * (1 - p) / dots.size) + 1e-4, (e, sim, p)


def test_inner_product_tail_is_accurate_far_below_the_float_eps(x64):
    # On S^4 (dim 5) the density of <u, v> is (3/4)(1 - t^2): tail = (1 - eps)^2 (2 + eps) / 2.
    gap = np.array([1e-3, 1e-6, 1e-10])
    eps = 1 - gap
    np.testing.assert_allclose(bounds.inner_product_tail(5, eps), gap**2 * (2 + eps) / 2,
                               rtol=1e-6)
    eps = np.array([0.5, 0.9, 0.99])  # tails 2.6e-5, 4.9e-24, 1.9e-54 at dim 63
    np.testing.assert_allclose(bounds.inner_product_tail(63, eps),
                               scipy.stats.beta(0.5, 31).sf(eps**2), rtol=1e-8)


def test_levy_and_chi_tails_bound_the_exact_tails():
    n = 64
    eps = np.linspace(0.01, 1, 100)
    assert np.all(np.asarray(bounds.levy_tail(n, eps)) >= bounds.inner_product_tail(n - 1, eps))
    t = np.linspace(0.01, 6, 100)
    chi = scipy.stats.chi(n - 1)
    exact = chi.sf(np.sqrt(n - 1) + t) + chi.cdf(np.sqrt(n - 1) - t)
    assert np.all(np.asarray(bounds.chi_norm_tail(t)) >= exact)
    # Informative (below 1) only from eps ~ sqrt(2 ln 2 / (n - 2)) = 0.15 on.
    informative = np.asarray(bounds.informative(bounds.levy_tail(n, eps)))
    np.testing.assert_allclose(eps[informative].min(), np.sqrt(2 * np.log(2) / (n - 2)), atol=0.011)


def test_theorem1_and_depth_closed_forms():
    np.testing.assert_allclose(bounds.theorem1_failure_probability(64, 0.25, 0.01), 0.01 + 2 * np.exp(-2))
    np.testing.assert_allclose(bounds.theorem1_bound(0.1, 0.01), 0.18)
    depth = float(bounds.effective_depth(0.5, 1e-3))
    np.testing.assert_allclose(0.5**depth, 1e-3, rtol=1e-5)
    np.testing.assert_allclose(bounds.wedin_sin_theta(0.2, 0.5), 0.4)


def test_lemma3_holds_on_random_inputs(rng):
    b = rng.normal(size=(5000, 8))
    direction = rng.normal(size=(5000, 8))
    scale = rng.uniform(0, 0.5, size=(5000, 1)) * np.linalg.norm(b, axis=1, keepdims=True)
    delta = direction / np.linalg.norm(direction, axis=1, keepdims=True) * scale
    a = b + delta
    lhs = np.linalg.norm(a / np.linalg.norm(a, axis=1, keepdims=True)
                         - b / np.linalg.norm(b, axis=1, keepdims=True), axis=1)
    rhs = np.asarray(bounds.lemma3_bound(np.linalg.norm(delta, axis=1), np.linalg.norm(b, axis=1)))
    assert np.all(lhs <= rhs)


def test_lemma2_and_snr_on_sinkhorn_dsms(rng):
    """||M P x|| <= sigma_2 ||P x|| (Lemma 2), so the paper's SNR approximation bounds the
    exact numerator; both against float64 numpy."""
    costs = rng.random((6, 16, 16)).astype(np.float32)
    xs = rng.normal(size=(6, 16)).astype(np.float32)
    for t in (0.05, 0.5):
        ms = jax.vmap(lambda c, t: sinkhorn(c, t).matrix, (0, None))(jnp.asarray(costs), t)
        exact = np.asarray(jax.vmap(lambda m, x: signal.snr(m, x, 0.1))(ms, jnp.asarray(xs)))
        s2 = jax.vmap(spectra.sigma2)(ms)
        approx = np.asarray(jax.vmap(lambda s, x: signal.snr_paper(s, x, 0.1))(s2, jnp.asarray(xs)))
        m64 = np.asarray(ms, np.float64)
        detail = xs - xs.mean(axis=1, keepdims=True)
        numerator = np.linalg.norm(np.einsum("bij,bj->bi", m64, detail), axis=1)
        sigma2 = ref.singular_values(m64)[:, 1]
        assert np.all(numerator <= sigma2 * np.linalg.norm(detail, axis=1) * (1 + 1e-5))
        mean_norm = 0.1 / 4 * np.sqrt(2) * np.exp(scipy.special.gammaln(8) - scipy.special.gammaln(7.5))
        np.testing.assert_allclose(exact, numerator / mean_norm, rtol=1e-4)
        np.testing.assert_allclose(approx, sigma2 * np.linalg.norm(detail, axis=1) / 0.1, rtol=1e-4)


def test_residual_stack_matches_numpy_and_stagnates(rng):
    m = np.full((8, 8), 1 / 8, np.float32) * 0.9 + np.eye(8, dtype=np.float32) * 0.1
    x = rng.normal(size=8).astype(np.float32)
    xs, norms = signal.residual_stack(jnp.asarray(m), jnp.asarray(x), 5)
    cur = x.astype(np.float64)
    for layer in range(5):
        update = np.maximum(m.astype(np.float64) @ cur, 0)
        cur = cur + update
        np.testing.assert_allclose(np.asarray(xs[layer]), cur, rtol=1e-5)
        np.testing.assert_allclose(float(norms[layer]), np.linalg.norm(update), rtol=1e-5)
