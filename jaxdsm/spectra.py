"""Spectral measurements of (nearly) doubly-stochastic matrices.

Conventions: singular values in descending order; sigma_1 of an exact DSM is 1 (its
singular vectors are 1/sqrt(n)), so sigma_2 is the operator norm of M on the detail
subspace 1^perp (Lemma 2 of the Homogeneity Trap paper).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

_HIGHEST = jax.lax.Precision.HIGHEST


def singular_values(matrix: jax.Array) -> jax.Array:
    """All singular values, descending (a full SVD without vectors)."""
    return jnp.linalg.svd(matrix, compute_uv=False)


def double_center(matrix: jax.Array) -> jax.Array:
    """P M P with P = I - J/n: removes the mean component on both sides.

    For an exact DSM this is M - J/n, whose largest singular value is sigma_2(M).
    Subtracting J/n before any product keeps small sigma_2 (high T) accurate in float32.
    """
    row_mean = jnp.mean(matrix, axis=-1, keepdims=True)
    col_mean = jnp.mean(matrix, axis=-2, keepdims=True)
    return matrix - row_mean - col_mean + jnp.mean(matrix, axis=(-2, -1), keepdims=True)


def top_two_singular_values(
    matrix: jax.Array, *, block: int = 8, squarings: int = 8
) -> jax.Array:
    """(sigma_1, sigma_2) without a full SVD, by subspace iteration with Rayleigh-Ritz.

    1. G = B^T B with B = P M P: the detail part of M, so sigma_1 = 1 does not swamp
       the rest (and small sigma_2 at high T keeps its float32 accuracy).
    2. G is squared ``squarings`` times (trace-normalized): a power 2**squarings that
       separates the top ``block`` eigenvectors from the rest.
    3. Q = orthonormal basis of [1/sqrt(n), G^p X0] for a fixed random X0 (n x block).
    4. The singular values of M Q (n x (block + 1)) are Ritz values of M: the top two
       approximate sigma_1 and sigma_2 of M itself, also when M is not exactly doubly
       stochastic (unconverged Sinkhorn at low T).

    The error decays like (sigma_{block+2} / sigma_2)^(2^(squarings+1)); clustered values
    inside the block are resolved exactly by the Rayleigh-Ritz step. The tests compare it
    with the full SVD across temperatures. Costs squarings + 2 matmuls, a thin QR and a
    thin SVD, about half of a full batched SVD at n = 64 on CPU.
    """
    n = matrix.shape[-1]
    b = double_center(matrix)
    gram = jnp.matmul(jnp.swapaxes(b, -1, -2), b, precision=_HIGHEST)
    tiny = jnp.finfo(matrix.dtype).tiny
    for _ in range(squarings):
        gram = jnp.matmul(gram, gram, precision=_HIGHEST)
        scale = jnp.trace(gram, axis1=-2, axis2=-1)[..., None, None]
        gram = gram / jnp.maximum(scale, tiny)
    probe = jax.random.normal(jax.random.PRNGKey(0), (n, block), matrix.dtype)
    dominant = jnp.matmul(gram, probe, precision=_HIGHEST)
    mean_direction = jnp.full(dominant.shape[:-1] + (1,), n**-0.5, matrix.dtype)
    basis, _ = jnp.linalg.qr(jnp.concatenate([mean_direction, dominant], axis=-1))
    ritz = jnp.linalg.svd(jnp.matmul(matrix, basis, precision=_HIGHEST), compute_uv=False)
    return ritz[..., :2]


def entropy(matrix: jax.Array) -> jax.Array:
    """H(M) = -sum_ij M_ij log M_ij with 0 log 0 = 0 (negative entries count as 0)."""
    # One array type for the mask and the log: numpy keeps subnormals that XLA flushes.
    matrix = jnp.asarray(matrix)
    safe = jnp.where(matrix > 0, matrix, 1)
    return -jnp.sum(jnp.where(matrix > 0, matrix * jnp.log(safe), 0), axis=(-2, -1))


def eigenvalues_by_modulus(matrix: jax.Array) -> jax.Array:
    """All eigenvalues sorted by decreasing modulus (non-symmetric eig: CPU in JAX)."""
    lam = jnp.linalg.eigvals(matrix)
    return jnp.take_along_axis(lam, jnp.argsort(-jnp.abs(lam), axis=-1), axis=-1)


def lambda2_modulus(matrix: jax.Array) -> jax.Array:
    """|lambda_2|, the second-largest eigenvalue modulus (governs the asymptotic rate)."""
    return jnp.abs(eigenvalues_by_modulus(matrix)[..., 1])


def sigma2(matrix: jax.Array) -> jax.Array:
    """sigma_2 by the fast path (``top_two_singular_values``)."""
    return top_two_singular_values(matrix)[..., 1]
