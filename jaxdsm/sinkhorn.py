"""Projections onto the Birkhoff polytope by Sinkhorn normalization.

Algorithm 1 of the Homogeneity Trap paper: A = exp(-d / T), then normalize rows and
columns to sum to 1, K times. Three equivalent forms of one sweep are provided:

- ``"direct"``: the paper's loop, dividing the whole matrix by its row sums, then by its
  column sums (two passes over n x n per half-sweep).
- ``"scaling"``: the same iterates written as M = diag(u) A diag(v), one matrix-vector
  product per half-sweep and no transcendental functions in the loop.
- ``"log"``: potentials f, g with log M = -d/T + f_i + g_j updated by logsumexp; stays
  finite in float32 at small T, where exp(-d/T) underflows.
- ``"auto"``: ``"scaling"`` where exp(-range(d)/T) is safely representable in the dtype,
  ``"log"`` otherwise, chosen by ``lax.cond`` on the traced temperature (one branch runs
  when the temperature is not batched; both run under a vmap over temperatures).

The design splits traced data (temperature, threshold: changing them never recompiles)
from static choices (iteration count, mode, early stopping), as in OTT-JAX's
``Sinkhorn`` solver. Nothing raises inside ``jit``/``vmap``: every output carries its own
marginal error, convergence and finiteness flags.
"""

from __future__ import annotations

import math
from typing import NamedTuple

import jax
import jax.numpy as jnp
from jax import lax

from jaxdsm import _checks

MODES = ("auto", "scaling", "log", "direct")
_HIGHEST = lax.Precision.HIGHEST

# exp(-x) is used in the scaling form only while x <= this fraction of -log(tiny):
# keeps every kernel entry, and the scalings u, v ~ 1/(n * min entry), far from under/overflow.
_SCALING_SAFE_FRACTION = 0.35


class SinkhornOutput(NamedTuple):
    """Result of one projection (leading batch axes when vmapped).

    Attributes:
      matrix: the (n, n) projected matrix M.
      row_error: max_i |sum_j M_ij - 1|.
      col_error: max_j |sum_i M_ij - 1|.
      error: max(row_error, col_error), the max marginal error.
      n_iters: number of full row-then-column sweeps performed.
      converged: ``error <= threshold``.
      finite: every entry of ``matrix`` is finite.
    """

    matrix: jax.Array
    row_error: jax.Array
    col_error: jax.Array
    error: jax.Array
    n_iters: jax.Array
    converged: jax.Array
    finite: jax.Array


def random_cost(key: jax.Array, n: int, dtype=None) -> jax.Array:
    """Algorithm 1, line 3: d ~ U[0, 1]^{n x n}."""
    _checks.check_n(n)
    dtype = jnp.dtype(dtype) if dtype is not None else jnp.zeros(()).dtype
    return jax.random.uniform(key, (n, n), dtype=dtype)


def scaling_is_safe(cost: jax.Array, temperature: jax.Array) -> jax.Array:
    """True where the plain kernel exp(-d/T) keeps a safe dynamic range in cost's dtype."""
    limit = -math.log(jnp.finfo(cost.dtype).tiny) * _SCALING_SAFE_FRACTION
    spread = jnp.max(cost) - jnp.min(cost)
    return spread / temperature <= limit


def sinkhorn(
    cost: jax.Array,
    temperature: jax.Array | float,
    *,
    max_iterations: int = 200,
    threshold: jax.Array | float = 1e-6,
    early_stop: bool = False,
    mode: str = "auto",
) -> SinkhornOutput:
    """Projects exp(-cost / temperature) onto the doubly-stochastic matrices.

    Args:
      cost: (n, n) cost matrix d (Algorithm 1 samples it from U[0, 1]).
      temperature: T > 0, traced (changing it does not recompile).
      max_iterations: K, the number of row-then-column sweeps (static). With
        ``early_stop`` it is the cap.
      threshold: marginal-error tolerance (traced); sets ``converged`` and, with
        ``early_stop``, the stopping rule.
      early_stop: static. False: exactly ``max_iterations`` sweeps in a ``fori_loop``
        (the paper's fixed K). True: a ``while_loop`` that stops after the first sweep
        whose max marginal error is <= ``threshold``.
      mode: "auto", "scaling", "log" or "direct" (see the module docstring).

    Returns:
      A ``SinkhornOutput``. Rows and columns of ``matrix`` sum to 1 up to ``error``.
    """
    cost = jnp.asarray(cost)
    if not jnp.issubdtype(cost.dtype, jnp.floating):
        cost = cost.astype(jnp.zeros(()).dtype)
    _checks.check_square(cost, "cost")
    _checks.check_choice(mode, MODES, "mode")
    _checks.check_positive_int(max_iterations, "max_iterations")
    _checks.check_temperature(temperature)
    temperature = jnp.asarray(temperature, cost.dtype)
    threshold = jnp.asarray(threshold, cost.dtype)

    def run(form):
        return _iterate(form, cost, temperature, threshold, max_iterations, early_stop)

    if mode == "auto":
        outputs = lax.cond(
            scaling_is_safe(cost, temperature),
            lambda: run(_ScalingForm),
            lambda: run(_LogForm),
        )
    else:
        outputs = run(_FORMS[mode])
    return _finish(*outputs, threshold)


def marginal_errors(matrix: jax.Array) -> tuple[jax.Array, jax.Array]:
    """(max_i |row sum_i - 1|, max_j |column sum_j - 1|) of ``matrix``."""
    row_error = jnp.max(jnp.abs(jnp.sum(matrix, axis=-1) - 1), axis=-1)
    col_error = jnp.max(jnp.abs(jnp.sum(matrix, axis=-2) - 1), axis=-1)
    return row_error, col_error


def _finish(matrix, n_iters, row_error, col_error, threshold) -> SinkhornOutput:
    error = jnp.maximum(row_error, col_error)
    finite = jnp.all(jnp.isfinite(matrix))
    # NaN errors compare False, so a non-finite matrix is never "converged".
    converged = (error <= threshold) & finite
    return SinkhornOutput(matrix, row_error, col_error, error, n_iters, converged, finite)


def _iterate(form, cost, temperature, threshold, max_iterations, early_stop):
    """Runs sweeps of ``form``; returns (matrix, n_iters, row_error, col_error).

    Iterate 0 is the raw kernel; each sweep normalizes rows, then columns, exactly as
    Algorithm 1, so ``n_iters`` counts the paper's K. With early stopping, the error
    tested after each sweep is the one ``_finish`` reports, measured on the matrix
    itself: stopping and ``converged`` agree by construction (the price is one extra
    pass over the matrix per sweep; a float32 row sum rounds at a few 1e-7, so a cheaper
    in-loop estimate could stop on a matrix that then fails the tolerance).
    """
    state = form.init(cost, temperature)
    if not early_stop:
        state = lax.fori_loop(0, max_iterations, lambda _, s: form.sweep(s), state)
        matrix = form.matrix(state)
        return (matrix, jnp.asarray(max_iterations, jnp.int32), *marginal_errors(matrix))

    def cond(carry):
        _, _, it, row_error, col_error = carry
        err = jnp.maximum(row_error, col_error)
        # NaN compares False: a non-finite iterate keeps going until the cap.
        return ~(err <= threshold) & (it < max_iterations)

    def body(carry):
        state, _, it, _, _ = carry
        state = form.sweep(state)
        # The matrix and errors tested here are the ones returned: recomputing either
        # after the loop may round differently (XLA fuses each program its own way) and
        # fail the tolerance the loop just accepted.
        matrix = form.matrix(state)
        return (state, matrix, it + 1, *marginal_errors(matrix))

    inf = jnp.asarray(jnp.inf, cost.dtype)
    start = (state, jnp.zeros_like(cost), jnp.asarray(0, jnp.int32), inf, inf)
    _, matrix, n_iters, row_error, col_error = lax.while_loop(cond, body, start)
    return matrix, n_iters, row_error, col_error


# Each form: init(cost, T) -> state (iterate 0, the raw kernel); sweep(state) -> state
# after one row-then-column normalization; matrix(state) -> M.


class _DirectForm:
    """The paper's loop: A <- A / rowsums; A <- A / colsums."""

    @staticmethod
    def init(cost, temperature):
        return jnp.exp(-cost / temperature)

    @staticmethod
    def sweep(a):
        a = a / jnp.sum(a, axis=1, keepdims=True)
        return a / jnp.sum(a, axis=0, keepdims=True)

    @staticmethod
    def matrix(a):
        return a


class _ScalingForm:
    """M = diag(u) K diag(v) with K = exp(-d/T); state (K, u, v)."""

    @staticmethod
    def init(cost, temperature):
        ones = jnp.ones(cost.shape[0], cost.dtype)
        return jnp.exp(-cost / temperature), ones, ones

    @staticmethod
    def sweep(state):
        kernel, _, v = state
        # HIGHEST: GPUs (TF32) and TPUs (bf16 passes) otherwise round these products.
        u = 1 / jnp.matmul(kernel, v, precision=_HIGHEST)
        return kernel, u, 1 / jnp.matmul(kernel.T, u, precision=_HIGHEST)

    @staticmethod
    def matrix(state):
        kernel, u, v = state
        return u[:, None] * kernel * v[None, :]


class _LogForm:
    """log M = -d/T + f_i + g_j; state (-d/T, f, g)."""

    @staticmethod
    def init(cost, temperature):
        zeros = jnp.zeros(cost.shape[0], cost.dtype)
        return -cost / temperature, zeros, zeros

    @staticmethod
    def sweep(state):
        log_kernel, _, g = state
        f = -jax.nn.logsumexp(log_kernel + g[None, :], axis=1)
        return log_kernel, f, -jax.nn.logsumexp(log_kernel + f[:, None], axis=0)

    @staticmethod
    def matrix(state):
        log_kernel, f, g = state
        return jnp.exp(log_kernel + f[:, None] + g[None, :])


_FORMS = {"scaling": _ScalingForm, "log": _LogForm, "direct": _DirectForm}
