"""Closed-form bounds of the Homogeneity Trap paper (sections 3-4, Appendices A-B).

Each function is the right-hand side of a stated inequality; the empirical checks that
compare simulations with them live with the experiments. A probability bound >= 1 says
nothing; ``informative`` tells where it does.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
from jax.scipy.special import betainc


def levy_tail(n: int, eps) -> jax.Array:
    """Levy (Theorem 1, step 3): P(|<u, v>| >= eps) <= 2 exp(-(n - 2) eps^2 / 2) for u, v
    independent uniform on S^{n-2} (the sphere of 1^perp in R^n)."""
    return 2 * jnp.exp(-(n - 2) * jnp.square(eps) / 2)


def inner_product_tail(dim: int, eps) -> jax.Array:
    """Exact P(|<u, v>| >= eps) for u, v independent uniform on S^{dim-1} (in R^dim).

    <u, v>^2 ~ Beta(1/2, (dim-1)/2), so the tail is 1 - I_{eps^2}(1/2, (dim-1)/2). For the
    detail subspace of R^n, dim = n - 1.
    """
    eps = jnp.clip(jnp.asarray(eps, jnp.result_type(float)), 0, 1)
    return 1 - betainc(0.5, (dim - 1) / 2, jnp.square(eps))


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
