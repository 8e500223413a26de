#!/usr/bin/env python
"""GPU checks for issue 6, in one short run: correctness of ``sinkhorn(fused=True)`` on the
device, W's Sinkhorn part against the bandwidth bound, and W end to end.

Workload W (as in ``bench_exp1.py``): 16 temperatures log-spaced in [0.01, 10] x R = 1000
trials, n = 64, K = 200, sigma_2 and H per trial, float32; trial t's cost is
random_cost(fold_in(PRNGKey(seed), t), n), the same at every temperature.

1. Correctness: for ``--check-trials`` trials per temperature, the fused kernel, the
   portable path and a float64 numpy log-domain reference of Algorithm 1 (on the host).
2. Sinkhorn part of W (matrices only, no spectrum): the portable ``fori_loop`` (every sweep,
   and with the stop-on-repeat shortcut) and the fused kernel, each against the time the
   bytes it must move take at the device's measured copy bandwidth (a device-to-device
   copy of a 2 GiB array, ``--copy-mib``). Bytes: the fused kernel reads d and writes M, 2 n^2 floats per
   trial; the ``fori_loop`` also reads the n^2 kernel twice per sweep (K v and K^T u).
   Also the time its 4 n^2 K flops per trial take at the device's float32 matmul rate
   (HIGHEST precision, ``--matmul-size``): the fused kernel is bound by that instead.
3. W end to end (Sinkhorn, top-two singular values, entropy) for both paths, and the
   ratio to the numpy/scipy loop recorded in ``results/exp1_cpu.json`` (scaled to the
   trials x temperatures run here: that loop's cost is linear in both).

Medians of ``--repeats`` timed runs after a warm-up (compilation excluded and reported).
On a CPU the fused kernel runs in Pallas' interpreter: use tiny sizes there, only to check
that this script runs (the test suite does).

Usage:  python benchmarks/gpu_check.py [--trials 1000] [--repeats 5] [--out FILE.json]
"""

from __future__ import annotations

import argparse
import json
import math
import statistics
import sys
import time
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import scipy.special

from jaxdsm.sinkhorn import random_cost, sinkhorn
from jaxdsm.spectra import entropy, top_two_singular_values

N, K = 64, 200
T_MIN, T_MAX = 0.01, 10.0
CPU_RESULTS = Path(__file__).parent / "results" / "exp1_cpu.json"


def _log(msg):
    print(msg, file=sys.stderr, flush=True)


def _median_time(fn, repeats):
    jax.block_until_ready(fn())  # warm (compiled already)
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        jax.block_until_ready(fn())
        times.append(time.perf_counter() - t0)
    return statistics.median(times), times


def _time_w(fn, costs, temps, repeats):
    """(first call incl. compilation, median, all times) of fn(costs, T) over every T."""
    t0 = time.perf_counter()
    jax.block_until_ready(fn(costs, temps[0]))
    first_call = time.perf_counter() - t0
    return (first_call, *_median_time(lambda: [fn(costs, t) for t in temps], repeats))


def _costs(seed, trials):
    draw = jax.vmap(lambda t: random_cost(jax.random.fold_in(jax.random.PRNGKey(seed), t), N))
    return jax.jit(draw)(jnp.arange(trials))


def algorithm1_log_f64(cost, temperature, iterations):
    """Algorithm 1 in the log domain, float64 numpy (as tests/reference.py)."""
    log_a = -np.asarray(cost, np.float64) / float(temperature)
    for _ in range(iterations):
        log_a = log_a - scipy.special.logsumexp(log_a, axis=-1, keepdims=True)
        log_a = log_a - scipy.special.logsumexp(log_a, axis=-2, keepdims=True)
    return np.exp(log_a)


def copy_bandwidth(repeats, mib):
    """Bytes per second of a device-to-device copy of a ``mib`` MiB float32 array (read +
    write)."""
    x = jnp.ones((mib << 18,), jnp.float32)
    copy = jax.jit(lambda a: a + 0)
    copy(x).block_until_ready()
    seconds, _ = _median_time(lambda: copy(x), repeats)
    return 2 * x.nbytes / seconds


def matmul_flops(repeats, size=8192):
    """float32 FLOP/s of a size x size matmul at HIGHEST precision (no TF32 rounding)."""
    a = jnp.ones((size, size), jnp.float32)
    product = jax.jit(lambda x: jnp.matmul(x, x, precision=jax.lax.Precision.HIGHEST))
    product(a).block_until_ready()
    seconds, _ = _median_time(lambda: product(a), repeats)
    return 2 * size**3 / seconds


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--trials", type=int, default=1000, help="R (default 1000)")
    p.add_argument("--temperatures", type=int, default=16, help="count (default 16)")
    p.add_argument("--check-trials", type=int, default=16, help="trials per T checked against float64")
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--copy-mib", type=int, default=2048, help="array size for the bandwidth copy")
    p.add_argument("--matmul-size", type=int, default=8192, help="matrix side for the FLOP/s probe")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", default=None, help="write the JSON results here")
    args = p.parse_args(argv)
    device = jax.devices()[0]
    temps = np.logspace(math.log10(T_MIN), math.log10(T_MAX), args.temperatures).astype(np.float32)
    R = args.trials
    costs = _costs(args.seed, R)
    report = {"device": device.device_kind, "platform": device.platform, "jax": jax.__version__,
              "trials": R, "temperatures": temps.tolist(), "n": N, "K": K}
    _log(f"gpu_check on {device.platform}: {device.device_kind}; R={R}, {len(temps)} T")

    def matrices(fused, stop_on_repeat=True):
        return jax.jit(jax.vmap(lambda c, t: sinkhorn(
            c, t, max_iterations=K, spread_bound=1.0, fused=fused,
            stop_on_repeat=stop_on_repeat).matrix, in_axes=(0, None)))

    def whole_w(fused):
        def trial(c, t):
            m = sinkhorn(c, t, max_iterations=K, spread_bound=1.0, fused=fused).matrix
            return top_two_singular_values(m)[1], entropy(m)

        return jax.jit(jax.vmap(trial, in_axes=(0, None)))

    # 1. correctness on this device
    check = min(args.check_trials, R)
    fused_m, portable_m = matrices(True), matrices(False)
    worst = {"fused_vs_float64": 0.0, "portable_vs_float64": 0.0, "fused_vs_portable": 0.0}
    for t in temps:
        a = np.asarray(fused_m(costs[:check], t))
        b = np.asarray(portable_m(costs[:check], t))
        ref = np.stack([algorithm1_log_f64(c, t, K) for c in np.asarray(costs[:check])])
        worst["fused_vs_float64"] = max(worst["fused_vs_float64"], float(np.abs(a - ref).max()))
        worst["portable_vs_float64"] = max(worst["portable_vs_float64"], float(np.abs(b - ref).max()))
        worst["fused_vs_portable"] = max(worst["fused_vs_portable"], float(np.abs(a - b).max()))
    report["max_abs_matrix_difference"] = worst
    _log(f"correctness over {check} trials x {len(temps)} T: {worst}")

    # 2. Sinkhorn part of W against the bandwidth bound
    bandwidth = copy_bandwidth(args.repeats, args.copy_mib)
    flops_per_s = matmul_flops(args.repeats, args.matmul_size)
    # Two matrix-vector products per sweep (K v, K^T u): 4 n^2 flops; the fused kernel is
    # bound by this rather than by its 2 n^2 floats of traffic (BENCHMARKS.md, GPU).
    flops = 4 * N * N * K * R * len(temps)
    per_trial = N * N * 4
    moved = {"fused": 2 * per_trial, "fori_loop": 2 * per_trial + 2 * K * per_trial}
    sinkhorn_part = {}
    for name, fn, bytes_key in (("fused", fused_m, "fused"),
                                ("fori_loop_every_sweep", matrices(False, False), "fori_loop"),
                                ("fori_loop_stop_on_repeat", portable_m, "fori_loop")):
        compile_s, seconds, times = _time_w(fn, costs, temps, args.repeats)
        bound = moved[bytes_key] * R * len(temps) / bandwidth
        sinkhorn_part[name] = {"seconds": seconds, "times": times, "first_call_s": compile_s,
                               "bytes": moved[bytes_key] * R * len(temps),
                               "bandwidth_bound_s": bound, "over_bound": seconds / bound,
                               "flops": flops, "compute_bound_s": flops / flops_per_s}
        _log(f"Sinkhorn part, {name}: {seconds * 1e3:.2f} ms; bandwidth bound "
             f"{bound * 1e3:.3f} ms ({seconds / bound:.1f}x), compute bound "
             f"{flops / flops_per_s * 1e3:.3f} ms")
    report["copy_bandwidth_bytes_per_s"] = bandwidth
    report["matmul_flops_per_s"] = flops_per_s
    report["sinkhorn_part"] = sinkhorn_part

    # 3. W end to end
    reference_s = None
    if CPU_RESULTS.exists():
        rows = json.loads(CPU_RESULTS.read_text())["contenders"]
        row = next((r for r in rows if r.get("role") == "numpy_scipy_float64"), None)
        if row is not None:
            settings = json.loads(CPU_RESULTS.read_text())["settings"]
            reference_s = row["w_seconds"] * (R * len(temps)) / (
                settings["R"] * len(settings["temperatures"]))
    w = {}
    for name, fused in (("fused", True), ("portable", False)):
        compile_s, seconds, times = _time_w(whole_w(fused), costs, temps, args.repeats)
        w[name] = {"seconds": seconds, "times": times, "first_call_s": compile_s,
                   "vs_cpu_numpy_loop": None if reference_s is None else reference_s / seconds}
        _log(f"W end to end, {name}: {seconds * 1e3:.2f} ms (first call {compile_s:.1f} s)"
             + ("" if reference_s is None else f"; {reference_s / seconds:.0f}x the CPU numpy loop"))
    report["w"] = w
    report["cpu_numpy_loop_s"] = reference_s
    if args.out:
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        Path(args.out).write_text(json.dumps(report, indent=1))
    return report


if __name__ == "__main__":
    main()
