#!/usr/bin/env python
"""Weak and strong scaling of a sweep over devices (issue 5).

Workload: the Exp 1 trial (n = 64, K = 200 sweeps of ``sinkhorn(mode="auto",
spread_bound=1)``, then sigma_2 and H) at 4 temperatures log-spaced in [0.01, 10], run by
``jaxdsm.sweep.run_grid`` on a 1-D mesh of d devices. Strong scaling: R trials in total
whatever d; weak scaling: R/d_max trials per device, so R grows with d.

On CPU, d devices are d local processes with one CPU device each, joined by
``jax.distributed`` over 127.0.0.1 (the multi-host code path). Several CPU devices in one
process (``jaxdsm.distributed.split_cpu``) are what the ``jaxdsm`` command uses; they are
measured by ``bench_exp1.py``. On a GPU/TPU host pass
``--real`` to use d real devices of one process. Times are ``run_grid``'s run seconds
(compilation excluded), median of ``--repeats`` sweeps after a warm-up sweep, as seen by
process 0.

Usage:  python benchmarks/bench_scaling.py [--devices 1 2 4] [--trials 2048] [--out FILE.json]
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import statistics
import subprocess
import sys
from pathlib import Path

TEMPERATURES = (0.01, 0.1, 1.0, 10.0)


def worker(devices: int, trials: int, repeats: int) -> dict:
    import jax

    from jaxdsm import distributed, sinkhorn, spectra, sweep

    if distributed.requested():
        distributed.initialize()

    def measure(key, temperature, n):
        cost = sinkhorn.random_cost(key, n)
        m = sinkhorn.sinkhorn(cost, temperature, max_iterations=200, spread_bound=1.0).matrix
        _, sigma2 = spectra.top_two_singular_values(m)
        return {"sigma2": sigma2, "entropy": spectra.entropy(m)}

    mesh = distributed.trial_mesh(jax.devices()[:devices])
    assert mesh.size == devices, (mesh.size, devices)
    times, compile_s = [], None
    for i in range(repeats + 1):  # the first sweep warms up
        result = sweep.run_grid(measure, sizes=(64,), temperatures=TEMPERATURES, trials=trials,
                                chunk_size=trials, mesh=mesh, progress=False)
        compile_s = compile_s or result.compile_seconds
        if i:
            times.append(result.run_seconds)
    return {"devices": devices, "trials": trials, "median_s": statistics.median(times),
            "times_s": times, "compile_s": compile_s, "backend": jax.default_backend(),
            "device_kind": jax.devices()[0].device_kind, "processes": jax.process_count(),
            "mean_sigma2": [float(x) for x in result.arrays["sigma2"][0].mean(-1)]}


def run_worker(devices: int, trials: int, repeats: int, real: bool) -> dict:
    cmd = [sys.executable, __file__, "--worker", str(devices), "--trials", str(trials),
           "--repeats", str(repeats)]
    if real:
        proc = subprocess.run(cmd, capture_output=True, text=True, check=True)
        return json.loads(proc.stdout.strip().splitlines()[-1])
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    procs = []
    for pid in range(devices):
        env = dict(os.environ, JAXDSM_DISTRIBUTED="1", JAXDSM_COORDINATOR=f"127.0.0.1:{port}",
                   JAXDSM_NUM_PROCESSES=str(devices), JAXDSM_PROCESS_ID=str(pid))
        procs.append(subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE,
                                      stderr=subprocess.DEVNULL, text=True))
    outputs = [p.communicate(timeout=1800)[0] for p in procs]
    if any(p.returncode for p in procs):
        raise RuntimeError(f"worker failed: {[p.returncode for p in procs]}")
    return json.loads(outputs[0].strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--devices", type=int, nargs="+", default=[1, 2, 4])
    parser.add_argument("--trials", type=int, default=2048, help="strong scaling: total R")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--real", action="store_true", help="use real devices (GPU/TPU host)")
    parser.add_argument("--out", type=Path)
    parser.add_argument("--worker", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        print(json.dumps(worker(args.worker, args.trials, args.repeats)))
        return

    per_device = args.trials // max(args.devices)
    rows = []
    for d in args.devices:
        for kind, trials in (("strong", args.trials), ("weak", per_device * d)):
            r = run_worker(d, trials, args.repeats, args.real)
            r["kind"] = kind
            rows.append(r)
            print(f"{kind:6s} d={d} R={trials:5d}: {r['median_s']:.3f} s "
                  f"(compile {r['compile_s']:.2f} s)", flush=True)
    for kind in ("strong", "weak"):
        base = next(r for r in rows if r["kind"] == kind and r["devices"] == args.devices[0])
        for r in rows:
            if r["kind"] == kind:
                # strong: speed-up t1/td (ideal d); weak: efficiency t1/td (ideal 1)
                r["speedup_vs_first"] = base["median_s"] / r["median_s"]
    same = all(r["mean_sigma2"] == rows[0]["mean_sigma2"] for r in rows if r["kind"] == "strong")
    report = {"rows": rows, "strong_results_identical": same, "cpu_count": os.cpu_count(),
              "command": " ".join([Path(sys.executable).name] + sys.argv)}
    print(json.dumps({k: v for k, v in report.items() if k != "rows"}))
    if args.out:
        args.out.write_text(json.dumps(report, indent=2) + "\n")


if __name__ == "__main__":
    main()
