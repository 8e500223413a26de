"""How the cost of the Exp 1 workload grows with n and with R (issue 6).

Each part is one jitted program over R trials, run as a ``lax.map`` over microbatches of
vmapped trials (the layout of ``jaxdsm.sweep``), so memory is bounded by the microbatch and
not by R. The parts are timed apart, after AOT compilation (``jit(f).lower(...).compile()``),
as the median of a few repeats at one traced temperature:

- sinkhorn: trial key -> U[0, 1] cost -> K sweeps of Algorithm 1 (returns the marginal error),
  every one of them (``stop_on_repeat=False``: the cost of K sweeps, whatever T);
- top_two: sigma_2 by ``spectra.top_two_singular_values`` (the fast path);
- full_svd: sigma_2 from the full ``spectra.singular_values``.

The spectrum parts read a bank of max(microbatch, 2) DSMs made by the Sinkhorn part at the
same temperature; trial t takes bank[t mod bank size] (a gather that depends on the trial, so
XLA cannot hoist the work out of the loop; with a bank of one it did, and top-two at n = 512
took 0.2 ms per trial instead of 20). Peak host memory is measured per point (the kernel's
high-water mark is reset before each point), beside XLA's own per-program estimate.
These are measurements of jaxdsm, not paper claims: every verdict is CONTEXT.
"""

from __future__ import annotations

import contextlib
import math
import os
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np

from experiments.common import CONTEXT, Claim, Experiment, RunOutput
from experiments.common import field_help as F
from jaxdsm import _checks, plot, results, sinkhorn, spectra, sweep

NAME = "scaling"
SOURCE = "cost model"  # the claims are jaxdsm's expected costs, not a paper's
PARTS = ("sinkhorn", "top_two", "full_svd")
# Expected growth with n per trial: K sweeps of O(n^2) work, and O(n^3) matmuls / SVD.
EXPECTED_N_EXPONENT = {"sinkhorn": 2.0, "top_two": 3.0, "full_svd": 3.0}
XLA_KINDS = ("argument", "output", "temp")
# An exponent within this distance of its expectation is reported as "near" it.
EXPONENT_SLACK = 0.25


@dataclass(frozen=True)
class Config:
    n: tuple[int, ...] = F("matrix sizes n of the n axis (1024 is feasible but slow on a CPU: "
                           "opt in with --n 16 ... 1024)",
                           default=(16, 32, 64, 128, 256, 512))
    n_axis_trials: int = F("trials R per timing on the n axis", default=64)
    trial_counts: tuple[int, ...] = F("trial counts R of the R axis (each rounded up to a multiple "
                                "of the microbatch)", default=(64, 128, 256, 512, 1024, 2048))
    r_axis_n: int = F("matrix size n on the R axis", default=64)
    fit_from_n: int = F("smallest n in the fit of time ~ n^a (small n is overhead-dominated)",
                        default=128)
    iterations: int = F("Sinkhorn sweeps K", default=200)
    temperature: float = F("temperature T (traced)", default=0.1)
    repeats: int = F("timed calls per program after one warm-up call; the median is reported",
                     default=3)
    seed: int = F("first seed", default=0)
    trials_per_seed: int = F("trials per seed: trial t uses seed + t // this", default=100)
    microbatch: int = F("trials per vmapped program; 0: the backend's default for each n, as "
                        "jaxdsm.sweep uses (sweep.default_microbatch)", default=0)
    blas_threads: int = F("threads of the BLAS/LAPACK behind jax's CPU SVD while timing (via "
                          "threadpoolctl); 0: the library default. More than one thread on "
                          "small matrices thrashes when other processes share the cores",
                          default=1)

    def __post_init__(self):
        if not self.n or not self.trial_counts:
            raise ValueError("n and trial_counts must each list at least one value")
        for n in (*self.n, self.r_axis_n):
            _checks.check_n(n, "n")
        for r in self.trial_counts:
            _checks.check_positive_int(r, "trial_counts")
        for name in ("n_axis_trials", "iterations", "repeats", "trials_per_seed"):
            _checks.check_positive_int(getattr(self, name), name)
        for name in ("seed", "microbatch", "blas_threads"):
            _checks.check_non_negative_int(getattr(self, name), name)
        _checks.check_n(self.fit_from_n, "fit_from_n")
        _checks.check_positive_float(self.temperature, "temperature")

    def points(self) -> dict[str, list[tuple[int, int]]]:
        """(n, R) of every timing, per axis."""
        # The R axis first: freed memory stays with the allocator, so a later point's
        # high-water mark starts from what the largest earlier point left behind.
        return {"R": [(self.r_axis_n, r) for r in self.trial_counts],
                "n": [(n, self.n_axis_trials) for n in self.n]}


def fit_power_law(x, y) -> tuple[float, float]:
    """(exponent, prefactor) of y ~ prefactor * x^exponent by least squares in log-log."""
    x, y = np.asarray(x, np.float64), np.asarray(y, np.float64)
    ok = (x > 0) & (y > 0) & np.isfinite(x) & np.isfinite(y)
    if np.unique(x[ok]).size < 2:
        raise ValueError("a power-law fit needs at least two distinct positive x with y > 0")
    slope, intercept = np.polyfit(np.log(x[ok]), np.log(y[ok]), 1)
    return float(slope), float(np.exp(intercept))


def _batched(one, microbatch: int):
    """Program over a vector of trial indices: lax.map over microbatches of vmapped ``one``."""

    def program(trials, *shared):
        batches = trials.reshape(-1, microbatch)
        in_axes = (0,) + (None,) * len(shared)
        out = jax.lax.map(lambda b: jax.vmap(one, in_axes=in_axes)(b, *shared), batches)
        return out.reshape(-1)

    return program


def part_programs(config: Config, n: int, microbatch: int) -> dict:
    """The timed programs (not jitted): (trials, temperature) for sinkhorn, (trials, bank)
    for the spectrum parts."""

    def dsm(trial, temperature):
        key = sweep.trial_key(trial, seed=config.seed, trials_per_seed=config.trials_per_seed)
        return sinkhorn.random_dsm(key, n, temperature, max_iterations=config.iterations,
                                   stop_on_repeat=False)

    def from_bank(spectrum):
        return lambda trial, bank: spectrum(bank[trial % bank.shape[0]])

    return {
        "sinkhorn": _batched(lambda trial, t: dsm(trial, t).error, microbatch),
        "top_two": _batched(from_bank(lambda m: spectra.top_two_singular_values(m)[1]),
                            microbatch),
        "full_svd": _batched(from_bank(lambda m: spectra.singular_values(m)[1]), microbatch),
        "bank": jax.vmap(lambda trial, t: dsm(trial, t).matrix, in_axes=(0, None)),
    }


def _reset_peak_rss() -> bool:
    """Resets this process's resident-set high-water mark (Linux); False where not possible."""
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
        return True
    except OSError:
        return False


@contextlib.contextmanager
def _blas_threads(threads: int):
    """Limits the threads of the BLAS/LAPACK libraries loaded (jax's CPU SVD runs in scipy's
    OpenBLAS) for the block; yields a description. 0 leaves them as they are."""
    import scipy.linalg  # noqa: F401 (loads the LAPACK that jax's CPU linalg calls)

    try:
        import threadpoolctl
    except ImportError:
        yield "library default (threadpoolctl not installed)"
        return
    if threads == 0:
        counts = sorted({p["num_threads"] for p in threadpoolctl.threadpool_info()
                         if p["user_api"] == "blas"})
        yield f"library default ({', '.join(map(str, counts)) or '?'} threads)"
        return
    with threadpoolctl.threadpool_limits(threads, user_api="blas"):
        yield f"limited to {threads}"


def _xla_bytes(compiled) -> list[float]:
    """XLA's estimate of argument, output and temp bytes of one program (nan if unknown)."""
    try:
        stats = compiled.memory_analysis()
        return [float(getattr(stats, f"{kind}_size_in_bytes")) for kind in XLA_KINDS]
    except Exception:  # memory_analysis is optional per backend
        return [math.nan] * len(XLA_KINDS)


def time_point(config: Config, n: int, trials: int, microbatch: int, cache: dict) -> dict:
    """Times every part at one (n, R); R is rounded up to a multiple of the microbatch.
    ``cache`` keeps the spectrum parts' input DSMs and compiled programs (with their compile
    seconds and XLA estimates) for points that repeat across the axes."""
    microbatch = min(microbatch, trials)
    timed = -(-trials // microbatch) * microbatch
    reset = _reset_peak_rss()
    programs = part_programs(config, n, microbatch)
    temperature = jnp.asarray(config.temperature, jnp.float32)
    indices = jnp.arange(timed, dtype=jnp.int32)
    bank_size = max(microbatch, 2)
    if ("bank", n, bank_size) not in cache:
        cache["bank", n, bank_size] = jax.block_until_ready(
            jax.jit(programs["bank"])(jnp.arange(bank_size, dtype=jnp.int32), temperature))
    bank = cache["bank", n, bank_size]
    point = {"n": n, "trials": timed, "microbatch": microbatch, "seconds": [],
             "compile_seconds": [], "xla_bytes": []}
    outputs = {}
    for part in PARTS:
        shared = temperature if part == "sinkhorn" else bank
        key = (part, n, timed, microbatch)
        if key not in cache:
            t0 = time.perf_counter()
            compiled = jax.jit(programs[part]).lower(indices, shared).compile()
            cache[key] = compiled, time.perf_counter() - t0, _xla_bytes(compiled)
        compiled, compile_seconds, xla_bytes = cache[key]
        point["compile_seconds"].append(compile_seconds)
        point["xla_bytes"].append(xla_bytes)
        jax.block_until_ready(compiled(indices, shared))  # warm-up: first-call costs
        seconds = []
        for _ in range(config.repeats):
            t0 = time.perf_counter()
            outputs[part] = np.asarray(jax.block_until_ready(compiled(indices, shared)))
            seconds.append(time.perf_counter() - t0)
        point["seconds"].append(seconds)
    memory = sweep.peak_memory()
    point["peak_host_rss_mib"] = memory["peak_host_rss_mib"]
    point["peak_device_mib"] = memory.get("peak_device_mib", math.nan)
    point["peak_is_per_point"] = reset
    point["max_marginal_error"] = float(outputs["sinkhorn"].max())
    point["sigma2_fast_vs_svd"] = float(np.abs(outputs["top_two"] - outputs["full_svd"]).max())
    point["load_1min"] = os.getloadavg()[0]
    return point


def run(config: Config, run_dir: Path, progress: bool = True) -> RunOutput:
    load_start = os.getloadavg()
    started = time.perf_counter()
    arrays: dict[str, np.ndarray] = {}
    cache: dict = {}
    with _blas_threads(config.blas_threads) as blas:
        for axis, points in config.points().items():
            measured = []
            for n, trials in points:
                microbatch = config.microbatch or sweep.default_microbatch(n=n)
                measured.append(time_point(config, n, trials, microbatch, cache))
                if progress:
                    m = measured[-1]
                    medians = ", ".join(f"{p} {np.median(s):.3g} s"
                                        for p, s in zip(PARTS, m["seconds"]))
                    print(f"{NAME}: {axis} axis n={n} R={m['trials']}: {medians}",
                          file=sys.stderr, flush=True)
            arrays.update(_stack(axis, measured))
    arrays["fit_from_n"] = np.asarray(config.fit_from_n)
    results.write_npz(run_dir / "arrays.npz", arrays)
    rows = summarize(arrays)
    results.write_csv(run_dir / "summary.csv", rows)
    scaling_figure(run_dir)
    fits = fit_exponents(arrays, config.fit_from_n)
    microbatches = _microbatches(arrays, config.points())
    load_end = os.getloadavg()
    timings = {
        "compile_seconds": sum(v[1] for k, v in cache.items() if k[0] != "bank"),
        "measure_seconds": time.perf_counter() - started,
        "load_1min_start": load_start[0],
        "load_1min_end": load_end[0],
        "microbatch": microbatches,
        "peak_host_rss_mib": float(max(arrays["n_peak_host_rss_mib"].max(),
                                       arrays["R_peak_host_rss_mib"].max())),
    }
    findings = _findings(rows, fits, load_start, load_end, microbatches, blas)
    return RunOutput(claims=judge(arrays, fits, config), timings=timings, findings=findings)


def _microbatches(arrays, axes) -> int | str:
    """The microbatch, or the microbatches per n (a point with R below it uses R)."""
    by_n: dict[int, set[int]] = {}
    for axis in axes:
        for n, m in zip(arrays[f"{axis}_n"], arrays[f"{axis}_microbatch"]):
            by_n.setdefault(int(n), set()).add(int(m))
    values = set().union(*by_n.values())
    if len(values) == 1:
        return values.pop()
    return ", ".join(f"{'/'.join(map(str, sorted(m)))} at n = {n}" for n, m in sorted(by_n.items()))


def _stack(axis: str, measured: list[dict]) -> dict[str, np.ndarray]:
    keys = ("n", "trials", "microbatch", "seconds", "compile_seconds", "xla_bytes",
            "peak_host_rss_mib", "peak_device_mib", "peak_is_per_point", "max_marginal_error",
            "sigma2_fast_vs_svd", "load_1min")
    return {f"{axis}_{k}": np.asarray([m[k] for m in measured]) for k in keys}


def median_seconds(arrays: dict, axis: str) -> np.ndarray:
    """(points, parts) median seconds of one whole program of R trials."""
    return np.median(arrays[f"{axis}_seconds"], axis=-1)


def fit_exponents(arrays: dict, fit_from_n: int) -> dict[str, dict[str, float]]:
    """Exponents per part: 'n' (per-trial time over n >= fit_from_n), 'n_small' (below it),
    'R' (whole-program time over R); nan where fewer than two points."""

    def fit(x, y):
        try:
            return fit_power_law(x, y)[0]
        except ValueError:
            return math.nan

    n, per_trial = arrays["n_n"], median_seconds(arrays, "n") / arrays["n_trials"][:, None]
    upper, lower = n >= fit_from_n, n <= fit_from_n
    r, r_seconds = arrays["R_trials"], median_seconds(arrays, "R")
    return {part: {"n": fit(n[upper], per_trial[upper, i]),
                   "n_small": fit(n[lower], per_trial[lower, i]),
                   "R": fit(r, r_seconds[:, i])} for i, part in enumerate(PARTS)}


def summarize(arrays: dict) -> list[dict]:
    rows = []
    for axis in ("n", "R"):
        medians = median_seconds(arrays, axis)
        for i, (n, trials) in enumerate(zip(arrays[f"{axis}_n"], arrays[f"{axis}_trials"])):
            row = {"axis": axis, "n": int(n), "trials": int(trials)}
            for p, part in enumerate(PARTS):
                row[f"{part}_seconds"] = float(medians[i, p])
            for p, part in enumerate(PARTS):
                row[f"{part}_ms_per_trial"] = 1e3 * float(medians[i, p]) / int(trials)
            for p, part in enumerate(PARTS):
                row[f"{part}_compile_seconds"] = float(arrays[f"{axis}_compile_seconds"][i, p])
            for p, part in enumerate(PARTS):
                row[f"{part}_xla_mib"] = float(arrays[f"{axis}_xla_bytes"][i, p].sum()) / 2**20
            row["peak_host_rss_mib"] = float(arrays[f"{axis}_peak_host_rss_mib"][i])
            row["peak_device_mib"] = float(arrays[f"{axis}_peak_device_mib"][i])
            row["max_marginal_error"] = float(arrays[f"{axis}_max_marginal_error"][i])
            row["sigma2_fast_vs_svd"] = float(arrays[f"{axis}_sigma2_fast_vs_svd"][i])
            row["load_1min"] = float(arrays[f"{axis}_load_1min"][i])
            rows.append(row)
    return rows


def _near(exponent: float, expected: float) -> str:
    if not math.isfinite(exponent):
        return "not fitted (fewer than two points)"
    if abs(exponent - expected) <= EXPONENT_SLACK:
        return f"near {expected:g}"
    return f"{'below' if exponent < expected else 'above'} {expected:g}"


def judge(arrays: dict, fits: dict, config: Config) -> list[Claim]:
    claims = []
    r = arrays["R_trials"]
    measured = "; ".join(f"{p}: b = {fits[p]['R']:.2f}" for p in PARTS)
    claims.append(Claim(
        SOURCE, f"cost is linear in R (time ~ R^b, b ~ 1) at n = {config.r_axis_n}",
        f"R = {r.min()}..{r.max()}: {measured}", CONTEXT,
        "; ".join(f"{p} {_near(fits[p]['R'], 1.0)}" for p in PARTS),
    ))
    n = arrays["n_n"]
    upper = n[n >= config.fit_from_n]
    span = f"n = {upper.min()}..{upper.max()}" if upper.size else "no n >= fit_from_n"
    for parts, what in ((("sinkhorn",), "Sinkhorn time per trial ~ n^2 (K sweeps of O(n^2))"),
                        (("top_two", "full_svd"), "spectrum time per trial ~ n^3")):
        small = "; ".join(f"{p}: {fits[p]['n_small']:.2f}" for p in parts)
        claims.append(Claim(
            SOURCE, what,
            f"{span}: " + "; ".join(f"{p}: a = {fits[p]['n']:.2f}" for p in parts)
            + f" (small n <= {config.fit_from_n}: {small})",
            CONTEXT,
            "; ".join(f"{p} {_near(fits[p]['n'], EXPECTED_N_EXPONENT[p])}" for p in parts),
        ))
    # Memory stays bounded in R: XLA's temp bytes should not grow with R (only outputs do).
    temp = arrays["R_xla_bytes"][..., XLA_KINDS.index("temp")]
    growth = temp[-1] / temp[0]
    rss = arrays["R_peak_host_rss_mib"]
    claims.append(Claim(
        SOURCE, "memory is bounded by the microbatch, not by R",
        f"XLA temp bytes at R = {r.max()} / at R = {r.min()}: "
        + ", ".join(f"{p} {g:.2f}x" for p, g in zip(PARTS, growth))
        + f"; peak host RSS {rss.min():.0f}..{rss.max():.0f} MiB", CONTEXT,
    ))
    largest = int(n.max())
    rss_n = arrays["n_peak_host_rss_mib"][-1]
    xla_n = arrays["n_xla_bytes"][-1].sum(-1) / 2**20
    claims.append(Claim(
        SOURCE, f"peak memory at the largest n ({largest}, R = {arrays['n_trials'][-1]})",
        f"host RSS {rss_n:.0f} MiB; XLA estimate (argument + output + temp) "
        + ", ".join(f"{p} {m:.1f} MiB" for p, m in zip(PARTS, xla_n)), CONTEXT,
        "" if arrays["n_peak_is_per_point"].all() else "RSS is the process peak so far",
    ))
    if largest < 1024 and upper.size >= 2:
        # What R = 1000 at n = 1024 would take, extrapolated from the fitted laws.
        per_trial = median_seconds(arrays, "n") / arrays["n_trials"][:, None]
        estimate = {}
        for i, p in enumerate(PARTS):
            a, c = fit_power_law(upper, per_trial[n >= config.fit_from_n, i])
            estimate[p] = 1000 * c * 1024.0**a
        claims.append(Claim(
            SOURCE, "n = 1024 with R = 1000 (not run by default on CPU; opt in with --n)",
            "extrapolated from the fits: " + ", ".join(f"{p} ~{s:.0f} s" for p, s in
                                                       estimate.items()), CONTEXT,
        ))
    return claims


def _findings(rows, fits, load_start, load_end, microbatches, blas) -> str:
    lines = [
        "## Timings",
        "",
        f"Seconds are medians of whole jitted programs of R trials (compilation excluded), "
        f"microbatch {microbatches}, BLAS/LAPACK threads {blas}, on {jax.default_backend()} "
        f"({os.cpu_count()} CPU cores) with load average (1 min) {load_start[0]:.1f} at the "
        f"start and {load_end[0]:.1f} at the end: where other processes share the cores, "
        "absolute times are slower and noisier than on an idle machine.",
        "",
        "| axis | n | R | Sinkhorn s | top-two s | full SVD s | ms/trial (S / top2 / SVD) "
        "| peak RSS MiB | XLA MiB (S / top2 / SVD) | max marg. err | \\|dsigma_2\\| |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        lines.append(
            f"| {r['axis']} | {r['n']} | {r['trials']} | {r['sinkhorn_seconds']:.4g} | "
            f"{r['top_two_seconds']:.4g} | {r['full_svd_seconds']:.4g} | "
            f"{r['sinkhorn_ms_per_trial']:.3g} / {r['top_two_ms_per_trial']:.3g} / "
            f"{r['full_svd_ms_per_trial']:.3g} | {r['peak_host_rss_mib']:.0f} | "
            f"{r['sinkhorn_xla_mib']:.2f} / {r['top_two_xla_mib']:.2f} / "
            f"{r['full_svd_xla_mib']:.2f} | {r['max_marginal_error']:.2g} | "
            f"{r['sigma2_fast_vs_svd']:.2g} |")
    lines += ["", "Fitted exponents (least squares in log-log):", "",
              "| part | a (n, upper range) | a (n, small n) | b (R) |", "|---|---|---|---|"]
    for p in PARTS:
        lines.append(f"| {p} | {fits[p]['n']:.2f} | {fits[p]['n_small']:.2f} | "
                     f"{fits[p]['R']:.2f} |")
    n_rows = [r for r in rows if r["axis"] == "n"]
    if len(n_rows) >= 2:
        # Slopes between neighbouring n show where the cost changes regime (overhead,
        # a microbatch that no longer fits in cache) inside the fitted range.
        steps = list(zip(n_rows[:-1], n_rows[1:]))
        lines += ["", "Local exponents between neighbouring n (per-trial time):", "",
                  "| part | " + " | ".join(f"{a['n']}->{b['n']}" for a, b in steps) + " |",
                  "|---|" + "---|" * len(steps)]
        for p in PARTS:
            key = f"{p}_ms_per_trial"
            slopes = [math.log(b[key] / a[key]) / math.log(b["n"] / a["n"]) for a, b in steps]
            lines.append(f"| {p} | " + " | ".join(f"{x:.2f}" for x in slopes) + " |")
    return "\n".join(lines)


def scaling_figure(run_dir: Path) -> Path:
    """Time per trial against n and time against R (log-log, fitted lines), and peak memory
    against n."""
    plt = plot._pyplot()
    a = results.read_npz(Path(run_dir) / "arrays.npz")
    fit_from = int(a["fit_from_n"])
    fig, axes = plt.subplots(1, 3, figsize=(15, 4.2))
    n, per_trial = a["n_n"], median_seconds(a, "n") / a["n_trials"][:, None]
    r, r_seconds = a["R_trials"], median_seconds(a, "R")
    upper = n >= fit_from
    for i, part in enumerate(PARTS):
        line, = axes[0].plot(n, per_trial[:, i], "o", label=part)
        if upper.sum() >= 2:
            expo, pre = fit_power_law(n[upper], per_trial[upper, i])
            grid = np.geomspace(n[upper].min(), n[upper].max(), 50)
            axes[0].plot(grid, pre * grid**expo, "--", color=line.get_color(),
                         label=f"fit n^{expo:.2f}")
        line, = axes[1].plot(r, r_seconds[:, i], "o", label=part)
        if np.unique(r).size >= 2:
            expo, pre = fit_power_law(r, r_seconds[:, i])
            grid = np.geomspace(r.min(), r.max(), 50)
            axes[1].plot(grid, pre * grid**expo, "--", color=line.get_color(),
                         label=f"fit R^{expo:.2f}")
    for ax, ticks in ((axes[0], n), (axes[1], r), (axes[2], n)):
        ax.set_xscale("log", base=2)
        ax.set_xticks(ticks, [str(v) for v in ticks])
        ax.minorticks_off()
    axes[0].set(yscale="log", xlabel="n", ylabel="seconds per trial",
                title=f"time against n (fit over n >= {fit_from})")
    axes[1].set(yscale="log", xlabel="trials R",
                ylabel="seconds for R trials", title=f"time against R at n = {a['R_n'][0]}")
    axes[2].plot(n, a["n_peak_host_rss_mib"], "ko-", label="peak host RSS (per point)")
    if np.isfinite(a["n_peak_device_mib"]).any():
        axes[2].plot(n, a["n_peak_device_mib"], "ks--", label="peak device memory")
    for i, part in enumerate(PARTS):
        axes[2].plot(n, a["n_xla_bytes"][:, i].sum(-1) / 2**20, "o:",
                     label=f"XLA estimate, {part}")
    axes[2].set(yscale="log", xlabel="n", ylabel="MiB",
                title=f"memory against n (R = {a['n_trials'][0]})")
    for ax in axes:
        ax.legend(fontsize=7)
    return plot._save(fig, Path(run_dir) / "scaling.png")


EXPERIMENT = Experiment(
    name=NAME,
    summary="cost of Sinkhorn and the spectrum on this machine: time and peak memory against n "
    "and R, with fitted exponents (not run by reproduce)",
    config_cls=Config,
    quick={"n": (16, 32, 64, 128), "n_axis_trials": 32, "trial_counts": (32, 128, 512),
           "fit_from_n": 64, "repeats": 2},
    run=run,
    reproduce=False,
)
