"""What a DSM layer does to signals (Homogeneity Trap, sections 2-4).

Pure functions of arrays and keys; vmap over trials as the sweep engine does. The noise
scale ``nu`` is traced data.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
from jax.scipy.special import gammaln


def center(x: jax.Array) -> jax.Array:
    """P x with P = I - J/n: the detail component (mean removed along the last axis)."""
    return x - jnp.mean(x, axis=-1, keepdims=True)


def layer_norm(y: jax.Array) -> jax.Array:
    """Assumption 3: LN(y) = sqrt(n) P y / ||P y|| (no affine parameters)."""
    detail = center(y)
    n = y.shape[-1]
    return jnp.sqrt(n) * detail / jnp.linalg.norm(detail, axis=-1, keepdims=True)


def isotropic_noise(key: jax.Array, n: int, nu, dtype=None) -> jax.Array:
    """Assumption 2: xi ~ N(0, nu^2 / n I_n)."""
    dtype = dtype or jnp.zeros(()).dtype
    return nu / jnp.sqrt(n) * jax.random.normal(key, (n,), dtype)


def expected_projected_noise_norm(n: int, nu) -> jax.Array:
    """E||P xi|| exactly: (nu / sqrt(n)) E||g_{n-1}|| = (nu/sqrt(n)) sqrt(2) G(n/2) / G((n-1)/2).

    Remark 1 states nu sqrt((n-1)/n); that is sqrt(E||P xi||^2), an upper bound (Jensen).
    """
    k = n - 1
    mean_chi = jnp.sqrt(2.0) * jnp.exp(gammaln((k + 1) / 2) - gammaln(k / 2))
    return nu / jnp.sqrt(n) * mean_chi


def snr(matrix: jax.Array, x: jax.Array, nu) -> jax.Array:
    """Spectral SNR gamma (eq. 4), exactly: ||M P x|| / E||P xi||."""
    signal = jnp.linalg.norm(matrix @ center(x), axis=-1)
    return signal / expected_projected_noise_norm(x.shape[-1], nu)


def snr_paper(sigma2: jax.Array, x: jax.Array, nu) -> jax.Array:
    """The paper's approximation of gamma, sigma_2(M) ||P x|| / nu.

    Its numerator bounds the exact one (Lemma 2) and it takes E||P xi|| ~ nu. Takes
    sigma_2 rather than M so that a caller who already has it does not recompute it.
    """
    return sigma2 * jnp.linalg.norm(center(x), axis=-1) / nu


def propagate(key: jax.Array, matrix: jax.Array, x: jax.Array, nu) -> jax.Array:
    """One noisy DSM layer followed by LN: LN(M x + xi)."""
    xi = isotropic_noise(key, x.shape[-1], nu, x.dtype)
    return layer_norm(matrix @ x + xi)


def pair_with_cosine(key: jax.Array, n: int, cosine, dtype=None) -> tuple[jax.Array, jax.Array]:
    """Two unit vectors in 1^perp (times sqrt(n)) whose cosine similarity is ``cosine``."""
    dtype = dtype or jnp.zeros(()).dtype
    k1, k2 = jax.random.split(key)
    a = center(jax.random.normal(k1, (n,), dtype))
    a = a / jnp.linalg.norm(a)
    b = center(jax.random.normal(k2, (n,), dtype))
    b = b - jnp.dot(a, b) * a
    b = b / jnp.linalg.norm(b)
    c = jnp.asarray(cosine, dtype)
    return jnp.sqrt(n) * a, jnp.sqrt(n) * (c * a + jnp.sqrt(1 - c**2) * b)


def cosine_similarity(u: jax.Array, v: jax.Array) -> jax.Array:
    return jnp.sum(u * v, axis=-1) / (jnp.linalg.norm(u, axis=-1) * jnp.linalg.norm(v, axis=-1))


def residual_stack(matrix: jax.Array, x: jax.Array, depth: int, activation=jax.nn.relu):
    """Proposition 1: x_{l+1} = x_l + phi(M x_l); returns (x_1..x_L, ||update_l||) stacked."""

    def step(x, _):
        update = activation(matrix @ x)
        x = x + update
        return x, (x, jnp.linalg.norm(update, axis=-1))

    _, (xs, norms) = jax.lax.scan(step, x, None, length=depth)
    return xs, norms
