"""Many devices and many hosts with JAX's own runtime: a 1-D mesh over trials.

A sweep splits each chunk of trials evenly over the devices of ``trial_mesh()``; under
``shard_map`` every device runs its own copy of the per-microbatch program, so a
convergence loop on one device stops at that device's slowest trial, not the global one.
Every device sees whole microbatches of consecutive trials, the same ones a single device
would see, which is why the bits do not depend on the device count (unless XLA compiles
the per-device program differently, which can move the last bit: README, "Many devices").

Several hosts: start every process with the same command and ``--distributed`` (or
``JAXDSM_DISTRIBUTED=1``); ``initialize`` then calls ``jax.distributed.initialize``, which
finds the coordinator itself on Cloud TPU and SLURM, or reads ``JAXDSM_COORDINATOR``,
``JAXDSM_NUM_PROCESSES`` and ``JAXDSM_PROCESS_ID`` (for example for local processes on
127.0.0.1). All processes walk the same chunks in the same order; process 0 gathers the
results and is the only one that writes them.

One host's CPU: XLA:CPU runs a program's loops on one core, so ``split_cpu`` makes the host
CPU several JAX devices (one per core by default) and a sweep's trials then run on all of
them.
"""

from __future__ import annotations

import os

import jax
import numpy as np
from jax.experimental import multihost_utils
from jax.sharding import Mesh, NamedSharding, PartitionSpec

TRIAL_AXIS = "trials"
_ENV_FLAG = "JAXDSM_DISTRIBUTED"
_CPU_DEVICES_ENV = "JAXDSM_CPU_DEVICES"


def requested(flag: bool = False) -> bool:
    """Whether multi-host start-up was asked for: the CLI flag or JAXDSM_DISTRIBUTED=1."""
    return flag or os.environ.get(_ENV_FLAG, "") not in ("", "0")


def initialize() -> None:
    """``jax.distributed.initialize`` with the JAXDSM_* settings; call before any JAX work.

    On CPU hosts, ``JAXDSM_CPU_DEVICES=N`` makes each process's CPU N devices
    (``split_cpu``); unset, each process keeps one CPU device (TPU and GPU hosts do not
    run on their CPU devices)."""
    # CPU processes exchange results through gloo; accelerators use their own collectives.
    jax.config.update("jax_cpu_collectives_implementation", "gloo")
    if os.environ.get(_CPU_DEVICES_ENV):
        split_cpu()
    kwargs = {}
    if "JAXDSM_COORDINATOR" in os.environ:
        kwargs["coordinator_address"] = os.environ["JAXDSM_COORDINATOR"]
    for name, env in (("num_processes", "JAXDSM_NUM_PROCESSES"), ("process_id", "JAXDSM_PROCESS_ID")):
        if env in os.environ:
            try:
                kwargs[name] = int(os.environ[env])
            except ValueError:
                raise ValueError(f"{env} must be an integer, got {os.environ[env]!r}") from None
    jax.distributed.initialize(**kwargs)


def split_cpu(count: int | None = None) -> int:
    """Makes the host CPU ``count`` JAX devices, so that a sweep uses every core.

    ``count`` defaults to JAXDSM_CPU_DEVICES, else to the cores this process may use (no
    change when XLA_FLAGS already sets ``--xla_force_host_platform_device_count``). It
    only takes effect before JAX's first operation (JAX fixes the CPU device count when it
    starts); afterwards nothing changes. Returns the CPU device count asked for, or 0 when
    JAX had already started. The LAPACK calls of ``jaxdsm.spectra`` are safe on several
    CPU devices (``spectra.one_matrix_per_call_on_cpu``); a program of your own that
    calls batched ``jnp.linalg`` factorizations on several CPU devices at once may hang
    on jaxlib <= 0.10.
    """
    if count is None:
        if "xla_force_host_platform_device_count" in os.environ.get("XLA_FLAGS", ""):
            return 0  # the user chose the CPU device count already
        env = os.environ.get(_CPU_DEVICES_ENV, "")
        try:
            count = int(env) if env else _usable_cores()
        except ValueError:
            raise ValueError(f"{_CPU_DEVICES_ENV} must be an integer, got {env!r}") from None
    if count < 1:
        raise ValueError(f"the CPU device count must be >= 1, got {count}")
    try:
        jax.config.update("jax_num_cpu_devices", count)
    except RuntimeError:  # JAX has started: its device count is fixed
        return 0
    return count


def _usable_cores() -> int:
    if hasattr(os, "sched_getaffinity"):  # Linux: the cores this process may run on
        return len(os.sched_getaffinity(0))
    return os.cpu_count() or 1


def trial_mesh(devices=None) -> Mesh:
    """A 1-D mesh named ``trials`` over ``devices`` (default: every device of every process)."""
    devices = jax.devices() if devices is None else list(devices)
    return Mesh(np.asarray(devices), (TRIAL_AXIS,))


def is_writer() -> bool:
    """Only process 0 writes results."""
    return jax.process_index() == 0


def shard_trials(trials: np.ndarray, mesh: Mesh) -> jax.Array:
    """The global array of trial indices, split evenly over the mesh (every process passes
    the same indices and keeps the shards of its own devices)."""
    sharding = NamedSharding(mesh, PartitionSpec(TRIAL_AXIS))
    return jax.make_array_from_callback(trials.shape, sharding, lambda index: trials[index])


def to_host(tree):
    """Arrays -> numpy on every process; arrays spread over several processes are gathered."""

    def one(x):
        if getattr(x, "is_fully_addressable", True):
            return np.asarray(x)
        return multihost_utils.process_allgather(x, tiled=True)

    return jax.tree.map(one, tree)


def from_writer(tree):
    """Process 0's value of ``tree`` on every process (same structure and shapes everywhere)."""
    if jax.process_count() == 1:
        return tree
    return multihost_utils.broadcast_one_to_all(tree)
