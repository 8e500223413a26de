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
from jax import lax  # noqa: E402
from jax.sharding import PartitionSpec  # noqa: E402

from jaxdsm import spectra  # noqa: E402
from jaxdsm.sinkhorn import random_cost, sinkhorn  # noqa: E402

N, K, CHUNK, TRIALS, PADDED = 64, 200, 16, 1000, 1024


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
    def trial(t, temperature):
        key = jax.random.fold_in(jax.random.PRNGKey(0), t)
        d = random_cost(key, N) if new_draw else jax.random.uniform(key, (N, N))
        m = sinkhorn(d, temperature, max_iterations=K, mode="auto", spread_bound=1.0).matrix
        s = spectra.top_two_singular_values(m) if new_power else top_two_old(m)
        return s[1], spectra.entropy(m)

    mesh = distributed.trial_mesh(jax.devices()[:2])
    spec = PartitionSpec(distributed.TRIAL_AXIS)
    run = jax.shard_map(lambda ts, t: lax.map(lambda i: trial(i, t), ts, batch_size=CHUNK),
                        mesh=mesh, in_specs=(spec, PartitionSpec()), out_specs=spec,
                        check_vma=False)
    trials = distributed.shard_trials(np.minimum(np.arange(PADDED), TRIALS - 1).astype(np.int32), mesh)
    t0 = time.perf_counter()
    fn = jax.jit(run).lower(trials, jnp.float32(1)).compile()
    return fn, trials, time.perf_counter() - t0


def main(rounds: int) -> None:
    temps = [jnp.float32(t) for t in np.logspace(-2, 1, 16)]
    variants = {f"draw {'new' if d else 'old'}, power {'new' if p else 'old'}": compiled_w(d, p)
                for d in (False, True) for p in (False, True)}
    for fn, trials, _ in variants.values():
        for t in (temps[0], temps[-1]):
            jax.block_until_ready(fn(trials, t))
    times = {name: [] for name in variants}
    sigma2 = {}
    for _ in range(rounds):
        for name, (fn, trials, _) in variants.items():
            t0 = time.perf_counter()
            outs = [jax.block_until_ready(fn(trials, t)) for t in temps]
            times[name].append(time.perf_counter() - t0)
            sigma2[name] = np.array([np.asarray(o[0])[:TRIALS] for o in outs])
    base = "draw old, power old"
    for name, (_, _, compile_s) in variants.items():
        w = np.array(times[name])
        speedup = np.median(np.array(times[base]) / w)
        diff = np.abs(sigma2[name] - sigma2[base]).max()
        print(f"{name}: W median {np.median(w):.3f} s, min {w.min():.3f} s, compile {compile_s:.2f} s, "
              f"speed-up vs old/old (median per round) {speedup:.3f}, max |d sigma_2| {diff:.1e}")


if __name__ == "__main__":
    main(int(sys.argv[1]) if len(sys.argv) > 1 else 7)
