"""Shared by the in-process A/B scripts (``ab_microbatch.py``, ``ab_column_step.py``,
``ab_draw_and_power.py``) and ``bench_c_loop.py``: Exp 1's per-trial program compiled as ``jaxdsm.sweep`` runs it on
2 CPU devices (``sweep.make_chunk_fn``), and variants timed in interleaved rounds, so that a
machine whose speed drifts hits all of them alike.

Import it after ``jaxdsm.distributed.split_cpu(2)``, which must precede JAX's backend.
"""

import time

import jax
import jax.numpy as jnp
import numpy as np

from jaxdsm import distributed, sweep

# Exp 1's 16 temperatures, log-spaced in [0.01, 10].
TEMPERATURES = [jnp.float32(t) for t in np.logspace(-2, 1, 16)]


def compiled_on_two_devices(measure, n: int, trials: int, microbatch: int):
    """(compiled program, trial indices): ``measure(key, temperature, n) -> dict`` over
    ``trials`` trials with ``jaxdsm.sweep``'s chunk program (trial t's key is
    fold_in(PRNGKey(0), t)), each device's share padded to whole microbatches with copies of
    the last trial, as ``sweep.run_grid`` pads (computed, and dropped by ``time_interleaved``)."""
    mesh = distributed.trial_mesh(jax.devices()[:2])
    fn = sweep.make_chunk_fn(measure, n, seed=0, trials_per_seed=trials, microbatch=microbatch,
                             mesh=mesh)
    padded = -(-trials // (mesh.size * microbatch)) * mesh.size * microbatch
    indices = np.minimum(np.arange(padded), trials - 1).astype(np.int32)
    indices = distributed.shard_trials(indices, mesh)
    return fn.lower(indices, jnp.float32(1)).compile(), indices


def time_interleaved(programs: dict, trials: int, rounds: int):
    """Runs every program at every temperature, one round after another. Returns seconds
    {name: (rounds, T)} and the last round's outputs {name: {output: (T, trials)}}."""
    for fn, indices in programs.values():  # warm-up
        jax.block_until_ready(fn(indices, TEMPERATURES[0]))
    seconds = {name: np.zeros((rounds, len(TEMPERATURES))) for name in programs}
    outputs = {}
    for r in range(rounds):
        for name, (fn, indices) in programs.items():
            values = []
            for i, t in enumerate(TEMPERATURES):
                t0 = time.perf_counter()
                out = jax.block_until_ready(fn(indices, t))
                seconds[name][r, i] = time.perf_counter() - t0
                values.append(out)
            outputs[name] = {k: np.array([np.asarray(v[k])[:trials] for v in values])
                             for k in values[0]}
    return seconds, outputs
