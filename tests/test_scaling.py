"""The scaling experiment (issue 6): the power-law fit against synthetic laws, the timed
programs against a numpy float64 rerun, and a tiny run's folder. No timing assertions."""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import reference as ref

from experiments import scaling
from experiments.common import CONTEXT, execute, read_claims
from jaxdsm import results, sinkhorn, sweep

# The R axis's one point (R = 6 rounded up to 8) repeats the n axis's first: compiled once.
TINY = scaling.Config(n=(8, 16), n_axis_trials=8, trial_counts=(6,), r_axis_n=8, fit_from_n=8,
                      iterations=5, repeats=1, microbatch=4)


@pytest.mark.parametrize("exponent, prefactor", [(1.0, 2e-3), (2.0, 1e-7), (3.0, 5e-9),
                                                 (-0.5, 4.0)])
def test_fit_recovers_exact_power_laws(exponent, prefactor):
    x = np.array([16, 32, 64, 128, 512.0])
    fitted, pre = scaling.fit_power_law(x, prefactor * x**exponent)
    assert fitted == pytest.approx(exponent, abs=1e-9)
    assert pre == pytest.approx(prefactor, rel=1e-9)


def test_fit_with_noise_and_unusable_points(rng):
    x = np.geomspace(64, 2048, 6)
    y = 3e-5 * x**1.5 * np.exp(rng.normal(0, 0.05, x.size))
    # Zero, negative and nan values cannot enter a log-log fit; they are skipped.
    fitted, _ = scaling.fit_power_law(np.r_[x, 10, 20, 30], np.r_[y, 0, -1, np.nan])
    # Least-squares slope error for 5% log-noise over this range is ~0.03.
    assert fitted == pytest.approx(1.5, abs=0.15)
    with pytest.raises(ValueError, match="two distinct"):
        scaling.fit_power_law([4, 4, 4], [1, 2, 3])
    with pytest.raises(ValueError, match="two distinct"):
        scaling.fit_power_law([4, 8], [1, 0])


def test_fit_exponents_normalizes_per_trial_and_splits_the_range():
    n = np.array([16, 32, 64, 128, 256])
    trials_n = np.array([64, 64, 64, 32, 16])  # fewer trials at large n
    per_trial = np.stack([1e-8 * n**2.0, 2e-9 * n**3.0, 1e-9 * n**2.5], -1)
    # Below n = 64 a constant overhead per trial dominates: exponent 0 there.
    per_trial[n < 64] = per_trial[n == 64]
    r = np.array([64, 128, 256, 512])
    r_seconds = np.stack([1e-4 * r, 2e-5 * r**1.2, 3e-4 * r**0.9], -1)
    arrays = {
        "n_n": n, "n_trials": trials_n,
        "n_seconds": (per_trial * trials_n[:, None])[..., None] * np.array([1.0, 1.0, 1.0]),
        "R_trials": r, "R_seconds": np.stack([r_seconds, 2 * r_seconds, r_seconds / 2], -1),
    }
    fits = scaling.fit_exponents(arrays, fit_from_n=64)
    # The median of (x, 2x, x/2) is x.
    for part, a, b in zip(scaling.PARTS, (2.0, 3.0, 2.5), (1.0, 1.2, 0.9)):
        assert fits[part]["n"] == pytest.approx(a, abs=1e-9)
        assert fits[part]["n_small"] == pytest.approx(0.0, abs=1e-9)
        assert fits[part]["R"] == pytest.approx(b, abs=1e-9)


def test_timed_programs_match_a_float64_rerun():
    config = scaling.Config(iterations=7, temperature=0.2, seed=3, trials_per_seed=5)
    n, microbatch = 12, 4
    programs = scaling.part_programs(config, n, microbatch)
    temperature = jnp.asarray(config.temperature, jnp.float32)
    trials = jnp.arange(2 * microbatch, dtype=jnp.int32)
    bank = jax.jit(programs["bank"])(jnp.arange(microbatch, dtype=jnp.int32), temperature)
    errors = jax.jit(programs["sinkhorn"])(trials, temperature)
    top_two = jax.jit(programs["top_two"])(trials, bank)
    full = jax.jit(programs["full_svd"])(trials, bank)
    expected_m, expected_error = [], []
    for t in range(2 * microbatch):
        key = sweep.trial_key(t, seed=config.seed, trials_per_seed=config.trials_per_seed)
        cost = np.asarray(sinkhorn.random_cost(key, n), np.float64)
        m = ref.algorithm1(cost, config.temperature, config.iterations)
        expected_m.append(m)
        expected_error.append(ref.marginal_errors(m)[2])
    np.testing.assert_allclose(bank, np.stack(expected_m[:microbatch]), atol=2e-6)
    np.testing.assert_allclose(errors, expected_error, atol=2e-6)
    # The spectrum parts read bank[t mod microbatch].
    sigma2 = [ref.singular_values(expected_m[t % microbatch])[1] for t in range(2 * microbatch)]
    np.testing.assert_allclose(full, sigma2, atol=2e-6)
    np.testing.assert_allclose(top_two, sigma2, atol=2e-6)


def test_tiny_run_writes_the_folder(tmp_path):
    run_dir = execute(scaling.EXPERIMENT, TINY, out=tmp_path, run_id="r", progress=False)
    assert {"arrays.npz", "summary.csv", "scaling.png", "report.md", "claims.json",
            "manifest.json"} <= {p.name for p in run_dir.iterdir()}
    rows = results.read_csv(run_dir / "summary.csv")
    assert [(r["axis"], int(r["n"]), int(r["trials"])) for r in rows] == [
        ("n", 8, 8), ("n", 16, 8), ("R", 8, 8)]
    for part in scaling.PARTS:
        for column in ("seconds", "ms_per_trial", "compile_seconds", "xla_mib"):
            assert f"{part}_{column}" in rows[0]
    assert {"peak_host_rss_mib", "peak_device_mib", "max_marginal_error", "sigma2_fast_vs_svd",
            "load_1min"} <= set(rows[0])
    for r in rows:
        seconds = float(r["sinkhorn_seconds"])
        assert seconds > 0
        assert float(r["sinkhorn_ms_per_trial"]) == pytest.approx(1e3 * seconds / int(r["trials"]))
        assert float(r["peak_host_rss_mib"]) > 0
        assert float(r["sigma2_fast_vs_svd"]) < 1e-5
    claims = read_claims(run_dir)
    assert {c.source for c in claims} == {scaling.SOURCE}
    assert {c.verdict for c in claims} == {CONTEXT}
    arrays = results.read_npz(run_dir / "arrays.npz")
    assert arrays["n_seconds"].shape == (2, len(scaling.PARTS), TINY.repeats)
    assert arrays["R_xla_bytes"].shape == (1, len(scaling.PARTS), len(scaling.XLA_KINDS))
    np.testing.assert_array_equal(arrays["R_compile_seconds"], arrays["n_compile_seconds"][:1])
    np.testing.assert_array_equal(arrays["n_microbatch"], [4, 4])


def test_default_microbatch_follows_n_as_in_sweeps(tmp_path, monkeypatch):
    """microbatch=0 takes jaxdsm.sweep's default for each n, and the run says which."""
    monkeypatch.setattr(sweep, "CPU_MICROBATCH_ROW_BYTES", 16 * 4 * 2)  # n = 16: 2; n = 8: 4
    monkeypatch.setattr(sweep, "CPU_MAX_MICROBATCH", 8)
    config = dataclasses.replace(TINY, microbatch=0)
    run_dir = execute(scaling.EXPERIMENT, config, out=tmp_path, run_id="r", progress=False)
    arrays = results.read_npz(run_dir / "arrays.npz")
    np.testing.assert_array_equal(arrays["n_microbatch"], [4, 2])
    np.testing.assert_array_equal(arrays["R_microbatch"], [4])
    assert "microbatch 4 at n = 8, 2 at n = 16," in (run_dir / "report.md").read_text()


@pytest.mark.parametrize("change, message", [
    ({"n": ()}, "at least one value"),
    ({"n": (16, 1)}, "n must be an integer >= 2"),
    ({"trial_counts": (64, 0)}, "trial_counts"),
    ({"r_axis_n": 1}, "n must be"),
    ({"repeats": 0}, "repeats"),
    ({"temperature": 0.0}, "temperature"),
    ({"microbatch": -1}, "microbatch"),
    ({"blas_threads": -2}, "blas_threads"),
])
def test_invalid_config_raises(change, message):
    with pytest.raises(ValueError, match=message):
        scaling.Config(**change)
