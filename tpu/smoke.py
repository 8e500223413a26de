"""Smoke test for a TPU VM or slice: print the topology, run a small sharded sweep, compare it
with a single-device answer.

    python tpu/smoke.py                    # one host (any backend)
    python tpu/smoke.py --distributed      # on every worker of a multi-host slice
                                           # (tpu/run.sh python tpu/smoke.py does this)
    XLA_FLAGS=--xla_force_host_platform_device_count=4 python tpu/smoke.py   # 4 fake CPU devices

Every process runs the same small sweep (``jaxdsm.sweep.run_grid`` of a tolerance-mode Sinkhorn
loop, with a trial count that does not divide evenly over the devices) twice:

1. sharded over every device of every process (``distributed.trial_mesh()``), results gathered
   on every process;
2. on its own first local device (``trial_mesh(jax.local_devices()[:1])``). A one-device mesh on
   process 0's device would not be addressable by the other processes, so each process computes
   its own reference and keeps it local (it is not gathered).

Each process compares (1) with (2); the worst difference over all processes decides the exit
status, the same on every process. Tolerance (``--tolerance``): float outputs may differ by at
most this absolute amount and integer outputs (sweep counts) must be equal. The default is 0 on
CPU, where sharded sweeps are bit-identical to one device (tests/test_distributed.py checks it),
and 1e-5 on accelerators: each device runs the same per-microbatch program as a single device,
so equal bits are expected there too, but that is not verified on real TPUs yet.

Exit status: 0 when within tolerance, 1 otherwise.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

# Use this checkout's jaxdsm (the code tpu/sync.sh copied), also when another copy is installed.
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

ACCELERATOR_TOLERANCE = 1e-5


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--distributed", action="store_true",
                        help="start jax.distributed first (also JAXDSM_DISTRIBUTED=1); "
                        "needed on multi-host slices")
    parser.add_argument("--n", type=int, default=16, help="matrix size (default: 16)")
    parser.add_argument("--temperatures", type=float, nargs="+", default=[0.05, 1.0],
                        help="temperatures (default: 0.05 1.0)")
    parser.add_argument("--microbatch", type=int, default=8,
                        help="trials per vmapped program (default: 8)")
    parser.add_argument("--chunk-size", type=int, default=None,
                        help="trials per chunk (default: 2 * microbatch * devices)")
    parser.add_argument("--trials", type=int, default=None,
                        help="trials (default: 2 chunks + 3, not a multiple of the device "
                        "count, so the last chunk is padded)")
    parser.add_argument("--tolerance", type=float, default=None,
                        help=f"max abs difference of float outputs (default: 0 on CPU, "
                        f"{ACCELERATOR_TOLERANCE:g} otherwise)")
    return parser.parse_args(argv)


def measure(key, temperature, n):
    """A tolerance loop, so that devices stop at different sweeps, and a few spectra."""
    from jaxdsm import sinkhorn, spectra

    out = sinkhorn.sinkhorn(sinkhorn.random_cost(key, n), temperature, max_iterations=500,
                            threshold=1e-6, early_stop=True, spread_bound=1.0)
    return {"sigma2": spectra.sigma2(out.matrix), "entropy": spectra.entropy(out.matrix),
            "error": out.error, "n_iters": out.n_iters}


def difference(a, b) -> float:
    """Max abs difference; NaN where only one side is NaN counts as infinite."""
    import numpy as np

    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    if a.shape != b.shape:
        return float("inf")
    both_nan = np.isnan(a) & np.isnan(b)
    diff = np.where(both_nan, 0.0, np.abs(a - b))
    return float(np.nan_to_num(diff, nan=np.inf).max(initial=0.0))


def main(argv=None) -> int:
    args = parse_args(argv)
    from jaxdsm import distributed

    if distributed.requested(args.distributed):
        distributed.initialize()  # before any other JAX work

    import jax
    import numpy as np

    from jaxdsm import sweep

    me, count = jax.process_index(), jax.process_count()
    tag = f"[process {me}/{count}]"
    backend = jax.default_backend()
    local = jax.local_devices()
    print(f"{tag} jax {jax.__version__}, backend {backend}, "
          f"{len(local)} local / {jax.device_count()} global devices, "
          f"kind {local[0].device_kind!r}", flush=True)
    print(f"{tag} local devices: {[d.id for d in local]}", flush=True)
    if me == 0:
        by_process = {}
        for d in jax.devices():
            by_process.setdefault(d.process_index, []).append(d.id)
        print(f"{tag} devices by process: {by_process}", flush=True)

    tolerance = args.tolerance
    if tolerance is None:
        tolerance = 0.0 if backend == "cpu" else ACCELERATOR_TOLERANCE
    mesh = distributed.trial_mesh()
    chunk_size = args.chunk_size or 2 * args.microbatch * mesh.size
    trials = args.trials or 2 * chunk_size + 3
    grid = dict(sizes=(args.n,), temperatures=args.temperatures, trials=trials,
                chunk_size=chunk_size, microbatch=args.microbatch,
                progress=False)

    sharded = sweep.run_grid(measure, mesh=mesh, description="sharded", **grid)
    # Not addressable by other processes, so run_grid keeps this result local.
    single = sweep.run_grid(measure, mesh=distributed.trial_mesh(local[:1]),
                            description="one device", **grid)
    assert sharded.timings["devices"] == jax.device_count()

    worst, failed = 0.0, False
    for name, ref in single.arrays.items():
        got = sharded.arrays[name]
        diff = difference(got, ref)
        exact = not np.issubdtype(np.asarray(ref).dtype, np.floating)
        bad = diff > (0.0 if exact else tolerance)
        worst, failed = max(worst, diff), failed or bad
        print(f"{tag} {name:8s} shape {tuple(ref.shape)} max |sharded - one device| = {diff:.3g}"
              f"{'  (must be equal)' if exact else ''}{'  FAIL' if bad else ''}", flush=True)
    print(f"{tag} {trials} trials x {len(args.temperatures)} T, n = {args.n}: sharded over "
          f"{mesh.size} devices {sharded.run_seconds:.2f} s (+{sharded.compile_seconds:.2f} s "
          f"compile), one device {single.run_seconds:.2f} s", flush=True)

    # Every process returns the same verdict, from the results of all processes.
    mine = np.array([worst, failed], np.float32)
    if count > 1:
        from jax.experimental import multihost_utils

        everyone = np.asarray(multihost_utils.process_allgather(mine)).reshape(count, 2)
    else:
        everyone = mine[None]
    ok = not everyone[:, 1].any()
    if me == 0:
        print(f"{tag} worst difference over {count} process(es): {everyone[:, 0].max():.3g} "
              f"(tolerance {tolerance:g} for floats, 0 for counts): {'OK' if ok else 'FAIL'}",
              flush=True)
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
