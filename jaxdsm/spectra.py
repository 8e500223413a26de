"""Spectral measurements of (nearly) doubly-stochastic matrices.

Conventions: singular values in descending order; sigma_1 of an exact DSM is 1 (its
singular vectors are 1/sqrt(n)), so sigma_2 is the operator norm of M on the detail
subspace 1^perp (Lemma 2 of the Homogeneity Trap paper).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
from jax import lax

from jaxdsm import _checks
from jaxdsm._batching import for_whole_batch

_HIGHEST = jax.lax.Precision.HIGHEST


def one_matrix_per_call_on_cpu(fn):
    """``fn`` (a LAPACK factorization of one matrix) made to run one matrix per call on CPU,
    whether it is vmapped (as jaxdsm's sweeps and trial functions are) or called on a
    stacked array, and batched elsewhere.

    Why: jaxlib's CPU LAPACK kernels (up to at least 0.10.1) split a batch over XLA's
    intra-op thread pool and block until the pieces are done. When every pool thread is
    running a device program (one CPU device per core, ``distributed.split_cpu``), the
    pieces never start and the process hangs. One matrix per call runs inline on the
    calling thread, which is as fast for the small matrices here, and lets each core run
    its own device. Gradients go through ``fn`` itself (batched, so differentiating these
    on several CPU devices at once can still hang on such jaxlib versions).
    """
    sequential = jax.custom_batching.sequential_vmap(fn)

    def per_matrix(x):
        if x.ndim == 2:
            return sequential(x)
        # A stacked array (e.g. sigma2 of a (K, B, n, n) array) would be one batched call
        # that hangs the same way (measured: a sharded program on two CPU devices). The
        # loop body calls ``sequential``, so an outer vmap keeps it one matrix per call.
        flat = jax.lax.map(sequential, x.reshape((-1,) + x.shape[-2:]))
        return jax.tree.map(lambda y: y.reshape(x.shape[:-2] + y.shape[1:]), flat)

    @jax.custom_jvp
    def wrapped(x):
        return jax.lax.platform_dependent(x, cpu=per_matrix, default=fn)

    @wrapped.defjvp
    def _(primals, tangents):
        return jax.jvp(fn, primals, tangents)

    return wrapped


_svdvals = one_matrix_per_call_on_cpu(lambda a: jnp.linalg.svd(a, compute_uv=False))
_orthonormal_basis = one_matrix_per_call_on_cpu(lambda a: jnp.linalg.qr(a)[0])
_eigvals = one_matrix_per_call_on_cpu(jnp.linalg.eigvals)
_eigh = one_matrix_per_call_on_cpu(lambda a: tuple(jnp.linalg.eigh(a)))


def singular_values(matrix: jax.Array) -> jax.Array:
    """All singular values, descending (a full SVD without vectors)."""
    return _svdvals(matrix)


def double_center(matrix: jax.Array) -> jax.Array:
    """P M P with P = I - J/n: removes the mean component on both sides.

    For an exact DSM this is M - J/n, whose largest singular value is sigma_2(M).
    Subtracting J/n before any product keeps small sigma_2 (high T) accurate in float32.
    """
    row_mean = jnp.mean(matrix, axis=-1, keepdims=True)
    col_mean = jnp.mean(matrix, axis=-2, keepdims=True)
    return matrix - row_mean - col_mean + jnp.mean(matrix, axis=(-2, -1), keepdims=True)


def top_two_singular_values(
    matrix: jax.Array, *, block: int = 8, squarings: int | None = None
) -> jax.Array:
    """(sigma_1, sigma_2) without a full SVD, by subspace iteration with Rayleigh-Ritz, and a
    residual check that falls back to the full SVD where the iteration did not converge.

    1. G = B B^T with B = P M P: the detail part of M, so sigma_1 = 1 does not swamp
       the rest (and small sigma_2 at high T keeps its float32 accuracy). Its
       eigenvectors are B's left singular vectors (B B^T rather than B^T B: on CPU XLA's
       product with the transposed right operand is about 1.5x faster).
    2. G^p X0 with p = 2**squarings and a fixed random X0 (n x block): a power that
       separates the top ``block`` eigenvectors from the rest, as ``squarings`` - 2
       squarings of G (``_squared``) and four products with the block
       (``_gram_power_times``). Normalizing only every second squaring and the left Gram
       matrix made the function 10% faster at n = 64 on CPU, the block products another
       15% (BENCHMARKS.md). The default (None) is 7 for n >= 48 and 8 below: with the residual
       check the count only trades time, and on Exp 1's matrices (K = 200, T = 0.01 to 10)
       7 squarings sent no batch of 16 to the fallback at n = 48 to 256 but 32% at n = 32,
       T = 0.01 (8: 4%); 6 sent 7-21% over the grid.
    3. Q = orthonormal basis of [1/sqrt(n), G^p X0].
    4. Ritz values of M on Q, each checked by its residual (``_checked_ritz_values``): the
       top two approximate sigma_1 and sigma_2 of M itself, also when M is not exactly
       doubly stochastic.

    The error decays like (sigma_{block+2} / sigma_2)^(2^(squarings+1)); clustered values
    inside the block are resolved exactly by the Rayleigh-Ritz step. The tests compare it
    with the full SVD across temperatures (and ``benchmarks/check_sigma2_fast_path.py``
    on all 16,000 matrices of the Exp 1 workload). Costs squarings - 1 n x n matmuls, a few
    n x block products, a thin QR and a 9 x 9 eigensolve: about a third of a full SVD at
    n = 64 on CPU.

    Where M is far from doubly stochastic (few sweeps, or T below 0.01) its top singular
    vectors mix the mean direction with all of B's, Q misses them and the Ritz values
    fall short (with 8 squarings: by up to 0.4 at K = 1 to 10, 1e-4 at n = 64, K = 30,
    T = 0.01, 2e-3 at K = 200, T = 1e-3). The residual check catches these: under vmap a
    batch with one failing matrix takes the full SVD for the whole batch (one real
    branch, ``_batching.for_whole_batch``), so the cost is the iteration's where it
    converges and the iteration's plus a full SVD's (about 3.5x at n = 64 on CPU) where it
    does not. The check is a test, not a proof: a Ritz value with a small residual is
    close to *some* singular value, and could in principle be sigma_3 with sigma_2's
    direction missed entirely. Over 8,400 matrices (n = 32 to 256, K = 1 to 200, T = 1e-3
    to 1, 8 squarings) no matrix that passed was off by more than 2e-6; over Exp 1's grid
    at n = 32 to 256 with 7 squarings, none by more than 6.1e-7.

    Derivatives: the first derivative is exact (a Ritz value is stationary in its
    subspace; float64 gradients through ``sinkhorn`` matched the full SVD's to 3e-14), but
    second and higher derivatives are NOT: they differentiate the subspace, whose own
    derivative has not converged (float64, n = 32, T = 0.2: d^2 sigma_2 / dT^2 of -23.9
    against 8.07 with ``mode="stabilized"``). For Hessians use ``singular_values`` (the
    full SVD). A ``custom_jvp`` with the SVD's derivatives was tried and left: with the
    iteration's value in its rule, the Hessian of a ``lax.scan`` failed inside JAX (on the
    CPU LAPACK wrappers' ``sequential_vmap``); with the SVD's value, gradients inside a
    sweep on two CPU devices hung (the SVD's derivative is a batched LAPACK call, see
    ``one_matrix_per_call_on_cpu``), where the iteration's run.

    For n <= 3 * block it returns the top two of the full SVD (``singular_values``):
    there the block is a third of the space or more, the full SVD costs about the same
    (n = 16: 0.8x, n = 24: 1.2x the time of the iteration on CPU) and the iteration
    missed sigma_2 by more than 1e-5 in 19 of 2000 trials at n = 16, T = 0.01 (up to
    2.2e-4; n = 24: 1 of 2000, 3.1e-5; n = 32 and 48: none).
    """
    if matrix.shape[-1] <= 3 * block:
        return singular_values(matrix)[..., :2]
    return _or_full_svd(*_top_two_ritz_values(matrix, block, squarings), matrix)


def _top_two_ritz_values(matrix: jax.Array, block: int = 8, squarings: int | None = None):
    """Steps 1-4 of ``top_two_singular_values``: the Ritz values and, per matrix, whether
    they passed the residual check."""
    n = matrix.shape[-1]
    if squarings is None:
        squarings = 7 if n >= 48 else 8
    b = double_center(matrix)
    probe = jax.random.normal(jax.random.PRNGKey(0), (n, block), matrix.dtype)
    dominant = _gram_power_times(jnp.matmul(b, jnp.swapaxes(b, -1, -2), precision=_HIGHEST),
                                 probe, squarings)
    mean_direction = jnp.full(dominant.shape[:-1] + (1,), n**-0.5, matrix.dtype)
    basis = _orthonormal_basis(jnp.concatenate([mean_direction, dominant], axis=-1))
    return _checked_ritz_values(matrix, basis, 2)


def _checked_ritz_values(matrix: jax.Array, basis: jax.Array, count: int):
    """The top ``count`` Ritz values s_i of M on the left subspace spanned by ``basis`` (n x m,
    orthonormal columns), and per matrix whether they passed the residual check.

    With C = M^T Q and C^T C = Z diag(s^2) Z^T (an m x m eigensolve: on CPU about 0.6x the
    time of LAPACK's thin SVD of C, and as accurate here), the Ritz triple (s, u = Q z,
    v = C z / s) satisfies M^T u = s v exactly; its residual r = ||M v - s u|| puts a
    singular value of M within r of s, and Ritz values err by about r^2 / gap. The check
    asks r <= sqrt(eps) / 10 * s_1 for each of the ``count`` values (3.5e-5 in float32):
    value errors of about eps / (100 gap), well inside the float32 target of 1e-5.
    Converged Sinkhorn matrices (K = 200, T >= 0.01) pass with r / s_1 <= 5e-6 (n = 32)
    and <= 1e-6 (n = 64 to 1024); the unconverged ones where the Ritz values erred by more
    than 1e-5 had 4e-4 to 0.8. A zero or non-finite value fails (NaN compares False).
    """
    c = jnp.matmul(jnp.swapaxes(matrix, -1, -2), basis, precision=_HIGHEST)
    squares, vectors = _eigh(jnp.matmul(jnp.swapaxes(c, -1, -2), c, precision=_HIGHEST))
    squares, vectors = squares[..., ::-1][..., :count], vectors[..., ::-1][..., :count]
    ritz = jnp.sqrt(jnp.maximum(squares, 0))
    right = jnp.matmul(c, vectors, precision=_HIGHEST) / ritz[..., None, :]
    left = jnp.matmul(basis, vectors, precision=_HIGHEST)
    residual = jnp.linalg.norm(jnp.matmul(matrix, right, precision=_HIGHEST)
                               - left * ritz[..., None, :], axis=-2)
    tolerance = 0.1 * jnp.sqrt(jnp.finfo(matrix.dtype).eps) * ritz[..., :1]
    return ritz, jnp.all(residual <= tolerance, axis=-1)


def _or_full_svd(ritz: jax.Array, converged: jax.Array, matrix: jax.Array) -> jax.Array:
    """``ritz`` (its last axis: the top values) where every matrix passed the residual check,
    else the same number of top values from the full SVD of ``matrix``. Under vmap the flag
    is one flag for the batch, so the SVD is a real branch that runs only when taken."""
    count = ritz.shape[-1]
    return lax.cond(for_whole_batch(jnp.all(converged)), lambda: ritz,
                    lambda: singular_values(matrix)[..., :count])


def _gram_power_times(gram: jax.Array, probe: jax.Array, squarings: int) -> jax.Array:
    """gram^(2^squarings) @ probe up to a positive factor: the last two doublings of the
    power are four products with the n x block probe (2 n^2 block multiply-adds each)
    instead of two squarings (2 n^3 each). At n = 64, block 8, on CPU that made the
    iteration about 10 ms per 1000 matrices faster (68 -> 58 ms on one core of an AMD EPYC;
    BENCHMARKS.md), with the same errors against the SVD and the same check results."""
    tail = min(squarings, 2)
    gram = _squared(gram, squarings - tail)
    for _ in range(2**tail):
        probe = jnp.matmul(gram, probe, precision=_HIGHEST)
    return probe


def _squared(gram: jax.Array, squarings: int) -> jax.Array:
    """gram^(2^squarings) up to a positive factor (trace-normalized first, after every second
    squaring and at the end): with the top eigenvalue in [1/n, 1] after a normalization,
    two squarings leave it above n^-4, far from float underflow."""
    tiny = jnp.finfo(gram.dtype).tiny

    def normalized(g):
        return g / jnp.maximum(jnp.trace(g, axis1=-2, axis2=-1)[..., None, None], tiny)

    gram = normalized(gram)
    for i in range(squarings):
        gram = jnp.matmul(gram, gram, precision=_HIGHEST)
        if i % 2 == 1 or i == squarings - 1:
            gram = normalized(gram)
    return gram


def entropy(matrix: jax.Array) -> jax.Array:
    """H(M) = -sum_ij M_ij log M_ij with 0 log 0 = 0 (negative entries count as 0)."""
    # One array type for the mask and the log: numpy keeps subnormals that XLA flushes.
    matrix = jnp.asarray(matrix)
    safe = jnp.where(matrix > 0, matrix, 1)
    return -jnp.sum(jnp.where(matrix > 0, matrix * jnp.log(safe), 0), axis=(-2, -1))


def eigenvalues_by_modulus(matrix: jax.Array) -> jax.Array:
    """All eigenvalues sorted by decreasing modulus (non-symmetric eig: CPU in JAX)."""
    lam = _eigvals(matrix)
    return jnp.take_along_axis(lam, jnp.argsort(-jnp.abs(lam), axis=-1), axis=-1)


def lambda2_modulus(matrix: jax.Array) -> jax.Array:
    """|lambda_2|, the second-largest eigenvalue modulus (governs the asymptotic rate)."""
    return jnp.abs(eigenvalues_by_modulus(matrix)[..., 1])


def sigma2(matrix: jax.Array) -> jax.Array:
    """sigma_2 by the fast path (``top_two_singular_values``: exact first derivatives; for
    second derivatives use ``singular_values(matrix)[..., 1]``)."""
    return top_two_singular_values(matrix)[..., 1]


def _top_singular_value(matrix: jax.Array, probe: jax.Array, squarings: int) -> jax.Array:
    """Largest singular value by Gram squaring and a Rayleigh-Ritz step on ``probe``'s block
    (as ``top_two_singular_values``, with its residual check and full-SVD fallback); a
    Ritz value is never above the true value."""
    gram = jnp.matmul(jnp.swapaxes(matrix, -1, -2), matrix, precision=_HIGHEST)
    basis = _orthonormal_basis(_gram_power_times(gram, probe, squarings))
    # basis spans right singular vectors: M's right vectors are M^T's left ones.
    ritz_and_check = _checked_ritz_values(jnp.swapaxes(matrix, -1, -2), basis, 1)
    return _or_full_svd(*ritz_and_check, matrix)[..., 0]


def transient_growth(
    matrix: jax.Array, depth: int, *, block: int = 8, squarings: int = 6, full_svd: bool = False
) -> jax.Array:
    """log ||(M - J/n)^k||_2 for k = 1..depth (last axis), the worst-case detail gain of k layers.

    Works on B = P M P (``double_center``), which is M - J/n for an exact DSM, so that
    B^k = M^k - J/n. Remark 2 of the paper: ||B^k|| <= ||B||^k = sigma_2^k; transient growth
    shows as ||B^k|| far above |lambda_2|^k (B non-normal). ||B^k|| itself cannot grow with
    k when sigma_2 < 1, since ||B^{k+1}|| <= sigma_2 ||B^k||.

    Numerics: sigma_2^k underflows float32 within a few layers at high T, so the power is
    carried Frobenius-normalized with its log scale. Each ||B^k|| comes from Gram squaring
    plus Rayleigh-Ritz on a ``block``-column subspace (``_top_singular_value``): 8 squarings
    for k = 1, where the top singular values of B are clustered, ``squarings`` for k >= 2,
    where powers spread them apart (5 were too few at T = 0.01: log errors at k = 2 up to
    1.1e-3 in 3 of 1000 trials at n = 32 and 4.6e-5 in 1 of 200 at n = 128; 6 keep them
    under 5e-6). Cost: about squarings n x n matmuls per power, ~5x less than an SVD per
    power at n = 64 on CPU. The estimates are Ritz values (lower bounds); the tests compare
    them with a float64 SVD of each power across T: relative error ~1e-6 per power plus
    ~3e-6 per power of float32 rounding in the product. For n <= 3 * block every norm
    comes from a full SVD, as in ``top_two_singular_values``. For much larger n raise
    ``block`` or ``squarings``. Like ``top_two_singular_values`` each Ritz value passes a
    residual check or the batch's power goes to a full SVD: on unconverged Sinkhorn
    matrices below T = 0.01 the iteration alone erred by up to 3.8e-4 in the log at
    T = 3e-3 and 3.3e-3 at T = 1e-3 (n = 64, k <= 8); checked, by at most 5.5e-6, the
    products' rounding (n = 32 to 128, K = 3 to 200, T = 1e-3 to 1, 100 trials each), at
    about 1.7x the cost where the fallback runs. ``full_svd=True`` takes every norm from a
    full SVD of the power (static; several times slower); use it for second derivatives,
    which the iteration gets wrong as ``top_two_singular_values`` does (log ||B^3|| of a
    32 x 32 matrix: -2245 against 1465), while its first derivatives are exact.
    """
    _checks.check_positive_int(depth, "depth")
    b = double_center(matrix)
    n = b.shape[-1]
    tiny = jnp.finfo(b.dtype).tiny
    scale = jnp.maximum(jnp.linalg.norm(b, axis=(-2, -1)), tiny)
    log_scale = jnp.log(scale)
    unit = b / scale[..., None, None]
    probe = jax.random.normal(jax.random.PRNGKey(0), (n, block), b.dtype)

    def top(power, squarings):
        if full_svd or n <= 3 * block:
            return singular_values(power)[..., 0]
        return _top_singular_value(power, probe, squarings)

    first = log_scale + jnp.log(top(unit, 8))

    def next_power(carry, _):
        power, log_norm = carry  # power = B^k / exp(log_norm), Frobenius norm 1
        power = jnp.matmul(power, unit, precision=_HIGHEST)
        size = jnp.maximum(jnp.linalg.norm(power, axis=(-2, -1)), tiny)
        power = power / size[..., None, None]
        log_norm = log_norm + jnp.log(size) + log_scale
        return (power, log_norm), log_norm + jnp.log(top(power, squarings))

    _, rest = jax.lax.scan(next_power, (unit, log_scale), None, length=depth - 1)
    return jnp.concatenate([first[..., None], jnp.moveaxis(rest, 0, -1)], axis=-1)


def henrici_departure(matrix: jax.Array) -> jax.Array:
    """Henrici's relative departure from normality of B = P M P (M - J/n for an exact DSM):
    sqrt(||B||_F^2 - sum_i |lambda_i(B)|^2) / ||B||_F, in [0, 1]; 0 exactly when B is normal.

    The mean direction is a normal part of a DSM (1 is a left and right eigenvector), so
    the unnormalized departure of B equals that of M; B is used because at high T
    ||M||_F^2 = 1 + ||B||_F^2 would drown it. float32 resolves it to ~sqrt(n eps) ~ 3e-3
    (a difference of squares), enough to tell normal from non-normal matrices.
    """
    b = double_center(matrix)
    frob2 = jnp.sum(jnp.square(b), axis=(-2, -1))
    eig2 = jnp.sum(jnp.square(jnp.abs(_eigvals(b))), axis=-1)
    tiny = jnp.finfo(b.dtype).tiny
    return jnp.sqrt(jnp.maximum(frob2 - eig2, 0) / jnp.maximum(frob2, tiny))
