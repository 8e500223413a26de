"""jaxdsm.anneal against closed forms, numpy float64 references and a numpy re-statement
of the EPH-ASC controller rule (jaxdsm's EPH-ASC specification, section 2).

Tolerances: schedules are float32 evaluations of elementary functions, compared with float64
closed forms at rtol 1e-5 (a few ulps of pow/exp with arguments up to ~10). Controller
drifts are placed 1% above or below their threshold, far beyond float32 rounding of a
Frobenius norm (~1e-6 relative), so "brakes exactly when" is unambiguous. QSA's 2x2 case
has closed forms for everything (below); its float32 values are compared at 1e-4.
"""

from __future__ import annotations

import itertools
import math

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
import reference as ref
import scipy.special

from jaxdsm import anneal, sinkhorn

# ---------------------------------------------------------------------------------------
# Schedules


def _closed_forms(t):
    """(schedule, float64 closed form) pairs, evaluated at integer steps t."""
    return [
        (anneal.constant(0.3), np.full(t.shape, 0.3)),
        (anneal.exponential(1.0, 0.9, eps_min=0.05),
         np.maximum(0.05, 0.9**t)),
        (anneal.exponential(0.5, 0.8, eps_min=0.01, transition_steps=10),
         np.maximum(0.01, 0.5 * 0.8 ** (t / 10))),
        (anneal.speed_limit(1.0, 0.2), 1.0 / (1 + 0.2 * t)),
        (anneal.speed_limit(0.5, 0.1, eps_min=0.1), np.maximum(0.1, 0.5 / (1 + 0.05 * t))),
        (anneal.beta_power_law(1.0, 0.5), (1 + t) ** -0.5),
        (anneal.beta_power_law(2.0, 1.5, eps_min=0.01), np.maximum(0.01, 2.0 * (1 + t) ** -1.5)),
    ]


def test_schedules_match_closed_forms_under_jit_and_vmap():
    t = np.arange(0, 300)
    for schedule, expected in _closed_forms(t.astype(np.float64)):
        traced = jax.jit(jax.vmap(schedule))(jnp.asarray(t))
        np.testing.assert_allclose(np.asarray(traced), expected, rtol=1e-5)
        assert schedule(7).shape == ()
        np.testing.assert_allclose(float(schedule(7)), expected[7], rtol=1e-5)


def test_speed_limit_beta_is_linear_in_step():
    eps0, rate = 0.8, 0.05
    t = np.arange(0, 500)
    beta = 1 / np.asarray(anneal.speed_limit(eps0, rate)(jnp.asarray(t)), np.float64)
    slope, intercept = np.polyfit(t, beta, 1)
    np.testing.assert_allclose([slope, intercept], [rate, 1 / eps0], rtol=1e-5)
    np.testing.assert_allclose(beta, intercept + slope * t, rtol=1e-5)
    # the step eps_t - eps_{t+1} shrinks like eps^2 (the "speed limit"): ratio = rate / (1 + ...)
    eps = 1 / beta
    step_over_eps2 = (eps[:-1] - eps[1:]) / (eps[:-1] * eps[1:])
    np.testing.assert_allclose(step_over_eps2, rate, rtol=1e-3)


def test_exponential_reaches_floor_at_computed_step():
    eps0, decay, eps_min = 1.0, 0.93, 0.02
    first = math.ceil(math.log(eps_min / eps0) / math.log(decay))  # 54 (53.9...)
    schedule = anneal.exponential(eps0, decay, eps_min=eps_min)
    assert float(schedule(first)) == np.float32(eps_min)
    assert float(schedule(first - 1)) > eps_min * 1.01
    assert float(schedule(10 * first)) == np.float32(eps_min)
    # optax's own exponential_decay, where it applies (decay < 1), agrees
    reference = optax.exponential_decay(eps0, 1, decay, end_value=eps_min)
    steps = jnp.arange(100)
    np.testing.assert_allclose(schedule(steps), reference(steps), rtol=1e-6)


def test_to_reach_helpers_hit_eps_min_at_the_given_step():
    eps0, eps_min, steps = 1.0, 0.01, 400
    schedules = [
        anneal.exponential(eps0, anneal.decay_to_reach(eps0, eps_min, steps), eps_min=1e-9),
        anneal.speed_limit(eps0, anneal.rate_to_reach(eps0, eps_min, steps)),
        anneal.beta_power_law(eps0, anneal.kappa_to_reach(eps0, eps_min, steps)),
    ]
    for schedule in schedules:
        np.testing.assert_allclose(float(schedule(steps)), eps_min, rtol=1e-5)
        assert float(schedule(steps - 1)) > eps_min
        np.testing.assert_allclose(float(schedule(0)), eps0, rtol=1e-7)


def test_schedule_drives_an_optax_transformation():
    schedule = anneal.exponential(1.0, 0.5, eps_min=0.1)
    tx = optax.scale_by_schedule(schedule)
    params = jnp.ones(3)
    state = tx.init(params)
    for step in range(5):
        updates, state = tx.update(jnp.ones(3), state)
        np.testing.assert_allclose(updates, max(0.1, 0.5**step) * np.ones(3), rtol=1e-6)


# ---------------------------------------------------------------------------------------
# Controller


def simulate_controller(drifts, *, eps0, eps_min, decay, k_safe, power=1.0, hysteresis=0.0,
                        check_every=1):
    """The rule of section 2 in plain numpy: returns (eps after each update, braked flags).

    ``drifts[t]`` is the drift the update t would measure (vs the last check's plan)."""
    eps, braking = eps0, False
    eps_out, braked_out = [], []
    for t, d in enumerate(drifts, start=1):
        braked = False
        if t % check_every == 0:
            threshold = k_safe * eps**power * ((1 - hysteresis) if braking else 1.0)
            braked = not d <= threshold
            if not braked:
                eps = max(eps_min, decay * eps)
            braking = braked
        eps_out.append(eps)
        braked_out.append(braked)
    return np.asarray(eps_out), np.asarray(braked_out)


def plans_with_drifts(rng, drifts, batch=4, n=5):
    """Monitor plans whose RMS Frobenius change from one to the next is ``drifts[t]``.

    Each instance moves along its own unit direction E_b scaled by w_b, with
    mean_b w_b^2 = 1, so the RMS over the batch is exactly the requested drift while the
    instances differ. Signs alternate to keep the plans bounded.
    Returns (initial plan, (T, batch, n, n) plans)."""
    base = rng.dirichlet(np.ones(n), size=(batch, n))
    direction = rng.normal(size=(batch, n, n))
    direction /= np.linalg.norm(direction, axis=(-2, -1), keepdims=True)
    weights = rng.uniform(0.5, 1.5, size=batch)
    weights /= np.sqrt(np.mean(weights**2))
    offsets = np.cumsum([(-1) ** t * d for t, d in enumerate(drifts)])
    plans = base + offsets[:, None, None, None] * weights[:, None, None] * direction
    return base.astype(np.float32), plans.astype(np.float32)


def run_controller(controller, initial_plan, plans):
    def step(state, plan):
        return controller.update(state, plan)

    state, history = jax.lax.scan(jax.jit(step), controller.init(initial_plan), plans)
    return state, history


def test_controller_brakes_exactly_when_drift_exceeds_threshold(rng):
    hyper = dict(eps0=1.0, eps_min=0.05, decay=0.9, k_safe=0.3, power=1.0)
    # choose each drift 1% above or below the threshold the controller will face
    pattern = rng.random(80) < 0.4
    drifts, eps = [], hyper["eps0"]
    for brake in pattern:
        threshold = hyper["k_safe"] * eps ** hyper["power"]
        drifts.append(threshold * (1.01 if brake else 0.99))
        if not brake:
            eps = max(hyper["eps_min"], hyper["decay"] * eps)
    initial, plans = plans_with_drifts(rng, drifts)
    state, history = run_controller(anneal.eph_asc(**hyper), initial, jnp.asarray(plans))

    np.testing.assert_array_equal(np.asarray(history.braked), pattern)
    np.testing.assert_allclose(history.drift, drifts, rtol=1e-4)
    expected_eps, expected_braked = simulate_controller(drifts, **hyper)
    np.testing.assert_array_equal(expected_braked, pattern)  # the reference agrees
    np.testing.assert_allclose(history.eps, expected_eps, rtol=1e-5)
    assert int(state.brakes) == pattern.sum()
    assert bool(state.braking) == pattern[-1]
    assert int(state.step) == len(drifts)
    np.testing.assert_allclose(state.drift, drifts[-1], rtol=1e-4)
    np.testing.assert_array_equal(state.previous_plan, plans[-1])


def test_controller_with_zero_drift_cools_to_eps_min_and_stays():
    eps0, eps_min, decay = 1.0, 0.1, 0.8
    controller = anneal.eph_asc(eps0, eps_min=eps_min, decay=decay, k_safe=1.0)
    plan = np.full((3, 4, 4), 0.25, np.float32)
    _, history = run_controller(controller, plan, jnp.broadcast_to(plan, (40, 3, 4, 4)))
    eps = np.asarray(history.eps)
    assert eps.min() >= np.float32(eps_min)
    first = math.ceil(math.log(eps_min / eps0) / math.log(decay))  # 11: 0.8^11 = 0.086
    assert np.all(eps[first - 1:] == np.float32(eps_min))  # update t (1-based) gives eps_t
    assert eps[first - 2] > eps_min
    np.testing.assert_allclose(eps[: first - 1], decay ** np.arange(1, first), rtol=1e-5)
    assert not np.any(history.braked)


def test_controller_vmaps_over_k_safe_and_over_controllers(rng):
    hyper = dict(eps0=0.5, eps_min=0.02, decay=0.85)
    drifts = rng.uniform(0.0, 0.2, size=60)
    initial, plans = plans_with_drifts(rng, drifts)
    k_values = jnp.asarray([0.05, 0.2, 0.6])

    def run(k_safe):
        return run_controller(anneal.eph_asc(**hyper, k_safe=k_safe), initial, plans)[1]

    history = jax.jit(jax.vmap(run))(k_values)
    for i, k in enumerate(np.asarray(k_values, np.float64)):
        expected_eps, expected_braked = simulate_controller(drifts, **hyper, k_safe=k)
        np.testing.assert_array_equal(history.braked[i], expected_braked)
        np.testing.assert_allclose(history.eps[i], expected_eps, rtol=1e-5)
    assert len({tuple(np.asarray(b)) for b in history.braked}) == 3  # the k values matter

    # a batch of independent controllers (one per monitor set), vmapped update
    controller = anneal.eph_asc(**hyper, k_safe=0.2)
    drift_sets = rng.uniform(0.0, 0.2, size=(3, 30))
    runs = [plans_with_drifts(rng, drifts) for drifts in drift_sets]
    states = jax.vmap(controller.init)(jnp.stack([r[0] for r in runs]))
    stacked = jnp.stack([r[1] for r in runs], axis=1)  # (T, controllers, batch, n, n)
    update = jax.jit(jax.vmap(controller.update))
    for plans_t in stacked:
        states, _ = update(states, plans_t)
    for i, drifts_i in enumerate(drift_sets):
        expected_eps, expected_braked = simulate_controller(drifts_i, **hyper, k_safe=0.2)
        np.testing.assert_allclose(states.eps[i], expected_eps[-1], rtol=1e-5)
        assert int(states.brakes[i]) == expected_braked.sum()


def test_controller_check_every_and_hysteresis(rng):
    hyper = dict(eps0=1.0, eps_min=0.05, decay=0.8, k_safe=0.25, power=1.5,
                 hysteresis=0.5, check_every=3)
    # the plan moves once per check period, so every update of period k measures the
    # drift checks[k] against the previous check's plan
    checks = rng.uniform(0.0, 0.35, size=25)
    drifts = np.repeat(checks, 3)
    base, check_plans = plans_with_drifts(rng, checks)
    plans = np.repeat(check_plans, 3, axis=0)
    _, history = run_controller(anneal.eph_asc(**hyper), base, jnp.asarray(plans))
    expected_eps, expected_braked = simulate_controller(drifts, **hyper)
    np.testing.assert_array_equal(history.checked, (np.arange(1, 76) % 3) == 0)
    np.testing.assert_array_equal(history.braked, expected_braked)
    np.testing.assert_allclose(history.eps, expected_eps, rtol=1e-5)
    np.testing.assert_allclose(history.drift, drifts, rtol=1e-4)
    # hysteresis changed at least one decision compared with h = 0
    _, plain = simulate_controller(drifts, **{**hyper, "hysteresis": 0.0})
    assert np.any(plain != expected_braked)


def test_controller_brakes_on_nan_drift():
    controller = anneal.eph_asc(1.0, eps_min=0.1, decay=0.5, k_safe=1.0)
    state = controller.init(jnp.eye(3))
    state, info = jax.jit(controller.update)(state, jnp.full((3, 3), jnp.nan))
    assert bool(info.braked) and float(state.eps) == 1.0


@pytest.mark.parametrize(
    "make, message",
    [
        (lambda: anneal.eph_asc(0.0, eps_min=0.01, decay=0.9, k_safe=1.0), "eps0"),
        (lambda: anneal.eph_asc(1.0, eps_min=-0.1, decay=0.9, k_safe=1.0), "eps_min"),
        (lambda: anneal.eph_asc(1.0, eps_min=2.0, decay=0.9, k_safe=1.0), "eps_min"),
        (lambda: anneal.eph_asc(1.0, eps_min=0.1, decay=0.0, k_safe=1.0), "decay"),
        (lambda: anneal.eph_asc(1.0, eps_min=0.1, decay=1.1, k_safe=1.0), "decay"),
        (lambda: anneal.eph_asc(1.0, eps_min=0.1, decay=0.9, k_safe=0.0), "k_safe"),
        (lambda: anneal.eph_asc(1.0, eps_min=0.1, decay=0.9, k_safe=1.0, power=0), "power"),
        (lambda: anneal.eph_asc(1.0, eps_min=0.1, decay=0.9, k_safe=1.0, hysteresis=1.0),
         "hysteresis"),
        (lambda: anneal.eph_asc(1.0, eps_min=0.1, decay=0.9, k_safe=1.0, check_every=0),
         "check_every"),
        (lambda: anneal.constant(-1.0), "eps"),
        (lambda: anneal.exponential(1.0, 1.5, eps_min=0.1), "decay"),
        (lambda: anneal.exponential(1.0, 0.9, eps_min=3.0), "eps_min"),
        (lambda: anneal.exponential(float("nan"), 0.9, eps_min=0.1), "eps0"),
        (lambda: anneal.speed_limit(1.0, -0.1), "rate"),
        (lambda: anneal.beta_power_law(0.0, 1.0), "eps0"),
        (lambda: anneal.sinkhorn_layer(jnp.zeros((3, 3)), 0.0, iterations=5), "eps"),
        (lambda: anneal.sinkhorn_layer(jnp.zeros((3, 4)), 1.0, iterations=5), "logits"),
        (lambda: anneal.sinkhorn_layer(jnp.zeros((3, 3)), 1.0, iterations=0), "iterations"),
        (lambda: anneal.gumbel_sinkhorn(jax.random.key(0), jnp.zeros((3, 3)), -1.0), "tau"),
        (lambda: anneal.qsa_calibrate(jnp.zeros((3, 3)), eps0=1.0, eps_min=0.1, decay=1.0),
         "decay"),
        (lambda: anneal.qsa_calibrate(jnp.zeros((3, 3)), eps0=1.0, eps_min=0.1, decay=0.5,
                                      criteria=("nope",)), "criteria"),
        (lambda: anneal.hard_permutation(np.full((3, 3), np.nan)), "matrix"),
    ],
)
def test_invalid_arguments_raise(make, message):
    with pytest.raises(ValueError, match=message):
        make()


# ---------------------------------------------------------------------------------------
# Sinkhorn layer, Gumbel-Sinkhorn, hard permutations

# jitted once per shape and iteration count, shared by the tests (eager loops recompile)
layer = jax.jit(anneal.sinkhorn_layer, static_argnames="iterations")
gumbel = jax.jit(anneal.gumbel_sinkhorn, static_argnames="iterations")


@pytest.mark.parametrize("eps", [1.0, 0.1, 0.02])
def test_layer_matches_float64_log_domain_reference(rng, eps):
    iterations = 20  # converged at eps = 1, still moving at 0.02: compares iterates too
    logits = rng.random((4, 6, 6)).astype(np.float32)
    out = layer(jnp.asarray(logits), eps, iterations=iterations)
    expected = ref.algorithm1_log(-logits.astype(np.float64)[0], eps, iterations)
    # tolerance as tests/test_sinkhorn.py: 2e-6 plus the float32 rounding of logits / eps
    atol = 2e-6 + 4 * ref.EPS32 / eps
    np.testing.assert_allclose(np.asarray(out.plan[0]), expected, atol=atol)
    np.testing.assert_allclose(out.marginal_error[0], ref.marginal_errors(expected)[2],
                               atol=1e-6 + ref.EPS32 / eps)
    # batched eps broadcasts against the batch axes
    per_instance = layer(jnp.asarray(logits), jnp.full(4, eps), iterations=iterations)
    np.testing.assert_allclose(per_instance.log_plan, out.log_plan, rtol=1e-6, atol=1e-6)


def test_layer_warm_start_from_converged_potentials():
    logits = jnp.asarray(np.random.default_rng(3).random((8, 8)), jnp.float32)
    eps = 0.05
    cold = layer(logits, eps, iterations=1)
    converged = layer(logits, eps, iterations=3000)
    # float32 floor: the exponent (logits + f + g) / eps, of size up to 20, rounds at
    # ~EPS32 * 20 = 2.4e-6 relative
    floor = 1e-6 + 2 * ref.EPS32 * float(jnp.max(logits)) / eps
    assert float(converged.marginal_error) < floor
    warm = layer(logits, eps, iterations=1, init_potentials=converged.potentials)
    assert float(warm.marginal_error) < floor
    assert float(cold.marginal_error) > 1e-2
    np.testing.assert_allclose(warm.plan, converged.plan, atol=1e-5)


def test_layer_gradient_matches_finite_differences(x64, rng):
    logits = jnp.asarray(rng.normal(size=(5, 5)))
    weights = jnp.asarray(rng.normal(size=(5, 5)))
    iterations = 30

    def loss(logits, eps):
        out = anneal.sinkhorn_layer(logits, eps, iterations=iterations)
        return jnp.sum(weights * out.plan) + out.log_plan[0, 1]

    eps = 0.3
    grad_logits, grad_eps = jax.jit(jax.grad(loss, argnums=(0, 1)))(logits, eps)
    loss = jax.jit(loss)
    h = 1e-6
    numeric = np.zeros((5, 5))
    for i, j in itertools.product(range(5), range(5)):
        step = jnp.zeros((5, 5)).at[i, j].set(h)
        numeric[i, j] = (loss(logits + step, eps) - loss(logits - step, eps)) / (2 * h)
    np.testing.assert_allclose(grad_logits, numeric, rtol=1e-5, atol=1e-7)
    numeric_eps = (loss(logits, eps + h) - loss(logits, eps - h)) / (2 * h)
    np.testing.assert_allclose(grad_eps, numeric_eps, rtol=1e-5)


def test_gumbel_sinkhorn_without_noise_is_plain_sinkhorn(rng):
    logits = jnp.asarray(rng.random((6, 6)), jnp.float32)
    tau, iterations = 0.1, 200
    key = jax.random.key(1)
    plain = layer(logits, tau, iterations=iterations)
    quiet = gumbel(key, logits, tau, noise_scale=0.0, iterations=iterations)
    np.testing.assert_array_equal(quiet.log_plan, plain.log_plan)
    library = sinkhorn.sinkhorn(-logits, tau, max_iterations=iterations, mode="log")
    np.testing.assert_allclose(quiet.plan, library.matrix, atol=2e-6 + 4 * ref.EPS32 / tau)
    expected = ref.algorithm1_log(-np.asarray(logits, np.float64), tau, iterations)
    np.testing.assert_allclose(quiet.plan, expected, atol=2e-6 + 4 * ref.EPS32 / tau)


def test_gumbel_sinkhorn_marginals_and_noise(rng):
    logits = jnp.asarray(rng.random((6, 6)), jnp.float32)
    keys = jax.random.split(jax.random.key(2), 16)
    out = jax.vmap(lambda k: gumbel(k, logits, 0.5, noise_scale=1.0, iterations=200))(keys)
    plans = np.asarray(out.plan, np.float64)
    # each sweep ends with the column step: columns are exact, the rows carry the
    # (reported) error, which is small but not always below 1e-5 after 200 sweeps with noise
    row_error = np.abs(plans.sum(-1) - 1).max(-1)
    assert np.abs(plans.sum(-2) - 1).max() < 2e-6
    np.testing.assert_allclose(out.marginal_error, row_error, atol=1e-6)
    assert np.median(row_error) < 1e-5 and row_error.max() < 1e-3
    # the noise is the documented one: Sinkhorn of logits + scale * gumbel(key)
    noisy = logits + 2.0 * jax.random.gumbel(keys[0], logits.shape)
    again = gumbel(keys[0], logits, 0.5, noise_scale=2.0, iterations=200)
    np.testing.assert_allclose(again.plan, layer(noisy, 0.5, iterations=200).plan, atol=1e-6)
    # different keys give different plans
    assert np.ptp(plans[:, 0, 0]) > 1e-3


@pytest.mark.parametrize("n", [2, 3, 4, 5, 6])
def test_hard_permutation_matches_brute_force(rng, n):
    matrices = rng.random((5, n, n))
    perms = np.array(list(itertools.permutations(range(n))))
    rows = np.arange(n)
    expected = np.stack([perms[np.argmax(m[rows, perms].sum(axis=1))] for m in matrices])
    got = anneal.hard_permutation(jnp.asarray(matrices, jnp.float32))
    np.testing.assert_array_equal(got, expected)
    assert got.shape == (5, n)
    one_hot = anneal.permutation_matrix(got)
    np.testing.assert_array_equal(one_hot.sum(-1), 1)
    np.testing.assert_array_equal(one_hot.sum(-2), 1)
    np.testing.assert_array_equal(np.argmax(one_hot, axis=-1), got)


# ---------------------------------------------------------------------------------------
# QSA calibration
#
# Synthetic case with closed forms: 2x2 logits [[0, D], [D, 0]]. A 2x2 doubly stochastic
# matrix is [[1 - a, a], [a, 1 - a]], and the Sinkhorn limit keeps the kernel's cross ratio,
# (a / (1 - a))^2 = exp(2 D / eps), so a = sigmoid(D / eps). Then
#   normalized entropy  h(a) / log 2 (h the binary entropy in nats),
#   sigma_2 = |2a - 1|, solver gap 1 - sigma_2^2 = 4 a (1 - a),
#   drift between grid points ||P_k - P_{k-1}||_F = 2 |a_k - a_{k-1}|.

D_VALUES = np.array([0.8, 1.0, 1.3])
QSA_GRID = dict(eps0=4.0, eps_min=0.05, decay=0.8)


def two_by_two_case():
    logits = np.zeros((len(D_VALUES), 2, 2), np.float32)
    logits[:, 0, 1] = logits[:, 1, 0] = D_VALUES
    grid = QSA_GRID["eps0"] * QSA_GRID["decay"] ** np.arange(200)
    grid = grid[grid >= QSA_GRID["eps_min"]]
    a = scipy.special.expit(D_VALUES[None, :] / grid[:, None])  # (K, B)
    entropy = -(scipy.special.xlogy(a, a) + scipy.special.xlogy(1 - a, 1 - a)) / math.log(2)
    drift = np.full_like(a, np.nan)
    drift[1:] = 2 * np.abs(np.diff(a, axis=0))
    return logits, grid, a, entropy, drift


def first_index(condition):
    hits = np.flatnonzero(condition)
    assert hits.size, "the synthetic case must fire"
    return int(hits[0])


def test_qsa_trace_matches_two_by_two_closed_forms():
    logits, grid, a, entropy, drift = two_by_two_case()
    result = anneal.qsa_calibrate(logits, **QSA_GRID)
    trace = result.trace
    np.testing.assert_allclose(trace.eps, grid, rtol=1e-12)
    np.testing.assert_allclose(trace.entropy, entropy, atol=1e-4)
    np.testing.assert_allclose(trace.sigma2, np.abs(2 * a - 1), atol=1e-4)
    np.testing.assert_allclose(trace.gap, 4 * a * (1 - a), atol=2e-4)
    np.testing.assert_allclose(trace.drift[1:], drift[1:], atol=1e-4)
    np.testing.assert_allclose(trace.batch_drift[1:], np.sqrt(np.mean(drift[1:] ** 2, axis=1)),
                               atol=1e-4)
    assert np.all(trace.converged)
    # logits favour the anti-diagonal at every eps: the assignment never switches
    np.testing.assert_array_equal(trace.assignment, np.broadcast_to([1, 0], a.shape + (2,)))
    assert result.first_fired["switch"] is None


@pytest.mark.parametrize("threshold", [0.3, 0.05])
def test_qsa_entropy_collapse_index_and_k_safe(threshold):
    logits, grid, a, entropy, drift = two_by_two_case()
    median = np.median(entropy, axis=1)
    k_star = first_index(median < threshold)
    # the design is unambiguous: no grid point within float32 reach of the threshold
    assert np.min(np.abs(median - threshold)) > 1e-3
    result = anneal.qsa_calibrate(logits, **QSA_GRID, entropy_threshold=threshold,
                                  criteria=("entropy",), safety=2.0, power=1.0)
    assert result.collapse_index == k_star and result.criteria == ("entropy",)
    assert result.eps_c == pytest.approx(grid[k_star], rel=1e-12)
    expected_k_safe = 2.0 * np.median(drift[k_star] / grid[k_star])
    assert result.k_safe == pytest.approx(expected_k_safe, rel=1e-3)


def test_qsa_stall_and_drift_peak_indices():
    logits, grid, a, entropy, drift = two_by_two_case()
    c, k_runtime = 0.5, 20
    gap = np.median(4 * a * (1 - a), axis=1)
    k_stall = first_index(gap < c / k_runtime)
    assert np.min(np.abs(gap - c / k_runtime)) > 1e-3
    result = anneal.qsa_calibrate(logits, **QSA_GRID, criteria=("stall",),
                                  stall_constant=c, runtime_iterations=k_runtime, power=2.0)
    assert result.collapse_index == k_stall and result.criteria == ("stall",)
    assert result.k_safe == pytest.approx(np.median(drift[k_stall] / grid[k_stall] ** 2),
                                          rel=1e-3)

    rms = np.sqrt(np.mean(drift[1:] ** 2, axis=1))
    k_peak = 1 + int(np.argmax(rms))
    assert 1 < k_peak < len(grid) - 1
    # the top two drifts differ by far more than float32 plans can move them (~1e-7)
    assert np.sort(rms)[-1] - np.sort(rms)[-2] > 1e-5
    peak = anneal.qsa_calibrate(logits, **QSA_GRID, criteria=("drift_peak",))
    assert peak.collapse_index == k_peak and peak.criteria == ("drift_peak",)

    # all criteria: the earliest wins, and every first firing is reported
    both = anneal.qsa_calibrate(logits, **QSA_GRID, stall_constant=c,
                                runtime_iterations=k_runtime)
    firsts = [k for k in both.first_fired.values() if k is not None]
    assert both.collapse_index == min(firsts)
    assert both.first_fired["stall"] == k_stall and both.first_fired["drift_peak"] == k_peak


def test_qsa_reports_no_collapse():
    logits, *_ = two_by_two_case()
    # the 2x2 assignment never changes (checked above): "switch" alone never fires
    result = anneal.qsa_calibrate(logits, **QSA_GRID, criteria=("switch",))
    assert result.collapse_index is None and result.criteria == ()
    assert math.isnan(result.k_safe) and math.isnan(result.eps_c)


def _converged_plan(logits, eps):
    """float64 reference: log-domain sweeps until the row error is < 1e-12."""
    for iterations in (200, 2000, 20000):
        plan = ref.algorithm1_log(-logits, eps, iterations)
        if ref.marginal_errors(plan)[2] < 1e-12:
            return plan
    raise AssertionError("reference did not converge")


def test_qsa_assignment_switch_against_simulation():
    # Found by a search over 3x3 logits rounded to 0.01: the Hungarian matching of the plan P
    # (not of log P, which cannot change) moves from (0 1 2) to (0 2 1) between grid points
    # 12 and 13, with score margins >= 5e-4 at every grid point (float32 resolves ~1e-6).
    switching = np.array([[0.54, 0.11, 0.0], [0.12, 0.88, 0.3], [0.75, 0.94, 0.35]])
    steady = 3 * np.eye(3)  # strongly diagonal: never switches
    grid = dict(eps0=2.0, eps_min=0.08, decay=0.8)
    eps = anneal.qsa_grid(**grid)
    perms = np.array(list(itertools.permutations(range(3))))
    scores = np.array([_converged_plan(switching, e)[np.arange(3), perms].sum(1) for e in eps])
    best = perms[np.argmax(scores, axis=1)]
    changed = np.any(best[1:] != best[:-1], axis=1)
    k_switch = 1 + first_index(changed)
    top_two = np.sort(scores, axis=1)[:, -2:]
    assert np.min(top_two[:, 1] - top_two[:, 0]) > 4e-4

    logits = np.stack([switching, steady]).astype(np.float32)
    result = anneal.qsa_calibrate(logits, **grid, criteria=("switch",), switch_fraction=0.5)
    np.testing.assert_array_equal(result.trace.assignment[:, 0], best)
    np.testing.assert_array_equal(result.trace.assignment[:, 1], np.tile([0, 1, 2], (len(eps), 1)))
    assert result.collapse_index == k_switch and result.criteria == ("switch",)
    assert result.trace.switch_fraction[k_switch] == 0.5
    # one of two instances switched: a stricter q does not fire
    strict = anneal.qsa_calibrate(logits, **grid, criteria=("switch",), switch_fraction=0.75)
    assert strict.collapse_index is None


# ---------------------------------------------------------------------------------------
# Exp-domain layer (the float32 underflow control)

layer_exp = jax.jit(anneal.sinkhorn_layer_exp, static_argnames="iterations")


@pytest.mark.parametrize("eps", [1.0, 0.1, 0.03])
def test_exp_layer_matches_float64_reference_at_moderate_eps(rng, eps):
    # Costs in [0, 2] as in the matching study; max C / eps = 67 < 87: no underflow yet.
    iterations = 20
    cost = (2 * rng.random((3, 6, 6))).astype(np.float32)
    out = layer_exp(jnp.asarray(-cost), eps, iterations=iterations)
    expected = np.stack([ref.algorithm1(c.astype(np.float64), eps, iterations) for c in cost])
    # float32 rounding of exp(-C / eps): relative EPS32 * C / eps per entry
    atol = 2e-6 + 8 * ref.EPS32 * 2 / eps
    np.testing.assert_allclose(np.asarray(out.plan), expected, atol=atol)
    np.testing.assert_allclose(out.marginal_error, ref.marginal_errors(expected)[2],
                               atol=atol)
    # same potentials convention as the log layer: log P = (logits + f + g) / eps
    f, g = out.potentials
    rebuilt = (-cost + f[..., :, None] + g[..., None, :]) / eps
    np.testing.assert_allclose(np.exp(rebuilt), expected, atol=atol)
    np.testing.assert_allclose(out.plan, layer(jnp.asarray(-cost), eps, iterations=iterations).plan,
                               atol=atol)


def test_exp_layer_underflows_in_float32_where_log_layer_does_not(rng):
    eps, iterations = 0.01, 20
    # Diagonal cost 0, off-diagonal in [1, 2]: exp(-C / eps) <= e^-100 is 0 in float32.
    n = 6
    cost = np.where(np.eye(n, dtype=bool), 0.0, 1 + rng.random((n, n))).astype(np.float32)
    # Every cost in [1.5, 2]: whole rows of the kernel are 0, u = 1 / 0.
    far = (1.5 + 0.5 * rng.random((n, n))).astype(np.float32)
    for c in (cost, far):
        expected = ref.algorithm1_log(c.astype(np.float64), eps, iterations)
        logged = layer(jnp.asarray(-c), eps, iterations=iterations)
        assert np.all(np.isfinite(logged.log_plan))
        np.testing.assert_allclose(logged.plan, expected, atol=1e-5)
        exp = layer_exp(jnp.asarray(-c), eps, iterations=iterations)
        assert not np.all(np.isfinite(exp.log_plan))
    # A zero in P: finite plan, -inf log plan; all rows zero: NaN plan and marginal error.
    assert np.all(np.isfinite(layer_exp(jnp.asarray(-cost), eps, iterations=iterations).plan))
    broken = layer_exp(jnp.asarray(-far), eps, iterations=iterations)
    assert not np.all(np.isfinite(broken.plan)) and np.isnan(broken.marginal_error)

    # The cross-entropy gradient: NaN through the exp layer (log's 0/0), finite through log.
    def loss(logits, which):
        return -jnp.mean(jnp.diagonal(which(logits, eps, iterations=iterations).log_plan))

    grad = jax.jit(jax.grad(loss), static_argnums=1)
    assert np.all(np.isfinite(grad(jnp.asarray(-cost), anneal.sinkhorn_layer)))
    assert np.isnan(grad(jnp.asarray(-cost), anneal.sinkhorn_layer_exp)).any()
