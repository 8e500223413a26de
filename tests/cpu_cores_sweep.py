"""Run by test_distributed.py in a fresh process: ``split_cpu(2)``, then an n = 64 sweep
whose measure calls every LAPACK routine of ``jaxdsm.spectra`` (batched LAPACK used to hang
there: jaxlib's CPU kernels wait for the thread pool that both devices occupy), on two
devices and on one; saved for comparison."""

import sys

import jax
import jax.numpy as jnp

from jaxdsm import distributed  # noqa: E402

assert distributed.split_cpu(2) == 2  # before JAX's first operation

import numpy as np  # noqa: E402

from jaxdsm import sinkhorn, spectra, sweep  # noqa: E402


def measure(key, temperature, n):
    m = sinkhorn.random_dsm(key, n, temperature).matrix
    # A stacked call inside the trial (two matrices per trial) hung too, until
    # one_matrix_per_call_on_cpu also split stacked arrays; at T = 0.01 with K = 20 the
    # fast path's check fails, so top_two's full-SVD fallback runs here as well.
    few = sinkhorn.random_dsm(key, n, temperature, max_iterations=20).matrix
    stacked = jnp.stack([few, few.T])
    return {"top_two": spectra.top_two_singular_values(m), "svd": spectra.singular_values(m)[:3],
            "lambda2": spectra.lambda2_modulus(m), "henrici": spectra.henrici_departure(m),
            "stacked_top_two": spectra.top_two_singular_values(stacked)}


if __name__ == "__main__":
    assert jax.device_count() == 2
    assert distributed.split_cpu(3) == 0  # too late: JAX has started
    arrays = {}
    for d in (1, 2):
        result = sweep.run_grid(measure, sizes=(64,), temperatures=[0.01, 0.5], trials=70,
                                chunk_size=64, mesh=distributed.trial_mesh(jax.devices()[:d]),
                                progress=False)
        assert result.timings["devices"] == d
        arrays.update({f"{k}/{d}": v for k, v in result.arrays.items()})
    np.savez(sys.argv[1], **arrays)
