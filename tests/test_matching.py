"""The matching study (Toy A): the data generator against a numpy re-statement of g and a
scipy Hungarian oracle, the training loop (learns; applies schedules step by step; follows
the EPH-ASC rule re-run by hand in numpy on its recorded drifts), config checks, and a tiny
run's folder."""

from __future__ import annotations

import dataclasses
import warnings

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
import reference
import scipy.optimize

from experiments import matching as mt
from experiments.common import execute, read_claims
from jaxdsm import anneal, results, train
from jaxdsm.models import matching as mm

# Eager dispatch of the many small ops costs seconds; one compile per shape is cheaper.
sample = jax.jit(mm.sample_instances, static_argnums=(2, 3))


def numpy_g(g: mm.Bijection, x: np.ndarray) -> np.ndarray:
    """g from its definition, in float64: R2 couple(warp(R1 x))."""
    p = {k: np.asarray(v, np.float64) for k, v in g._asdict().items()}
    z = x @ p["rotation_in"].T
    z = z + p["amplitude"] * np.tanh(p["frequency"] * z + p["shift"])
    z[..., -1] += p["coupling"] * np.sin(z[..., 0])
    return z @ p["rotation_out"].T


@pytest.mark.parametrize("dim", [2, 3])
def test_instances_are_noisy_g_of_permuted_x(dim):
    g = mm.random_bijection(jax.random.PRNGKey(dim), dim)
    for p in (g.rotation_in, g.rotation_out):
        np.testing.assert_allclose(np.asarray(p) @ np.asarray(p).T, np.eye(dim), atol=1e-5)
    key = jax.random.PRNGKey(7)
    clean = sample(key, g, 200, 8, 0.0)
    x, y, perm, target = (np.asarray(v) for v in clean)
    assert x.shape == y.shape == (200, 8, dim)
    assert all(sorted(p) == list(range(8)) for p in perm)
    # target is the inverse permutation: row i of x matches column target[i] of y.
    np.testing.assert_array_equal(np.take_along_axis(perm, target, axis=1),
                                  np.broadcast_to(np.arange(8), perm.shape))
    moved = numpy_g(g, np.take_along_axis(x.astype(np.float64), perm[..., None], axis=1))
    np.testing.assert_allclose(y, moved, atol=2e-5)
    np.testing.assert_allclose(np.take_along_axis(y, target[..., None], 1), numpy_g(g, x),
                               atol=2e-5)
    # Same key, sigma > 0: same x and perm, y off by Gaussian noise of scale sigma.
    noisy = sample(key, g, 200, 8, 0.3)
    np.testing.assert_array_equal(noisy.x, clean.x)
    np.testing.assert_array_equal(noisy.perm, clean.perm)
    residual = (np.asarray(noisy.y, np.float64) - moved).ravel()
    np.testing.assert_allclose(residual.std(), 0.3, rtol=0.05)  # 3200 d samples
    assert abs(residual.mean()) < 0.03
    # Deterministic in the key.
    again = sample(key, g, 200, 8, 0.3)
    np.testing.assert_array_equal(again.y, noisy.y)


def test_bijection_is_invertible_and_oracle_recovers_the_permutation():
    g = mm.random_bijection(jax.random.PRNGKey(1), 2)
    points = jax.random.normal(jax.random.PRNGKey(2), (500, 2)) * 2
    jac = jax.jit(jax.vmap(jax.jacfwd(lambda p: mm.apply_bijection(g, p))))(points)
    det = np.linalg.det(np.asarray(jac, np.float64))
    # Each factor has a Jacobian determinant of one sign everywhere (rotations +-1, warp and
    # coupling > 0), so g is a local diffeomorphism whose det never changes sign.
    assert np.all(np.abs(det) > 1e-3) and (np.all(det > 0) or np.all(det < 0))
    inst = sample(jax.random.PRNGKey(3), g, 50, 8, 0.0)
    x, y = np.asarray(inst.x, np.float64), np.asarray(inst.y, np.float64)
    gx = numpy_g(g, x)
    for b in range(50):
        cost = ((gx[b, :, None] - y[b, None]) ** 2).sum(-1)
        cols = scipy.optimize.linear_sum_assignment(cost)[1]
        np.testing.assert_array_equal(cols, np.asarray(inst.target[b]))
    # The library's oracle logits give the same matching.
    oracle = anneal.hard_permutation(mm.oracle_logits(g, inst))
    np.testing.assert_array_equal(oracle, np.asarray(inst.target))


def test_encoder_outputs_are_unit_vectors_and_cost_bounded():
    net = mm.Matcher(hidden=8, features=4, depth=1)
    x = jax.random.normal(jax.random.PRNGKey(0), (3, 5, 2))
    params = net.init(jax.random.PRNGKey(1), x, x)
    logits = np.asarray(net.apply(params, x, x * 2))
    assert logits.shape == (3, 5, 5)
    assert logits.min() >= -2 - 1e-5 and logits.max() <= 1e-5
    phi = np.asarray(mm.Encoder(8, 4, 1).apply(
        {"params": params["params"]["phi"]}, x), np.float64)
    np.testing.assert_allclose(np.linalg.norm(phi, axis=-1), 1, rtol=1e-5)


# One compiled training call with three runs shares its cost between the tests below.
STEPS, CHECK, N = 300, 10, 6
SCHEDULE = anneal.exponential(1.0, anneal.decay_to_reach(1.0, 0.05, 150), eps_min=0.05)
CONTROLLER = dict(eps0=0.5, eps_min=0.05, decay=0.8)


@pytest.fixture(scope="module")
def runs():
    net = mm.Matcher(hidden=32, features=8, depth=1)
    g = mm.random_bijection(jax.random.PRNGKey(11), 2)
    mon = mm.sample_instances(jax.random.PRNGKey(12), g, 16, N, 0.05)
    params = net.init(jax.random.PRNGKey(13), mon.x[:1], mon.y[:1])

    def batch(k):
        inst = mm.sample_instances(k, g, 16, N, 0.05)
        return inst.x, inst.y, inst.target

    def one(table, closed, k_safe):
        controller = anneal.eph_asc(CONTROLLER["eps0"], eps_min=CONTROLLER["eps_min"],
                                    decay=CONTROLLER["decay"], k_safe=k_safe)
        return train.train(net.apply, params, optax.adam(3e-3), key=jax.random.PRNGKey(14),
                           sample_batch=batch, monitor=(mon.x, mon.y, mon.target), steps=STEPS,
                           iterations=20, schedule=lambda t: table[t], controller=controller,
                           closed_loop=closed, check_every=CHECK, readout_eps=0.2).history

    t = jnp.arange(STEPS)
    tables = jnp.stack([anneal.constant(0.2)(t), SCHEDULE(t), jnp.zeros(STEPS)])
    hist = jax.jit(jax.vmap(one))(tables, jnp.array([False, False, True]),
                                  jnp.array([1.0, 1.0, 0.25]))
    return {name: np.asarray(v) for name, v in hist._asdict().items()}


def test_training_learns_at_constant_eps(runs):
    chance = 1 / N
    assert runs["monitor_accuracy"][0, -5:].mean() > 0.85 > 4 * chance
    assert runs["loss"][0, -30:].mean() < 0.5 * runs["loss"][0, :10].mean()
    assert not runs["nonfinite"].any()


def test_open_loop_eps_is_the_schedule_per_step(runs):
    expected = 1.0 * (0.05 / 1.0) ** (np.arange(STEPS) / 150)  # the closed form, float64
    np.testing.assert_allclose(runs["eps"][1], np.maximum(expected, 0.05), rtol=1e-5)
    np.testing.assert_allclose(runs["eps"][0], 0.2)
    assert not runs["check_braked"][:2].any()  # k_safe = 1 on open-loop runs: never used


def test_closed_loop_follows_the_controller_rule_on_recorded_drifts(runs):
    drift = runs["check_drift"][2].astype(np.float64)
    # The EPH-ASC rule by hand: brake when drift > k_safe * eps, else cool (floor eps_min).
    eps, k_safe = CONTROLLER["eps0"], 0.25
    block_eps, braked = [], []
    for d in drift:
        block_eps.append(eps)
        brake = not d <= k_safe * eps
        braked.append(brake)
        if not brake:
            eps = max(CONTROLLER["eps_min"], CONTROLLER["decay"] * eps)
    braked = np.array(braked)
    assert 0 < braked.sum() < len(braked), "the test needs both brakes and cooling"
    np.testing.assert_array_equal(runs["check_braked"][2], braked)
    np.testing.assert_allclose(runs["eps"][2], np.repeat(block_eps, CHECK), rtol=1e-5)
    np.testing.assert_allclose(runs["check_eps"][2], block_eps, rtol=1e-5)
    assert runs["eps"][2].min() >= np.float32(CONTROLLER["eps_min"])
    # Per-step records hold the last check's flag and drift.
    np.testing.assert_array_equal(runs["braking"][2][CHECK::CHECK], braked[:-1])
    np.testing.assert_allclose(runs["drift"][2][CHECK::CHECK], drift[:-1], rtol=1e-6)


def test_drift_split_sigma2_and_cooling_controller_at_fixed_parameters():
    """Learning rate 0: the learning drift is 0, the cooling drift, sigma_2 and the gap are
    those of float64 log-domain Sinkhorn plans of the fixed logits, and the controller on the
    cooling drift follows the EPH-ASC rule on those reference drifts."""
    net = mm.Matcher(hidden=16, features=4, depth=1)
    g = mm.random_bijection(jax.random.PRNGKey(21), 2)
    mon = mm.sample_instances(jax.random.PRNGKey(22), g, 5, N, 0.3)
    params = net.init(jax.random.PRNGKey(23), mon.x[:1], mon.y[:1])
    cost = -np.asarray(net.apply(params, mon.x, mon.y), np.float64)
    decay, checks, iterations = 0.8, 12, 20

    def plan(eps):
        return reference.algorithm1_log(cost, eps, iterations)

    def ref_drift(a, b):
        return np.sqrt(np.mean(np.sum((a - b) ** 2, axis=(-2, -1))))

    grid = decay ** np.arange(checks + 1)
    ratio = np.array([ref_drift(plan(decay * e), plan(e)) / e for e in grid])
    k_safe = 1.001 * ratio[:3].max()  # cools at least three times
    by_hand, eps = [], 1.0
    for _ in range(checks):
        by_hand.append(eps)
        if ref_drift(plan(decay * eps), plan(eps)) <= k_safe * eps:
            eps = max(0.01, decay * eps)

    def batch(k):
        inst = mm.sample_instances(k, g, 4, N, 0.3)
        return inst.x, inst.y, inst.target

    controller = anneal.eph_asc(1.0, eps_min=0.01, decay=decay, k_safe=k_safe)
    hist = jax.jit(lambda: train.train(
        net.apply, params, optax.sgd(0.0), key=jax.random.PRNGKey(24), sample_batch=batch,
        monitor=(mon.x, mon.y, mon.target), steps=2 * checks, iterations=iterations,
        schedule=anneal.constant(1.0), controller=controller, check_every=2,
        cooling_drift=True, cooling_decay=decay).history)()
    assert sum(e > by_hand[-1] for e in by_hand) >= 3
    np.testing.assert_allclose(hist.check_eps, by_hand, rtol=1e-5)
    np.testing.assert_array_equal(hist.check_learning_drift, 0.0)
    plans = [plan(e) for e in by_hand]
    cooling = [ref_drift(plan(decay * e), p) for e, p in zip(by_hand, plans)]
    np.testing.assert_allclose(hist.check_cooling_drift, cooling, rtol=2e-3, atol=1e-6)
    np.testing.assert_allclose(hist.check_drift, hist.check_cooling_drift, rtol=1e-6)
    sigma2 = np.array([np.linalg.svd(p, compute_uv=False)[:, 1] for p in plans])
    np.testing.assert_allclose(hist.check_sigma2, np.median(sigma2, 1), rtol=1e-3, atol=1e-5)
    np.testing.assert_allclose(hist.check_gap, np.median(1 - sigma2**2, 1), rtol=1e-3,
                               atol=1e-5)


def test_spikes_against_a_running_median():
    g = np.ones((2, 100))
    g[0, 60] = 11.0  # > 10 x median 1
    g[0, 70] = 9.0
    g[1, 80] = np.nan
    np.testing.assert_array_equal(mt.spikes(g, 10.0, 50), [1, 1])


def test_a_run_of_nan_gradients_counts_as_spikes_without_warnings():
    g = np.ones((2, 60))
    g[1] = np.nan  # a diverged run (the exp-domain ablation)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        np.testing.assert_array_equal(mt.spikes(g, 10.0, 50), [0, 10])


@pytest.mark.parametrize("change, message", [
    (dict(eps_min=2.0), "eps_min"),
    (dict(eps0=0.0), "eps0"),
    (dict(decay=1.5), "decay"),
    (dict(steps=105), "multiple of check_every"),
    (dict(warmup_steps=15), "warmup_steps"),
    (dict(seeds=1), "seeds"),
    (dict(n=1), "n"),
    (dict(ablation_iterations=(0,)), "ablation_iterations"),
    (dict(target=1.0), "target"),
    (dict(gumbel_taus=()), "gumbel_taus"),
    (dict(gumbel_taus=(0.0,)), "gumbel_taus"),
    (dict(loss="mse"), "loss"),
])
def test_invalid_config_raises(change, message):
    with pytest.raises(ValueError, match=message):
        mt.Config(**change)


def test_train_rejects_bad_step_counts():
    with pytest.raises(ValueError, match="multiple of check_every"):
        train.train(None, None, optax.adam(1e-3), key=None, sample_batch=None,
                    monitor=(None, None, None), steps=15, iterations=5,
                    schedule=anneal.constant(1.0), check_every=10)


TINY = mt.Config(seeds=2, steps=40, check_every=10, warmup_steps=20, hidden=8, features=4,
                 depth=1, batch=8, monitor=8, proxy=8, eval_instances=16,
                 ablation_iterations=(), spike_window=10, domain_ablation=False)


def test_tiny_run_writes_the_run_folder(tmp_path):
    run_dir = execute(mt.EXPERIMENT, TINY, out=tmp_path, run_id="r", progress=False)
    for name in ("config.json", "manifest.json", "arrays.npz", "summary.csv", "report.md",
                 "claims.json", "matching.png"):
        assert (run_dir / name).exists(), name
    rows = results.read_csv(run_dir / "summary.csv")
    methods = list(TINY.open_loop()) + ["eph_asc", "eph_asc_s0.5", "eph_asc_s2",
                                        "eph_asc_total"]
    assert [r["schedule"] for r in rows] == methods
    for column in ("schedule", "seeds", "accuracy_mean", "accuracy_std", "eps_reached",
                   "brake_fraction", "grad_spikes", "steps_to_target"):
        assert column in rows[0]
    assert all(r["seeds"] == "2" for r in rows)
    by = {r["schedule"]: r for r in rows}
    assert float(by["constant_eps_min"]["eps_reached"]) == pytest.approx(TINY.eps_min, rel=1e-6)
    assert float(by["constant_eps0"]["brake_fraction"]) == 0.0
    claims = read_claims(run_dir)
    assert [c.source for c in claims] == ["EPH-ASC (collapse)", "EPH-ASC (vs Gumbel)",
                                          "EPH-ASC (speed limit)", "EPH-ASC (QSA)"]
    arrays = results.read_npz(run_dir / "arrays.npz")
    assert arrays["eps"].shape == (len(methods), 2, 40)
    # The open-loop eps rows are the schedules themselves.
    schedules = TINY.schedules()
    for i, name in enumerate(TINY.open_loop()):
        np.testing.assert_allclose(arrays["eps"][i, 0], schedules[name](jnp.arange(40)),
                                   rtol=1e-6)
    saved = results.read_json(run_dir / "config.json")["config"]
    assert saved == {k: list(v) if isinstance(v, tuple) else v
                     for k, v in dataclasses.asdict(TINY).items()}
