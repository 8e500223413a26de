"""Noisy point matching (Toy A of jaxdsm's EPH-ASC specification, section 5;
the project's design notes, not in this repository).

Data: one fixed smooth random bijection g per dataset (rotation, invertible coordinate-wise
warp, additive coupling, rotation). An instance is x_1..x_N ~ N(0, I_d), a random
permutation pi, and y_j = g(x_pi(j)) + sigma * noise. Row i of the plan (point x_i) should
put its mass on column j = pi^-1(i), the ``target``.

Model: two MLP encoders phi (for x) and psi (for y) with L2-normalised outputs and the
bounded cost C_ij = 1 - <phi(x_i), psi(y_j)> in [0, 2]; logits = -C. A bounded cost keeps
the net from learning its own scale, so eps really sets the sharpness of the plan.
"""

from __future__ import annotations

from typing import NamedTuple

import flax.linen as nn
import jax
import jax.numpy as jnp


class Bijection(NamedTuple):
    """Parameters of g(x) = R2 couple(warp(R1 x)); leading axes allowed (vmapped datasets)."""

    rotation_in: jax.Array  # (d, d) orthogonal
    rotation_out: jax.Array  # (d, d) orthogonal
    amplitude: jax.Array  # (d,) warp a
    frequency: jax.Array  # (d,) warp b; |a b| < 1 keeps z + a tanh(b z + c) increasing
    shift: jax.Array  # (d,) warp c
    coupling: jax.Array  # () strength of z_last += coupling * sin(z_first)


def random_bijection(key: jax.Array, dim: int) -> Bijection:
    """A smooth random bijection of R^d (d >= 1), deterministic in ``key``."""
    k_r1, k_r2, k_a, k_b, k_c, k_s, k_k = jax.random.split(key, 7)

    def rotation(k):
        q, r = jnp.linalg.qr(jax.random.normal(k, (dim, dim)))
        return q * jnp.sign(jnp.diag(r))  # Haar-distributed orthogonal matrix

    frequency = jax.random.uniform(k_b, (dim,), minval=0.5, maxval=1.5)
    sign = jnp.where(jax.random.bernoulli(k_s, 0.5, (dim,)), 1.0, -1.0)
    # |a b| in [0.4, 0.8]: a clear warp whose derivative 1 + a b sech^2 stays >= 0.2.
    amplitude = sign * jax.random.uniform(k_a, (dim,), minval=0.4, maxval=0.8) / frequency
    return Bijection(
        rotation_in=rotation(k_r1),
        rotation_out=rotation(k_r2),
        amplitude=amplitude,
        frequency=frequency,
        shift=jax.random.uniform(k_c, (dim,), minval=-1.0, maxval=1.0),
        coupling=jax.random.uniform(k_k, (), minval=0.3, maxval=0.7) * (dim > 1),
    )


def apply_bijection(g: Bijection, x: jax.Array) -> jax.Array:
    """g(x) for x of shape (..., d)."""
    z = x @ g.rotation_in.T
    z = z + g.amplitude * jnp.tanh(g.frequency * z + g.shift)
    # Additive coupling (invertible: subtract it back) mixes the coordinates non-linearly.
    z = z.at[..., -1].add(g.coupling * jnp.sin(z[..., 0]))
    return z @ g.rotation_out.T


class Instances(NamedTuple):
    """A batch of matching instances: x (B, N, d), y (B, N, d), perm pi (B, N), target (B, N).

    y[b, j] = g(x[b, perm[b, j]]) + noise; target[b, i] = j with perm[b, j] = i."""

    x: jax.Array
    y: jax.Array
    perm: jax.Array
    target: jax.Array


def sample_instances(key: jax.Array, g: Bijection, batch: int, n: int, sigma) -> Instances:
    """``batch`` instances of ``n`` points; ``sigma`` (traced) scales the Gaussian noise on y."""
    dim = g.rotation_in.shape[-1]
    k_x, k_perm, k_noise = jax.random.split(key, 3)
    x = jax.random.normal(k_x, (batch, n, dim))
    perm = jax.vmap(lambda k: jax.random.permutation(k, n))(jax.random.split(k_perm, batch))
    moved = apply_bijection(g, jnp.take_along_axis(x, perm[..., None], axis=1))
    y = moved + sigma * jax.random.normal(k_noise, moved.shape)
    return Instances(x, y, perm, jnp.argsort(perm, axis=-1))


class Encoder(nn.Module):
    """MLP with ``depth`` hidden layers (gelu) and an L2-normalised output of ``features``."""

    hidden: int = 64
    features: int = 16
    depth: int = 2

    @nn.compact
    def __call__(self, x):
        for _ in range(self.depth):
            x = nn.gelu(nn.Dense(self.hidden)(x))
        x = nn.Dense(self.features)(x)
        return x / jnp.sqrt(jnp.sum(x * x, axis=-1, keepdims=True) + 1e-12)


class Matcher(nn.Module):
    """logits_ij = <phi(x_i), psi(y_j)> - 1 = -C_ij, in [-2, 0]; x, y of shape (..., N, d)."""

    hidden: int = 64
    features: int = 16
    depth: int = 2

    def setup(self):
        self.phi = Encoder(self.hidden, self.features, self.depth)
        self.psi = Encoder(self.hidden, self.features, self.depth)

    def __call__(self, x, y):
        return jnp.einsum("...if,...jf->...ij", self.phi(x), self.psi(y),
                          precision=jax.lax.Precision.HIGHEST) - 1.0


def oracle_logits(g: Bijection, instances: Instances) -> jax.Array:
    """-||g(x_i) - y_j||^2: the logits of a matcher that knows g (exact at sigma = 0)."""
    gx = apply_bijection(g, instances.x)
    return -jnp.sum((gx[..., :, None, :] - instances.y[..., None, :, :]) ** 2, axis=-1)
