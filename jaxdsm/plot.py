"""Figures drawn from saved run folders only (arrays.npz), never from live state.

matplotlib is imported lazily with the non-interactive Agg backend, so the numerical
core never depends on it and plotting works on machines without a display.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from jaxdsm import results


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _save(fig, path: Path, dpi: int = 110) -> Path:
    plt = _pyplot()
    fig.tight_layout()
    fig.savefig(path, dpi=dpi)
    plt.close(fig)
    return path


def spectral_gap_figures(run_dir: Path, *, tol: float, cap: int) -> list[Path]:
    """Figure 1 of the paper (sigma_2 against T) and a 4-panel overview, per run folder."""
    plt = _pyplot()
    run_dir = Path(run_dir)
    a = results.read_npz(run_dir / "arrays.npz")
    t = a["temperature"]
    written = []

    fig, ax = plt.subplots(figsize=(5.5, 4))
    for ni, n in enumerate(a["n"]):
        s2 = a["sigma2"][ni].astype(np.float64)
        ax.errorbar(t, s2.mean(-1), yerr=s2.std(-1), marker="o", ms=4, capsize=3, label=f"n={n}")
        ax.fill_between(t, np.quantile(s2, 0.05, -1), np.quantile(s2, 0.95, -1), alpha=0.2)
    ax.set(xscale="log", xlabel="temperature T", ylabel=r"$\sigma_2(M)$",
           title=r"Mean $\sigma_2$ vs T (bars: std, band: 5-95%)")
    ax.legend()
    written.append(_save(fig, run_dir / "sigma2_vs_temp.png", dpi=120))

    fig, axes = plt.subplots(2, 2, figsize=(10, 7.5))
    for ni, n in enumerate(a["n"]):
        label = f"n={n}"
        s2 = a["sigma2"][ni].astype(np.float64)
        ax = axes[0, 0]
        ax.plot(t, s2.mean(-1), "o-", ms=4, label=rf"$\sigma_2$ {label}")
        if "lambda2" in a:
            ax.plot(t, a["lambda2"][ni].mean(-1), "s--", ms=3, label=rf"$|\lambda_2|$ {label}")
        h = a["entropy"][ni].astype(np.float64)
        axes[0, 1].errorbar(t, h.mean(-1), yerr=h.std(-1), marker="o", ms=4, capsize=3, label=label)
        axes[0, 1].axhline(n * np.log(n), color="gray", ls=":", lw=1)
        err = a["marginal_error"][ni].astype(np.float64)
        axes[1, 0].plot(t, np.median(err, -1), "o-", ms=4, label=f"median {label}")
        axes[1, 0].plot(t, err.max(-1), "v--", ms=4, label=f"max {label}")
        it = a["iterations_to_tol"][ni]
        axes[1, 1].plot(t, np.median(it, -1), "o-", ms=4, label=f"median {label}")
        axes[1, 1].plot(t, it.max(-1), "v--", ms=4, label=f"max {label}")
    axes[0, 0].set(ylabel="value", title="subdominant singular value and eigenvalue")
    axes[0, 1].set(ylabel="H(M)", title="entropy H(M) (dotted: uniform J/n, n log n)")
    axes[1, 0].axhline(tol, color="k", ls=":", lw=1, label=f"tol {tol:g}")
    axes[1, 0].set(yscale="log", ylabel="max marginal error", title="error after K sweeps")
    axes[1, 1].axhline(cap, color="k", ls=":", lw=1, label=f"cap {cap}")
    axes[1, 1].set(yscale="log", ylabel="sweeps", title=f"sweeps to reach {tol:g}")
    for ax in axes.flat:
        ax.set(xscale="log", xlabel="temperature T")
        ax.legend(fontsize=8)
    written.append(_save(fig, run_dir / "spectral_gap_overview.png"))
    return written


def orthogonal_collapse_figures(run_dir: Path, *, n: int, eps: float) -> list[Path]:
    """Figure 2 of the paper (histograms of output cosine similarity, high to low SNR,
    with the null law) and the Theorem 1 bound against gamma."""
    plt = _pyplot()
    run_dir = Path(run_dir)
    a = results.read_npz(run_dir / "arrays.npz")
    t, cos, gamma = a["temperature"], a["cos"].astype(np.float64), a["gamma"].astype(np.float64)
    picks = sorted(set(np.linspace(0, len(t) - 1, 4).round().astype(int)))
    fig, axes = plt.subplots(1, len(picks), figsize=(3.6 * len(picks), 3.4), sharey=False)
    x = np.linspace(-1, 1, 801)
    # Density of <u, v> for independent uniform directions in dim d = n - 1:
    # proportional to (1 - x^2)^((d - 3) / 2).
    null = np.clip(1 - x**2, 0, None) ** ((n - 4) / 2)
    null /= np.trapezoid(null, x)
    for ax, ti in zip(np.atleast_1d(axes), picks):
        ax.hist(cos[ti], bins=50, range=(-1, 1), density=True, alpha=0.7, label="simulated")
        ax.plot(x, null, "k--", lw=1, label="null law")
        ax.set(title=f"T={t[ti]:.3g}, mean $\\gamma$={gamma[ti].mean():.3g}", xlabel="cos(u, v)")
    np.atleast_1d(axes)[0].legend(fontsize=8)
    written = [_save(fig, run_dir / "collapse_hist.png")]

    fig, ax = plt.subplots(figsize=(5.5, 4))
    g = gamma.mean(-1)
    ax.errorbar(g, np.abs(cos).mean(-1), yerr=np.abs(cos).std(-1), fmt="o", ms=4, capsize=3,
                label="mean |cos(u, v)| (bars: std)")
    grid = np.geomspace(g.min(), g.max(), 100)
    ax.plot(grid, eps + 8 * grid, "r-", label=f"Theorem 1: eps + 8 gamma (eps={eps:g})")
    ax.axvline(1 / 8, color="gray", ls=":", label="gamma = 1/8")
    ax.set(xscale="log", xlabel="spectral SNR gamma", ylabel="|cos(u, v)|", ylim=(0, 1.05),
           title="Orthogonal collapse against the bound")
    ax.legend(fontsize=8)
    written.append(_save(fig, run_dir / "theorem1_vs_gamma.png"))
    return written
