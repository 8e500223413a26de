"""Proposition 1 of the Homogeneity Trap paper: residual DSM stacks stagnate.

Per trial: a DSM M = Sinkhorn(exp(-d/T)) (Algorithm 1), one input g ~ N(0, I_n) used twice,
as a mean-free input P g and as a general input g (which has a mean component), and the
stack x_{l+1} = x_l + phi(M x_l) for L layers (``signal.residual_metrics``), for phi =
ReLU (the paper's) and two controls, identity and tanh.

The proof's step ||phi(M x)|| <= sigma_2 ||x|| needs x in 1^perp (Lemma 2) and phi(0) = 0,
|phi(a)| <= |a|. ReLU's output has a positive mean, which M keeps (M 1 = 1), so after one
layer x_l is not mean-free any more. What holds for every x and every entrywise 1-Lipschitz
phi is the detail version: ||P phi(M x)|| <= ||P M x|| = ||M P x|| <= sigma_2 ||P x||
(P projects onto 1^perp, and P v is the closest multiple-of-1 residual of v). This
experiment measures where the paper's inequality and its stagnation conclusion hold
(first layer, all layers, detail part only) and where the state instead drifts onto the
all-ones direction.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import jax
import jax.numpy as jnp
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
    first_true_layer,
    sweep_one_size,
)
from experiments.common import field_help as F
from jaxdsm import _checks, plot, results, signal, sinkhorn, spectra

NAME = "residual-stagnation"
INPUTS = ("mean_free", "general")
METRICS = ("update_ratio", "detail_update_ratio", "step_angle", "total_angle",
           "detail_total_angle", "mean_cosine")
# float32 slack on ratio <= sigma_2 checks (a few ulps of the norms involved).
RATIO_RTOL = 1e-5


@dataclass(frozen=True)
class Config(LogTemperatureGrid):
    n: int = F("dimension n", default=64)
    trials: int = F("trials R per temperature", default=1000)
    trials_per_seed: int = F("trials per seed: trial t uses seed + t // this", default=100)
    seed: int = F("first seed", default=0)
    iterations: int = F("Sinkhorn sweeps K", default=200)
    t_min: float = F("lowest temperature", default=0.01)
    t_max: float = F("highest temperature", default=10.0)
    temperatures: int = F("number of temperatures, log-spaced", default=7)
    depth: int = F("residual layers L (<= 100: the state can double every layer)", default=32)
    activations: tuple[str, ...] = F("activations phi: relu (the paper's), identity, tanh",
                                     default=("relu", "identity", "tanh"))
    small_sigma2: float = F("'sigma_2 << 1' means mean sigma_2 <= this", default=0.1)
    angle_threshold: float = F("angle in degrees that counts as a significant transformation",
                               default=10.0)
    chunk_size: int = F("trials per jitted call", default=256)
    microbatch: int = F("trials per vmapped program; 0: backend default", default=0)

    def __post_init__(self):
        _checks.check_n(self.n, "n")
        for name in ("trials", "trials_per_seed", "iterations", "temperatures", "depth",
                     "chunk_size"):
            _checks.check_positive_int(getattr(self, name), name)
        for name in ("seed", "microbatch"):
            _checks.check_non_negative_int(getattr(self, name), name)
        for name in ("small_sigma2", "angle_threshold"):
            _checks.check_positive_float(getattr(self, name), name)
        self.check_temperature_range()
        if self.depth > 100:
            raise ValueError(f"depth must be <= 100 (x_l can grow like 2^l), got {self.depth}")
        if not self.activations:
            raise ValueError("activations must not be empty")
        for name in self.activations:
            _checks.check_choice(name, signal.RESIDUAL_ACTIVATIONS, "activations")
        if len(set(self.activations)) != len(self.activations):
            raise ValueError(f"activations must not repeat, got {self.activations}")


def measure(config: Config):
    def one(key, temperature, n):
        k_cost, k_x = jax.random.split(key)
        solved = sinkhorn.random_dsm(k_cost, n, temperature, max_iterations=config.iterations)
        g = jax.random.normal(k_x, (n,), solved.matrix.dtype)
        means = jnp.stack([jnp.zeros((), g.dtype), jnp.mean(g)])  # INPUTS: mean-free, general
        runs = [jax.vmap(lambda mean, act=act: signal.residual_metrics(
            solved.matrix, g, config.depth, act, mean=mean))(means) for act in config.activations]
        out = {name: jnp.stack([r[name] for r in runs]) for name in METRICS}  # (act, input, L)
        out["input_mean"] = jnp.mean(g)  # the general input's mean (its sign matters for ReLU)
        # sigma_2 of the simulated operator J/n + P M P (see residual_metrics): ||P M P||_2,
        # which is sigma_2(M) for an exact DSM and never trips the bound by M's marginal error.
        out["sigma2"] = jnp.exp(spectra.transient_growth(solved.matrix, 1)[0])
        out["marginal_error"] = solved.error
        return out

    return one


def run(config: Config, run_dir: Path, progress: bool = True) -> RunOutput:
    arrays, timings = sweep_one_size(measure(config), config, run_dir, progress, NAME)
    rows = summarize(arrays, config)
    results.write_csv(run_dir / "summary.csv", rows)
    figures(run_dir, config.activations)
    return RunOutput(claims=judge(rows, config), timings=timings, findings=_table(rows, config))


def check_finite(arrays: dict) -> None:
    """A non-finite metric would read as 'bound holds' (nan > limit is False) or as 'not
    stagnant' in the verdicts: refuse it instead."""
    for name in METRICS + ("sigma2",):
        per_trial = ~np.isfinite(np.asarray(arrays[name]))
        per_trial = per_trial.reshape(per_trial.shape[:2] + (-1,)).any(-1)  # (T, trials)
        if per_trial.any():
            raise FloatingPointError(
                f"residual-stagnation: {name} is not finite in {int(per_trial.sum())} of "
                f"{per_trial.size} trials (float32 overflow of the state? lower --depth)")


def summarize(arrays: dict, config: Config) -> list[dict]:
    check_finite(arrays)
    deg = 180 / math.pi
    rows = []
    for ti, t in enumerate(arrays["temperature"]):
        sigma2 = arrays["sigma2"][ti].astype(np.float64)
        limit = sigma2[:, None] * (1 + RATIO_RTOL)
        for ai, act in enumerate(config.activations):
            for ki, kind in enumerate(INPUTS):
                m = {name: arrays[name][ti, :, ai, ki].astype(np.float64) for name in METRICS}
                ratio, detail = m["update_ratio"], m["detail_update_ratio"]
                bound_fails = ratio > limit
                total = m["total_angle"][:, -1] * deg
                detail_total = m["detail_total_angle"][:, -1] * deg
                rows.append({
                    "temperature": float(t),
                    "activation": act,
                    "input": kind,
                    "sigma2_mean": sigma2.mean(),
                    "first_update_ratio_mean": ratio[:, 0].mean(),
                    "first_bound_holds_fraction": (~bound_fails[:, 0]).mean(),
                    "all_layers_bound_holds_fraction": (~bound_fails.any(-1)).mean(),
                    "first_failing_layer_median": float(np.median(first_true_layer(bound_fails) - 1)),
                    "update_ratio_last_mean": ratio[:, -1].mean(),
                    "update_ratio_max_mean": ratio.max(-1).mean(),
                    "detail_bound_holds_fraction": (~(detail > limit).any(-1)).mean(),
                    "detail_ratio_over_sigma2_max": float((detail / sigma2[:, None]).max()),
                    "step_angle_max_deg_mean": (m["step_angle"].max(-1) * deg).mean(),
                    "total_angle_deg_mean": total.mean(),
                    "total_angle_deg_q10": float(np.quantile(total, 0.1)),
                    "total_angle_deg_q90": float(np.quantile(total, 0.9)),
                    "stagnant_fraction": (total < config.angle_threshold).mean(),
                    "detail_total_angle_deg_mean": detail_total.mean(),
                    "detail_total_angle_deg_max": float(detail_total.max()),
                    "detail_stagnant_fraction": (detail_total < config.angle_threshold).mean(),
                    "mean_cosine_last_mean": m["mean_cosine"][:, -1].mean(),
                    "abs_mean_cosine_last_mean": np.abs(m["mean_cosine"][:, -1]).mean(),
                    "onto_ones_fraction": (np.abs(m["mean_cosine"][:, -1]) > 0.99).mean(),
                    "marginal_error_max": float(arrays["marginal_error"][ti].max()),
                })
    return rows


def _pick(rows, act, kind, temperatures=None):
    return [r for r in rows if r["activation"] == act and r["input"] == kind
            and (temperatures is None or r["temperature"] in temperatures)]


def _label(kind: str) -> str:
    return kind.replace("_", "-")


def judge(rows: list[dict], config: Config) -> list[Claim]:
    claims = []
    acts = config.activations
    sigma2 = {r["temperature"]: r["sigma2_mean"] for r in rows}  # one value per T
    regime = [t for t in sorted(sigma2) if sigma2[t] <= config.small_sigma2]
    L, thr = config.depth, config.angle_threshold

    # The proof's inequality on the first layer: needs x in 1^perp.
    for kind in INPUTS:
        worst = {a: min(r["first_bound_holds_fraction"] for r in _pick(rows, a, kind)) for a in acts}
        claims.append(Claim(
            "Proposition 1",
            f"proof step: ||phi(M x)|| <= sigma_2 ||x|| at the first layer, {_label(kind)} inputs",
            "holds in " + "; ".join(f"{a}: {w:.1%}" for a, w in worst.items())
            + " of trials (worst T)",
            HOLDS if min(worst.values()) == 1 else (PARTLY if max(worst.values()) > 0 else FAILS),
            "Lemma 2 + |phi(a)| <= |a|" if kind == "mean_free"
            else "needs x in 1^perp: the mean passes through M unchanged",
        ))

    # The same inequality at every layer, mean-free x_0.
    for act in acts:
        sel = _pick(rows, act, "mean_free")
        worst = min(r["all_layers_bound_holds_fraction"] for r in sel)
        first = [r["first_failing_layer_median"] for r in sel if np.isfinite(r["first_failing_layer_median"])]
        claims.append(Claim(
            "Proposition 1",
            f"proof step, phi = {act}, mean-free x_0: ||phi(M x_l)|| <= sigma_2 ||x_l|| at all {L} layers",
            f"holds at all layers in {worst:.1%} of trials at worst"
            + (f"; median first failing l {min(first):.0f} to {max(first):.0f} across T "
               "(l = 0: the input)" if first else ""),
            HOLDS if worst == 1 else (PARTLY if worst > 0 else FAILS),
            "" if worst == 1 else "phi(M x) has a mean component, which M keeps, so x_l leaves 1^perp",
        ))

    if not regime:
        claims.append(Claim("Proposition 1", "identity stagnation for sigma_2 << 1",
                            f"no temperature with mean sigma_2 <= {config.small_sigma2:g}; raise "
                            "--t-max", UNRESOLVED, "the premise sigma_2 << 1 is never met"))
        return claims

    # Identity stagnation: updates vanish and x_l does not turn, per phi and input kind.
    where = f"T >= {min(regime):.3g} (sigma_2 <= {config.small_sigma2:g})"
    for act in acts:
        for kind in INPUTS:
            sel = _pick(rows, act, kind, regime)
            vanish = all(r["update_ratio_last_mean"] <= r["sigma2_mean"] for r in sel)
            stagnant = [r["stagnant_fraction"] for r in sel]
            per_t = "; ".join(
                f"T={r['temperature']:.3g}: {r['update_ratio_last_mean']:.3g}, "
                f"{r['total_angle_deg_mean']:.1f} deg, {r['stagnant_fraction']:.1%}, "
                f"{r['abs_mean_cosine_last_mean']:.2f}" for r in sel)
            if vanish and min(stagnant) == 1:
                verdict, note = HOLDS, ""
            elif not vanish and max(stagnant) == 0:
                verdict, note = FAILS, ""
            else:
                verdict, note = PARTLY, ""
            if max(r["abs_mean_cosine_last_mean"] for r in sel) > 0.5:
                note = "x_l turns onto the all-ones direction (the mean grows up to 2x per layer)"
            elif not min(stagnant) == 1:
                note = "the detail part turns by up to ~L sigma_2"
            claims.append(Claim(
                "Proposition 1",
                f"phi = {act}, {_label(kind)} x_0, sigma_2 << 1: updates vanish and x_l does "
                f"not turn significantly as L grows (identity stagnation)",
                f"{where}, L = {L} (ratio ||phi(M x_L)|| / ||x_L||, mean angle(x_0, x_L), "
                f"share < {thr:g} deg, mean |cos(x_L, 1)|): {per_t}",
                verdict, note,
            ))

    # The detail-subspace version that the Lipschitz argument proves.
    worst = min(r["detail_bound_holds_fraction"] for r in rows)
    claims.append(Claim(
        "Proposition 1",
        "detail part (ours, what the proof does give): ||P phi(M x_l)|| <= sigma_2 ||P x_l|| at every layer, any x_l (entrywise 1-Lipschitz phi)",
        f"holds in {worst:.1%} of trials at worst over all T, phi and inputs; max ratio / sigma_2 "
        f"= {max(r['detail_ratio_over_sigma2_max'] for r in rows):.6f}",
        CONTEXT,
        ("always, as it must: " if worst == 1 else "FAILS, which the proof excludes: ")
        + "||P phi(Mx)|| <= ||P M x|| = ||M P x|| <= sigma_2 ||P x||",
    ))
    sel = [r for r in rows if r["temperature"] in regime]
    per_t = "; ".join(
        f"T={t:.3g}: {min(r['detail_total_angle_deg_mean'] for r in sel if r['temperature'] == t):.1f}"
        f" to {max(r['detail_total_angle_deg_mean'] for r in sel if r['temperature'] == t):.1f} deg"
        for t in regime)
    frac = [min(r["detail_stagnant_fraction"] for r in sel if r["temperature"] == t) for t in regime]
    claims.append(Claim(
        "Proposition 1",
        "detail part (ours): for sigma_2 << 1 the detail part P x_l does not turn significantly (all phi, both inputs)",
        f"L = {L}, mean angle(P x_0, P x_L) over phi and inputs: {per_t}; < {thr:g} deg in "
        + ", ".join(f"{f:.0%}" for f in frac) + " of trials (worst phi and input per T)",
        CONTEXT,
        ("all" if min(frac) == 1 else "not all") + " below the threshold; per layer at most "
        "asin(sigma_2), which adds up over L layers",
    ))
    return claims


def _table(rows: list[dict], config: Config) -> str:
    lines = [
        "## Per temperature, activation and input",
        "",
        f"L = {config.depth}. ratio = ||phi(M x_l)|| / ||x_l||; bound: ratio <= sigma_2; "
        "angles in degrees between x_0 and x_L (full) and P x_0 and P x_L (detail), means over "
        "trials; abs cos(x_L, 1): mean absolute cosine to the all-ones direction (1: collapsed onto "
        "the mean).",
        "",
        "| T | phi | input | sigma_2 | ratio layer 1 | ratio layer L | bound layer 1 | bound all layers | "
        "detail bound | angle full | angle detail | abs cos(x_L, 1) |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        lines.append(
            f"| {r['temperature']:.3g} | {r['activation']} | {r['input']} | {r['sigma2_mean']:.4f} | "
            f"{r['first_update_ratio_mean']:.4g} | {r['update_ratio_last_mean']:.4g} | "
            f"{r['first_bound_holds_fraction']:.3f} | {r['all_layers_bound_holds_fraction']:.3f} | "
            f"{r['detail_bound_holds_fraction']:.3f} | {r['total_angle_deg_mean']:.2f} | "
            f"{r['detail_total_angle_deg_mean']:.3f} | {r['abs_mean_cosine_last_mean']:.3f} |")
    return "\n".join(lines)


def figures(run_dir: Path, activations) -> list[Path]:
    """Update ratio and angles against the layer for several T, mean-free vs general, and
    the three activations side by side at the highest T."""
    plt = plot._pyplot()
    run_dir = Path(run_dir)
    a = results.read_npz(run_dir / "arrays.npz")
    t = a["temperature"]
    depth = a["update_ratio"].shape[-1]
    layers = np.arange(depth)
    deg = 180 / math.pi
    act = list(activations).index("relu") if "relu" in activations else 0
    picks = sorted(set(np.linspace(0, len(t) - 1, 4).round().astype(int)))
    written = []

    panels = [("update_ratio", r"$\|\phi(Mx_l)\| / \|x_l\|$", 1.0),
              ("total_angle", r"angle$(x_0, x_{l+1})$ [deg]", deg),
              ("detail_total_angle", r"angle$(Px_0, Px_{l+1})$ [deg]", deg)]
    positive = a["input_mean"] > 0
    fig, axes = plt.subplots(len(INPUTS), len(panels), figsize=(13, 7), squeeze=False)
    for ki, kind in enumerate(INPUTS):
        for pi, (name, label, scale) in enumerate(panels):
            ax = axes[ki, pi]
            for ti in picks:
                values = a[name][ti, :, act, ki].astype(np.float64) * scale
                if kind == "mean_free":
                    line, = ax.plot(layers + 1, np.median(values, 0), label=f"T={t[ti]:.3g}")
                    ax.fill_between(layers + 1, np.quantile(values, 0.1, 0),
                                    np.quantile(values, 0.9, 0), color=line.get_color(), alpha=0.15)
                else:  # bimodal in the sign of the input's mean: one median per sign
                    line, = ax.plot(layers + 1, np.median(values[positive[ti]], 0),
                                    label=f"T={t[ti]:.3g}, mean > 0")
                    ax.plot(layers + 1, np.median(values[~positive[ti]], 0), "--",
                            color=line.get_color(), label=f"T={t[ti]:.3g}, mean < 0")
                if name == "update_ratio":
                    ax.axhline(np.median(a["sigma2"][ti]), color=line.get_color(), ls=":", lw=1)
            if name == "update_ratio":
                ax.set_yscale("log")
            ax.set(xlabel="layer l", ylabel=label,
                   title=f"{activations[act]}, {kind.replace('_', '-')} input")
    axes[0, 0].legend(fontsize=7, title=r"median, 10-90%; dotted: $\sigma_2$", title_fontsize=7)
    axes[1, 0].legend(fontsize=6, ncol=2, title="median by sign of the input mean",
                      title_fontsize=7)
    written.append(plot._save(fig, run_dir / "residual_layers.png"))

    fig, axes = plt.subplots(len(INPUTS), 3, figsize=(13, 7), squeeze=False)
    ti = len(t) - 1
    metrics = (("update_ratio", 1.0), ("total_angle", deg), ("mean_cosine", 1.0))
    for ki, kind in enumerate(INPUTS):
        # General inputs: one median per sign of the input's mean (ReLU acts on it).
        groups = ([("", np.ones_like(positive[ti]))] if kind == "mean_free"
                  else [(", mean > 0", positive[ti]), (", mean < 0", ~positive[ti])])
        for ai, name in enumerate(activations):
            for gi, (suffix, chosen) in enumerate(groups):
                for pi, (metric, scale) in enumerate(metrics):
                    values = a[metric][ti, chosen, ai, ki].astype(np.float64) * scale
                    axes[ki, pi].plot(layers + 1, np.median(values, 0), ls="-" if gi == 0 else "--",
                                      color=f"C{ai}", label=name + suffix)
        axes[ki, 0].axhline(np.median(a["sigma2"][ti]), color="gray", ls=":", lw=1)
        axes[ki, 0].set(yscale="log", ylabel=r"$\|\phi(Mx_l)\| / \|x_l\|$")
        axes[ki, 1].set(ylabel=r"angle$(x_0, x_{l+1})$ [deg]")
        axes[ki, 2].set(ylabel=r"cos$(x_{l+1}, \mathbf{1})$ (median)")
        for ax in axes[ki]:
            ax.set(xlabel="layer l", title=f"T={t[ti]:.3g}, {kind.replace('_', '-')} input")
        axes[ki, 0].legend(fontsize=7)
    written.append(plot._save(fig, run_dir / "residual_activations.png"))
    return written


EXPERIMENT = Experiment(
    name=NAME,
    summary="Prop. 1: residual stacks x + phi(M x) over L layers; update ratios and angles, "
    "full state vs detail part, mean-free vs general inputs",
    config_cls=Config,
    quick={"trials": 64, "temperatures": 4},
    run=run,
)
