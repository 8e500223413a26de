"""Projections onto the Birkhoff polytope by Sinkhorn normalization.

Algorithm 1 of the Homogeneity Trap paper: A = exp(-d / T), then normalize rows and
columns to sum to 1, K times. Equivalent forms of one sweep are provided:

- ``"direct"``: the paper's loop, dividing the whole matrix by its row sums, then by its
  column sums (two passes over n x n per half-sweep).
- ``"scaling"``: the same iterates written as M = diag(u) A diag(v), one matrix-vector
  product per half-sweep and no transcendental functions in the loop.
- ``"log"``: potentials f, g with log M = -d/T + f_i + g_j updated by logsumexp; stays
  finite in float32 at small T, where exp(-d/T) underflows. 2 n^2 exp per sweep.
- ``"stabilized"``: the log-domain potentials, but sweeps run as scalings of the
  stabilized kernel exp(-d/T + f_i + g_j), absorbed back into f, g when the scalings grow
  (Schmitzer 2019, "Stabilized sparse scaling algorithms", sec. 3; POT's
  ``sinkhorn_stabilized`` uses the same idea with a threshold). Same iterates as "log"
  at a fraction of the exps. Its sweeps track how large the scalings get; only where they
  grow enough that an entry lost to float underflow could regain weight (never in
  Algorithm 1's own range) does it rerun, absorbing as needed (``_StabilizedForm``).
- ``"auto"``: ``"scaling"`` where exp(-range(d)/T) is safely representable in the dtype,
  ``"stabilized"`` otherwise, chosen by ``lax.cond`` on the traced temperature (one branch
  runs when the predicate is not batched, see ``spread_bound``; both run otherwise).

Exactly K sweeps (``early_stop=False``, the paper's fixed K) stop as soon as the float
state repeats (``_sweeps_until_repeat``): the remaining sweeps could only reproduce it, so
the result has the bits of all K sweeps at a fraction of the work when T is not small.

``fused=True`` runs the K sweeps of the scaling and stabilized forms in one Pallas kernel
per matrix (``jaxdsm.fused``), which keeps the matrix on chip instead of streaming the
batch through memory at every sweep; for GPUs (BENCHMARKS.md says what was measured).

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

from jaxdsm import _checks, _threefry
from jaxdsm._batching import for_whole_batch

MODES = ("auto", "scaling", "stabilized", "log", "direct")
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
      n_iters: number of full row-then-column sweeps the result stands for (K without
        early stopping, even where the repeat shortcut computed fewer: same bits).
      converged: ``error <= threshold``, the matrix is finite, and no kernel entry was
        lost to underflow.
      finite: every entry of ``matrix`` is finite.
      underflow: the "scaling" or "direct" form built a kernel exp(-(d - min d)/T) with
        entries below the dtype's smallest normal number. They are flushed to 0 (XLA on
        CPU), which can change the Sinkhorn limit completely for small n, so such a
        result is never reported as converged. "auto" avoids it; "log" and
        "stabilized" never underflow.
    """

    matrix: jax.Array
    row_error: jax.Array
    col_error: jax.Array
    error: jax.Array
    n_iters: jax.Array
    converged: jax.Array
    finite: jax.Array
    underflow: jax.Array


def random_cost(key: jax.Array, n: int, dtype=None) -> jax.Array:
    """Algorithm 1, line 3: d ~ U[0, 1]^{n x n}; the bits of ``jax.random.uniform(key, (n, n),
    dtype)``, drawn about 3x faster on CPU (``_threefry``)."""
    _checks.check_n(n)
    dtype = jnp.dtype(dtype) if dtype is not None else jnp.zeros(()).dtype
    return _threefry.uniform(key, (n, n), dtype)


def random_dsm(key: jax.Array, n: int, temperature, *, max_iterations: int = 200,
               dtype=None, stop_on_repeat: bool = True, fused: bool = False) -> SinkhornOutput:
    """Algorithm 1, lines 3-9: a random cost d ~ U[0, 1]^{n x n} and K = ``max_iterations``
    sweeps. d lies in [0, 1), so ``spread_bound=1`` lets "auto" pick its form from the
    temperature alone (one branch per batch)."""
    cost = random_cost(key, n, dtype)
    return sinkhorn(cost, temperature, max_iterations=max_iterations, spread_bound=1.0,
                    stop_on_repeat=stop_on_repeat, fused=fused)


def scaling_is_safe(spread, temperature, dtype=None) -> jax.Array:
    """True where exp(-d/T) with max(d) - min(d) <= spread keeps a safe range in dtype.

    ``dtype`` defaults to the temperature's floating dtype (float32 for a Python float).
    """
    if dtype is None:
        dtype = jnp.result_type(temperature, jnp.float32)
    limit = -math.log(jnp.finfo(dtype).tiny) * _SCALING_SAFE_FRACTION
    return spread / temperature <= limit


def sinkhorn(
    cost: jax.Array,
    temperature: jax.Array | float,
    *,
    max_iterations: int = 200,
    threshold: jax.Array | float = 1e-6,
    early_stop: bool = False,
    mode: str = "auto",
    spread_bound: jax.Array | float | None = None,
    stop_on_repeat: bool = True,
    fused: bool = False,
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
        whose max marginal error is <= ``threshold``; forward-mode derivatives only
        (``jax.jvp``, ``jax.jacfwd``): reverse mode cannot go through a ``while_loop``.
      mode: "auto", "scaling", "stabilized", "log" or "direct" (module docstring). For
        the most accurate float32 reverse-mode gradients use "log" or "stabilized":
        through the "scaling" form ("auto" above T of about 0.03) ``jax.grad`` of H with
        respect to the cost is off by 4.9e-6 (T = 0.1) to 5.9e-4 (T = 10) relative to
        float64, through the log form by 4.9e-7 to 1.7e-5 (n = 64).
      spread_bound: optional upper bound on max(cost) - min(cost) (1 for Algorithm 1's
        U[0, 1] costs), used by "auto" instead of the cost's own spread. Under vmap,
        "auto" takes one branch for the whole batch (the safe "stabilized" one if any
        element needs it, see ``_batching.for_whole_batch``), so this only spares the spread
        computation and makes the choice independent of the sampled costs.
      stop_on_repeat: static; without ``early_stop``, stop the sweeps once the float state
        repeats (same result bits, see the module docstring). False runs every sweep, for
        timing the cost of K sweeps.
      fused: static; run all sweeps of each matrix in one Pallas kernel that keeps it on
        chip (``jaxdsm.fused``: written for GPUs, interpreted elsewhere, slow there).
        For n <= 128, modes "auto", "scaling" and "stabilized", without ``early_stop``.
        Same iterates up to float rounding; derivatives come from the portable sweeps.

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
    if fused:
        _check_fused(mode, early_stop)

    def run(form):
        if fused:
            *outputs, state = _fused_iterate(form, cost, temperature, max_iterations)
        else:
            *outputs, state = _iterate(form, cost, temperature, threshold, max_iterations,
                                       early_stop, stop_on_repeat)
        if form is _StabilizedForm:  # rerun with absorptions where the scalings grew too large
            outputs = lax.cond(
                for_whole_batch(form.exact(state)), lambda: tuple(outputs),
                lambda: _iterate(_AbsorbingForm, cost, temperature, threshold, max_iterations,
                                 early_stop, stop_on_repeat)[:-1])
        lost = _kernel_underflows(cost, temperature) if form.plain_kernel else jnp.asarray(False)
        return (*outputs, lost)

    if mode == "auto":
        spread = jnp.max(cost) - jnp.min(cost) if spread_bound is None else spread_bound
        outputs = lax.cond(
            for_whole_batch(scaling_is_safe(spread, temperature, cost.dtype)),
            lambda: run(_ScalingForm),
            lambda: run(_StabilizedForm),
        )
    else:
        outputs = run(_FORMS[mode])
    return _finish(*_unless_valid_temperature(temperature, *outputs), threshold)


def _unless_valid_temperature(temperature, matrix, n_iters, row_error, col_error, lost):
    """The outputs, with a NaN matrix and errors where T is not finite and > 0. Under jit
    T is traced and ``check_temperature`` cannot raise; this way ``finite`` and
    ``converged`` are False, instead of a plausible matrix for a T that has none."""
    valid = jnp.isfinite(temperature) & (temperature > 0)
    matrix, row_error, col_error = (jnp.where(valid, x, jnp.nan)
                                    for x in (matrix, row_error, col_error))
    return matrix, n_iters, row_error, col_error, lost


def marginal_errors(matrix: jax.Array) -> tuple[jax.Array, jax.Array]:
    """(max_i |row sum_i - 1|, max_j |column sum_j - 1|) of ``matrix``."""
    row_error = jnp.max(jnp.abs(jnp.sum(matrix, axis=-1) - 1), axis=-1)
    col_error = jnp.max(jnp.abs(jnp.sum(matrix, axis=-2) - 1), axis=-1)
    return row_error, col_error


def _finish(matrix, n_iters, row_error, col_error, underflow, threshold) -> SinkhornOutput:
    error = jnp.maximum(row_error, col_error)
    finite = jnp.all(jnp.isfinite(matrix))
    # NaN errors compare False, so a non-finite matrix is never "converged".
    converged = (error <= threshold) & finite & ~underflow
    return SinkhornOutput(matrix, row_error, col_error, error, n_iters, converged, finite,
                          underflow)


def _iterate(form, cost, temperature, threshold, max_iterations, early_stop, stop_on_repeat=True):
    """Runs sweeps of ``form``; returns (matrix, n_iters, row_error, col_error, final state).

    Iterate 0 is the raw kernel (the stabilized form starts at iterate 1); each sweep
    normalizes rows, then columns, exactly as Algorithm 1, so ``n_iters`` counts the
    paper's K. With early stopping, the error tested after each sweep is the one
    ``_finish`` reports, measured on the matrix itself: stopping and ``converged`` agree
    by construction (the price is one extra pass over the matrix per sweep; a float32 row
    sum rounds at a few 1e-7, so a cheaper in-loop estimate could stop on a matrix that
    then fails the tolerance).
    """
    state = form.init(cost, temperature)
    sweeps = max_iterations - form.init_sweeps
    if not early_stop:
        state = _fixed_sweeps(form, state, sweeps, stop_on_repeat)
        matrix = form.matrix(state)
        return matrix, jnp.asarray(max_iterations, jnp.int32), *marginal_errors(matrix), state

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

    if form.init_sweeps:
        matrix = form.matrix(state)
        start = (state, matrix, jnp.asarray(form.init_sweeps, jnp.int32), *marginal_errors(matrix))
    else:
        inf = jnp.asarray(jnp.inf, cost.dtype)
        start = (state, jnp.zeros_like(cost), jnp.asarray(0, jnp.int32), inf, inf)
    state, matrix, n_iters, row_error, col_error = lax.while_loop(cond, body, start)
    return matrix, n_iters, row_error, col_error, state


def _check_fused(mode, early_stop):
    """The options the fused kernel lacks (its size limit is checked by ``fused.sweeps``)."""
    if early_stop:
        raise ValueError("fused=True runs exactly max_iterations sweeps: use early_stop=False")
    if mode not in ("auto", "scaling", "stabilized"):
        raise ValueError(f"fused=True has the scaling and stabilized forms, not mode={mode!r}")


def _fused_iterate(form, cost, temperature, max_iterations):
    """``_iterate`` without early stopping, its sweeps in one Pallas kernel per matrix.

    The final state returned is (record,), all that ``_StabilizedForm.exact`` reads.
    Derivatives are those of the portable fixed-K sweeps (a ``custom_jvp``): a Pallas
    kernel cannot be transposed, so reverse mode could not go through it.
    """
    from jaxdsm import fused  # Pallas: imported only when asked for

    stabilized = form is _StabilizedForm

    @jax.custom_jvp
    def project(cost, temperature):
        return fused.sweeps(cost, temperature, max_iterations, stabilized=stabilized)

    @project.defjvp
    def _(primals, tangents):
        def portable(cost, temperature):
            return _iterate(form, cost, temperature, None, max_iterations, False, False)[0]

        matrix, record = project(*primals)
        return (matrix, record), (jax.jvp(portable, primals, tangents)[1], jnp.zeros_like(record))

    matrix, record = project(cost, temperature)
    return matrix, jnp.asarray(max_iterations, jnp.int32), *marginal_errors(matrix), (record,)


def _fixed_sweeps(form, state, max_iterations, stop_on_repeat):
    """The state after exactly ``max_iterations`` sweeps.

    With ``stop_on_repeat`` the value comes from ``_sweeps_until_repeat``, and derivatives
    from all the sweeps (a ``custom_jvp``): reverse-mode AD cannot go through its
    ``while_loop``, and the derivative of K sweeps is the derivative of the paper's map.
    """

    def every_sweep(state):
        return lax.fori_loop(0, max_iterations, lambda _, s: form.sweep(s), state)

    if not stop_on_repeat:
        return every_sweep(state)

    @jax.custom_jvp
    def until_repeat(state):
        return _sweeps_until_repeat(form, state, max_iterations)[0]

    @until_repeat.defjvp
    def _(primals, tangents):
        return jax.jvp(every_sweep, primals, tangents)

    return until_repeat(state)


# Fixed-K runs test for a repeated state once per block of this many sweeps (even, so that
# a two-state cycle is back where it was at the end of every later block).
REPEAT_CHECK_PERIOD = 8


def _sweeps_until_repeat(form, state, max_iterations):
    """(The state after ``max_iterations`` sweeps, bit for bit; the sweeps computed).

    A sweep is a fixed function of the state, and the next state depends on the current
    one only through the form's ``driver`` (v in the scaling form: the next u is
    1 / (K v)). Once the driver equals the one of two sweeps earlier (a float fixed point,
    or a two-state cycle in the last bits) every later state repeats with period two.
    Sweeps run in blocks of ``REPEAT_CHECK_PERIOD``; after a block whose last driver
    repeats, every remaining block would end on that same state, so the loop stops. At
    moderate and high T float32 Sinkhorn repeats after a median of 10-20 of the paper's
    200 sweeps (n = 64); a trial that never repeats runs all of them. Under vmap the loop
    runs until every trial of the batch has stopped. Checking once per block keeps the
    loop's per-iteration overhead (a compare and a branch) off every sweep, and comparing
    only the driver keeps the values carried from sweep to sweep few.
    """
    period = REPEAT_CHECK_PERIOD
    first = max_iterations % period
    if first == 1 and max_iterations > period:
        first += period  # XLA inlines a one-trip loop, and the copy rounds differently
    state = lax.fori_loop(0, first, lambda _, s: form.sweep(s), state)

    def unfinished(carry):
        blocks, repeated, _ = carry
        return (blocks < (max_iterations - first) // period) & ~repeated

    def sweep(_, carry):  # carries the drivers of the two states before the current
        _, one_back, current = carry
        return one_back, form.driver(current), form.sweep(current)

    def block(carry):
        # Every sweep of every block comes from this one loop body: compiled copies of a
        # sweep elsewhere may round differently, and the repeat must be of this code's own
        # iterates.
        blocks, _, state = carry
        driver = form.driver(state)
        two_back, _, state = lax.fori_loop(0, period, sweep, (driver, driver, state))
        repeated = jnp.all(jnp.asarray([jnp.all(a == b) for a, b in
                                        zip(form.driver(state), two_back)]))
        return blocks + 1, repeated, state

    start = (jnp.asarray(0, jnp.int32), jnp.asarray(False), state)
    blocks, _, state = lax.while_loop(unfinished, block, start)
    return state, first + blocks * period


# Each form: init(cost, T) -> state (iterate 0, the raw kernel, or iterate init_sweeps);
# sweep(state) -> state after one row-then-column normalization; matrix(state) -> M;
# driver(state) -> the part of the state that the next sweep's result depends on and that
# sweeps change (compared to detect a repeat: if it equals the one of two sweeps earlier,
# every later state repeats with period two, see _sweeps_until_repeat).


class _DirectForm:
    """The paper's loop: A <- A / rowsums; A <- A / colsums."""

    plain_kernel = True
    init_sweeps = 0

    @staticmethod
    def init(cost, temperature):
        return jnp.exp(_shifted_log_kernel(cost, temperature))

    @staticmethod
    def sweep(a):
        # Times the reciprocal, not divided: XLA makes that rewrite in some loops and not in
        # others, and the two round differently (see _shifted_log_kernel).
        a = a * (1 / jnp.sum(a, axis=1, keepdims=True))
        return a * (1 / jnp.sum(a, axis=0, keepdims=True))

    @staticmethod
    def matrix(a):
        return a

    @staticmethod
    def driver(a):
        return (a,)


class _Kernel(NamedTuple):
    """A kernel K and its transpose, stored once, so that both products of a sweep, K v and
    K^T u, run along contiguous rows.

    Why: on CPU the other orientation (u K, or K^T u on the untransposed kernel) sums each
    column in one float32 accumulator, and its rounding left column sums off by 9.9e-7 at
    n = 512 and 1.5e-6 at n = 1024, where a tolerance of 1e-6 was then never met; along rows
    the partial sums are spread over vector lanes: 2.2e-7 at both (BENCHMARKS.md). It was
    also slower: batched, Exp 1's program now runs 9-21% faster (n = 64 to 512); unbatched,
    K^T u copied the transposed kernel in every sweep (200 sweeps at n = 512: 29.4 ms, now
    7.1). The ``optimization_barrier`` keeps XLA from folding the transpose back into the
    product."""

    rows: jax.Array
    columns: jax.Array  # K^T

    @classmethod
    def of(cls, kernel):
        return cls(kernel, lax.optimization_barrier(kernel.T))


def _row_sums(kernel, v):
    # HIGHEST: GPUs (TF32) and TPUs (bf16 passes) otherwise round these products.
    return jnp.matmul(kernel, v, precision=_HIGHEST)


class _ScalingForm:
    """M = diag(u) K diag(v) with K = exp(-d/T); state (K, u, v), K a ``_Kernel``."""

    plain_kernel = True
    init_sweeps = 0

    @staticmethod
    def init(cost, temperature):
        ones = jnp.ones(cost.shape[0], cost.dtype)
        return _Kernel.of(jnp.exp(_shifted_log_kernel(cost, temperature))), ones, ones

    @staticmethod
    def sweep(state):
        kernel, _, v = state
        u = 1 / _row_sums(kernel.rows, v)
        return kernel, u, 1 / _row_sums(kernel.columns, u)

    @staticmethod
    def matrix(state):
        kernel, u, v = state
        return u[:, None] * kernel.rows * v[None, :]

    @staticmethod
    def driver(state):
        return state[2:]  # v: the next u is 1 / (K v)


class _LogForm:
    """log M = -d/T + f_i + g_j; state (-d/T, f, g)."""

    plain_kernel = False
    init_sweeps = 0

    @staticmethod
    def init(cost, temperature):
        zeros = jnp.zeros(cost.shape[0], cost.dtype)
        return cost * (-1 / temperature), zeros, zeros  # see _shifted_log_kernel

    @staticmethod
    def sweep(state):
        log_kernel, _, g = state
        f = -jax.nn.logsumexp(log_kernel + g[None, :], axis=1)
        return log_kernel, f, -jax.nn.logsumexp(log_kernel + f[:, None], axis=0)

    @staticmethod
    def matrix(state):
        log_kernel, f, g = state
        return jnp.exp(log_kernel + f[:, None] + g[None, :])

    @staticmethod
    def driver(state):
        return state[2:]  # g: the next f is -logsumexp(-d/T + g)


def _shifted_log_kernel(cost, temperature):
    """-(d - min d)/T: the shift is a constant factor of the kernel, which Sinkhorn
    removes in its first row step, so the iterates are unchanged and max entry is 1.

    Multiplied by -1/T rather than divided by T: XLA rewrites a division by a scalar
    into that product in some programs and not in others (it did between one and two
    CPU devices), and the two round differently.

    The shift gets no derivative (``stop_gradient``): M does not depend on it, so its
    exact contribution is 0, but float32 rounding put it all on the argmin entry of a
    reverse-mode gradient. Through the scaling form, ``jax.grad`` of H with respect to
    the cost erred by 3.8e-2 relative to float64 at T = 10 with it, 5.9e-4 without it
    (n = 64; 1.4e-4 -> 4.9e-6 at T = 0.1)."""
    return (cost - lax.stop_gradient(jnp.min(cost))) * (-1 / temperature)


def _kernel_underflows(cost, temperature):
    return jnp.any(_shifted_log_kernel(cost, temperature) < math.log(jnp.finfo(cost.dtype).tiny))


def _scaling_budget(dtype) -> float:
    """log(eps / tiny): the stabilized form's result is exact (to eps) while every state has
    log(max u) + log(max v) below this (an entry of the stabilized kernel flushed to 0,
    below ``tiny``, then contributes at most tiny * max(u) * max(v) < eps to M), and the
    same bound on |log u|, |log v| keeps the scalings far from float under/overflow."""
    info = jnp.finfo(dtype)
    return math.log(float(info.eps)) - math.log(float(info.tiny))


def _scaling_size(record):
    """2 log max(record), for a ``record`` at least u, 1/u, v and 1/v elementwise: bounds
    log(max u) + log(max v) and |log u|, |log v|, the sizes ``_scaling_budget`` limits."""
    return 2 * jnp.log(jnp.max(record))


class _StabilizedForm:
    """Potentials f, g plus scalings u, v of the stabilized kernel K~ = exp(-d/T + f + g);
    state (-d/T, f, g, K~, u, v, record) and M = diag(u) K~ diag(v).

    ``init`` is the first sweep, in the log domain (logsumexp), so K~ starts as a
    doubly-normalized matrix with entries <= 1. Later sweeps are the scaling form's two
    matrix-vector products, and keep an elementwise record of the largest of u, 1/u, v
    and 1/v. If its ``_scaling_size`` stays within ``_scaling_budget`` (``exact``) the
    result is exact, and no n^2 exp was spent after the first sweep: in Algorithm 1's
    setting (n = 64, U[0, 1] costs, T >= 0.01, float32, 200 sweeps) that is always the
    case (the size peaks at 18.7 of the budget's 71.4 over 1000 trials at T = 0.01).
    Otherwise ``sinkhorn`` reruns the projection with ``_AbsorbingForm`` (at
    T = 1e-3 it does).

    Why not absorb inside the sweep loop directly: a ``lax.cond`` in every sweep copies
    the n^2 kernel each time, which tripled the cost of a sweep on CPU. And why one
    elementwise record: reductions in every sweep cost as much as the sweep itself.
    """

    plain_kernel = False
    init_sweeps = 1

    @staticmethod
    def init(cost, temperature):
        log_kernel = cost * (-1 / temperature)  # see _shifted_log_kernel
        f = -jax.nn.logsumexp(log_kernel, axis=1)
        g = -jax.nn.logsumexp(log_kernel + f[:, None], axis=0)
        ones = jnp.ones(cost.shape[0], cost.dtype)
        kernel = _Kernel.of(jnp.exp(log_kernel + f[:, None] + g[None, :]))
        return log_kernel, f, g, kernel, ones, ones, ones

    @staticmethod
    def sweep(state):
        log_kernel, f, g, kernel, _, v, record = state
        row_sums = _row_sums(kernel.rows, v)
        u = 1 / row_sums
        col_sums = _row_sums(kernel.columns, u)
        v = 1 / col_sums
        # jnp.maximum propagates NaN: a scaling that overflowed makes ``exact`` False.
        record = jnp.maximum(jnp.maximum(record, jnp.maximum(u, row_sums)),
                             jnp.maximum(v, col_sums))
        return log_kernel, f, g, kernel, u, v, record

    @staticmethod
    def matrix(state):
        kernel, u, v = state[3:6]
        return u[:, None] * kernel.rows * v[None, :]

    @staticmethod
    def driver(state):
        # v: the next u is 1 / (K~ v). The record needs no comparing: once v repeats, the
        # later scalings are the two of the cycle, already recorded.
        return state[5:6]

    @staticmethod
    def exact(state):
        """False where a state on the way may have lost mass to underflow, or overflowed
        (NaN: u or v went to inf or 0)."""
        size = _scaling_size(state[-1])
        return size <= _scaling_budget(size.dtype)


class _AbsorbingForm(_StabilizedForm):
    """The stabilized form that folds u, v into f, g (one n^2 exp) after any sweep that
    leaves ``_scaling_size`` above the budget minus 2 log n: one sweep grows max(u) and
    max(v) by at most a factor n each (after a full sweep every half-step rescales a row
    or column by a factor in [1/n, n]: row sums of a column-normalized matrix lie there),
    so the next sweep stays within the budget. Under vmap one element that needs it
    absorbs the whole batch (a real branch, ``_batching.for_whole_batch``)."""

    @staticmethod
    def sweep(state):
        # The record runs since the last absorption, and any sweep that takes it past the
        # limit absorbs: so it passes the limit exactly when this sweep's scalings do.
        state = _StabilizedForm.sweep(state)
        limit = _scaling_budget(state[-1].dtype) - 2 * math.log(state[-1].shape[0])
        # Written as "not above" so that a NaN trial does not absorb at every sweep.
        keep = ~(_scaling_size(state[-1]) > limit)

        def absorbed(state):
            log_kernel, f, g, _, u, v, _ = state
            f, g = f + jnp.log(u), g + jnp.log(v)
            ones = jnp.ones_like(u)
            kernel = _Kernel.of(jnp.exp(log_kernel + f[:, None] + g[None, :]))
            return log_kernel, f, g, kernel, ones, ones, ones

        return lax.cond(for_whole_batch(keep), lambda s: s, absorbed, state)

    @staticmethod
    def driver(state):
        return state[1:3] + state[5:6]  # f, g and v


_FORMS = {
    "scaling": _ScalingForm,
    "stabilized": _StabilizedForm,
    "log": _LogForm,
    "direct": _DirectForm,
}
