"""An optax training loop for models with a Sinkhorn layer, with a temperature hook.

The loop is one ``lax.scan`` (jit and vmap it from outside: over seeds, schedules, k_safe).
eps per step comes from an open-loop schedule (step -> eps, ``jaxdsm.anneal``) or, when
``closed_loop`` is true, from an EPH-ASC ``anneal.Controller``. Steps run in blocks of
``check_every``; after each block the plan of a fixed monitor batch (not the training
batch) at the block's last eps is measured and fed to the controller, which sets eps for
the next block. The controller is updated in open-loop runs too (its eps is then unused),
so their drift is recorded on the same footing.

Loss: permutation cross-entropy -mean_i log P[i, target_i] on the log plan of
``anneal.sinkhorn_layer`` (log domain, ``iterations`` sweeps from a cold start; or, with
``domain="exp"``, the exp-domain ``anneal.sinkhorn_layer_exp``, an underflow control), on the
logits plus ``noise_scale`` times Gumbel noise (Gumbel-Sinkhorn; 0 for plain Sinkhorn).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import NamedTuple

import jax
import jax.numpy as jnp
import optax
from jax import lax

from jaxdsm import _checks, anneal, spectra

# (params, x, y) -> logits (..., N, N)
ApplyFn = Callable[[object, jax.Array, jax.Array], jax.Array]
# key -> (x, y, target): a fresh training batch
BatchFn = Callable[[jax.Array], tuple[jax.Array, jax.Array, jax.Array]]


class History(NamedTuple):
    """Per-step records (shape (steps,)) and per-check records (shape (checks,)).

    Per step: loss, eps (the temperature used), grad_norm (global L2 norm), nonfinite (loss
    or gradient not finite), accuracy (row-argmax of the training batch's plan, noise
    included), marginal_error (of that plan), braking (the controller braked at its last
    check; always false open-loop), drift (the controller's last measured drift).
    Per check (after steps check_every, 2 check_every, ...): check_drift, check_threshold,
    check_braked, check_eps (eps the monitor plan was measured at), monitor_accuracy
    (row-argmax accuracy of the monitor batch at ``readout_eps``), check_learning_drift
    (monitor plan change over the block at the block's fixed eps: the encoders' learning),
    check_cooling_drift (change from eps to cooling_decay * eps at the new, fixed
    parameters: QSA's drift), check_sigma2 (median over the monitor batch of sigma_2 of
    its plan, a DSM = n x the unit-mass plan; ``spectra.sigma2``) and check_gap (median of
    the solver gap 1 - sigma_2^2).
    """

    loss: jax.Array
    eps: jax.Array
    grad_norm: jax.Array
    nonfinite: jax.Array
    accuracy: jax.Array
    marginal_error: jax.Array
    braking: jax.Array
    drift: jax.Array
    check_drift: jax.Array
    check_threshold: jax.Array
    check_braked: jax.Array
    check_eps: jax.Array
    monitor_accuracy: jax.Array
    check_learning_drift: jax.Array
    check_cooling_drift: jax.Array
    check_sigma2: jax.Array
    check_gap: jax.Array


class TrainResult(NamedTuple):
    params: object
    snapshot: object  # params after ``snapshot_step`` steps (the initial ones if None)
    history: History


def permutation_loss(log_plan: jax.Array, target: jax.Array) -> jax.Array:
    """-mean over instances and rows of log P[i, target_i]."""
    picked = jnp.take_along_axis(log_plan, target[..., None], axis=-1)[..., 0]
    return -jnp.mean(picked)


def plan_l2_loss(log_plan: jax.Array, target: jax.Array) -> jax.Array:
    """mean over instances of ||P - Pi||_F^2 / N, Pi the target permutation matrix.

    Unlike the cross-entropy, its gradient vanishes on a confidently wrong row (P saturated
    at a wrong vertex), so a plan frozen too early cannot be pulled back (ours)."""
    n = log_plan.shape[-1]
    truth = jax.nn.one_hot(target, n, dtype=log_plan.dtype)
    return jnp.mean(jnp.sum(jnp.square(jnp.exp(log_plan) - truth), axis=(-2, -1))) / n


LOSSES = {"ce": permutation_loss, "l2": plan_l2_loss}


def row_accuracy(scores: jax.Array, target: jax.Array) -> jax.Array:
    """Fraction of rows whose argmax is the target column."""
    return jnp.mean(jnp.argmax(scores, axis=-1) == target)


def train(
    apply_fn: ApplyFn,
    params,
    optimizer: optax.GradientTransformation,
    *,
    key: jax.Array,
    sample_batch: BatchFn,
    monitor: tuple[jax.Array, jax.Array, jax.Array],
    steps: int,
    iterations: int,
    schedule: anneal.Schedule,
    controller: anneal.Controller | None = None,
    closed_loop=None,
    check_every: int = 1,
    noise_scale=0.0,
    readout_eps=None,
    snapshot_step: int | None = None,
    loss: str = "ce",
    cooling_drift=False,
    cooling_decay=0.95,
    domain: str = "log",
) -> TrainResult:
    """Trains ``params`` for ``steps`` optimizer steps; pure (jit/vmap it from outside).

    Args:
      apply_fn: (params, x, y) -> logits (higher = more likely matched).
      params: initial parameters.
      optimizer: an optax transformation.
      key: step t draws its batch from fold_in(key, t) and its Gumbel noise from a key split
        off that.
      sample_batch: key -> (x, y, target) with target (B, N) the column of each row.
      monitor: a fixed (x, y, target) batch for the drift and the monitor accuracy.
      steps: optimizer steps, a multiple of ``check_every``.
      iterations: Sinkhorn sweeps K per layer call.
      schedule: step -> eps, used when the run is open-loop.
      controller: an ``anneal.eph_asc`` controller; its ``check_every`` should be 1, as it is
        updated once per block here. Without one, nothing brakes and drift is still recorded
        (against the previous check's plan).
      closed_loop: bool (traced allowed): eps from the controller instead of the schedule.
        Default: whether a controller is given.
      check_every: steps per block (static).
      noise_scale: Gumbel noise scale on the logits (traced; 0 = plain Sinkhorn).
      readout_eps: eps of the monitor accuracy (default: the block's eps).
      loss: "ce" (permutation cross-entropy) or "l2" (``plan_l2_loss``).
      cooling_drift: bool (traced allowed): feed the controller the cooling drift (the
        plan change of one cooling step, eps -> cooling_decay * eps, at the current fixed
        parameters) instead of the total drift since the last check (which includes the
        learning). QSA's sweep measures the former at eps_k = cooling_decay * eps, so pass
        k_safe * cooling_decay^p to the controller for the same threshold.
      cooling_decay: the factor of the cooling drift (traced; the controller's decay).
      domain: "log" (``anneal.sinkhorn_layer``) or "exp" (``anneal.sinkhorn_layer_exp``,
        which underflows at small eps in float32) for every layer call (static).
      snapshot_step: also return the params after this many steps (a multiple of
        ``check_every``).
    """
    steps = _checks.check_positive_int(steps, "steps")
    loss_of_plan = LOSSES[_checks.check_choice(loss, LOSSES, "loss")]
    layer = anneal.LAYERS[_checks.check_choice(domain, anneal.LAYERS, "domain")]
    iterations = _checks.check_positive_int(iterations, "iterations")
    check_every = _checks.check_positive_int(check_every, "check_every")
    if steps % check_every:
        raise ValueError(f"steps ({steps}) must be a multiple of check_every ({check_every})")
    if snapshot_step is not None and (snapshot_step % check_every or snapshot_step > steps):
        raise ValueError(f"snapshot_step ({snapshot_step}) must be a multiple of check_every "
                         f"({check_every}) and <= steps ({steps})")
    if closed_loop is None:
        closed_loop = controller is not None
    if controller is None:
        # A controller that never brakes (huge k_safe) only measures the drift.
        controller = anneal.eph_asc(1.0, eps_min=1.0, decay=1.0, k_safe=1e30)
    mx, my, mtarget = monitor

    def monitor_plan(params, eps):
        return layer(apply_fn(params, mx, my), eps, iterations=iterations).plan

    def loss_fn(params, x, y, target, eps, noise_key):
        logits = apply_fn(params, x, y)
        noise = jax.random.gumbel(noise_key, logits.shape, logits.dtype)
        out = layer(logits + noise_scale * noise, eps, iterations=iterations)
        value = loss_of_plan(out.log_plan, target)
        return value, (row_accuracy(out.log_plan, target), jnp.max(out.marginal_error))

    grad_fn = jax.value_and_grad(loss_fn, has_aux=True)

    def train_step(carry, t):
        params, opt_state, ctrl, block_eps = carry
        eps = jnp.where(closed_loop, block_eps, schedule(t))
        batch_key, noise_key = jax.random.split(jax.random.fold_in(key, t))
        x, y, target = sample_batch(batch_key)
        (loss, (accuracy, error)), grads = grad_fn(params, x, y, target, eps, noise_key)
        grad_norm = optax.tree.norm(grads)
        updates, opt_state = optimizer.update(grads, opt_state, params)
        params = optax.apply_updates(params, updates)
        record = (loss, eps, grad_norm, ~(jnp.isfinite(loss) & jnp.isfinite(grad_norm)),
                  accuracy, error, ctrl.braking & closed_loop, ctrl.drift)
        return (params, opt_state, ctrl, block_eps), record

    def block(carry, b):
        params, opt_state, ctrl, snapshot = carry
        first = b * check_every
        start_params = params
        inner = (params, opt_state, ctrl, ctrl.eps)
        (params, opt_state, _, _), records = lax.scan(
            train_step, inner, first + jnp.arange(check_every))
        eps = records[1][-1]  # the eps of the block's last step
        plan = monitor_plan(params, eps)
        # The drift split at this check: learning = new params at the block's eps; cooling =
        # the next cooling step at the new, fixed params (what QSA's sweep measures).
        learning = anneal.drift(plan, monitor_plan(start_params, eps))
        cooled_plan = monitor_plan(params, cooling_decay * eps)
        cooling = anneal.drift(cooled_plan, plan)
        # Total drift: plan against the last check's; cooling drift: the cooled plan against
        # this one (the controller's threshold then has to be rescaled by the caller).
        previous = jnp.where(cooling_drift, plan, ctrl.previous_plan)
        ctrl, info = controller.update(ctrl._replace(previous_plan=previous),
                                       jnp.where(cooling_drift, cooled_plan, plan))
        ctrl = ctrl._replace(previous_plan=plan)
        if snapshot_step is not None:
            snapshot = jax.tree.map(
                lambda s, p: jnp.where(first + check_every == snapshot_step, p, s),
                snapshot, params)
        readout = eps if readout_eps is None else readout_eps
        monitor_acc = row_accuracy(monitor_plan(params, readout), mtarget)
        sigma2 = spectra.sigma2(plan)
        # An open-loop run's controller only measures: its brakes would be meaningless.
        checks = (info.drift, info.threshold, info.braked & closed_loop, eps, monitor_acc,
                  learning, cooling, jnp.median(sigma2), jnp.median(1 - sigma2**2))
        return (params, opt_state, ctrl, snapshot), (records, checks)

    eps_start = jnp.where(closed_loop, controller.init(jnp.zeros(())).eps, schedule(0))
    ctrl = controller.init(monitor_plan(params, eps_start))
    carry = (params, optimizer.init(params), ctrl, params)
    (params, _, _, snapshot), (records, checks) = lax.scan(
        block, carry, jnp.arange(steps // check_every))
    flat = [r.reshape((steps,) + r.shape[2:]) for r in records]
    return TrainResult(params, snapshot, History(*flat, *checks))
