"""All K Sinkhorn sweeps of one matrix in one Pallas kernel that keeps it on chip.

XLA runs a batched ``fori_loop`` as one program per sweep step: every sweep streams the
whole batch of kernels through device memory (105 GB for the Exp 1 workload W, 16,000
matrices of 64 x 64 and 200 sweeps). Here each Pallas program takes one matrix: it reads
the cost d once, builds the kernel, runs every sweep in registers, and writes M once
(2 n^2 floats per trial, 0.52 GB for W). Written for GPUs (Pallas' Triton backend); on
other platforms the same kernel runs in Pallas' interpreter, which is slow and there so
that CPU tests check the kernel against the portable path.

The kernel reproduces ``sinkhorn``'s scaling form and its stabilized form without
absorption (``_ScalingForm``, ``_StabilizedForm`` there): same formulas, iterates equal up
to float rounding (the reduction order differs), no stop on repeat (that only saves work
and leaves the bits of all K sweeps). ``sinkhorn(..., fused=True)`` calls it and keeps
everything else (marginal errors, the stabilized form's rerun with absorptions, gradients
through the portable sweeps).

Design after the Pallas GPU tutorials (docs.jax.dev, "Pallas: a JAX kernel language",
softmax and layer-norm examples): one program per row block, whole rows in registers.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
from jax import lax
from jax.experimental import pallas as pl
from jax.experimental.pallas import triton as pl_triton

# A 128 x 128 float32 matrix is 64 KiB, a quarter of an H100 SM's register file; larger
# matrices would spill, and the portable path streams them just as well.
MAX_N = 128


def check_size(n: int) -> None:
    if n > MAX_N:
        raise ValueError(f"fused=True keeps the whole matrix on chip: n <= {MAX_N}, got n = {n}; "
                         "use fused=False")


def sweeps(cost: jax.Array, temperature: jax.Array, iterations: int, *, stabilized: bool
           ) -> tuple[jax.Array, jax.Array]:
    """(M after ``iterations`` sweeps, record) for one (n, n) cost; vmap adds a grid axis.

    ``record`` is the stabilized form's elementwise max of u, 1/u, v, 1/v over the sweeps
    (``sinkhorn._StabilizedForm.exact`` decides from it whether to rerun with absorptions).
    """
    n = cost.shape[-1]
    check_size(n)
    size = pl.next_power_of_2(n)  # Triton blocks have power-of-two sides
    padded = jnp.pad(cost, ((0, size - n), (0, size - n)))
    scale = jnp.reshape(-1 / jnp.asarray(temperature, cost.dtype), (1,))
    kernel = functools.partial(_sweeps_kernel, n=n, iterations=iterations, stabilized=stabilized)

    def call(interpret):
        return pl.pallas_call(
            kernel,
            out_shape=(jax.ShapeDtypeStruct((size, size), cost.dtype),
                       jax.ShapeDtypeStruct((size,), cost.dtype)),
            interpret=interpret,
            compiler_params=pl_triton.CompilerParams(num_warps=4 if size <= 64 else 8),
        )

    matrix, record = lax.platform_dependent(
        padded, scale,
        cuda=call(interpret=False), rocm=call(interpret=False), default=call(interpret=True))
    return matrix[:n, :n], record[:n]


def _sweeps_kernel(cost_ref, scale_ref, matrix_ref, record_ref, *, n, iterations, stabilized):
    """One matrix: build the kernel (scaling or stabilized form), sweep, write M and record.

    Padded rows and columns (n up to the next power of two) hold kernel 0 and scalings 0,
    so they add nothing to any sum; the ``where``s keep their 1/0 out of the state.
    """
    cost = cost_ref[...]
    scale = scale_ref[0]  # -1/T, multiplied as sinkhorn does (see _shifted_log_kernel there)
    inside = lax.broadcasted_iota(jnp.int32, (cost.shape[0],), 0) < n
    inside2 = inside[:, None] & inside[None, :]
    zero = jnp.zeros((), cost.dtype)
    if stabilized:
        # The first sweep in the log domain: K~ = exp(-d/T + f + g), rows then columns.
        log_kernel = jnp.where(inside2, cost * scale, -jnp.inf)
        f = jnp.where(inside, -jax.nn.logsumexp(log_kernel, axis=1), zero)
        log_kernel = log_kernel + f[:, None]
        g = jnp.where(inside, -jax.nn.logsumexp(log_kernel, axis=0), zero)
        kernel = jnp.exp(log_kernel + g[None, :])
        first = 1
    else:
        low = jnp.min(jnp.where(inside2, cost, jnp.inf))
        kernel = jnp.exp((cost - low) * scale)
        first = 0
    kernel = jnp.where(inside2, kernel, zero)
    ones = jnp.where(inside, 1, zero).astype(cost.dtype)

    def sweep(_, carry):
        _, v, record = carry
        row_sums = jnp.sum(kernel * v[None, :], axis=1)
        u = jnp.where(inside, 1 / row_sums, zero)
        col_sums = jnp.sum(kernel * u[:, None], axis=0)
        v = jnp.where(inside, 1 / col_sums, zero)
        record = jnp.maximum(jnp.maximum(record, jnp.maximum(u, row_sums)),
                             jnp.maximum(v, col_sums))
        return u, v, record

    u, v, record = lax.fori_loop(0, iterations - first, sweep, (ones, ones, ones))
    matrix_ref[...] = u[:, None] * kernel * v[None, :]
    record_ref[...] = jnp.where(inside, record, 1)

