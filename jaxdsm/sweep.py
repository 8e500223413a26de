"""The grid engine: sizes n x temperatures x trials, run as jitted, vmapped chunks.

A *measure* is a pure per-trial function ``measure(key, temperature, n) -> dict`` of
arrays; the engine vmaps it over a chunk of trial indices, jits it once per n (the
temperature is traced, so every temperature and chunk reuses one compilation), and
stacks the results into arrays of shape ``(len(sizes), len(temperatures), trials, ...)``.

Chunks and microbatches: a chunk (one jitted call) is a ``lax.map`` over microbatches of
``microbatch`` trials, each microbatch one vmapped program of fixed shape. XLA's code for
a vmapped program depends on its batch size (on CPU, float32 sums round differently for
batch 7 and batch 16), so fixing the microbatch makes every trial's bits independent of
the chunk size; the chunk size only sets memory, progress and resume granularity. On CPU
a small microbatch also keeps the matrices in cache for all K sweeps.

Keys: trial t uses ``fold_in(PRNGKey(seed + t // trials_per_seed), t % trials_per_seed)``,
the paper's "seeds 0..9 x 100 trials" (Appendix D), and never a split of the batch, so
results do not depend on the chunk size. The key does not depend on the temperature:
every temperature sees the same cost matrices (paired comparisons across T).

Devices: each chunk is split evenly over a 1-D mesh of devices (``jaxdsm.distributed``);
a chunk holds whole microbatches for every device, so results are the same bits on one
device or many, in one process or several, as long as XLA compiles the per-device program
the same way (README, "Many devices").

Each finished chunk is saved atomically under ``chunk_dir``; a rerun with the same
configuration loads finished chunks instead of recomputing them (resume). A chunk's file
name holds its trials and a tag of everything else its values depend on (``_chunk_tag``:
n, the temperature's value, trials, seed, trials_per_seed, microbatch, dtype and the
measure's name and code), so a rerun with other settings in the same ``chunk_dir``
computes afresh instead of returning stale values. Values a measure closes over are not in
the tag (the experiments' resume checks their whole config instead). With several
processes, process 0 decides which chunks are finished and hands their arrays to the others.
"""

from __future__ import annotations

import hashlib
import sys
import time
import types
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import Mesh, PartitionSpec
from tqdm.auto import tqdm

from jaxdsm import _checks, distributed, results

Measure = Callable[[jax.Array, jax.Array, int], Mapping[str, jax.Array]]


def trial_key(trial: jax.Array, *, seed: int = 0, trials_per_seed: int = 100) -> jax.Array:
    """The key of trial ``trial``: fold_in(PRNGKey(seed + trial // m), trial % m)."""
    base = jax.random.PRNGKey(seed + trial // trials_per_seed)
    return jax.random.fold_in(base, trial % trials_per_seed)


@dataclass
class SweepResult:
    """Stacked per-trial arrays and timings of one sweep."""

    arrays: dict[str, np.ndarray]
    compile_seconds: float = 0.0
    run_seconds: float = 0.0
    chunks_computed: int = 0
    chunks_resumed: int = 0
    timings: dict[str, float] = field(default_factory=dict)

    def report(self) -> dict[str, float]:
        """Timings, chunk counts and peak memory for manifest.json."""
        return dict(self.timings, compile_seconds=self.compile_seconds,
                    run_seconds=self.run_seconds, chunks_computed=self.chunks_computed,
                    chunks_resumed=self.chunks_resumed, **peak_memory())


def peak_memory() -> dict[str, float]:
    """Peak memory so far: this process's resident set, and each accelerator's peak bytes in
    use where the backend reports it (CPU devices do not)."""
    import resource

    # ru_maxrss is in KiB on Linux (bytes on macOS; jaxdsm's CI and users run Linux).
    peak = {"peak_host_rss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}
    device_peaks = [(d.memory_stats() or {}).get("peak_bytes_in_use") for d in jax.local_devices()]
    if any(p is not None for p in device_peaks):
        peak["peak_device_mib"] = max(p or 0 for p in device_peaks) / 2**20
    return peak


# CPU: trials per vmapped program, measured rather than derived. On Exp 1's program (K = 200,
# sigma_2 and H, 16 temperatures, 2 CPU devices, an Intel Xeon with 2 MiB L2 per core;
# ``benchmarks/ab_microbatch.py``, BENCHMARKS.md) the fastest microbatch halved each time n
# doubled: 16 at n = 16 and 32 (8 took 15% longer at n = 16), 8 at n = 64 (3-6% faster than
# 16; 4 took 13-21% longer), 4 at n = 128 (20% faster than 16), 2 at n = 256 (6-15% faster
# than 4; 1 took 35% longer). Hence a budget for one row of each of the batch's matrices.
# At n = 64 the gain is mostly at high T, where a batch's stop on a repeated state waits
# for its slowest trial; from n = 128 on it is at every T (the batch's matrices and L2).
# Never 1: XLA then fuses the batch-of-one matrix-vector products into loop-emitted code,
# and Sinkhorn took 27 instead of 4 ms per trial at n = 512 (2 per batch), 574 instead of
# 33 at n = 1024.
CPU_MICROBATCH_ROW_BYTES = 2048
CPU_MIN_MICROBATCH = 2
CPU_MAX_MICROBATCH = 16
# Accelerators: a microbatch's trials are all in device memory at once. XLA's temporary
# memory per trial (``compiled.memory_analysis()`` on CPU, microbatch 16, n = 64 and 256) is
# 9.2-9.6 n x n float32 arrays for the Exp 1 program (Sinkhorn, top-two spectrum, entropy)
# and 9.2-9.5 for spectral-gap's (two Sinkhorn runs and a full SVD), since the Sinkhorn
# forms keep the kernel's transpose (6.2-6.6 and 8.1-8.3 before; the 4.1 and 7.1 measured
# earlier no longer held); MATRICES_PER_TRIAL bounds both, and the microbatch may use
# ACCELERATOR_MEMORY_FRACTION of the device's memory. Not yet checked on a GPU or TPU,
# whose compilers may keep other temporaries.
MATRICES_PER_TRIAL = 12
ACCELERATOR_MEMORY_FRACTION = 0.25
ACCELERATOR_MAX_MICROBATCH = 1024


def default_microbatch(backend: str | None = None, n: int | None = None, itemsize: int = 4,
                       memory_bytes: int | None = None) -> int:
    """Trials per vmapped program: small on CPU (cache), large on accelerators (occupancy),
    within the device's memory.

    On CPU, the largest power of two up to ``CPU_MAX_MICROBATCH`` whose matrices' rows (one
    each) take at most ``CPU_MICROBATCH_ROW_BYTES``, and at least 2: in float32 16 up to
    n = 32, 8 at n = 64, 4 at n = 128, 2 from n = 256. On accelerators, up to 1024, or the
    largest power of two whose working set (``MATRICES_PER_TRIAL`` n x n arrays per trial)
    fits ``ACCELERATOR_MEMORY_FRACTION`` of ``memory_bytes`` (default: the first local
    device's ``bytes_limit``, where the backend reports it).
    """
    backend = backend or jax.default_backend()
    if backend == "cpu":
        budget, low, cap = CPU_MICROBATCH_ROW_BYTES, CPU_MIN_MICROBATCH, CPU_MAX_MICROBATCH
        rows = 1  # per trial
    else:
        if memory_bytes is None:
            memory_bytes = (jax.local_devices()[0].memory_stats() or {}).get("bytes_limit")
        if memory_bytes is None:
            return ACCELERATOR_MAX_MICROBATCH
        budget = int(memory_bytes * ACCELERATOR_MEMORY_FRACTION) // MATRICES_PER_TRIAL
        low, cap = 1, ACCELERATOR_MAX_MICROBATCH
        rows = n  # the whole matrix
    if n is None:
        return cap
    fits = max(low, budget // (rows * n * itemsize))
    return min(cap, 1 << (fits.bit_length() - 1))


def make_chunk_fn(measure: Measure, n: int, *, seed: int, trials_per_seed: int, microbatch: int,
                  mesh: Mesh | None = None):
    """jit of ``measure`` over a chunk of trial indices at one temperature (n is static).

    The chunk length must be a multiple of ``microbatch`` (times the mesh size with a mesh).
    """

    def one_trial(trial, temperature):
        key = trial_key(trial, seed=seed, trials_per_seed=trials_per_seed)
        out = measure(key, temperature, n)
        if not isinstance(out, Mapping) or not out:
            raise TypeError(f"measure must return a non-empty dict of arrays, got {type(out).__name__}"
                            + (" (empty)" if isinstance(out, Mapping) else ""))
        return dict(out)

    def chunk(trials, temperature):
        batches = trials.reshape(-1, microbatch)
        out = jax.lax.map(lambda b: jax.vmap(one_trial, in_axes=(0, None))(b, temperature), batches)
        return jax.tree.map(lambda x: x.reshape((-1,) + x.shape[2:]), out)

    if mesh is not None:
        # Each device runs ``chunk`` on its own shard of trials, so its loops stop on its own.
        # No collectives inside, so the varying-axis check (which trips on loop carries
        # initialised from constants) has nothing to protect.
        trials_spec = PartitionSpec(distributed.TRIAL_AXIS)
        chunk = jax.shard_map(chunk, mesh=mesh, in_specs=(trials_spec, PartitionSpec()),
                              out_specs=trials_spec, check_vma=False)
    return jax.jit(chunk)


def run_grid(
    measure: Measure,
    *,
    sizes: Sequence[int],
    temperatures: Sequence[float],
    trials: int,
    chunk_size: int,
    seed: int = 0,
    trials_per_seed: int = 100,
    microbatch: int | None = None,
    chunk_dir: Path | None = None,
    progress: bool = True,
    description: str = "sweep",
    mesh: Mesh | None = None,
) -> SweepResult:
    """Runs ``measure`` over the grid; returns arrays of shape (sizes, temperatures, trials, ...).

    ``chunk_size`` is rounded up to a multiple of ``microbatch`` (default:
    ``default_microbatch`` for each n) times the number of devices in ``mesh`` (default: all
    devices), at least two such; results do not depend on ``chunk_size`` or on the mesh.
    """
    if np.ndim(sizes) != 1 or np.ndim(temperatures) != 1:
        raise ValueError("sizes and temperatures must each be a list (or 1-D array)")
    sizes = [_checks.check_n(n, "n") for n in sizes]
    if not sizes or not len(temperatures):
        raise ValueError("run_grid needs at least one size and one temperature")
    _checks.check_non_negative_int(seed, "seed")
    trials = _checks.check_positive_int(trials, "trials")
    if microbatch is not None:
        _checks.check_positive_int(microbatch, "microbatch")
    mesh = mesh if mesh is not None else distributed.trial_mesh()
    _checks.check_positive_int(chunk_size, "chunk_size")
    _checks.check_positive_int(trials_per_seed, "trials_per_seed")
    _checks.check_temperature(temperatures, "temperatures")
    dtype = jnp.zeros(()).dtype  # float64 when the caller enabled x64
    if chunk_dir is not None and distributed.is_writer():
        Path(chunk_dir).mkdir(parents=True, exist_ok=True)

    # Per n: trials per vmapped program, and the chunk: a multiple of it on every device, at
    # least two per device (XLA inlines a one-trip loop, and the code it then generates
    # rounds differently: last-bit changes against longer chunks).
    batch = {n: microbatch or default_microbatch(n=n, itemsize=dtype.itemsize) for n in sizes}
    chunk = {n: max(-(-min(chunk_size, trials) // (batch[n] * mesh.size)), 2) * batch[n] * mesh.size
             for n in sizes}
    grid = [(ni, n, ti, t, start) for ni, n in enumerate(sizes)
            for ti, t in enumerate(temperatures) for start in range(0, trials, chunk[n])]
    # The name holds the chunk's trials and a tag of the rest (module docstring), so a resume
    # with other settings recomputes instead of pairing files with the wrong values.
    tags = {(n, ti): _chunk_tag(measure, n, t, trials=trials, seed=seed, dtype=dtype,
                                trials_per_seed=trials_per_seed, microbatch=batch[n])
            for _, n, ti, t, _ in grid}
    names = [f"n{n}_t{ti}_from{start}_size{chunk[n]}_{tags[n, ti]}.npz"
             for _, n, ti, _, start in grid]
    finished = _finished_chunks(chunk_dir, names)
    per_point: dict[tuple[int, int], list[dict[str, np.ndarray]]] = {}
    result = SweepResult(arrays={}, timings={"microbatch": _one_or_all(batch),
                                             "chunk_size": _one_or_all(chunk),
                                             "devices": mesh.size})
    compiled: dict[int, object] = {}  # n -> compiled chunk program
    bar = tqdm(total=len(grid), desc=description, unit="chunk", file=sys.stderr,
               disable=not progress or not distributed.is_writer())
    with bar:
        for (ni, n, ti, temperature, start), name, done in zip(grid, names, finished):
            # Pad the last chunk with copies of the final trial; dropped below.
            idx = np.minimum(np.arange(start, start + chunk[n]), trials - 1).astype(np.int32)
            idx = distributed.shard_trials(idx, mesh)
            t_value = jnp.asarray(temperature, dtype)
            valid = min(chunk[n], trials - start)
            if n not in compiled:
                fn = make_chunk_fn(measure, n, seed=seed, trials_per_seed=trials_per_seed,
                                   microbatch=batch[n], mesh=mesh)
                t0 = time.perf_counter()
                compiled[n] = fn.lower(idx, t_value).compile()
                result.compile_seconds += time.perf_counter() - t0
                first = compiled[sizes[0]].out_info
                if compiled[n].out_info.keys() != first.keys():
                    raise ValueError(f"measure returns {sorted(compiled[n].out_info)} at n = {n} "
                                     f"but {sorted(first)} at n = {sizes[0]}: the same outputs "
                                     "are needed at every size")
            path = None if chunk_dir is None else Path(chunk_dir) / name
            if done:
                part = _resumed_chunk(path, compiled[n], valid)
                result.chunks_resumed += 1
                _check_chunk(part, compiled[n], valid, path)
            else:
                t0 = time.perf_counter()
                out = distributed.to_host(jax.block_until_ready(compiled[n](idx, t_value)))
                result.run_seconds += time.perf_counter() - t0
                part = {k: v[:valid] for k, v in out.items()}
                if path is not None and distributed.is_writer():
                    results.write_npz(path, part)
                result.chunks_computed += 1
            per_point.setdefault((ni, ti), []).append(part)
            bar.update()

    names = per_point[(0, 0)][0].keys()
    for name in names:
        stacked = [
            [np.concatenate([c[name] for c in per_point[(ni, ti)]]) for ti in range(len(temperatures))]
            for ni in range(len(sizes))
        ]
        result.arrays[name] = np.stack([np.stack(row) for row in stacked])
    return result


def _chunk_tag(measure, n, temperature, **settings) -> str:
    """10 hex digits naming what a chunk's values depend on besides its trials."""
    text = repr((_function_identity(measure), n, float(temperature),
                 sorted((k, str(v)) for k, v in settings.items())))
    return hashlib.sha256(text.encode()).hexdigest()[:10]


def _function_identity(fn) -> str:
    """Module, qualified name and code of ``fn`` (of ``fn.func`` for a functools.partial):
    the same in every process, unlike ``repr``, which holds an address."""
    fn = getattr(fn, "func", fn)
    name = f"{getattr(fn, '__module__', '')}.{getattr(fn, '__qualname__', type(fn).__name__)}"
    code = getattr(fn, "__code__", None)
    return name + (":" + _code_identity(code) if code is not None else "")


def _code_identity(code: types.CodeType) -> str:
    parts = [code.co_code.hex(), repr(code.co_names)]
    for const in code.co_consts:
        if isinstance(const, types.CodeType):
            parts.append(_code_identity(const))
        elif isinstance(const, (int, float, complex, str, bytes, type(None))):
            parts.append(repr(const))
        else:  # e.g. a frozenset, whose repr order varies between processes
            parts.append(type(const).__name__)
    return "|".join(parts)


def _check_chunk(part: dict, compiled, valid: int, path: Path) -> None:
    """A resumed chunk must have the outputs the program makes, ``valid`` trials each."""
    expected = {k: s.shape[1:] for k, s in compiled.out_info.items()}
    found = {k: v.shape[1:] for k, v in part.items()}
    if found != expected or any(len(v) != valid for v in part.values()):
        raise ValueError(f"chunk file {path} does not hold this program's outputs for {valid} "
                         f"trials (outputs {sorted(found)}, expected {sorted(expected)}): "
                         "move it away or use another chunk_dir")


def _one_or_all(per_n: dict[int, int]):
    """One number when every n shares it, else {n: value} (for the manifest)."""
    values = set(per_n.values())
    return values.pop() if len(values) == 1 else {str(n): v for n, v in per_n.items()}


def _finished_chunks(chunk_dir: Path | None, names: list[str]) -> list[bool]:
    """Which chunk files process 0 has (every process follows its answer)."""
    if chunk_dir is None:
        return [False] * len(names)
    have = np.array([(Path(chunk_dir) / name).exists() for name in names])
    return [bool(x) for x in distributed.from_writer(have)]


def _resumed_chunk(path: Path, compiled, valid: int) -> dict[str, np.ndarray]:
    """A finished chunk: read by process 0, handed to the others (placeholders of the
    right shapes go into the broadcast there)."""
    if distributed.is_writer():
        chunk = results.read_npz(path)
    else:
        shapes = compiled.out_info
        chunk = {k: np.zeros((valid,) + s.shape[1:], s.dtype) for k, s in shapes.items()}
    return distributed.from_writer(chunk)
