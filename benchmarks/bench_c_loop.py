#!/usr/bin/env python
"""W's Sinkhorn part: jaxdsm against a hand-written C loop (issue 6's "for scale" reference).

The issue quotes a C loop of the scaling form doing W's Sinkhorn part (16 temperatures x
1000 trials, n = 64, K = 200 sweeps) in about 0.4 s on one core and 0.2 s on two. This
script builds such a loop (``c_loop/sinkhorn_loop.c``, gcc -O3 -march=native -ffast-math
-fopenmp; sums of scaled columns, kernel and transpose in L1 for all K sweeps of a trial)
and times it in the same process as jaxdsm's own Sinkhorn program, in interleaved rounds:

* C, all K sweeps, on 1 and on 2 threads (the issue's reference);
* C with a per-trial stop on a repeated state (v equal to the v two sweeps back, the rule
  of ``jaxdsm.sinkhorn``, but per trial instead of per vmapped batch), 2 threads;
* jaxdsm: ``sinkhorn(random_cost(key, 64), T, spread_bound=1)`` as Exp 1 runs it
  (``sweep.make_chunk_fn`` on 2 CPU devices, microbatch 8, stop on a repeated state), and
  the same with ``stop_on_repeat=False`` (all K sweeps);
* jaxdsm drawing d only, to show what the draw (inside jaxdsm's program, outside C's) costs.

Both do the same arithmetic: exp(-(d - min d)/T) and the scaling sweeps where T keeps the
kernel in float32 range (``scaling_is_safe``), else one log-domain sweep and then scalings
of the stabilized kernel (jaxdsm's "stabilized" form; its absorption rerun is never needed
on this grid). Both get the same d (``random_cost(fold_in(PRNGKey(0), t), 64)``). Their
matrices are compared with each other and with a float64 numpy loop on a subset.

Usage:  python benchmarks/bench_c_loop.py [--trials 1000] [--rounds 5] [--out FILE.json]
Needs gcc with OpenMP (Debian: gcc).
"""

import argparse
import ctypes
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from jaxdsm import distributed

distributed.split_cpu(2)

import jax  # noqa: E402 (after split_cpu, which must precede JAX's backend)
import jax.numpy as jnp  # noqa: E402
from interleaved import TEMPERATURES, compiled_on_two_devices, time_interleaved  # noqa: E402

from jaxdsm.sinkhorn import random_cost, scaling_is_safe, sinkhorn  # noqa: E402

N, K, MICROBATCH = 64, 200, 8
SOURCE = Path(__file__).parent / "c_loop" / "sinkhorn_loop.c"
FLAGS = ["-O3", "-march=native", "-ffast-math", "-fopenmp", "-shared", "-fPIC"]


def build_c_loop(directory: Path):
    # Idle OpenMP threads must sleep, not spin: they would take the cores from the JAX
    # programs timed right after (libgomp reads this when the library loads).
    os.environ.setdefault("OMP_WAIT_POLICY", "passive")
    library = directory / "sinkhorn_loop.so"
    subprocess.run(["gcc", *FLAGS, str(SOURCE), "-o", str(library), "-lm"], check=True)
    lib = ctypes.CDLL(str(library))
    floats = np.ctypeslib.ndpointer(np.float32, flags="C_CONTIGUOUS")
    ints = np.ctypeslib.ndpointer(np.int32, flags="C_CONTIGUOUS")
    lib.sinkhorn_loop.argtypes = [floats, ctypes.c_int, ctypes.c_int, ctypes.c_float,
                                  ctypes.c_int, ctypes.c_int, ctypes.c_int, floats, ints]
    lib.set_threads.argtypes = [ctypes.c_int]
    return lib


def c_sinkhorn(lib, costs, temperature, threads, stop_on_repeat):
    """(matrices, sweeps run per trial) of the C loop on ``costs`` (trials, n, n)."""
    trials, n = costs.shape[0], costs.shape[1]
    matrices = np.empty_like(costs)
    sweeps = np.empty(trials, np.int32)
    stabilized = not bool(scaling_is_safe(1.0, float(temperature)))
    lib.set_threads(threads)
    lib.sinkhorn_loop(costs, trials, n, float(temperature), K, int(stabilized),
                      int(stop_on_repeat), matrices, sweeps)
    return matrices, sweeps


def numpy_reference(cost, temperature):
    """Algorithm 1 in float64 (log-domain first sweep where scaling is not safe, as both
    contenders do; in float64 the kernel does not underflow at these T anyway)."""
    d = cost.astype(np.float64)
    kernel = np.exp(-(d - d.min()) / float(temperature))
    u, v = np.ones(len(d)), np.ones(len(d))
    for _ in range(K):
        u = 1 / (kernel @ v)
        v = 1 / (kernel.T @ u)
    return u[:, None] * kernel * v[None, :]


def cpu_model() -> str:
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("model name"):
            return line.split(":", 1)[1].strip()
    return platform.processor()


def jaxdsm_measure(stop_on_repeat):
    def measure(key, temperature, n):
        out = sinkhorn(random_cost(key, n), temperature, max_iterations=K, spread_bound=1.0,
                       stop_on_repeat=stop_on_repeat)
        return {"row": out.matrix[0], "error": out.error}  # every sweep feeds both
    return measure


def draw_only(key, temperature, n):
    return {"row": random_cost(key, n)[0] * temperature}


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--trials", type=int, default=1000)
    p.add_argument("--rounds", type=int, default=5)
    p.add_argument("--check-trials", type=int, default=32,
                   help="trials per T compared with the float64 loop (default 32)")
    p.add_argument("--out", default=None, help="write the JSON results here")
    args = p.parse_args()
    trials = args.trials

    keys = jax.vmap(lambda t: jax.random.fold_in(jax.random.PRNGKey(0), t))(jnp.arange(trials))
    costs = np.ascontiguousarray(jax.jit(jax.vmap(lambda k: random_cost(k, N)))(keys))

    with tempfile.TemporaryDirectory() as build:
        lib = build_c_loop(Path(build))
        c_runs = {"C loop, all K sweeps, 1 thread": (1, False),
                  "C loop, all K sweeps, 2 threads": (2, False),
                  "C loop, per-trial repeat stop, 2 threads": (2, True)}
        jax_runs = {"jaxdsm, 2 devices (repeat stop per batch of 8)": jaxdsm_measure(True),
                    "jaxdsm, 2 devices, all K sweeps": jaxdsm_measure(False),
                    "jaxdsm drawing d only, 2 devices": draw_only}
        t0 = time.perf_counter()
        programs = {name: compiled_on_two_devices(m, N, trials, MICROBATCH)
                    for name, m in jax_runs.items()}
        compile_seconds = time.perf_counter() - t0

        # The C loop in time_interleaved's form: (fn(indices, T) -> dict of outputs, indices).
        for name, (threads, stop) in c_runs.items():
            programs[name] = (lambda _, t, threads=threads, stop=stop:
                              {"row": c_sinkhorn(lib, costs, t, threads, stop)[0][:, 0]}, None)
        names = list(c_runs) + list(jax_runs)
        seconds, _ = time_interleaved({name: programs[name] for name in names}, trials,
                                      args.rounds)

        # Agreement on a subset, and the sweeps the C loop's per-trial stop ran.
        check = slice(0, args.check_trials)
        agreement = []
        full_matrix = compiled_on_two_devices(
            lambda key, t, n: {"m": sinkhorn(random_cost(key, n), t, max_iterations=K,
                                             spread_bound=1.0).matrix},
            N, args.check_trials, MICROBATCH)
        for t in TEMPERATURES:
            c_all, _ = c_sinkhorn(lib, costs, t, 2, False)
            c_stop, sweeps = c_sinkhorn(lib, costs, t, 2, True)
            fn, indices = full_matrix
            ours = np.asarray(fn(indices, t)["m"])[: args.check_trials]
            reference = np.stack([numpy_reference(c, t) for c in costs[check]])
            agreement.append({
                "temperature": float(t),
                "c_vs_float64": float(np.abs(c_all[check] - reference).max()),
                "jaxdsm_vs_float64": float(np.abs(ours - reference).max()),
                "c_repeat_stop_same_bits_as_all_sweeps": bool(np.array_equal(c_all, c_stop)),
                "c_mean_sweeps_with_repeat_stop": float(sweeps.mean()),
            })

    totals = {name: seconds[name].sum(axis=1) for name in names}
    medians = {name: statistics.median(totals[name]) for name in names}
    ours = medians["jaxdsm, 2 devices (repeat stop per batch of 8)"]
    print(f"\nW's Sinkhorn part, {trials} trials x {len(TEMPERATURES)} T, n = {N}, K = {K} "
          f"(median of {args.rounds} interleaved rounds; jaxdsm compile {compile_seconds:.1f} s)")
    print(f"{'contender':50s} {'seconds':>8s} {'vs jaxdsm':>10s}")
    for name in names:
        print(f"{name:50s} {medians[name]:8.3f} {medians[name] / ours:10.2f}")
    print("\nper T (median s):  T  " + "  ".join(f"{float(t):.3g}" for t in TEMPERATURES))
    for name in names:
        per_t = np.median(seconds[name], axis=0)
        print(f"{name[:40]:40s} " + " ".join(f"{x * 1e3:5.0f}" for x in per_t) + "  ms")
    print("\nagreement on the first", args.check_trials, "trials per T (max |M - M_float64|):")
    for a in agreement:
        print(f"  T = {a['temperature']:.4g}: C {a['c_vs_float64']:.1e}, jaxdsm "
              f"{a['jaxdsm_vs_float64']:.1e}; C's repeat stop same bits: "
              f"{a['c_repeat_stop_same_bits_as_all_sweeps']}, mean sweeps "
              f"{a['c_mean_sweeps_with_repeat_stop']:.1f}")
    if args.out:
        Path(args.out).write_text(json.dumps({
            "command": " ".join([Path(sys.executable).name] + sys.argv),
            "machine": {"processor": cpu_model(), "cpu_count": os.cpu_count(),
                        "jax": jax.__version__, "gcc_flags": FLAGS},
            "trials": trials, "rounds": args.rounds, "compile_seconds": compile_seconds,
            "median_seconds": medians,
            "per_temperature_median_seconds": {k: np.median(v, axis=0).tolist()
                                               for k, v in seconds.items()},
            "temperatures": [float(t) for t in TEMPERATURES], "agreement": agreement,
        }, indent=1))


if __name__ == "__main__":
    main()
