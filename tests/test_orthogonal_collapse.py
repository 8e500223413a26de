"""The orthogonal-collapse experiment (Exp 2, Theorem 1) against a numpy float64 rerun of
the same trials, and its run folder."""

from __future__ import annotations

import jax
import numpy as np
import reference as ref

from experiments import orthogonal_collapse as oc
from experiments.common import execute, read_claims
from jaxdsm import results, signal, sinkhorn, sweep

SMALL = oc.Config(n=16, trials=40, trials_per_seed=20, temperatures=3, t_min=0.05,
                  t_max=50.0, chunk_size=16)


def test_trials_match_a_float64_rerun(tmp_path):
    run_dir = execute(oc.EXPERIMENT, SMALL, out=tmp_path, run_id="r", progress=False)
    arrays = results.read_npz(run_dir / "arrays.npz")
    n, nu = SMALL.n, SMALL.nu
    for ti, t in enumerate(SMALL.temperature_grid()):
        for trial in (0, 25, 39):
            key = sweep.trial_key(trial, seed=SMALL.seed, trials_per_seed=SMALL.trials_per_seed)
            k_cost, k_pair, k_xi, k_xi2 = jax.random.split(key, 4)
            cost = np.asarray(sinkhorn.random_cost(k_cost, n), np.float64)
            m = ref.algorithm1(cost, t, SMALL.iterations)
            # Inputs and noise are drawn by jaxdsm.signal; their laws are tested there.
            a, b = (np.asarray(x, np.float64) / np.sqrt(n) for x in signal.pair_with_cosine(k_pair, n, 0.9))
            xi = np.asarray(signal.isotropic_noise(k_xi, n, nu), np.float64)
            xi2 = np.asarray(signal.isotropic_noise(k_xi2, n, nu), np.float64)

            def ln(y):
                d = y - y.mean()
                return np.sqrt(n) * d / np.linalg.norm(d)

            u, v = ln(m @ a + xi), ln(m @ b + xi2)
            np.testing.assert_allclose(arrays["cos"][ti, trial], u @ v / n, atol=2e-5)
            sv = ref.singular_values(m)
            np.testing.assert_allclose(arrays["sigma2"][ti, trial], sv[1], atol=2e-6)
            np.testing.assert_allclose(arrays["gamma_approx"][ti, trial], sv[1] / nu, rtol=2e-5)
    rows = results.read_csv(run_dir / "summary.csv")
    assert len(rows) == 3
    assert {"temperature", "gamma", "cos_mean", "cos_std", "theorem1_holds_fraction"} <= set(rows[0])
    for row, cos in zip(rows, arrays["cos"]):
        np.testing.assert_allclose(float(row["cos_mean"]), cos.astype(np.float64).mean(), rtol=1e-6)
    claims = read_claims(run_dir)
    assert [c.source for c in claims] == ["Exp 2 / Fig. 2", "Theorem 1", "Eq. 4", "Exp 2 / Fig. 2"]
    assert {"collapse_hist.png", "theorem1_vs_gamma.png"} <= {p.name for p in run_dir.iterdir()}


def test_null_cdf_is_a_symmetric_distribution():
    x = np.linspace(-1, 1, 201)
    cdf = oc.null_cdf(x, 64)
    assert np.all(np.diff(cdf) >= 0)
    np.testing.assert_allclose(cdf[[0, 100, -1]], [0, 0.5, 1], atol=1e-6)
    np.testing.assert_allclose(cdf + cdf[::-1], 1, atol=1e-6)
