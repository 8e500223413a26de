"""Shared by the in-process A/B scripts (``ab_microbatch.py``, ``ab_column_step.py``): Exp 1's
per-trial program compiled as ``jaxdsm.sweep`` runs it on 2 CPU devices, and variants timed
in interleaved rounds, so that a machine whose speed drifts hits all of them alike.

Import it after ``jaxdsm.distributed.split_cpu(2)``, which must precede JAX's backend.
"""

import time

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax
from jax.sharding import PartitionSpec

from jaxdsm import distributed

# Exp 1's 16 temperatures, log-spaced in [0.01, 10].
TEMPERATURES = [jnp.float32(t) for t in np.logspace(-2, 1, 16)]


def compiled_on_two_devices(trial, trials: int, microbatch: int):
    """(compiled program, trial indices): ``trial(index, temperature)`` over ``trials`` trials,
    one ``lax.map`` over vmapped microbatches per device, each device's share padded to whole
    microbatches (the padding is computed and dropped, as in ``jaxdsm.sweep``)."""
    mesh = distributed.trial_mesh(jax.devices()[:2])
    spec = PartitionSpec(distributed.TRIAL_AXIS)
    run = jax.shard_map(lambda ts, t: lax.map(lambda i: trial(i, t), ts, batch_size=microbatch),
                        mesh=mesh, in_specs=(spec, PartitionSpec()), out_specs=spec,
                        check_vma=False)
    padded = -(-trials // (mesh.size * microbatch)) * mesh.size * microbatch
    indices = np.minimum(np.arange(padded), trials - 1).astype(np.int32)
    indices = distributed.shard_trials(indices, mesh)
    return jax.jit(run).lower(indices, jnp.float32(1)).compile(), indices


def time_interleaved(programs: dict, trials: int, rounds: int):
    """Runs every program at every temperature, one round after another. Returns seconds
    {name: (rounds, T)} and the last round's outputs {name: (T, outputs, trials)}."""
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
                values.append([np.asarray(x)[:trials] for x in out])
            outputs[name] = np.array(values)
    return seconds, outputs
