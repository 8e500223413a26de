#!/usr/bin/env python
"""In-process A/B of the CPU microbatch (trials per vmapped program) on Exp 1's program.

Exp 1's per-trial program (a U[0, 1] cost, ``sinkhorn(mode="auto", spread_bound=1)`` with
K = 200, then sigma_2 by ``top_two_singular_values`` and H) over 16 temperatures in
[0.01, 10], on 2 CPU devices as ``jaxdsm.sweep`` runs it: one ``lax.map`` over vmapped
microbatches per device, each device's share padded to whole microbatches. One compiled
program per microbatch size, all in one process, timed in interleaved rounds so that a
machine whose speed drifts hits all alike. Prints each size's median and best W (the sum
over temperatures), its median per-round speed-up against the first size, the median
time per temperature, and the largest difference of its sigma_2 from the first size's.

Usage:  python benchmarks/ab_microbatch.py [--n 64] [--trials 1000] [--rounds 5]
                                           [--microbatches 16,8] [--sinkhorn-only]
"""

import argparse

import numpy as np

from jaxdsm import distributed

distributed.split_cpu(2)

from interleaved import compiled_on_two_devices, time_interleaved  # noqa: E402 (after split_cpu, which must precede JAX's backend)

from jaxdsm import spectra  # noqa: E402
from jaxdsm.sinkhorn import random_cost, sinkhorn  # noqa: E402

K = 200


def measure_program(sinkhorn_only: bool):
    def measure(key, temperature, n):
        m = sinkhorn(random_cost(key, n), temperature, max_iterations=K, spread_bound=1.0).matrix
        if sinkhorn_only:  # two entries: enough to keep the whole matrix live
            return {"first": m[0, 0], "second": m[1, 1]}
        return {"first": spectra.top_two_singular_values(m)[1], "entropy": spectra.entropy(m)}

    return measure


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--n", type=int, default=64)
    p.add_argument("--trials", type=int, default=1000)
    p.add_argument("--rounds", type=int, default=5)
    p.add_argument("--microbatches", default="16,8", help="comma-separated; the first is the base")
    p.add_argument("--sinkhorn-only", action="store_true", help="time the Sinkhorn part alone")
    args = p.parse_args()
    sizes = [int(s) for s in args.microbatches.split(",")]
    measure = measure_program(args.sinkhorn_only)
    programs = {s: compiled_on_two_devices(measure, args.n, args.trials, s) for s in sizes}
    seconds, outputs = time_interleaved(programs, args.trials, args.rounds)
    sigma2 = {s: out["first"] for s, out in outputs.items()}
    base = sizes[0]
    what = "Sinkhorn only" if args.sinkhorn_only else "Sinkhorn, sigma_2 and H"
    print(f"n = {args.n}, R = {args.trials}, K = {K}, {what}, 2 CPU devices, "
          f"{args.rounds} interleaved rounds")
    for s in sizes:
        w = seconds[s].sum(axis=1)
        speedup = np.median(seconds[base].sum(axis=1) / w)
        print(f"microbatch {s:4d}: W median {np.median(w):.3f} s, best {w.min():.3f} s, "
              f"speed-up vs {base}: {speedup:.3f}, "
              f"max |d first output| {np.abs(sigma2[s] - sigma2[base]).max():.2e}")
        print("    ms per T:", " ".join(f"{1e3 * x:.0f}" for x in np.median(seconds[s], axis=0)))


if __name__ == "__main__":
    main()
