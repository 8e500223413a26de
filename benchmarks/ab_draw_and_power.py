#!/usr/bin/env python
"""In-process A/B of two parts of workload W: the draw of d and the Gram power's tail.

W as ``bench_exp1.py`` times jaxdsm (16 temperatures in [0.01, 10], n = 64, K = 200,
sigma_2 and H, 2 CPU devices, chunks of 16; each device's share padded to 512 trials), in
four variants compiled in one process and timed in interleaved rounds, so that a machine
whose speed drifts (as shared 2-core machines do) hits all four alike:

- draw: ``jax.random.uniform`` (old) or ``random_cost`` (new: the same bits, ``_threefry``);
- spectrum: 7 squarings of the Gram matrix then one product with the probe (old, as before
  ``_gram_power_times``), or 5 squarings and four products with the probe (new).

Prints each variant's median and minimum W, the median per-round speed-up against old/old,
and the largest sigma_2 difference from old/old.

Usage:  python benchmarks/ab_draw_and_power.py [rounds]     (default 7: about 3 minutes)
"""

import sys
import time

import numpy as np

from jaxdsm import distributed

distributed.split_cpu(2)

import jax  # noqa: E402 (after split_cpu, which must precede JAX's backend)
import jax.numpy as jnp  # noqa: E402
from interleaved import compiled_on_two_devices, time_interleaved  # noqa: E402

from jaxdsm import spectra  # noqa: E402
from jaxdsm.sinkhorn import random_cost, sinkhorn  # noqa: E402

N, K, CHUNK, TRIALS = 64, 200, 16, 1000


def top_two_old(m):
    """``top_two_singular_values`` with the power as 7 squarings (its form before f378d4b)."""
    b = spectra.double_center(m)
    gram = spectra._squared(jnp.matmul(b, b.T, precision=spectra._HIGHEST), 7)
    probe = jax.random.normal(jax.random.PRNGKey(0), (N, 8), m.dtype)
    dominant = jnp.matmul(gram, probe, precision=spectra._HIGHEST)
    mean = jnp.full((N, 1), N**-0.5, m.dtype)
    basis = spectra._orthonormal_basis(jnp.concatenate([mean, dominant], -1))
    return spectra._or_full_svd(*spectra._checked_ritz_values(m, basis, 2), m)


def compiled_w(new_draw: bool, new_power: bool):
    def measure(key, temperature, n):
        d = random_cost(key, n) if new_draw else jax.random.uniform(key, (n, n))
        m = sinkhorn(d, temperature, max_iterations=K, mode="auto", spread_bound=1.0).matrix
        s = spectra.top_two_singular_values(m) if new_power else top_two_old(m)
        return {"sigma2": s[1], "entropy": spectra.entropy(m)}

    t0 = time.perf_counter()
    fn, indices = compiled_on_two_devices(measure, N, TRIALS, CHUNK)
    return (fn, indices), time.perf_counter() - t0


def main(rounds: int) -> None:
    variants = {f"draw {'new' if d else 'old'}, power {'new' if p else 'old'}": compiled_w(d, p)
                for d in (False, True) for p in (False, True)}
    programs = {name: program for name, (program, _) in variants.items()}
    seconds, outputs = time_interleaved(programs, TRIALS, rounds)
    base = "draw old, power old"
    for name, (_, compile_s) in variants.items():
        w = seconds[name].sum(axis=1)
        speedup = np.median(seconds[base].sum(axis=1) / w)
        diff = np.abs(outputs[name]["sigma2"] - outputs[base]["sigma2"]).max()
        print(f"{name}: W median {np.median(w):.3f} s, min {w.min():.3f} s, compile {compile_s:.2f} s, "
              f"speed-up vs old/old (median per round) {speedup:.3f}, max |d sigma_2| {diff:.1e}")


if __name__ == "__main__":
    main(int(sys.argv[1]) if len(sys.argv) > 1 else 7)
