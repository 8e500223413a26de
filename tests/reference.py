"""Independent numpy/scipy float64 references for the tests (never imports jaxdsm).

Everything here follows the paper's text (Algorithm 1 and Appendix C of the Homogeneity
Trap paper) as literally as possible, in float64, so that the float32 JAX code can be
compared with it. Functions accept a single (n, n) matrix or a batch (..., n, n).
"""

from __future__ import annotations

import numpy as np
import scipy.linalg
import scipy.special


def _f64(x) -> np.ndarray:
    return np.asarray(x, dtype=np.float64)


def normalize_rows(a: np.ndarray) -> np.ndarray:
    return a / a.sum(axis=-1, keepdims=True)


def normalize_cols(a: np.ndarray) -> np.ndarray:
    return a / a.sum(axis=-2, keepdims=True)


def marginal_errors(matrix) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(row_error, col_error, error): max |row sums - 1|, max |col sums - 1|, their max."""
    m = _f64(matrix)
    row = np.max(np.abs(m.sum(axis=-1) - 1.0), axis=-1)
    col = np.max(np.abs(m.sum(axis=-2) - 1.0), axis=-1)
    return row, col, np.maximum(row, col)


def algorithm1(cost, temperature: float, iterations: int) -> np.ndarray:
    """Algorithm 1, lines 4-9: A = exp(-d/T); K times normalize rows, then columns.

    Plain float64; exp(-d/T) underflows to 0 once d/T > ~745, so use
    ``algorithm1_log`` for T below ~1e-2 (d in [0, 1]).
    """
    a = np.exp(-_f64(cost) / float(temperature))
    for _ in range(iterations):
        a = normalize_cols(normalize_rows(a))
    return a


def _log_sweep(log_a: np.ndarray) -> np.ndarray:
    log_a = log_a - scipy.special.logsumexp(log_a, axis=-1, keepdims=True)
    return log_a - scipy.special.logsumexp(log_a, axis=-2, keepdims=True)


def algorithm1_log(cost, temperature: float, iterations: int) -> np.ndarray:
    """Algorithm 1 in the log domain (same iterates in exact arithmetic), float64.

    log A = -d/T; each sweep subtracts the row log-sums, then the column log-sums.
    Finite for any T > 0.
    """
    log_a = -_f64(cost) / float(temperature)
    for _ in range(iterations):
        log_a = _log_sweep(log_a)
    return np.exp(log_a)


def marginal_error_history(
    cost, temperature: float, iterations: int, *, log_domain: bool = False
) -> np.ndarray:
    """Max marginal error after each of sweeps 1..iterations: shape (..., iterations)."""
    d = _f64(cost)
    state = -d / float(temperature) if log_domain else np.exp(-d / float(temperature))
    errors = []
    for _ in range(iterations):
        if log_domain:
            state = _log_sweep(state)
            errors.append(marginal_errors(np.exp(state))[2])
        else:
            state = normalize_cols(normalize_rows(state))
            errors.append(marginal_errors(state)[2])
    return np.stack(errors, axis=-1)


def iterations_to_tolerance(
    cost, temperature: float, tol: float, max_iterations: int, *, log_domain: bool = False
) -> tuple[int | None, np.ndarray]:
    """First sweep k (1-based) after which max(|row sums - 1|, |col sums - 1|) <= tol.

    Single matrix. Returns (k, or None when not reached within max_iterations; the errors
    after sweeps 1..k, or 1..max_iterations when not reached).
    """
    d = _f64(cost)
    if log_domain:
        state = -d / float(temperature)
    else:
        state = np.exp(-d / float(temperature))
    errors = []
    for k in range(1, max_iterations + 1):
        if log_domain:
            state = _log_sweep(state)
            m = np.exp(state)
        else:
            state = normalize_cols(normalize_rows(state))
            m = state
        err = float(marginal_errors(m)[2])
        errors.append(err)
        if err <= tol:
            return k, np.asarray(errors)
    return None, np.asarray(errors)


def singular_values(matrix) -> np.ndarray:
    """All singular values, descending: scipy.linalg.svd in float64 (as the paper)."""
    m = _f64(matrix)
    if m.ndim == 2:
        return scipy.linalg.svd(m, compute_uv=False)
    flat = m.reshape((-1,) + m.shape[-2:])
    out = np.stack([scipy.linalg.svd(x, compute_uv=False) for x in flat])
    return out.reshape(m.shape[:-2] + (m.shape[-1],))


def entropy(matrix) -> np.ndarray:
    """H(M) = -sum_ij M_ij log M_ij with 0 log 0 = 0 (scipy.special.xlogy)."""
    m = _f64(matrix)
    return -np.sum(scipy.special.xlogy(m, m), axis=(-2, -1))


def lambda2_modulus(matrix) -> np.ndarray:
    """Second-largest eigenvalue modulus from numpy.linalg.eigvals (float64)."""
    lam = np.linalg.eigvals(_f64(matrix))
    mod = -np.sort(-np.abs(lam), axis=-1)
    return mod[..., 1]


EPS32 = float(np.finfo(np.float32).eps)  # 1.19e-7: one ulp at 1.0


def uniform_cost(rng: np.random.Generator, shape) -> tuple[np.ndarray, np.ndarray]:
    """Algorithm 1's d ~ U[0, 1]: float32 values for jaxdsm, and the same values in float64."""
    d32 = rng.random(shape).astype(np.float32)
    return d32, d32.astype(np.float64)
