"""What a DSM layer does to signals (Homogeneity Trap, sections 2-4).

Pure functions of arrays and keys; vmap over trials as the sweep engine does. The noise
scale ``nu`` is traced data.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
from jax.scipy.special import gammaln

from jaxdsm import _checks, spectra

_HIGHEST = jax.lax.Precision.HIGHEST


def center(x: jax.Array) -> jax.Array:
    """P x with P = I - J/n: the detail component (mean removed along the last axis)."""
    return x - jnp.mean(x, axis=-1, keepdims=True)


def layer_norm(y: jax.Array) -> jax.Array:
    """Assumption 3: LN(y) = sqrt(n) P y / ||P y|| (no affine parameters)."""
    detail = center(y)
    n = y.shape[-1]
    return jnp.sqrt(n) * detail / jnp.linalg.norm(detail, axis=-1, keepdims=True)


def affine_layer_norm(y: jax.Array, scale: jax.Array, bias: jax.Array) -> jax.Array:
    """LayerNorm with learnable affine parameters (sec. 4.2): scale * LN(y) + bias, where
    ``scale`` and ``bias`` are per-coordinate vectors (or anything broadcasting to y)."""
    return scale * layer_norm(y) + bias


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


def angle_between(u: jax.Array, v: jax.Array) -> jax.Array:
    """The angle between u and v in radians, 2 asin(||u/|u| - v/|v||| / 2): accurate for
    small angles, where arccos of a float32 cosine is not (it rounds to 1 below ~3e-4)."""
    u_hat = u / scaled_norm(u, keepdims=True)
    v_hat = v / scaled_norm(v, keepdims=True)
    return 2 * jnp.arcsin(jnp.minimum(jnp.linalg.norm(u_hat - v_hat, axis=-1) / 2, 1))


def scaled_norm(v: jax.Array, keepdims: bool = False) -> jax.Array:
    """||v||_2 over the last axis as max|v_i| ||v / max|v_i|||: finite for every finite v,
    where jnp.linalg.norm squares the entries and overflows float32 once ||v|| > ~1.8e19."""
    scale = jnp.max(jnp.abs(v), axis=-1, keepdims=True)
    scale = jnp.where(scale > 0, scale, 1)
    norm = scale * jnp.linalg.norm(v / scale, axis=-1, keepdims=True)
    return norm if keepdims else norm[..., 0]


def detail_decay(matrix: jax.Array, x: jax.Array, depth: int) -> jax.Array:
    """log(||M^l x_perp|| / ||x_perp||) for l = 1..depth (last axis), x_perp = P x: how a detail
    input fades through ``depth`` DSM layers (Theorem 2: at most sigma_2^l).

    Layers apply B = P M P (``spectra.double_center``; M - J/n for an exact DSM): on
    1^perp it is M, and it drops the mean component that float32 rounding (or an
    unconverged Sinkhorn) would otherwise feed and keep (eigenvalue 1) while the detail
    part decays like sigma_2^l. The vector is renormalized every layer and its log norm
    accumulated, so no power underflows.
    """
    _checks.check_positive_int(depth, "depth")
    b = spectra.double_center(matrix)
    y = center(x)
    y = y / jnp.linalg.norm(y, axis=-1, keepdims=True)

    def layer(y, _):
        y = jnp.matmul(b, y[..., None], precision=_HIGHEST)[..., 0]
        size = jnp.linalg.norm(y, axis=-1, keepdims=True)
        return y / size, jnp.log(size[..., 0])

    _, log_gains = jax.lax.scan(layer, y, None, length=depth)
    return jnp.cumsum(jnp.moveaxis(log_gains, 0, -1), axis=-1)


def _relu_increment(mu, z):
    # relu(mu + z) - relu(mu) without subtracting two large numbers.
    return jnp.where(mu >= 0, jnp.maximum(z, -mu), jnp.maximum(mu + z, 0))


def _tanh_increment(mu, z):
    # tanh(mu + z) - tanh(mu) = sinh(z) / (cosh(mu) cosh(mu + z)), written with exponents
    # |z| - |mu| - |mu + z| <= 0: no cancellation near tanh = +-1 and no overflow.
    a, s = jnp.abs(mu), jnp.abs(mu + z)
    scale = 2 * jnp.exp(jnp.abs(z) - a - s) / ((1 + jnp.exp(-2 * a)) * (1 + jnp.exp(-2 * s)))
    return jnp.sign(z) * scale * -jnp.expm1(-2 * jnp.abs(z))


# phi and its increment phi(mu + z) - phi(mu), for residual_metrics.
RESIDUAL_ACTIVATIONS = {
    "relu": (jax.nn.relu, _relu_increment),
    "identity": (lambda v: v, lambda mu, z: z),
    "tanh": (jnp.tanh, _tanh_increment),
}


def residual_metrics(matrix: jax.Array, x: jax.Array, depth: int, activation: str = "relu",
                     *, mean=None):
    """Proposition 1's stack x_{l+1} = x_l + phi(M x_l), measured at layers l = 0..depth-1.

    The input is x_0 = mean 1 + P x; ``mean`` defaults to x's own mean, and ``mean=0`` gives
    an exactly mean-free input (a float32 P x keeps a ~1e-9 mean). Returns a dict of
    (depth,) arrays (single trial; vmap for batches):
      update_ratio         ||phi(M x_l)|| / ||x_l||   (Prop. 1: <= sigma_2 for x_l in 1^perp)
      detail_update_ratio  ||P phi(M x_l)|| / ||P x_l||
      step_angle           angle(x_l, x_{l+1})
      total_angle          angle(x_0, x_{l+1})
      detail_total_angle   angle(P x_0, P x_{l+1})
      mean_cosine          <x_{l+1}, 1> / (sqrt(n) ||x_{l+1}||), the cosine to the all-ones
                           direction (-> 1: the state collapses onto the mean)
    Angles in radians. ``activation``: "relu", "identity" or "tanh".

    The layer applies the exactly doubly stochastic operator J/n + P M P: M's action on
    1^perp, and the identity on the mean. M itself differs from it by its marginal error
    (~1e-7 for a converged float32 Sinkhorn), but the mean of x_l can double every layer
    (x + phi(x) = 2x on constants for ReLU and identity), and 1e-7 times a mean of 2^30
    would swamp the detail part. For the same reason the state is carried as
    x = mu 1 + d (d in 1^perp): with z = P M P d, phi(mu + z) = phi(mu) + w, the increment w
    in closed form, so the detail part keeps its digits. The mean of the update is
    phi(mu) + mean(w - z), as z is mean-free; w - z is exactly 0 for the identity and
    exact for ReLU, so rounding creates no mean that the stack would then double. Norms and
    angles use the isometry x -> (sqrt(n) mu, d) and ``scaled_norm`` (the squares of a plain
    norm overflow float32 from layer ~62 on when the mean doubles). The state itself grows at
    most 2x per layer and overflows past ~2^127, so keep depth below ~120 in float32; a
    non-finite metric means it did.
    """
    _checks.check_positive_int(depth, "depth")
    phi, increment = RESIDUAL_ACTIVATIONS[
        _checks.check_choice(activation, RESIDUAL_ACTIVATIONS, "activation")]
    detail_operator = spectra.double_center(matrix)
    root_n = jnp.sqrt(jnp.asarray(x.shape[-1], x.dtype))

    def embed(mu, d):  # x -> (sqrt(n) mu, d): same norms and angles as x itself
        return jnp.concatenate([(root_n * mu)[None], d])

    def layer(state, _):
        mu, d = state
        z = jnp.matmul(detail_operator, d, precision=_HIGHEST)
        w = increment(mu, z)
        update_mean = phi(mu) + jnp.mean(w - z)
        update_detail = center(w)
        new_mu, new_d = mu + update_mean, d + update_detail
        x_l, x_next = embed(mu, d), embed(new_mu, new_d)
        metrics = {
            "update_ratio": scaled_norm(embed(update_mean, update_detail)) / scaled_norm(x_l),
            "detail_update_ratio": scaled_norm(update_detail) / scaled_norm(d),
            "step_angle": angle_between(x_l, x_next),
            "total_angle": angle_between(x_first, x_next),
            "detail_total_angle": angle_between(d_first, new_d),
            "mean_cosine": root_n * new_mu / scaled_norm(x_next),
        }
        return (new_mu, new_d), metrics

    mu0 = jnp.mean(x) if mean is None else jnp.asarray(mean, x.dtype)
    d_first = center(x)
    x_first = embed(mu0, d_first)
    _, metrics = jax.lax.scan(layer, (mu0, d_first), None, length=depth)
    return metrics
