#!/usr/bin/env python
"""In-process A/B of Sinkhorn's column step on Exp 1's program: K^T u from a stored transpose
of the kernel (``sinkhorn._Kernel``, the current code) against u K on the kernel itself (the
code of 11726e1, rebuilt here by patching ``sinkhorn`` while the old variant is traced).

The program is ``ab_microbatch.py``'s: a U[0, 1] cost, ``sinkhorn(spread_bound=1)`` with
K = 200, sigma_2 by ``top_two_singular_values``, over 16 temperatures in [0.01, 10], on 2
CPU devices, one ``lax.map`` over vmapped microbatches per device. Both variants are
compiled in one process and timed in interleaved rounds. Prints each variant's median W,
the median per-round speed-up, the largest marginal error (Sinkhorn's own ``error``) over
all trials and its median over T, and the largest sigma_2 difference between them.

Usage:  python benchmarks/ab_column_step.py [--n 64] [--trials 1000] [--microbatch 8]
                                            [--rounds 7]
"""

import argparse

import numpy as np

from jaxdsm import distributed

distributed.split_cpu(2)

import jax.numpy as jnp  # noqa: E402 (after split_cpu, which must precede JAX's backend)
from interleaved import compiled_on_two_devices, time_interleaved  # noqa: E402
from jax import lax  # noqa: E402

from jaxdsm import sinkhorn as sinkhorn_module  # noqa: E402
from jaxdsm import spectra  # noqa: E402

K = 200


def measure(key, temperature, n):
    d = sinkhorn_module.random_cost(key, n)
    out = sinkhorn_module.sinkhorn(d, temperature, max_iterations=K, spread_bound=1.0)
    return {"sigma2": spectra.top_two_singular_values(out.matrix)[1], "error": out.error}


def compiled_w(n: int, trials: int, microbatch: int):
    return compiled_on_two_devices(measure, n, trials, microbatch)


def compiled_w_old(n: int, trials: int, microbatch: int):
    """``compiled_w`` traced with the old column step: every sweep calls ``_row_sums`` twice,
    rows then columns, so every second call becomes u K on the untransposed kernel."""
    stored, row_sums, calls = sinkhorn_module._Kernel.of, sinkhorn_module._row_sums, [0]

    def old_sums(kernel, x):
        calls[0] += 1
        if calls[0] % 2 == 0:
            return jnp.matmul(x, kernel, precision=lax.Precision.HIGHEST)
        return row_sums(kernel, x)

    sinkhorn_module._Kernel.of = classmethod(lambda cls, kernel: cls(kernel, kernel))
    sinkhorn_module._row_sums = old_sums
    try:
        return compiled_w(n, trials, microbatch)
    finally:
        sinkhorn_module._Kernel.of, sinkhorn_module._row_sums = stored, row_sums


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--n", type=int, default=64)
    p.add_argument("--trials", type=int, default=1000)
    p.add_argument("--microbatch", type=int, default=8)
    p.add_argument("--rounds", type=int, default=7)
    args = p.parse_args()
    programs = {"u K (old)": compiled_w_old(args.n, args.trials, args.microbatch),
                "stored K^T (new)": compiled_w(args.n, args.trials, args.microbatch)}
    seconds, outputs = time_interleaved(programs, args.trials, args.rounds)
    old, new = programs
    w = {name: s.sum(axis=1) for name, s in seconds.items()}
    print(f"n = {args.n}, R = {args.trials}, microbatch {args.microbatch}, K = {K}, "
          f"2 CPU devices, {args.rounds} interleaved rounds")
    for name in programs:
        errors = outputs[name]["error"]
        print(f"  {name:17s} W median {np.median(w[name]):.3f} s, best {w[name].min():.3f} s, "
              f"speed-up vs old {np.median(w[old] / w[name]):.3f}; marginal error max "
              f"{errors.max():.2e}, median over T of the max {np.median(errors.max(axis=1)):.2e}")
    change = np.abs(outputs[new]["sigma2"] - outputs[old]["sigma2"]).max()
    print(f"  max |d sigma_2| new vs old: {change:.2e}")


if __name__ == "__main__":
    main()
