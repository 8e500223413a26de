"""Closed-form bounds of the Homogeneity Trap paper (sections 3-4, Appendices A-B).

Each function is the right-hand side of a stated inequality; ``tail_check`` compares a
simulated tail with one, with binomial confidence limits. A probability bound >= 1 says
nothing; ``informative`` tells where it does.
"""

from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import scipy.stats
from jax.scipy.special import betainc

from jaxdsm import spectra


def levy_tail(n: int, eps) -> jax.Array:
    """Levy (Theorem 1, step 3): P(|<u, v>| >= eps) <= 2 exp(-(n - 2) eps^2 / 2) for u, v
    independent uniform on S^{n-2} (the sphere of 1^perp in R^n)."""
    return 2 * jnp.exp(-(n - 2) * jnp.square(eps) / 2)


def inner_product_tail(dim: int, eps) -> jax.Array:
    """Exact P(|<u, v>| >= eps) for u, v independent uniform on S^{dim-1} (in R^dim).

    <u, v>^2 ~ Beta(1/2, (dim-1)/2), so the tail is 1 - I_{eps^2}(1/2, (dim-1)/2) =
    I_{1-eps^2}((dim-1)/2, 1/2), the second form accurate for tails far below the float eps.
    For the detail subspace of R^n, dim = n - 1.
    """
    eps = jnp.clip(jnp.asarray(eps, jnp.result_type(float)), 0, 1)
    return betainc((dim - 1) / 2, 0.5, 1 - jnp.square(eps))


def chi_norm_tail(t) -> jax.Array:
    """Appendix A: P(| ||g_k|| - sqrt(k) | >= t) <= 2 exp(-t^2 / 2) (Gaussian concentration)."""
    return 2 * jnp.exp(-jnp.square(t) / 2)


def theorem1_failure_probability(n: int, eps, delta=0.0, *, c=0.5, big_c=2.0) -> jax.Array:
    """Theorem 1: |<u, v>| <= eps + 8 gamma fails with probability <= delta + C exp(-c n eps^2)
    (Appendix A: C = 2, c = 1/2)."""
    return delta + big_c * jnp.exp(-c * n * jnp.square(eps))


def theorem1_bound(eps, gamma) -> jax.Array:
    """Theorem 1's bound on |<u, v>|: eps + 8 gamma (stated for gamma <= 1/8)."""
    return eps + 8 * gamma


def lemma3_bound(a_minus_b_norm, b_norm) -> jax.Array:
    """Lemma 3: ||a/|a| - b/|b||| <= 4 ||a - b|| / ||b|| when ||a - b|| <= ||b|| / 2."""
    return 4 * a_minus_b_norm / b_norm


def wedin_sin_theta(perturbation_norm, gap) -> jax.Array:
    """Appendix B (Wedin): ||sin Theta|| <= ||E||_2 / gap."""
    return perturbation_norm / gap


def effective_depth(sigma2, eps) -> jax.Array:
    """Theorem 2: D_eff(eps) = ln(1/eps) / (-ln sigma_2)."""
    return jnp.log(1 / eps) / -jnp.log(sigma2)


def informative(probability_bound) -> jax.Array:
    """A probability bound says something only below 1."""
    return probability_bound < 1


class TailCheck(NamedTuple):
    """An empirical tail P(X >= x) beside a bound on it, over a grid of x (numpy arrays).

    ``lower`` and ``upper`` are one-sided Clopper-Pearson limits of the true tail, holding
    simultaneously over the grid (or over ``comparisons`` points, where one claim pools
    several grids) with probability >= ``confidence`` (Bonferroni), so
    ``holds`` and ``violated`` are statistical statements. Where neither is true the
    samples cannot tell (too few of them for a tail that small).
    """

    x: np.ndarray
    count: np.ndarray  # samples with X >= x
    samples: int
    empirical: np.ndarray  # count / samples
    lower: np.ndarray
    upper: np.ndarray
    bound: np.ndarray
    holds: np.ndarray  # upper <= bound: the tail is below the bound
    violated: np.ndarray  # lower > bound: the tail exceeds the bound
    informative: np.ndarray  # bound < 1: the bound says something
    confidence: float

    def informative_range(self) -> tuple[float, float] | None:
        """(smallest, largest) grid x where the bound is below 1; None if nowhere."""
        x = self.x[self.informative]
        return (float(x.min()), float(x.max())) if x.size else None


def clopper_pearson(count, samples: int, alpha: float) -> tuple[np.ndarray, np.ndarray]:
    """One-sided Clopper-Pearson limits (lower, upper) of a binomial proportion, each at
    level ``alpha``: P(p < lower) <= alpha and P(p > upper) <= alpha."""
    count = np.asarray(count, np.float64)
    with np.errstate(invalid="ignore"):
        lower = scipy.stats.beta.ppf(alpha, count, samples - count + 1)
        upper = scipy.stats.beta.ppf(1 - alpha, count + 1, samples - count)
    return np.where(count > 0, lower, 0.0), np.where(count < samples, upper, 1.0)


def tail_check(values, x, bound, *, confidence: float = 0.999,
               comparisons: int | None = None) -> TailCheck:
    """Compares the empirical tail P(X >= x) of ``values`` with ``bound`` (one per grid x).

    ``confidence`` is shared (Bonferroni) by ``comparisons`` grid points, this grid's size
    by default; a claim that pools several grids passes their total. For |X| pass absolute
    values. Host-side numpy/scipy (a summary of finished samples).
    """
    values = np.asarray(values, np.float64).ravel()
    x = np.asarray(x, np.float64)
    if values.size == 0 or not np.all(np.isfinite(values)):
        raise ValueError("values must be a non-empty array of finite numbers")
    if x.ndim != 1 or x.size == 0:
        raise ValueError(f"x must be a non-empty 1-D grid, got shape {x.shape}")
    if not 0 < confidence < 1:
        raise ValueError(f"confidence must be in (0, 1), got {confidence}")
    comparisons = x.size if comparisons is None else comparisons
    if comparisons < x.size:
        raise ValueError(f"comparisons ({comparisons}) must be >= the grid size {x.size}")
    bound = np.broadcast_to(np.asarray(bound, np.float64), x.shape)
    samples = values.size
    count = samples - np.searchsorted(np.sort(values), x, side="left")
    lower, upper = clopper_pearson(count, samples, (1 - confidence) / comparisons)
    return TailCheck(x, count, samples, count / samples, lower, upper, bound, upper <= bound,
                     lower > bound, bound < 1, confidence)


def sin_theta(basis_a: jax.Array, basis_b: jax.Array) -> jax.Array:
    """||sin Theta||_2 between the spans of two orthonormal bases (n x r each): the sine
    of the largest principal angle, ||(I - Q_b Q_b^T) Q_a||_2."""
    residual = basis_a - basis_b @ (basis_b.T @ basis_a)
    return spectra.singular_values(residual)[..., 0]
