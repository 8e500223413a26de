"""``sinkhorn(..., fused=True)``: the Pallas kernel (``jaxdsm.fused``) against the float64
reference of Algorithm 1 and against the portable path.

On CPU the kernel runs in Pallas' interpreter: these tests check its arithmetic, padding
and wiring, and that Pallas' Triton backend lowers it for CUDA. Whether the GPU compiles
and runs it as fast as it should is for ``benchmarks/gpu_check.py`` on a GPU.
Tolerances are test_sinkhorn's (MATRIX_ATOL, low_t_atol, ERROR_ATOL: derivations there).
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import reference as ref
from test_sinkhorn import ERROR_ATOL, MATRIX_ATOL, low_t_atol

from jaxdsm import sinkhorn as sinkhorn_module
from jaxdsm.sinkhorn import random_dsm, sinkhorn

K = 200


def _project_batch(costs, temperature, *, mode="auto", fused=True, k=K):
    return jax.vmap(lambda c: sinkhorn(c, temperature, max_iterations=k, mode=mode,
                                       fused=fused))(costs)


_project = jax.jit(_project_batch, static_argnames=("mode", "fused", "k"))


# The plain float32 kernel of "scaling" underflows at T = 0.01 (test_sinkhorn covers that).
FORMS_AND_TEMPERATURES = [(mode, t) for mode in ("auto", "scaling", "stabilized")
                          for t in (0.01, 0.1, 1.0, 10.0) if (mode, t) != ("scaling", 0.01)]


@pytest.mark.parametrize("mode, t", FORMS_AND_TEMPERATURES)
@pytest.mark.parametrize("n", (3, 48, 64, 128))  # 3 and 48 are padded to 4 and 64
def test_fused_matches_float64_algorithm1(rng, mode, n, t):
    """Every matrix within the portable path's float32 tolerance of the float64 reference,
    with marginal errors and flags that describe it."""
    d32, d64 = ref.uniform_cost(rng, (2, n, n))
    out = _project(d32, np.float32(t), mode=mode)
    for i in range(len(d32)):
        expected = ref.algorithm1_log(d64[i], t, K)
        atol = max(MATRIX_ATOL, low_t_atol(t, float(d32[i].max())))
        np.testing.assert_allclose(out.matrix[i], expected, rtol=0, atol=atol)
    np.testing.assert_allclose(out.error, ref.marginal_errors(out.matrix)[2], atol=ERROR_ATOL)
    assert np.all(out.finite) and not np.any(out.underflow)
    np.testing.assert_array_equal(out.n_iters, K)


@pytest.mark.parametrize("k", (1, 2, 7))
@pytest.mark.parametrize("mode", ("scaling", "stabilized"))
def test_fused_few_sweeps_match_the_portable_path(rng, mode, k):
    """K = 1 (the stabilized form's first, log-domain sweep alone) and other short runs."""
    d32, d64 = ref.uniform_cost(rng, (3, 16, 16))
    fused = _project(d32, np.float32(0.2), mode=mode, k=k)
    portable = _project(d32, np.float32(0.2), mode=mode, fused=False, k=k)
    np.testing.assert_allclose(fused.matrix, portable.matrix, rtol=0, atol=4 * ref.EPS32)
    for i in range(len(d32)):
        np.testing.assert_allclose(fused.matrix[i], ref.algorithm1_log(d64[i], 0.2, k),
                                   rtol=0, atol=MATRIX_ATOL)


@pytest.mark.parametrize("forced", (False, True))
def test_fused_reruns_with_absorptions_where_the_scalings_grew(rng, monkeypatch, forced):
    """The kernel's record decides the rerun: at T = 1e-3 (or with a budget of 0) the batch
    is rerun by the portable absorbing form, so fused and portable give the same bits."""
    if forced:
        monkeypatch.setattr(sinkhorn_module, "_scaling_budget", lambda dtype: 0.0)
    d32, d64 = ref.uniform_cost(rng, (2, 64, 64))
    t = 0.01 if forced else 1e-3
    # a new function: jit's cache would hand back a program traced before the patch
    project = jax.jit(lambda c, t, fused: _project_batch(c, t, fused=fused), static_argnums=2)
    fused, portable = project(d32, np.float32(t), True), project(d32, np.float32(t), False)
    np.testing.assert_array_equal(fused.matrix, portable.matrix)
    for i in range(len(d32)):
        np.testing.assert_allclose(fused.matrix[i], ref.algorithm1_log(d64[i], t, K),
                                   rtol=0, atol=low_t_atol(t, float(d32[i].max())))


def test_fused_at_t_001_does_not_rerun(rng):
    """At Algorithm 1's smallest T the record stays within budget: the kernel's own result
    comes back (it differs from the portable one in the last bits)."""
    d32, _ = ref.uniform_cost(rng, (2, 64, 64))
    fused = _project(d32, np.float32(0.01))
    portable = _project(d32, np.float32(0.01), fused=False)
    assert np.any(np.asarray(fused.matrix) != np.asarray(portable.matrix))
    np.testing.assert_allclose(fused.matrix, portable.matrix, rtol=0, atol=MATRIX_ATOL)


def test_fused_vmaps_over_temperatures(rng):
    d32, d64 = ref.uniform_cost(rng, (16, 16))
    temperatures = np.array([0.02, 0.3, 3.0], np.float32)
    out = jax.jit(jax.vmap(lambda t: sinkhorn(d32, t, fused=True).matrix))(temperatures)
    for m, t in zip(out, temperatures):
        np.testing.assert_allclose(m, ref.algorithm1_log(d64, float(t), K), rtol=0,
                                   atol=max(MATRIX_ATOL, low_t_atol(float(t), 1.0)))


@pytest.mark.parametrize("mode", ("scaling", "stabilized"))
def test_fused_gradients_match_finite_differences(x64, mode):
    """Derivatives come from the portable sweeps (custom_jvp): equal to central differences
    of the fused projection itself, in T and in the cost (float64)."""
    rng = np.random.default_rng(5)
    d = jnp.asarray(rng.random((8, 8)))
    w = jnp.asarray(rng.standard_normal((8, 8)))

    def loss(cost, temperature):
        return jnp.sum(w * sinkhorn(cost, temperature, mode=mode, max_iterations=40,
                                    fused=True).matrix)

    g_d, g_t = jax.grad(loss, argnums=(0, 1))(d, 0.3)
    h = 1e-6
    e = jnp.zeros((8, 8)).at[1, 6].set(1.0)
    np.testing.assert_allclose(g_t, (loss(d, 0.3 + h) - loss(d, 0.3 - h)) / (2 * h), rtol=1e-6)
    np.testing.assert_allclose(g_d[1, 6], (loss(d + h * e, 0.3) - loss(d - h * e, 0.3)) / (2 * h),
                               rtol=1e-6, atol=1e-9)


@pytest.mark.parametrize("n", (48, 64, 128))
def test_fused_lowers_to_triton_for_cuda(n):
    """Pallas' Triton backend accepts the kernel (lowered for CUDA on this CPU machine): one
    Triton call per branch of "auto", none in the CPU program."""
    costs = jax.ShapeDtypeStruct((4, n, n), jnp.float32)

    traced = jax.jit(functools.partial(_project_batch, temperature=0.5)).trace(costs)
    assert traced.lower(lowering_platforms=("cuda",)).as_text().count("xla.gpu.triton") == 2
    assert "xla.gpu.triton" not in traced.lower(lowering_platforms=("cpu",)).as_text()


@pytest.mark.parametrize("bad, message", [
    (dict(early_stop=True), "early_stop=False"),
    (dict(mode="log"), "mode='log'"),
    (dict(mode="direct"), "mode='direct'"),
])
def test_fused_rejects_what_it_does_not_do(bad, message):
    with pytest.raises(ValueError, match=message):
        sinkhorn(jnp.ones((4, 4)), 0.5, fused=True, **bad)


def test_fused_rejects_matrices_too_large_for_the_chip():
    with pytest.raises(ValueError, match="n <= 128"):
        sinkhorn(jnp.ones((129, 129)), 0.5, fused=True)


def test_random_dsm_passes_fused_on(rng):
    key = jax.random.PRNGKey(3)
    fused = random_dsm(key, 16, 0.2, fused=True).matrix
    np.testing.assert_allclose(fused, random_dsm(key, 16, 0.2).matrix, rtol=0, atol=MATRIX_ATOL)


def test_gpu_check_script_runs_and_its_kernel_agrees(tmp_path):
    """benchmarks/gpu_check.py (the script a GPU session runs) at toy size on CPU: it runs,
    writes its JSON, and its correctness section finds the kernel within tolerance."""
    import importlib.util
    import json
    from pathlib import Path

    path = Path(__file__).parents[1] / "benchmarks" / "gpu_check.py"
    spec = importlib.util.spec_from_file_location("gpu_check", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    out = tmp_path / "gpu.json"
    module.main(["--trials", "4", "--temperatures", "2", "--check-trials", "2", "--repeats", "1",
                 "--copy-mib", "1", "--matmul-size", "256", "--out", str(out)])
    report = json.loads(out.read_text())
    assert report["max_abs_matrix_difference"]["fused_vs_float64"] <= MATRIX_ATOL
    assert set(report["sinkhorn_part"]) == {"fused", "fori_loop_every_sweep",
                                            "fori_loop_stop_on_repeat"}
    # bytes as counted in BENCHMARKS.md: 2 n^2 floats per trial, plus 2 K n^2 for the loop
    per_trial = 64 * 64 * 4
    assert report["sinkhorn_part"]["fused"]["bytes"] == 2 * per_trial * 4 * 2
    assert report["sinkhorn_part"]["fori_loop_every_sweep"]["bytes"] == 402 * per_trial * 4 * 2
