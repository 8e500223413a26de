"""Annealing entropic Sinkhorn layers: schedules, EPH-ASC, QSA, Gumbel-Sinkhorn.

Sources:

- EPH-ASC: "Avoiding Premature Collapse: Adaptive Annealing for Entropy-Regularized
  Structural Inference" (arXiv 2601.23039). Only a summary of that paper is available;
  the controller (Phase II) and the QSA calibration (Phase I) follow our reading of it,
  jaxdsm's EPH-ASC specification (section 2; in the project's design notes, not in this
  repository). Choices marked (ours) are not the paper's.
- Gumbel-Sinkhorn: Mena, Belanger, Linderman, Snoek, "Learning Latent Permutations with
  Gumbel-Sinkhorn Networks" (ICLR 2018, arXiv 1802.08665).
- Schedules follow optax's schedule convention: a callable of the (traced) step count
  returning the value, like ``optax.exponential_decay``.

Conventions: ``eps`` is the entropic temperature. A plan P is doubly stochastic with
rows and columns summing to 1 (permutation-like; the unit-mass coupling is P / n), and
log P = (logits + f_i + g_j) / eps with logits = -cost and potentials f, g in logit
units, so potentials from one eps warm-start a solve at another (eps-scaling).

Library functions are pure and do not jit, except the two host-side ones, which cannot be
traced: ``hard_permutation`` (scipy) and ``qsa_calibrate`` (a host driver that jits its
eps sweep once per ``max_iterations``, then matches on the host).
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax

from jaxdsm import _checks, sinkhorn, spectra

Schedule = Callable[[jax.Array | int], jax.Array]


def _float_dtype():
    return jnp.zeros(()).dtype


def _steps(step) -> jax.Array:
    """The step count as a float array, clipped at 0 (negative steps give the start)."""
    return jnp.maximum(jnp.asarray(step).astype(_float_dtype()), 0)


def _check_eps_range(eps0, eps_min, eps0_name="eps0"):
    _checks.check_in_range(eps0, eps0_name)
    if eps_min is not None:
        _checks.check_in_range(eps_min, "eps_min")
        if _concrete(eps0, eps_min) and np.any(np.asarray(eps_min) > np.asarray(eps0)):
            raise ValueError(f"eps_min ({eps_min}) must be <= {eps0_name} ({eps0})")


def _concrete(*values) -> bool:
    return not any(isinstance(v, jax.core.Tracer) for v in values)


def _floor(eps, eps_min):
    return eps if eps_min is None else jnp.maximum(eps, eps_min)


# ---------------------------------------------------------------------------------------
# Open-loop schedules (step -> eps)


def constant(eps) -> Schedule:
    """eps_t = eps."""
    _checks.check_in_range(eps, "eps")

    def schedule(step):
        return jnp.full(jnp.shape(step), eps, _float_dtype())

    return schedule


def exponential(eps0, decay, *, eps_min, transition_steps=1) -> Schedule:
    """eps_t = max(eps_min, eps0 * decay^(t / transition_steps)).

    The value of ``optax.exponential_decay(eps0, transition_steps, decay, end_value=eps_min)``
    for decay < 1; written out because optax reads ``end_value`` as an upper bound at
    decay = 1. The floor is first reached at t = transition_steps * log(eps_min / eps0) /
    log(decay) (rounded up for integer steps).
    """
    _check_eps_range(eps0, eps_min)
    _checks.check_in_range(decay, "decay", 0, 1)
    _checks.check_in_range(transition_steps, "transition_steps")

    def schedule(step):
        return jnp.maximum(eps_min, eps0 * jnp.power(decay, _steps(step) / transition_steps))

    return schedule


def speed_limit(eps0, rate, *, eps_min=None) -> Schedule:
    """eps_t = eps0 / (1 + rate * eps0 * t): beta = 1/eps grows linearly, 1/eps0 + rate * t.

    The "thermodynamic speed limit" (EPH-ASC, Theorem 3.2 as summarized): the step
    eps_t - eps_{t+1} ~ rate * eps^2 shrinks like eps^2. Floored at ``eps_min`` if given.
    """
    _check_eps_range(eps0, eps_min)
    _checks.check_in_range(rate, "rate", include_low=True)

    def schedule(step):
        return _floor(eps0 / (1 + rate * eps0 * _steps(step)), eps_min)

    return schedule


def beta_power_law(eps0, kappa, *, eps_min=None) -> Schedule:
    """beta_t = beta0 (1 + t)^kappa with beta0 = 1/eps0, i.e. eps_t = eps0 (1 + t)^-kappa.

    kappa = 1 has the speed limit's linear growth of beta; kappa < 1 is slower. Floored at
    ``eps_min`` if given.
    """
    _check_eps_range(eps0, eps_min)
    _checks.check_in_range(kappa, "kappa", include_low=True)

    def schedule(step):
        return _floor(eps0 * jnp.power(1 + _steps(step), -kappa), eps_min)

    return schedule


def decay_to_reach(eps0: float, eps_min: float, steps: int) -> float:
    """The ``exponential`` decay that takes eps0 to eps_min in ``steps`` steps."""
    _check_eps_range(eps0, eps_min)
    steps = _checks.check_positive_int(steps, "steps")
    return (eps_min / eps0) ** (1 / steps)


def rate_to_reach(eps0: float, eps_min: float, steps: int) -> float:
    """The ``speed_limit`` rate that takes eps0 to eps_min in ``steps`` steps."""
    _check_eps_range(eps0, eps_min)
    steps = _checks.check_positive_int(steps, "steps")
    return (1 / eps_min - 1 / eps0) / steps


def kappa_to_reach(eps0: float, eps_min: float, steps: int) -> float:
    """The ``beta_power_law`` kappa that takes eps0 to eps_min in ``steps`` steps."""
    _check_eps_range(eps0, eps_min)
    steps = _checks.check_positive_int(steps, "steps")
    return math.log(eps0 / eps_min) / math.log1p(steps)


# ---------------------------------------------------------------------------------------
# EPH-ASC Phase II: the runtime controller


class ControllerState(NamedTuple):
    """State of the EPH-ASC controller (leading axes when vmapped).

    Attributes:
      eps: the temperature to use until the next update.
      previous_plan: the monitor plan at the last check (at first, the one given to init).
      step: number of updates so far (int32).
      brakes: number of checks that braked (int32).
      braking: whether the last check braked (bool).
      drift: the drift measured at the last check (0 before any check).
    """

    eps: jax.Array
    previous_plan: jax.Array
    step: jax.Array
    brakes: jax.Array
    braking: jax.Array
    drift: jax.Array


class ControllerInfo(NamedTuple):
    """What one update saw and did; a ``lax.scan`` over updates stacks it into a history.

    Attributes:
      eps: the temperature after the update (the one the next steps use).
      drift: RMS Frobenius change of the monitor plan since the last check.
      threshold: the braking threshold k_safe * eps^p (times 1 - hysteresis while braking)
        at the temperature before the update.
      braked: this update was a check and it held eps.
      checked: this update was a check (every ``check_every``-th update).
    """

    eps: jax.Array
    drift: jax.Array
    threshold: jax.Array
    braked: jax.Array
    checked: jax.Array


class Controller(NamedTuple):
    """A pure (init, update) pair, in the style of optax transformations and jax-md.

    ``init(plan) -> ControllerState``; ``update(state, plan) -> (ControllerState,
    ControllerInfo)``. Both are jit- and vmap-able and never branch in Python.
    """

    init: Callable[[jax.Array], ControllerState]
    update: Callable[[ControllerState, jax.Array], tuple[ControllerState, ControllerInfo]]


def drift(plan: jax.Array, previous_plan: jax.Array) -> jax.Array:
    """sqrt(mean_b ||P^b - P_prev^b||_F^2): RMS over the leading (monitor batch) axes.

    The RMS, unlike a sum, does not grow with the monitor batch size (ours).
    """
    squared = jnp.sum(jnp.square(plan - previous_plan), axis=(-2, -1))
    return jnp.sqrt(jnp.mean(squared))


def eph_asc(
    eps0,
    *,
    eps_min,
    decay,
    k_safe,
    power=1.0,
    check_every: int = 1,
    hysteresis=0.0,
) -> Controller:
    """The EPH-ASC runtime controller (Phase II; arXiv 2601.23039, our reading).

    At each check, with d the ``drift`` of the monitor plan since the previous check:
    brake (hold eps) when d > k_safe * eps^p, else cool, eps <- max(eps_min, decay * eps).
    A non-finite drift brakes. Between checks eps is held. With ``hysteresis`` h > 0
    (ours), a controller that braked at its last check resumes cooling only once
    d <= (1 - h) * k_safe * eps^p.

    The first update: ``init`` takes the monitor plan at eps0 before any training step,
    so the first update compares against it and every check measures a real drift (there
    is no unmeasured first step). Compute the monitor plan on a fixed monitor batch, not
    on the training minibatch, so that the drift is the model's and eps's, not the data's.

    Hyper-parameters are checked here when concrete; they may also be traced (e.g. to vmap
    over k_safe, build the controller inside the vmapped function).

    Args:
      eps0: starting temperature, > 0.
      eps_min: floor, 0 < eps_min <= eps0.
      decay: cooling factor alpha per check, in (0, 1].
      k_safe: safety slope, > 0 (from ``qsa_calibrate``).
      power: p in the threshold k_safe * eps^p, > 0 (1 in the paper's linear law).
      check_every: updates between checks (static, >= 1); drift then spans that many steps.
      hysteresis: h in [0, 1).
    """
    _check_eps_range(eps0, eps_min)
    _checks.check_in_range(decay, "decay", 0, 1)
    _checks.check_in_range(k_safe, "k_safe")
    _checks.check_in_range(power, "power")
    check_every = _checks.check_positive_int(check_every, "check_every")
    _checks.check_in_range(hysteresis, "hysteresis", 0, 1, include_low=True, include_high=False)

    def init(plan) -> ControllerState:
        plan = jnp.asarray(plan)
        if not jnp.issubdtype(plan.dtype, jnp.floating):
            plan = plan.astype(_float_dtype())
        zero = jnp.zeros((), plan.dtype)
        return ControllerState(
            eps=jnp.asarray(eps0, plan.dtype),
            previous_plan=plan,
            step=jnp.zeros((), jnp.int32),
            brakes=jnp.zeros((), jnp.int32),
            braking=jnp.zeros((), bool),
            drift=zero,
        )

    def update(state: ControllerState, plan) -> tuple[ControllerState, ControllerInfo]:
        dtype = state.eps.dtype
        plan = jnp.asarray(plan, state.previous_plan.dtype)
        step = state.step + 1
        checked = step % check_every == 0
        d = drift(plan, state.previous_plan).astype(dtype)
        relief = jnp.where(state.braking, 1 - jnp.asarray(hysteresis, dtype), 1)
        threshold = jnp.asarray(k_safe, dtype) * state.eps ** jnp.asarray(power, dtype) * relief
        # Written as "not below": a NaN drift brakes instead of cooling.
        braked = checked & ~(d <= threshold)
        cooled = jnp.maximum(jnp.asarray(eps_min, dtype), jnp.asarray(decay, dtype) * state.eps)
        eps = jnp.where(checked & ~braked, cooled, state.eps)
        new_state = ControllerState(
            eps=eps,
            previous_plan=jnp.where(checked, plan, state.previous_plan),
            step=step,
            brakes=state.brakes + braked.astype(jnp.int32),
            braking=jnp.where(checked, braked, state.braking),
            drift=jnp.where(checked, d, state.drift),
        )
        return new_state, ControllerInfo(eps, d, threshold, braked, checked)

    return Controller(init, update)


# ---------------------------------------------------------------------------------------
# Log-domain Sinkhorn layer with warm starts, Gumbel-Sinkhorn, hard permutations


class Potentials(NamedTuple):
    """Dual potentials in logit units: log P = (logits + f_i + g_j) / eps. Shapes (..., n)."""

    f: jax.Array
    g: jax.Array


class LayerOutput(NamedTuple):
    """Result of ``sinkhorn_layer`` (and ``gumbel_sinkhorn``).

    Attributes:
      log_plan: (..., n, n) log P; exp of it is doubly stochastic up to marginal_error.
      potentials: the final ``Potentials``, to warm-start the next call.
      marginal_error: (...) max over rows and columns of |sum - 1|. Each sweep ends with
        the column step, so the error sits in the row sums.
    """

    log_plan: jax.Array
    potentials: Potentials
    marginal_error: jax.Array

    @property
    def plan(self) -> jax.Array:
        return jnp.exp(self.log_plan)


def _check_logits(logits) -> jax.Array:
    logits = jnp.asarray(logits)
    if not jnp.issubdtype(logits.dtype, jnp.floating):
        logits = logits.astype(_float_dtype())
    shape = logits.shape
    if logits.ndim < 2 or shape[-1] != shape[-2] or shape[-1] < 2:
        raise ValueError(f"logits must have shape (..., n, n) with n >= 2, got {shape}")
    if _concrete(logits) and not bool(jnp.all(jnp.isfinite(logits))):
        raise ValueError("logits contains NaN or infinite entries")
    return logits


def _log_plan(logits, eps_m, potentials):
    f, g = potentials
    return (logits + f[..., :, None] + g[..., None, :]) / eps_m


def _sweep(logits, eps_m, potentials):
    """One row-then-column normalization of the potentials (Algorithm 1's order)."""
    f, g = potentials
    eps_v = eps_m[..., 0]
    f = -eps_v * jax.nn.logsumexp((logits + g[..., None, :]) / eps_m, axis=-1)
    g = -eps_v * jax.nn.logsumexp((logits + f[..., :, None]) / eps_m, axis=-2)
    return Potentials(f, g)


def _marginal_error(log_plan):
    return jnp.maximum(*sinkhorn.marginal_errors(jnp.exp(log_plan)))


def sinkhorn_layer(
    logits: jax.Array,
    eps,
    *,
    iterations: int,
    init_potentials: Potentials | tuple | None = None,
) -> LayerOutput:
    """Differentiable log-domain Sinkhorn of exp(logits / eps), for training.

    Exactly ``iterations`` row-then-column sweeps in a ``lax.fori_loop`` (static count, so
    reverse-mode differentiation works); the result makes rows and columns sum to 1 (a
    permutation-like DSM, not a unit-mass coupling). With logits = -cost it computes the
    same iterates as ``sinkhorn.sinkhorn(cost, eps, mode="log")`` from a cold start; unlike
    it, this layer takes and returns potentials, so a training step can warm-start from
    the previous one (one sweep from converged potentials is converged).

    Args:
      logits: (..., n, n), higher = more likely to be matched.
      eps: temperature > 0, traced; a scalar or an array broadcasting against the batch
        axes of ``logits``.
      iterations: number of sweeps K (static, >= 1).
      init_potentials: ``Potentials`` (f, g) of shape (..., n) to start from (zeros when
        None). Treated as data: gradients do not flow into them.
    """
    logits = _check_logits(logits)
    _checks.check_temperature(eps, "eps")
    iterations = _checks.check_positive_int(iterations, "iterations")
    eps_m = jnp.asarray(eps, logits.dtype)[..., None, None]
    if init_potentials is None:
        zeros = jnp.zeros(logits.shape[:-1], logits.dtype)
        potentials = Potentials(zeros, zeros)
    else:
        potentials = Potentials(*lax.stop_gradient(tuple(init_potentials)))
    potentials = lax.fori_loop(0, iterations, lambda _, p: _sweep(logits, eps_m, p), potentials)
    log_plan = _log_plan(logits, eps_m, potentials)
    return LayerOutput(log_plan, potentials, _marginal_error(log_plan))


def gumbel_sinkhorn(
    key: jax.Array,
    logits: jax.Array,
    tau,
    *,
    noise_scale=1.0,
    iterations: int = 20,
    init_potentials: Potentials | tuple | None = None,
) -> LayerOutput:
    """Gumbel-Sinkhorn (Mena et al. 2018): Sinkhorn of (logits + noise_scale * G) / tau.

    G has i.i.d. standard Gumbel entries (``jax.random.gumbel``), one draw per entry of
    ``logits`` (vmap over keys for several samples). noise_scale = 0 is exactly
    ``sinkhorn_layer(logits, tau, ...)``. The returned potentials are those of the noisy
    logits.
    """
    logits = _check_logits(logits)
    _checks.check_temperature(tau, "tau")
    _checks.check_in_range(noise_scale, "noise_scale", include_low=True)
    noise = jax.random.gumbel(key, logits.shape, logits.dtype)
    noisy = logits + jnp.asarray(noise_scale, logits.dtype) * noise
    return sinkhorn_layer(noisy, tau, iterations=iterations, init_potentials=init_potentials)


def hard_permutation(matrix) -> np.ndarray:
    """The permutation maximizing sum_i M[i, perm[i]] (Hungarian matching, on the host).

    Args:
      matrix: (..., n, n) scores, e.g. a plan P (numpy or jax, not traced).

    Returns:
      int array (..., n): ``perm[i]`` is the column matched to row i
      (``permutation_matrix(perm)`` is the 0/1 matrix). On log P this is the MAP
      permutation of the logits, which does not depend on eps once Sinkhorn has converged
      (the potentials add the same constant to every permutation's score).
    """
    import scipy.optimize  # host-only dependency, imported on use

    m = np.asarray(matrix, dtype=np.float64)
    if m.ndim < 2 or m.shape[-1] != m.shape[-2] or m.shape[-1] < 2:
        raise ValueError(f"matrix must have shape (..., n, n) with n >= 2, got {m.shape}")
    if not np.all(np.isfinite(m)):
        raise ValueError("matrix contains NaN or infinite entries")
    n = m.shape[-1]
    flat = m.reshape(-1, n, n)
    perms = [scipy.optimize.linear_sum_assignment(x, maximize=True)[1] for x in flat]
    return np.stack(perms).reshape(m.shape[:-1])


def permutation_matrix(perm, dtype=np.float64) -> np.ndarray:
    """(..., n) indices -> (..., n, n) 0/1 matrix with a 1 at [i, perm[i]]."""
    perm = np.asarray(perm)
    return np.eye(perm.shape[-1], dtype=dtype)[perm]


# ---------------------------------------------------------------------------------------
# EPH-ASC Phase I: QSA calibration

CRITERIA = ("switch", "entropy", "stall", "drift_peak")


class QSATrace(NamedTuple):
    """Everything the quasi-static sweep measured; K grid points, B instances (numpy).

    Attributes:
      eps: (K,) eps_k = eps0 * decay^k.
      drift: (K, B) ||P_k - P_{k-1}||_F per instance (NaN at k = 0).
      batch_drift: (K,) RMS of ``drift`` over instances, the controller's ``drift``.
      ratio: (K, B) drift / eps_k^p.
      entropy: (K, B) normalized entropy H(P) / (n log n), 1 uniform, 0 a permutation.
      assignment: (K, B, n) Hungarian matching on P (``hard_permutation``).
      switch_fraction: (K,) fraction of instances whose assignment changed since k - 1.
      sigma2: (K, B) sigma_2(P) (``spectra.sigma2``; P is the DSM, i.e. n x a unit-mass plan).
      gap: (K, B) 1 - sigma2^2, the per-sweep contraction gap of the solver near P.
      iterations: (K, B) sweeps the warm-started solve took.
      marginal_error: (K, B) its final max marginal error.
      tolerance: (K,) the tolerance used at each eps (see ``qsa_calibrate``).
      converged: (K, B) marginal_error <= tolerance.
    """

    eps: np.ndarray
    drift: np.ndarray
    batch_drift: np.ndarray
    ratio: np.ndarray
    entropy: np.ndarray
    assignment: np.ndarray
    switch_fraction: np.ndarray
    sigma2: np.ndarray
    gap: np.ndarray
    iterations: np.ndarray
    marginal_error: np.ndarray
    tolerance: np.ndarray
    converged: np.ndarray


class QSAResult(NamedTuple):
    """Outcome of ``qsa_calibrate``.

    Attributes:
      k_safe: safety * median over instances of ratio[k*]; NaN when no criterion fired
        or k* = 0 (no drift is measured at the first grid point).
      eps_c: eps at k*, the predicted first braking temperature; NaN when none fired.
      collapse_index: k*, the first grid index where an enabled criterion fired, or None.
      criteria: the names of the criteria that fired at k* (empty when none).
      first_fired: {criterion: first index where it fired, or None} for enabled criteria.
      trace: the ``QSATrace``.
    """

    k_safe: float
    eps_c: float
    collapse_index: int | None
    criteria: tuple[str, ...]
    first_fired: dict
    trace: QSATrace


def qsa_grid(eps0: float, eps_min: float, decay: float) -> np.ndarray:
    """eps_k = eps0 * decay^k for every k with eps_k >= eps_min (float64)."""
    _check_eps_range(eps0, eps_min)
    _checks.check_in_range(decay, "decay", 0, 1, include_high=False)
    last = math.floor(math.log(eps_min / eps0) / math.log(decay) + 1e-9)
    return eps0 * decay ** np.arange(last + 1, dtype=np.float64)


def _solve_to_tolerance(logits, eps, potentials, tolerance, max_iterations):
    """Sweeps one instance from ``potentials`` until the marginal error <= tolerance."""
    eps_m = jnp.asarray(eps, logits.dtype)[None, None]

    def cond(carry):
        _, it, error = carry
        return ~(error <= tolerance) & (it < max_iterations)

    def body(carry):
        potentials, it, _ = carry
        potentials = _sweep(logits, eps_m, potentials)
        return potentials, it + 1, _marginal_error(_log_plan(logits, eps_m, potentials))

    inf = jnp.asarray(jnp.inf, logits.dtype)
    return lax.while_loop(cond, body, (potentials, jnp.asarray(0, jnp.int32), inf))


def qsa_sweep(logits, eps_grid, tolerances, *, max_iterations: int):
    """The jittable part of QSA: warm-started solves along ``eps_grid``.

    Each instance's solve at eps_k starts from its converged potentials at eps_{k-1} (cold
    at k = 0) and runs until its max marginal error <= tolerances[k] or
    ``max_iterations``.

    Returns:
      dict of (K, B, ...) arrays: plan, iterations, marginal_error, entropy (normalized),
      sigma2.
    """
    n = logits.shape[-1]
    zeros = jnp.zeros(logits.shape[:-1], logits.dtype)
    solve = jax.vmap(_solve_to_tolerance, in_axes=(0, None, 0, None, None))

    def step(potentials, eps_and_tolerance):
        eps, tolerance = eps_and_tolerance
        potentials, it, error = solve(logits, eps, potentials, tolerance, max_iterations)
        eps_m = jnp.asarray(eps, logits.dtype)[None, None]
        plan = jnp.exp(_log_plan(logits, eps_m, potentials))
        return potentials, (plan, it, error)

    grid = (jnp.asarray(eps_grid, logits.dtype), jnp.asarray(tolerances, logits.dtype))
    _, (plan, it, error) = lax.scan(step, Potentials(zeros, zeros), grid)
    return {
        "plan": plan,
        "iterations": it,
        "marginal_error": error,
        "entropy": spectra.entropy(plan) / (n * math.log(n)),
        "sigma2": spectra.sigma2(plan),
    }


@functools.cache
def _jitted_qsa_sweep(max_iterations: int):
    return jax.jit(functools.partial(qsa_sweep, max_iterations=max_iterations))


def qsa_calibrate(
    logits,
    *,
    eps0: float,
    eps_min: float,
    decay: float,
    power: float = 1.0,
    safety: float = 1.0,
    switch_fraction: float = 0.5,
    entropy_threshold: float = 0.1,
    stall_constant: float = 1.0,
    runtime_iterations: int = 20,
    criteria: tuple[str, ...] = CRITERIA,
    tolerance: float = 1e-6,
    max_iterations: int = 5000,
) -> QSAResult:
    """QSA calibration, Phase I of EPH-ASC (arXiv 2601.23039; the criteria are ours).

    A quasi-static sweep eps_k = eps0 * decay^k down to eps_min on a proxy batch of logits
    (a warmed-up model's, on ~1-5% of the data), each solve warm-started from the
    previous potentials and run to ``tolerance``. Collapse index k* = the first k where an
    enabled criterion fires:

    - "switch": the hard assignment (Hungarian on P) changed since k - 1 on at least a
      fraction ``switch_fraction`` of the instances. On log P the assignment could never
      change (see ``hard_permutation``); on P it can, at intermediate eps.
    - "entropy": the median normalized entropy is below ``entropy_threshold``.
    - "stall": the median solver gap 1 - sigma_2^2 is below stall_constant /
      runtime_iterations: K runtime sweeps then shrink an error by at most
      (1 - gap)^K ~ exp(-stall_constant).
    - "drift_peak": the batch drift (RMS over instances) peaks at k (its first maximum
      over k >= 1), strictly before the last grid point (a drift still rising at eps_min
      has no peak yet).

    Medians over instances keep one odd instance from deciding (ours).
    k_safe = safety * median over instances of d_k* / eps_k*^p, eps_c = eps_k*. Use the
    same decay and power in the runtime controller, so that its per-check drift is
    comparable with QSA's per-grid-step drift. Runs on the host: one jitted sweep, then
    Hungarian matchings with scipy.

    Args:
      logits: (B, n, n) proxy batch (or (n, n) for one instance); logits = -cost.
      eps0, eps_min, decay: the grid; decay in (0, 1).
      power: p in d / eps^p.
      safety: s > 0 in k_safe = s * median(r).
      switch_fraction: q in (0, 1].
      entropy_threshold: in [0, 1]; 0 disables in effect.
      stall_constant: c >= 0 in gap < c / runtime_iterations.
      runtime_iterations: the Sinkhorn sweeps K the runtime layer runs.
      criteria: the enabled subset of ``CRITERIA``.
      tolerance, max_iterations: per-solve stopping rule. At eps_k the tolerance is
        raised to the dtype's resolution, 4 * machine eps * max|logits| / eps_k (the
        rounding of the exponent logits / eps, as in tests/test_sinkhorn.py), where it is
        larger: float32 cannot meet 1e-6 below eps ~ 0.5 max|logits|, and a solve would
        otherwise spin to ``max_iterations``. ``trace.converged`` uses the same tolerance.
    """
    logits = _check_logits(logits)
    if logits.ndim == 2:
        logits = logits[None]
    if logits.ndim != 3:
        raise ValueError(f"logits must have shape (B, n, n) or (n, n), got {logits.shape}")
    grid = qsa_grid(eps0, eps_min, decay)
    _checks.check_in_range(power, "power")
    _checks.check_in_range(safety, "safety")
    _checks.check_in_range(switch_fraction, "switch_fraction", 0, 1)
    _checks.check_in_range(entropy_threshold, "entropy_threshold", 0, 1, include_low=True)
    _checks.check_in_range(stall_constant, "stall_constant", include_low=True)
    runtime_iterations = _checks.check_positive_int(runtime_iterations, "runtime_iterations")
    for name in criteria:
        _checks.check_choice(name, CRITERIA, "criteria")
    _checks.check_in_range(tolerance, "tolerance")
    max_iterations = _checks.check_positive_int(max_iterations, "max_iterations")

    resolution = 4 * float(jnp.finfo(logits.dtype).eps) * float(jnp.max(jnp.abs(logits)))
    tolerances = np.maximum(tolerance, resolution / grid)
    out = _jitted_qsa_sweep(max_iterations)(logits, grid, tolerances)
    out = {name: np.asarray(value) for name, value in out.items()}
    plan = out["plan"].astype(np.float64)
    per_instance = np.full(plan.shape[:2], np.nan)
    per_instance[1:] = np.sqrt(np.sum((plan[1:] - plan[:-1]) ** 2, axis=(-2, -1)))
    batch_drift = np.sqrt(np.mean(per_instance**2, axis=1))
    ratio = per_instance / grid[:, None] ** power
    assignment = hard_permutation(plan)
    switched = np.zeros(len(grid))
    switched[1:] = np.mean(np.any(assignment[1:] != assignment[:-1], axis=-1), axis=-1)
    sigma2 = out["sigma2"].astype(np.float64)
    trace = QSATrace(
        eps=grid,
        drift=per_instance,
        batch_drift=batch_drift,
        ratio=ratio,
        entropy=out["entropy"].astype(np.float64),
        assignment=assignment,
        switch_fraction=switched,
        sigma2=sigma2,
        gap=1 - sigma2**2,
        iterations=out["iterations"],
        marginal_error=out["marginal_error"].astype(np.float64),
        tolerance=tolerances,
        converged=out["marginal_error"] <= tolerances[:, None],
    )

    fires = {
        "switch": (np.arange(len(grid)) >= 1) & (switched >= switch_fraction),
        "entropy": np.median(trace.entropy, axis=1) < entropy_threshold,
        "stall": np.median(trace.gap, axis=1) < stall_constant / runtime_iterations,
        "drift_peak": np.zeros(len(grid), bool),
    }
    if len(grid) >= 3:
        peak = 1 + int(np.argmax(batch_drift[1:]))
        fires["drift_peak"][peak] = peak < len(grid) - 1
    first_fired = {}
    for name in criteria:
        hits = np.flatnonzero(fires[name])
        first_fired[name] = int(hits[0]) if hits.size else None
    fired = [k for k in first_fired.values() if k is not None]
    if not fired:
        return QSAResult(math.nan, math.nan, None, (), first_fired, trace)
    k_star = min(fired)
    names = tuple(name for name, k in first_fired.items() if k == k_star)
    k_safe = safety * float(np.median(ratio[k_star])) if k_star >= 1 else math.nan
    return QSAResult(k_safe, float(grid[k_star]), k_star, names, first_fired, trace)


# ---------------------------------------------------------------------------------------
# Exp-domain Sinkhorn layer: the honesty control for the log-domain one


def sinkhorn_layer_exp(logits: jax.Array, eps, *, iterations: int) -> LayerOutput:
    """Sinkhorn of the kernel K = exp(logits / eps) with scalings u, v, in the input dtype.

    The classical (kernel / scaling) form: ``iterations`` sweeps of u = 1 / (K v), then
    v = 1 / (K^T u) from u = v = 1, P = diag(u) K diag(v): the same iterates as
    ``sinkhorn_layer`` (cold start) in exact arithmetic. It is deliberately naive, a
    control for float underflow: K underflows once -logits / eps exceeds ~87 in float32
    (~103 with subnormals), e.g. below eps ~ 0.023 for logits in [-2, 0], and then the
    plan holds zeros (log_plan -inf, log's gradient 0/0 = NaN) or a whole row of K is 0
    and u = 1/0 turns the plan into inf/NaN. The log-domain layer stays finite there.

    Returns a ``LayerOutput`` like ``sinkhorn_layer``: log_plan = log P (computed from P,
    so -inf where P underflowed), potentials (eps log u, eps log v) in the same
    convention, and the marginal error of P.
    """
    logits = _check_logits(logits)
    _checks.check_temperature(eps, "eps")
    iterations = _checks.check_positive_int(iterations, "iterations")
    eps_m = jnp.asarray(eps, logits.dtype)[..., None, None]
    kernel = jnp.exp(logits / eps_m)

    def sweep(_, scalings):
        _, v = scalings
        u = 1 / jnp.sum(kernel * v[..., None, :], axis=-1)
        v = 1 / jnp.sum(kernel * u[..., :, None], axis=-2)
        return u, v

    ones = jnp.ones(logits.shape[:-1], logits.dtype)
    u, v = lax.fori_loop(0, iterations, sweep, (ones, ones))
    plan = u[..., :, None] * kernel * v[..., None, :]
    eps_v = eps_m[..., 0]
    potentials = Potentials(eps_v * jnp.log(u), eps_v * jnp.log(v))
    return LayerOutput(jnp.log(plan), potentials, jnp.maximum(*sinkhorn.marginal_errors(plan)))


LAYERS = {"log": sinkhorn_layer, "exp": sinkhorn_layer_exp}
