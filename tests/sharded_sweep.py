"""Run by test_distributed.py in a fresh process with fake CPU devices (the device count
is fixed when JAX starts): one sweep on meshes of 1..D devices, saved for comparison."""

import os
import sys

os.environ["XLA_FLAGS"] = f"--xla_force_host_platform_device_count={sys.argv[2]}"

import jax  # noqa: E402
import numpy as np  # noqa: E402

from experiments import orthogonal_collapse as oc  # noqa: E402
from jaxdsm import distributed, sinkhorn, spectra, sweep  # noqa: E402


def tolerance_measure(key, temperature, n):
    # A tolerance loop: each device stops at its own slowest trial.
    out = sinkhorn.sinkhorn(sinkhorn.random_cost(key, n), temperature, max_iterations=500,
                            threshold=1e-6, early_stop=True, spread_bound=1.0)
    return {"sigma2": spectra.sigma2(out.matrix), "n_iters": out.n_iters}


if __name__ == "__main__":
    assert jax.device_count() == int(sys.argv[2])
    config = oc.Config(n=8, trials=37, temperatures=2, chunk_size=16)
    arrays = {}
    for d in range(1, jax.device_count() + 1):
        mesh = distributed.trial_mesh(jax.devices()[:d])
        for name, measure in (("collapse", oc.measure(config)), ("tolerance", tolerance_measure)):
            result = sweep.run_grid(measure, sizes=(8,), temperatures=[0.05, 1.0], trials=37,
                                    chunk_size=16, mesh=mesh, progress=False)
            assert result.timings["devices"] == d
            for k, v in result.arrays.items():
                arrays[f"{name}/{k}/{d}"] = v
    np.savez(sys.argv[1], **arrays)
