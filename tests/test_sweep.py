"""The sweep engine: keys, chunk-size independence, resume, and the spectral-gap
experiment end to end against the float64 reference of Algorithm 1."""

from __future__ import annotations

import dataclasses
import os
import subprocess
import sys

import jax
import numpy as np
import pytest
import reference

from experiments import spectral_gap
from experiments.common import UNRESOLVED, execute, read_claims
from jaxdsm import results, sinkhorn, sweep

SMALL = spectral_gap.Config(
    n=(8,), trials=10, trials_per_seed=4, iterations=200, temperatures=3, t_min=0.05,
    t_max=2.0, tol_max_iterations=300, chunk_size=4,
)


def _grid(config, chunk_size=None, chunk_dir=None):
    return sweep.run_grid(
        spectral_gap.measure(config), sizes=config.n, temperatures=config.temperature_grid(),
        trials=config.trials, chunk_size=chunk_size or config.chunk_size, seed=config.seed,
        microbatch=config.microbatch or None,
        trials_per_seed=config.trials_per_seed, chunk_dir=chunk_dir, progress=False,
    ).arrays


def test_trial_key_is_fold_in_of_seed_and_index():
    for trial in (0, 3, 4, 9):
        expected = jax.random.fold_in(jax.random.PRNGKey(7 + trial // 4), trial % 4)
        got = sweep.trial_key(trial, seed=7, trials_per_seed=4)
        np.testing.assert_array_equal(np.asarray(got), np.asarray(expected))


def test_chunk_size_does_not_change_results():
    base = _grid(SMALL, chunk_size=10)
    for chunk_size in (1, 3, 4):  # 3 and 4 leave a padded last chunk
        other = _grid(SMALL, chunk_size=chunk_size)
        for name in base:
            np.testing.assert_array_equal(other[name], base[name], err_msg=f"{name} chunk {chunk_size}")


def test_spectral_gap_measure_matches_float64_reference():
    arrays = _grid(SMALL)
    temperatures = SMALL.temperature_grid()
    assert arrays["sigma2"].shape == (1, 3, 10)
    for trial in (0, 5, 9):
        key = sweep.trial_key(trial, seed=SMALL.seed, trials_per_seed=SMALL.trials_per_seed)
        cost = np.asarray(sinkhorn.random_cost(key, 8), np.float64)
        for ti, t in enumerate(temperatures):
            m = reference.algorithm1(cost, t, SMALL.iterations)
            sv = reference.singular_values(m)
            np.testing.assert_allclose(arrays["sigma1"][0, ti, trial], sv[0], atol=2e-6)
            np.testing.assert_allclose(arrays["sigma2"][0, ti, trial], sv[1], atol=2e-6)
            np.testing.assert_allclose(arrays["entropy"][0, ti, trial], reference.entropy(m), rtol=2e-6)
            np.testing.assert_allclose(arrays["lambda2"][0, ti, trial], reference.lambda2_modulus(m), atol=2e-6)
            cap = SMALL.tol_max_iterations
            k, _ = reference.iterations_to_tolerance(cost, t, SMALL.tol, cap)
            ours = arrays["iterations_to_tol"][0, ti, trial]
            if k is None:  # float64 needs more than the cap: so must float32
                assert ours == cap and not arrays["tol_reached"][0, ti, trial]
            else:  # float32 rounding near the 1e-6 boundary may cost one extra sweep
                assert 0 <= ours - k <= 1 and arrays["tol_reached"][0, ti, trial]


def test_resume_equals_uninterrupted_run(tmp_path, monkeypatch):
    experiment = spectral_gap.EXPERIMENT
    whole = execute(experiment, SMALL, out=tmp_path, run_id="whole", progress=False)

    real_write = results.write_npz
    written = []

    def failing_write(path, arrays):
        if len(written) == 3:
            raise KeyboardInterrupt  # as if the user pressed Ctrl-C after 3 chunks
        written.append(path)
        real_write(path, arrays)

    monkeypatch.setattr(results, "write_npz", failing_write)
    with pytest.raises(KeyboardInterrupt):
        execute(experiment, SMALL, out=tmp_path, run_id="cut", progress=False)
    monkeypatch.setattr(results, "write_npz", real_write)
    cut = tmp_path / "spectral-gap" / "cut"
    assert not (cut / "manifest.json").exists() and not (cut / "arrays.npz").exists()
    assert len(list((cut / "chunks").glob("*.npz"))) == 3

    resumed = execute(experiment, out=tmp_path, resume=cut, progress=False)
    assert resumed == cut
    manifest = results.read_json(cut / "manifest.json")
    assert manifest["timings"]["chunks_resumed"] == 3
    a, b = results.read_npz(whole / "arrays.npz"), results.read_npz(cut / "arrays.npz")
    assert a.keys() == b.keys()
    for name in a:
        np.testing.assert_array_equal(a[name], b[name], err_msg=name)
    assert (whole / "summary.csv").read_text() == (cut / "summary.csv").read_text()
    with pytest.raises(ValueError, match="already complete"):
        execute(experiment, out=tmp_path, resume=cut, progress=False)


def test_a_new_run_never_reuses_an_interrupted_runs_chunks(tmp_path, monkeypatch):
    """Same --run-id as an interrupted run with another config: a new folder, fresh chunks."""
    experiment = spectral_gap.EXPERIMENT
    real_write = results.write_npz

    def failing_write(path, arrays):
        real_write(path, arrays)
        raise KeyboardInterrupt  # stop after the first chunk

    monkeypatch.setattr(results, "write_npz", failing_write)
    with pytest.raises(KeyboardInterrupt):
        execute(experiment, SMALL, out=tmp_path, run_id="same", progress=False)
    monkeypatch.setattr(results, "write_npz", real_write)
    other = dataclasses.replace(SMALL, t_min=SMALL.t_min * 2)
    run_dir = execute(experiment, other, out=tmp_path, run_id="same", progress=False)
    assert run_dir.name == "same-1"
    assert results.read_json(run_dir / "manifest.json")["timings"]["chunks_resumed"] == 0
    fresh = execute(experiment, other, out=tmp_path, run_id="fresh", progress=False)
    a, b = results.read_npz(run_dir / "arrays.npz"), results.read_npz(fresh / "arrays.npz")
    for name in a:
        np.testing.assert_array_equal(a[name], b[name], err_msg=name)


def _tiny_grid(measure, chunk_dir, **changes):
    settings = dict(sizes=(6,), temperatures=[0.5, 1.0], trials=6, chunk_size=4, seed=0,
                    trials_per_seed=4, chunk_dir=chunk_dir, progress=False)
    return sweep.run_grid(measure, **{**settings, **changes})


def _sigma2_measure(key, temperature, n):
    return {"s2": sinkhorn.random_dsm(key, n, temperature).matrix.sum(0)}


@pytest.mark.parametrize("change", [
    dict(temperatures=[2.0, 4.0]), dict(seed=3), dict(trials_per_seed=2), dict(trials=5),
    dict(microbatch=4), dict(measure=lambda key, t, n: {"s2": sinkhorn.random_dsm(
        key, n, t, max_iterations=3).matrix.sum(0)}),
])
def test_a_chunk_dir_never_returns_chunks_of_other_settings(tmp_path, change):
    """Reusing a chunk_dir with other settings recomputes: it used to return the old values
    (the old temperatures' sigma_2, the old seed's trials, a too short trial axis)."""
    first = _tiny_grid(_sigma2_measure, tmp_path)
    again = _tiny_grid(_sigma2_measure, tmp_path)
    assert first.chunks_computed > 0 and again.chunks_resumed == first.chunks_computed
    measure = change.pop("measure", _sigma2_measure)
    changed = _tiny_grid(measure, tmp_path, **change)
    fresh = _tiny_grid(measure, None, **change)
    assert changed.chunks_resumed == 0
    np.testing.assert_array_equal(changed.arrays["s2"], fresh.arrays["s2"])


def test_chunk_tags_are_the_same_in_another_process(tmp_path):
    """A resume runs in a new process (new hash seed, new addresses): the tags must match."""
    script = (
        "from experiments import spectral_gap as sg; from jaxdsm import sweep\n"
        f"c = sg.Config(n=(6,), trials=4, temperatures=2, chunk_size=4, tol_max_iterations=30)\n"
        "sweep.run_grid(sg.measure(c), sizes=c.n, temperatures=c.temperature_grid(), trials=4,"
        f" chunk_size=4, chunk_dir={str(tmp_path)!r}, progress=False)\n")
    env = dict(os.environ, JAX_PLATFORMS="cpu", PYTHONHASHSEED="123")
    subprocess.run([sys.executable, "-c", script], check=True, env=env, timeout=300)
    config = spectral_gap.Config(n=(6,), trials=4, temperatures=2, chunk_size=4,
                                 tol_max_iterations=30)
    resumed = sweep.run_grid(spectral_gap.measure(config), sizes=config.n,
                             temperatures=config.temperature_grid(), trials=4, chunk_size=4,
                             chunk_dir=tmp_path, progress=False)
    assert resumed.chunks_computed == 0 and resumed.chunks_resumed == 2


@pytest.mark.parametrize("measure, message", [
    (lambda key, t, n: jax.random.uniform(key, (n,)), "must return a non-empty dict"),
    (lambda key, t, n: {}, "must return a non-empty dict"),
    (lambda key, t, n: {"a": t} if n == 6 else {"b": t}, "the same outputs"),
])
def test_run_grid_rejects_measures_it_cannot_stack(measure, message):
    with pytest.raises((TypeError, ValueError), match=message):
        _tiny_grid(measure, None, sizes=(6, 8))


def test_run_grid_rejects_a_scalar_temperature_list():
    with pytest.raises(ValueError, match="must each be a list"):
        _tiny_grid(_sigma2_measure, None, temperatures=0.5)


def test_run_folder_contents(tmp_path):
    run_dir = execute(spectral_gap.EXPERIMENT, SMALL, out=tmp_path, run_id="r", progress=False)
    names = {p.name for p in run_dir.iterdir()}
    assert {"config.json", "manifest.json", "arrays.npz", "summary.csv", "report.md", "claims.json",
            "sigma2_vs_temp.png", "spectral_gap_overview.png"} <= names
    assert "chunks" not in names and not any(n.endswith(".tmp") for n in names)
    config = results.read_json(run_dir / "config.json")
    assert config["config"] == json_config(SMALL)
    manifest = results.read_json(run_dir / "manifest.json")
    assert manifest["backend"] == "cpu" and manifest["x64"] is False
    assert manifest["seeds"] == [0, 1, 2]  # 10 trials, 4 per seed
    assert manifest["timings"]["compile_seconds"] > 0
    rows = results.read_csv(run_dir / "summary.csv")
    assert len(rows) == 3
    required = {"n", "temperature", "trials", "sigma2_mean", "sigma2_std", "entropy_mean",
                "sigma1_max_abs_dev", "marginal_error_max", "converged_fraction"}
    assert required <= set(rows[0])
    arrays = results.read_npz(run_dir / "arrays.npz")
    for row, t, s2 in zip(rows, arrays["temperature"], arrays["sigma2"][0]):
        assert float(row["temperature"]) == pytest.approx(t)
        assert float(row["sigma2_mean"]) == pytest.approx(np.mean(s2.astype(np.float64)))
        assert int(row["trials"]) == 10
    report = (run_dir / "report.md").read_text()
    assert "Appendix C" in report and "Exp 1" in report


def json_config(config):
    return {k: list(v) if isinstance(v, tuple) else v for k, v in dataclasses.asdict(config).items()}


def test_float64_option_runs_in_float64(tmp_path):
    config = dataclasses.replace(SMALL, float64=True, trials=4)
    run_dir = execute(spectral_gap.EXPERIMENT, config, out=tmp_path, run_id="f64", progress=False)
    arrays = results.read_npz(run_dir / "arrays.npz")
    assert arrays["sigma2"].dtype == np.float64
    assert results.read_json(run_dir / "manifest.json")["x64"] is True
    assert not jax.config.jax_enable_x64  # restored afterwards
    # Converged float64 DSMs have sigma_1 = 1 to ~1e-15 (Appendix C at full precision).
    converged = arrays["converged"]
    assert converged.sum() >= 8
    assert np.max(np.abs(arrays["sigma1"][converged] - 1)) < 1e-12


def test_report_includes_peak_memory_as_the_kernel_counts_it():
    from jaxdsm import sweep

    peak = sweep.peak_memory()["peak_host_rss_mib"]
    # The kernel's own high-water mark of this process (VmHWM, in kB).
    status = dict(line.split(":", 1) for line in open("/proc/self/status"))
    hwm_mib = int(status["VmHWM"].split()[0]) / 1024
    assert abs(peak - hwm_mib) <= 0.05 * hwm_mib


def test_cpu_microbatch_shrinks_when_matrices_leave_the_cache():
    # The largest power of two up to 16 whose rows (n float32 each) fit in 2 KiB, at least 2.
    assert [sweep.default_microbatch("cpu", n)
            for n in (8, 32, 33, 64, 65, 128, 256, 362, 512, 4096)] == \
        [16, 16, 8, 8, 4, 4, 2, 2, 2, 2]
    assert sweep.default_microbatch("cpu", 128, itemsize=8) == 2
    assert sweep.default_microbatch("cpu", 64, itemsize=8) == 4
    assert sweep.default_microbatch("gpu", 256, memory_bytes=80 << 30) == 1024


def test_accelerator_microbatch_fits_the_device_memory():
    # A quarter of 16 GiB over 12 n x n float32 arrays per trial: 85 trials of 4 MiB at n = 1024,
    # so 64.
    gib16 = 16 << 30
    assert [sweep.default_microbatch("tpu", n, memory_bytes=gib16)
            for n in (64, 1024, 4096, 16384)] == [1024, 64, 4, 1]
    assert sweep.default_microbatch("gpu", 1024, itemsize=8, memory_bytes=gib16) == 32


def test_sizes_with_different_microbatches_in_one_grid(monkeypatch):
    """Each n gets its own microbatch and chunk; results equal one-size runs of the same n."""
    monkeypatch.setattr(sweep, "CPU_MICROBATCH_ROW_BYTES", 8 * 4 * 4)  # n = 8: 4 per batch; n = 4: 8

    def measure(key, temperature, n):
        m = sinkhorn.sinkhorn(sinkhorn.random_cost(key, n), temperature, max_iterations=20).matrix
        return {"s": m[0, 0] + temperature}

    both = sweep.run_grid(measure, sizes=(4, 8), temperatures=[0.5], trials=9, chunk_size=5,
                          progress=False)
    assert both.timings["microbatch"] == {"4": 8, "8": 4}
    assert both.timings["chunk_size"] == {"4": 16, "8": 8}
    for i, n in enumerate((4, 8)):
        alone = sweep.run_grid(measure, sizes=(n,), temperatures=[0.5], trials=9, chunk_size=64,
                               progress=False)
        np.testing.assert_array_equal(both.arrays["s"][i], alone.arrays["s"][0])


def test_one_compilation_per_size_across_temperatures_and_chunks():
    traces = []

    def measure(key, temperature, n):
        traces.append(n)  # runs once per trace
        m = sinkhorn.random_dsm(key, n, temperature).matrix
        return {"m00": m[0, 0]}

    result = sweep.run_grid(measure, sizes=(4, 8), temperatures=[0.05, 0.5, 5.0], trials=70,
                            chunk_size=16, progress=False)
    assert result.chunks_computed == 2 * 3 * 3  # 70 trials in chunks of 32: 3 per (n, T)
    assert sorted(traces) == [4, 8]
    assert len(np.unique(result.arrays["m00"][0])) > 3  # the temperatures were really used


def test_one_temperature_leaves_the_trend_claims_unresolved(tmp_path):
    config = spectral_gap.Config(n=(8,), trials=32, temperatures=1, t_min=1.0, t_max=1.0,
                                 chunk_size=32)
    run_dir = execute(spectral_gap.EXPERIMENT, config, out=tmp_path, run_id="r", progress=False)
    trends = [c for c in read_claims(run_dir) if c.source == "Exp 1"]
    assert len(trends) == 2 and all(c.verdict == UNRESOLVED for c in trends)
