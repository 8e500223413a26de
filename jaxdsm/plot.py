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
    fig.tight_layout()
    written.append(run_dir / "sigma2_vs_temp.png")
    fig.savefig(written[-1], dpi=120)
    plt.close(fig)

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
    fig.tight_layout()
    written.append(run_dir / "spectral_gap_overview.png")
    fig.savefig(written[-1], dpi=110)
    plt.close(fig)
    return written
