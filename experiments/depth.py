"""Theorem 2 (effective depth) and Remark 2 (transient growth) of the Homogeneity Trap paper.

Per trial: a DSM M = Sinkhorn(exp(-d/T)) (Algorithm 1), its sigma_2 and the spectral
radius |lambda_2| of B = M - J/n (P M P), Henrici's departure from normality of B, the
worst-case detail gain ||B^k||_2 for k = 1..L (``spectra.transient_growth``) and the decay
||M^l x|| / ||x|| of one random detail input through L layers (``signal.detail_decay``),
all in logs because sigma_2^L underflows float32.

Theorem 2 defines D_eff(eps) = ln(1/eps) / (-ln sigma_2). Since ||M^l x|| <= sigma_2^l ||x||
on 1^perp (Lemma 2 iterated), the measured depth at which the input falls below eps is at
most ceil(D_eff). Asymptotically the decay runs at |lambda_2| < sigma_2 (M is non-normal),
so D_eff over-estimates the depth a signal survives.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import jax
import numpy as np

from experiments.common import (
    CONTEXT,
    FAILS,
    HOLDS,
    PARTLY,
    UNRESOLVED,
    Claim,
    Experiment,
    LogTemperatureGrid,
    RunOutput,
    finite_max,
    finite_min,
    first_true_layer,
    sweep_one_size,
)
from experiments.common import field_help as F
from jaxdsm import _checks, bounds, plot, results, signal, sinkhorn, spectra

NAME = "depth"

# float32 resolution of the log norms: the tests bound the error of log ||B^k|| and of the
# decay curve by ~3e-6 per layer against float64; this allows 3x that.
LOG_TOL_PER_LAYER = 1e-5


@dataclass(frozen=True)
class Config(LogTemperatureGrid):
    n: int = F("dimension n", default=64)
    trials: int = F("trials R per temperature (500 keeps the CPU run under a minute)",
                    default=500)
    trials_per_seed: int = F("trials per seed: trial t uses seed + t // this", default=100)
    seed: int = F("first seed", default=0)
    iterations: int = F("Sinkhorn sweeps K", default=200)
    t_min: float = F("lowest temperature", default=0.01)
    t_max: float = F("highest temperature", default=10.0)
    temperatures: int = F("number of temperatures, log-spaced", default=16)
    depth: int = F("layers L (powers k = 1..L)", default=32)
    eps: float = F("D_eff's eps: the input counts as gone below eps of its norm", default=1e-2)
    chunk_size: int = F("trials per jitted call", default=256)
    microbatch: int = F("trials per vmapped program; 0: backend default", default=0)
    eigenvalues: bool = F("also measure |lambda_2| and Henrici's departure (non-symmetric eig: "
                          "not implemented on TPU)", default=True)

    def __post_init__(self):
        _checks.check_n(self.n, "n")
        for name in ("trials", "trials_per_seed", "iterations", "temperatures", "depth",
                     "chunk_size"):
            _checks.check_positive_int(getattr(self, name), name)
        for name in ("seed", "microbatch"):
            _checks.check_non_negative_int(getattr(self, name), name)
        for name in ("eps",):
            _checks.check_positive_float(getattr(self, name), name)
        self.check_temperature_range()
        if self.depth < 4:
            raise ValueError(f"depth must be >= 4 (the decay rate is fitted on its second half), "
                             f"got {self.depth}")
        if self.eps >= 1:
            raise ValueError(f"eps must be in (0, 1), got {self.eps}")


def measure(config: Config):
    def one(key, temperature, n):
        k_cost, k_x = jax.random.split(key)
        solved = sinkhorn.random_dsm(k_cost, n, temperature, max_iterations=config.iterations)
        m = solved.matrix
        x = jax.random.normal(k_x, (n,), solved.matrix.dtype)
        out = {
            "sigma2": spectra.sigma2(m),
            "log_power_norm": spectra.transient_growth(m, config.depth),
            "log_decay": signal.detail_decay(m, x, config.depth),
            "marginal_error": solved.error,
            "converged": solved.converged,
        }
        if config.eigenvalues:
            # henrici_departure runs the same eig of B; XLA computes it once.
            detail_eigenvalues = spectra.eigenvalues_by_modulus(spectra.double_center(m))
            out["lambda2"] = abs(detail_eigenvalues[0])
            out["henrici"] = spectra.henrici_departure(m)
        return out

    return one


def run(config: Config, run_dir: Path, progress: bool = True) -> RunOutput:
    arrays, timings = sweep_one_size(measure(config), config, run_dir, progress, NAME)
    rows = summarize(arrays, config)
    results.write_csv(run_dir / "summary.csv", rows)
    figures(run_dir, eps=config.eps)
    return RunOutput(claims=judge(rows, config), timings=timings, findings=_table(rows, config))


def crossing_depth(log_decay: np.ndarray, eps: float) -> np.ndarray:
    """The (fractional) layer at which ||M^l x|| / ||x|| reaches eps: the first whole layer
    at or below eps, moved back by linear interpolation of the log gain from the layer before
    (layer 0: gain 1); inf where it stays above eps for all L layers.

    Comparable with the continuous D_eff: where the decay stays under sigma_2^l at whole
    layers, the interpolated curve stays under the line l ln(sigma_2), so crossing <= D_eff.
    """
    target = math.log(eps)
    first = first_true_layer(log_decay <= target)
    crossed = np.isfinite(first)
    layer = np.where(crossed, first, 1).astype(int)
    padded = np.concatenate([np.zeros(log_decay.shape[:-1] + (1,)), log_decay], -1)
    after = np.take_along_axis(padded, layer[..., None], -1)[..., 0]
    before = np.take_along_axis(padded, layer[..., None] - 1, -1)[..., 0]  # > target
    return np.where(crossed, layer - 1 + (before - target) / (before - after), np.inf)


def fitted_rate(log_values: np.ndarray) -> np.ndarray:
    """exp of the least-squares slope of log_values over the second half of the layers."""
    depth = log_values.shape[-1]
    layers = np.arange(depth // 2, depth) + 1.0
    y = log_values[..., depth // 2:]
    centered = layers - layers.mean()
    slope = ((y - y.mean(-1, keepdims=True)) * centered).sum(-1) / (centered**2).sum()
    return np.exp(slope)


def _lambda2(arrays: dict) -> np.ndarray:
    """|lambda_2| per trial; nan where not measured (eigenvalues=False)."""
    if "lambda2" in arrays:
        return arrays["lambda2"].astype(np.float64)
    return np.full(arrays["sigma2"].shape, np.nan)


def per_trial(arrays: dict, config: Config) -> dict[str, np.ndarray]:
    """Derived per-trial quantities, shape (temperatures, trials)."""
    sigma2 = arrays["sigma2"].astype(np.float64)
    lam = _lambda2(arrays)
    log_norm = arrays["log_power_norm"].astype(np.float64)
    log_decay = arrays["log_decay"].astype(np.float64)
    k = np.arange(1, config.depth + 1)
    tol = LOG_TOL_PER_LAYER * k
    # D_eff is infinite where sigma_2 >= 1 (possible only for an unconverged Sinkhorn).
    d_eff = np.where(sigma2 < 1, np.asarray(bounds.effective_depth(sigma2, config.eps)), np.inf)
    crossing = crossing_depth(log_decay, config.eps)
    # Theorem 2: sigma_2^l <= eps from l = ceil(D_eff) on, so the input must be below eps there.
    check_at = np.ceil(d_eff)
    checkable = check_at <= config.depth
    layer = np.clip(check_at, 1, config.depth).astype(int) - 1
    at_check = np.take_along_axis(log_decay, layer[..., None], -1)[..., 0]
    excess = log_norm - k * np.log(sigma2)[..., None]  # log(||B^k|| / sigma_2^k)
    transient = log_norm - k * np.log(lam)[..., None]  # log(||B^k|| / |lambda_2|^k)
    return {
        "d_eff": d_eff,
        "d_eff_lambda2": np.asarray(bounds.effective_depth(lam, config.eps), np.float64),
        "crossing": crossing,
        "theorem2_checkable": checkable,
        "theorem2_ok": at_check <= math.log(config.eps) + tol[layer],  # where checkable
        "decay_bound_ok": np.all(log_decay <= k * np.log(sigma2)[..., None] + tol, -1),
        "remark2_ok": np.all(excess <= tol, -1),
        "remark2_excess": excess.max(-1),
        "bound_slack_at_depth": -excess[..., -1],
        "transient_max": transient.max(-1),
        "transient_argmax": transient.argmax(-1) + 1,
        # ||B^k|| >= |lambda_2|^k for every matrix (equal for a normal B): count only an
        # excess beyond the float32 resolution of the logs.
        "transient_exceeds": np.any(transient > tol, -1),
        # an increase beyond float32 resolution of the log norms
        "norm_grows": np.any(np.diff(log_norm, axis=-1) > tol[1:], -1),
        "max_step_gain": np.diff(log_norm, axis=-1).max(-1) - np.log(sigma2),
        # Remark 2's practical check, max_k ||B^k||, against sigma_2^L and sigma_2.
        "peak_power": log_norm.argmax(-1) + 1,
        "peak_over_sigma2": log_norm.max(-1) - np.log(sigma2),
        "peak_over_sigma2_depth": log_norm.max(-1) - config.depth * np.log(sigma2),
        "rate": fitted_rate(log_decay),
        "gelfand": np.exp(log_norm[..., -1] / config.depth),
    }


def _censored_median(values: np.ndarray) -> float:
    """Median where inf marks 'beyond L' (more than any finite value); nan where the median
    itself lies beyond L or there is nothing to take it over."""
    if not values.size:
        return np.nan
    median = float(np.median(values))
    return median if np.isfinite(median) else np.nan


def _over(values: np.ndarray, mask: np.ndarray, reduce) -> float:
    """reduce(values[mask]); nan where the mask selects nothing."""
    chosen = values[mask]
    return float(reduce(chosen)) if chosen.size else np.nan


def summarize(arrays: dict, config: Config) -> list[dict]:
    d = per_trial(arrays, config)
    lam_all = _lambda2(arrays)
    henrici = arrays.get("henrici", np.full(arrays["sigma2"].shape, np.nan))
    rows = []
    for ti, t in enumerate(arrays["temperature"]):
        s2 = arrays["sigma2"][ti].astype(np.float64)
        lam = lam_all[ti]
        # Theorem 2 and Remark 2 are about DSMs: judged where Sinkhorn converged (an
        # unconverged M has ||P M P|| slightly above sigma_2(M), by up to its marginal error).
        c = arrays["converged"][ti].astype(bool)
        crossing = d["crossing"][ti][c]
        checkable = d["theorem2_checkable"][ti] & c
        remark2 = d["remark2_ok"][ti]
        rate = d["rate"][ti]

        rows.append({
            "temperature": float(t),
            "sigma2_mean": s2.mean(),
            "lambda2_mean": lam.mean(),
            "henrici_mean": henrici[ti].astype(np.float64).mean(),
            "converged_fraction": c.mean(),
            "d_eff_median": _over(d["d_eff"][ti], c, np.median),
            "d_eff_lambda2_median": _over(d["d_eff_lambda2"][ti], c, np.median),
            "crossed_fraction": _over(np.isfinite(d["crossing"][ti]), c, np.mean),
            "measured_depth_median": _censored_median(crossing),
            "measured_over_d_eff_median": _censored_median(crossing / d["d_eff"][ti][c]),
            "measured_over_d_eff_lambda2_median": _censored_median(
                crossing / d["d_eff_lambda2"][ti][c]),
            "theorem2_checkable_fraction": d["theorem2_checkable"][ti].mean(),
            "theorem2_holds_fraction": d["theorem2_ok"][ti][checkable].mean()
            if checkable.any() else np.nan,
            "decay_bound_holds_fraction": _over(d["decay_bound_ok"][ti], c, np.mean),
            "remark2_holds_fraction": _over(remark2, c, np.mean),
            "remark2_holds_fraction_unconverged": _over(remark2, ~c, np.mean),
            "remark2_max_log_excess": _over(d["remark2_excess"][ti], c, np.max),
            "remark2_max_log_excess_unconverged": _over(d["remark2_excess"][ti], ~c, np.max),
            "bound_slack_log10_median": float(np.median(d["bound_slack_at_depth"][ti]))
            / math.log(10),
            "norm_grows_fraction": _over(d["norm_grows"][ti], c, np.mean),
            "max_step_gain_over_sigma2": math.exp(_over(d["max_step_gain"][ti], c, np.max)),
            "peak_at_first_power_fraction": _over(d["peak_power"][ti] == 1, c, np.mean),
            "peak_over_sigma2_max": math.exp(_over(
                np.abs(d["peak_over_sigma2"][ti]), c, np.max)),
            "peak_over_sigma2_depth_log10_median": _over(
                d["peak_over_sigma2_depth"][ti], c, np.median) / math.log(10),
            "transient_ratio_median": float(np.exp(np.median(d["transient_max"][ti]))),
            "transient_ratio_max": float(np.exp(d["transient_max"][ti].max())),
            "transient_exceeds_fraction": d["transient_exceeds"][ti].mean()
            if "lambda2" in arrays else np.nan,
            "transient_argmax_median": float(np.median(d["transient_argmax"][ti])),
            "rate_over_lambda2_mean": (rate / lam).mean(),
            "rate_over_lambda2_std": (rate / lam).std(ddof=1) if rate.size > 1 else 0.0,
            "rate_over_sigma2_mean": (rate / s2).mean(),
            "gelfand_over_lambda2_mean": (d["gelfand"][ti] / lam).mean(),
            "marginal_error_max": float(arrays["marginal_error"][ti].max()),
        })
    return rows


def _fmt(x: float) -> str:
    return f"{x:.3g}"


def _verdict(fraction: float, holds=HOLDS, fails=FAILS) -> str:
    return UNRESOLVED if np.isnan(fraction) else (holds if fraction == 1 else fails)


def judge(rows: list[dict], config: Config) -> list[Claim]:
    claims = []
    t = np.array([r["temperature"] for r in rows])
    col = {k: np.array([r[k] for r in rows], np.float64) for k in rows[0]}
    lo, hi = rows[0], rows[-1]
    L, eps = config.depth, config.eps
    no_eig = "not measured (eigenvalues=False)"

    # Theorem 2 as a bound: the input is below eps by layer ceil(D_eff) (where <= L).
    holds = finite_min(col["theorem2_holds_fraction"])
    curve = finite_min(col["decay_bound_holds_fraction"])
    claims.append(Claim(
        "Theorem 2",
        f"D_eff(eps) = ln(1/eps) / (-ln sigma_2) layers suffice to shrink a detail input below "
        f"eps = {eps:g} (sigma_2^l <= eps)",
        f"median D_eff from {_fmt(lo['d_eff_median'])} (T={_fmt(lo['temperature'])}) to "
        f"{_fmt(hi['d_eff_median'])} (T={_fmt(hi['temperature'])}); ceil(D_eff) <= L in "
        f"{col['theorem2_checkable_fraction'].mean():.1%} of trials, and there the input is below "
        f"eps by layer ceil(D_eff) in {holds:.1%} (worst T); whole curve under sigma_2^l in "
        f"{curve:.1%} of trials at worst",
        _verdict(min(holds, curve)) if np.isfinite(holds) else _verdict(curve),
        f"checked up to L = {L} on Sinkhorn-converged trials",
    ))

    # Theorem 2 as an estimate ("D_eff ~"): fractional measured depth / D_eff, converged trials;
    # a median over trials that stay above eps for all L layers is known only if under half do.
    ratio = col["measured_over_d_eff_median"]
    known = np.isfinite(ratio)
    crossed = col["crossed_fraction"]
    censored = "" if known.all() else (
        f"; median beyond L (fewer than half of the trials reach eps within L = {L}) at "
        f"{(~known).sum()} temperatures, T <= {_fmt(t[~known].max())}")
    if known.any():
        r_known = ratio[known]
        near = np.abs(np.log(r_known)) < np.log(1.25)
        lam_ratio = col["measured_over_d_eff_lambda2_median"][known]
        lam_text = (f"; with |lambda_2| in place of sigma_2: {np.nanmin(lam_ratio):.2f} to "
                    f"{np.nanmax(lam_ratio):.2f}" if np.isfinite(lam_ratio).any() else "")
        measured = (
            f"measured depth / D_eff (median per T): {r_known.min():.2f} "
            f"(T={_fmt(t[known][np.argmin(r_known)])}) to {r_known.max():.2f} "
            f"(T={_fmt(t[known][np.argmax(r_known)])}) over {known.sum()} temperatures; within "
            f"25% at {near.sum()}{lam_text}{censored}; trials reaching eps within L: "
            f"{finite_min(crossed):.1%} to {finite_max(crossed):.1%} per T")
        verdict = HOLDS if near.all() else (PARTLY if near.any() else FAILS)
    else:
        measured = f"no temperature where the median trial reaches eps within L = {L}"
        verdict = UNRESOLVED
    claims.append(Claim(
        "Theorem 2",
        "D_eff approximates the depth at which a detail input is lost",
        measured, verdict,
        "fractional depth (log gain interpolated between layers), Sinkhorn-converged trials; "
        "<= D_eff by the decay bound" + (", so D_eff is an upper bound: |lambda_2| < sigma_2 "
                                         "sets the real decay" if verdict != HOLDS else ""),
    ))

    # Remark 2: ||(M - J/n)^k|| <= sigma_2^k for k <= L, on converged (doubly stochastic) M.
    holds = finite_min(col["remark2_holds_fraction"])
    unconverged = col["converged_fraction"] < 1
    note = f"to float32 resolution ({LOG_TOL_PER_LAYER:g} per power), Sinkhorn-converged trials"
    if unconverged.any():
        held = finite_min(col["remark2_holds_fraction_unconverged"])
        note += (f"; unconverged trials (T <= {_fmt(t[unconverged].max())}, M not yet doubly "
                 f"stochastic): holds in {held:.1%}, max excess "
                 f"{finite_max(col['remark2_max_log_excess_unconverged']):.1e}")
    claims.append(Claim(
        "Remark 2",
        "||(M - J/n)^k||_2 <= sigma_2^k is a valid worst-case bound",
        f"holds for all k <= {L} in {holds:.1%} of converged trials at worst "
        f"({col['converged_fraction'].mean():.1%} of all trials converged); max "
        f"log(||B^k|| / sigma_2^k) = {finite_max(col['remark2_max_log_excess']):.1e}; at k = L the "
        f"bound is loose by 10^{col['bound_slack_log10_median'].min():.1f} to "
        f"10^{col['bound_slack_log10_median'].max():.1f} (median per T)",
        _verdict(holds),
        note,
    ))

    # Remark 2: non-normality and transient growth.
    henrici = col["henrici_mean"]
    claims.append(Claim(
        "Remark 2",
        "Sinkhorn matrices are generally non-normal",
        f"Henrici departure of M - J/n (0 = normal, float32 floor ~3e-3): mean "
        f"{henrici.min():.3f} to {henrici.max():.3f} across T" if config.eigenvalues else no_eig,
        (HOLDS if henrici.min() > 0.05 else PARTLY) if config.eigenvalues else UNRESOLVED,
    ))
    grows = finite_max(col["norm_grows_fraction"])
    claims.append(Claim(
        "Remark 2",
        "transient growth: ||M^k|| initially increases with k before decaying",
        f"||(M - J/n)^k|| grows from some k to k + 1 in {grows:.1%} "
        f"of converged trials at most; max ||B^(k+1)|| / ||B^k|| / sigma_2 = "
        f"{finite_max(col['max_step_gain_over_sigma2']):.6f} (||M^k|| = 1 on the mean)",
        _verdict(1 - grows, holds=FAILS, fails=PARTLY),
        "impossible here: ||B^(k+1)|| <= sigma_2 ||B^k|| with sigma_2 < 1",
    ))
    exceeds = col["transient_exceeds_fraction"]
    claims.append(Claim(
        "Remark 2",
        "(ours) non-normality makes the worst case exceed the spectral radius: "
        "||(M - J/n)^k|| > |lambda_2|^k",
        f"max_k ||B^k|| / |lambda_2|^k: median {col['transient_ratio_median'].min():.2f} to "
        f"{col['transient_ratio_median'].max():.2f} across T (largest "
        f"{col['transient_ratio_max'].max():.1f}); above 1 by more than float32 resolution in "
        f"{exceeds.min():.1%} to {exceeds.max():.1%} of trials per T; peak at k ~ "
        f"{col['transient_argmax_median'].min():.0f} to {col['transient_argmax_median'].max():.0f}"
        if config.eigenvalues else no_eig,
        CONTEXT,
        "relative to |lambda_2|^k only; sigma_2^k stays above",
    ))
    # The practical check: "if transient growth is observed, sigma_2^L alone underestimates
    # intermediate amplification". Read literally, max_k ||B^k|| = ||B|| = sigma_2 >= sigma_2^L
    # for every matrix, growth or not; the conditional is testable only where growth occurs.
    claims.append(Claim(
        "Remark 2",
        "(practical check) if transient growth is observed, sigma_2^L alone underestimates "
        "intermediate amplification max_{k <= L} ||M^k||",
        f"growth observed in {grows:.1%} of converged trials at most; max_k ||B^k|| sits at "
        f"k = 1 in {finite_min(col['peak_at_first_power_fraction']):.1%} of converged trials at "
        "least "
        f"(max_k ||B^k|| / sigma_2 within {finite_max(col['peak_over_sigma2_max']) - 1:.1e} of 1) "
        f"and exceeds sigma_2^L by 10^{finite_min(col['peak_over_sigma2_depth_log10_median']):.1f}"
        f" to 10^{finite_max(col['peak_over_sigma2_depth_log10_median']):.1f} (median per T)",
        UNRESOLVED if grows == 0 else HOLDS,
        "premise never met: no transient growth; max_k ||B^k|| = sigma_2 > sigma_2^L holds for "
        "every matrix, as earlier layers contract less, not as amplification" if grows == 0
        else "max_k ||B^k|| > sigma_2^L wherever growth occurs (and wherever it does not)",
    ))

    # Asymptotic rate: |lambda_2|, not sigma_2.
    r_lam = col["rate_over_lambda2_mean"]
    r_sig = col["rate_over_sigma2_mean"]
    near = np.abs(r_lam - 1) < 0.1
    claims.append(Claim(
        "Remark 2",
        "the asymptotic decay is governed by the spectral radius |lambda_2|, not sigma_2",
        f"fitted decay rate over layers {L // 2 + 1}..{L} / |lambda_2|: mean {r_lam.min():.3f} to "
        f"{r_lam.max():.3f} across T; / sigma_2: {r_sig.min():.3f} to {r_sig.max():.3f}; "
        f"||B^L||^(1/L) / |lambda_2|: {col['gelfand_over_lambda2_mean'].min():.3f} to "
        f"{col['gelfand_over_lambda2_mean'].max():.3f}" if config.eigenvalues else no_eig,
        (HOLDS if near.all() else (PARTLY if near.any() else FAILS)) if config.eigenvalues
        else UNRESOLVED,
        "" if near.all() or not config.eigenvalues
        else f"within 10% at {near.sum()}/{near.size} temperatures (L = {L})",
    ))
    return claims


def _table(rows: list[dict], config: Config) -> str:
    lines = [
        "## Per temperature",
        "",
        f"L = {config.depth}, eps = {config.eps:g}. D_eff and measured depth: medians over "
        "Sinkhorn-converged trials; measured depth: the layer where ||M^l x|| / ||x|| reaches eps "
        "(log gain interpolated between layers; nan: the median is beyond L); reached: fraction "
        "of converged trials that reach eps within L. Transient ratio: "
        "max_k ||B^k|| / |lambda_2|^k. Slack: log10(sigma_2^L / ||B^L||). Thm 2 holds: fraction "
        "of converged trials with ceil(D_eff) <= L that are below eps by layer ceil(D_eff) (nan: "
        "none). Rem 2 holds: fraction of converged trials.",
        "",
        "| T | sigma_2 | abs(lambda_2) | Henrici | D_eff | D_eff(abs(lambda_2)) | measured depth | "
        "reached | Thm 2 holds | converged | Rem 2 holds | slack at L | "
        "transient ratio (median / max) | rate / abs(lambda_2) | rate / sigma_2 |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        lines.append(
            f"| {r['temperature']:.3g} | {r['sigma2_mean']:.4f} | {r['lambda2_mean']:.4f} | "
            f"{r['henrici_mean']:.3f} | {r['d_eff_median']:.3g} | "
            f"{r['d_eff_lambda2_median']:.3g} | "
            f"{r['measured_depth_median']:.3g} | {r['crossed_fraction']:.3f} | "
            f"{r['theorem2_holds_fraction']:.3f} | "
            f"{r['converged_fraction']:.3f} | {r['remark2_holds_fraction']:.3f} | "
            f"{r['bound_slack_log10_median']:.1f} | "
            f"{r['transient_ratio_median']:.2f} / {r['transient_ratio_max']:.2f} | "
            f"{r['rate_over_lambda2_mean']:.3f} +- {r['rate_over_lambda2_std']:.3f} | "
            f"{r['rate_over_sigma2_mean']:.3f} |")
    return "\n".join(lines)


def figures(run_dir: Path, *, eps: float) -> list[Path]:
    """D_eff against T, decay curves against sigma_2^l and |lambda_2|^l, transient ratio."""
    plt = plot._pyplot()
    run_dir = Path(run_dir)
    a = results.read_npz(run_dir / "arrays.npz")
    t = a["temperature"]
    depth = a["log_decay"].shape[-1]
    sigma2 = a["sigma2"].astype(np.float64)
    lam = _lambda2(a)
    log_norm = a["log_power_norm"].astype(np.float64)
    log_decay = a["log_decay"].astype(np.float64)
    k = np.arange(1, depth + 1)
    written = []

    fig, ax = plt.subplots(figsize=(5.8, 4.2))
    d_eff = np.where(sigma2 < 1, np.asarray(bounds.effective_depth(sigma2, eps)), np.inf)
    d_lam = np.asarray(bounds.effective_depth(lam, eps), np.float64)
    crossing = crossing_depth(log_decay, eps)
    ax.plot(t, np.median(d_eff, -1), "o-", ms=4, label=r"$D_{eff}$ with $\sigma_2$ (median)")
    ax.plot(t, np.median(d_lam, -1), "s--", ms=3, label=r"$D_{eff}$ with $|\lambda_2|$ (median)")
    crossing = np.minimum(crossing, depth + 1)  # not within L: drawn just above L
    med = np.median(crossing, -1)
    lo, hi = np.quantile(crossing, 0.1, -1), np.quantile(crossing, 0.9, -1)
    ax.plot(t, med, "k^-", ms=4, label=r"measured depth to $\epsilon$ (median, 10-90%)")
    ax.fill_between(t, lo, hi, color="k", alpha=0.15)
    ax.axhline(depth, color="gray", ls=":", lw=1, label=f"L = {depth}")
    ax.set(xscale="log", yscale="log", xlabel="temperature T", ylabel="layers",
           title=rf"Effective depth ($\epsilon$ = {eps:g})")
    ax.legend(fontsize=8)
    written.append(plot._save(fig, run_dir / "depth_vs_temperature.png"))

    picks = sorted(set(np.linspace(0, len(t) - 1, 4).round().astype(int)))
    fig, axes = plt.subplots(1, len(picks), figsize=(3.6 * len(picks), 3.5), squeeze=False)
    for ax, ti in zip(axes[0], picks):
        to10 = 1 / np.log(10)
        ax.plot(k, np.median(log_decay[ti], 0) * to10, "k-", label=r"$\|M^l x\| / \|x\|$ (median)")
        ax.plot(k, np.median(log_norm[ti], 0) * to10, "C2-.", label=r"$\|(M - J/n)^l\|_2$ (median)")
        ax.plot(k, k * np.log10(np.median(sigma2[ti])), "C0--", label=r"$\sigma_2^l$")
        ax.plot(k, k * np.log10(np.median(lam[ti])), "C1:", label=r"$|\lambda_2|^l$")
        ax.axhline(np.log10(eps), color="gray", lw=0.8)
        ax.set(title=f"T={t[ti]:.3g}", xlabel="layer l", ylabel="log10 gain")
    axes[0, 0].legend(fontsize=7)
    written.append(plot._save(fig, run_dir / "decay_curves.png"))

    fig, axes = plt.subplots(1, 2, figsize=(10, 4))
    for ti in picks:
        ratio = (log_norm[ti] - k * np.log(lam[ti])[:, None]) / np.log(10)
        line, = axes[0].plot(k, np.median(ratio, 0), label=f"T={t[ti]:.3g}")
        axes[0].fill_between(k, np.quantile(ratio, 0.1, 0), np.quantile(ratio, 0.9, 0),
                             color=line.get_color(), alpha=0.15)
        slack = (log_norm[ti] - k * np.log(sigma2[ti])[:, None]) / np.log(10)
        axes[1].plot(k, np.median(slack, 0), color=line.get_color(), label=f"T={t[ti]:.3g}")
    axes[0].axhline(0, color="gray", lw=0.8)
    axes[0].set(xlabel="power k", ylabel=r"log10 $\|B^k\| / |\lambda_2|^k$",
                title="Transient ratio over the spectral radius (median, 10-90%)")
    axes[1].axhline(0, color="gray", lw=0.8)
    axes[1].set(xlabel="power k", ylabel=r"log10 $\|B^k\| / \sigma_2^k$",
                title=r"Remark 2 bound: $\|B^k\| \leq \sigma_2^k$ (median)")
    for ax in axes:
        ax.legend(fontsize=8)
    written.append(plot._save(fig, run_dir / "transient_ratio.png"))
    return written


EXPERIMENT = Experiment(
    name=NAME,
    summary="Theorem 2 + Remark 2: effective depth D_eff, decay of detail inputs over L layers, "
    "and ||(M - J/n)^k|| against sigma_2^k and |lambda_2|^k",
    config_cls=Config,
    quick={"trials": 64, "temperatures": 6},
    run=run,
)
