"""jaxdsm: accelerator-first simulation of doubly-stochastic matrices (Sinkhorn).

Modules, in the order data flows through them:

- ``jaxdsm.sinkhorn``: projections onto the Birkhoff polytope (``sinkhorn.sinkhorn``) and
  Algorithm 1's random cost (``sinkhorn.random_cost``).
- ``jaxdsm.spectra``: singular values, a fast (sigma_1, sigma_2), entropy, |lambda_2|.
- ``jaxdsm.signal``: LayerNorm as a projection, noise, SNR, residual stacks.
- ``jaxdsm.bounds``: the paper's closed-form bounds (Levy, Appendix A, Theorem 1, ...).
- ``jaxdsm.sweep``: temperatures x trials (x n) grids as jitted, vmapped chunks.
- ``jaxdsm.distributed``: the trial mesh over devices and hosts (jax.distributed).
- ``jaxdsm.anneal``: temperature schedules, the EPH-ASC controller, QSA, Gumbel-Sinkhorn.
- ``jaxdsm.results`` and ``jaxdsm.plot``: run folders and figures.
- ``jaxdsm.models`` and ``jaxdsm.train`` (flax, optax): the matching study's model and loop;
  imported on their own so the numerical core does not load flax.
"""

from jaxdsm import anneal as anneal
from jaxdsm import bounds as bounds
from jaxdsm import distributed as distributed
from jaxdsm import results as results
from jaxdsm import signal as signal
from jaxdsm import sinkhorn as sinkhorn
from jaxdsm import spectra as spectra
from jaxdsm import sweep as sweep
from jaxdsm.sinkhorn import SinkhornOutput as SinkhornOutput
from jaxdsm.sinkhorn import random_cost as random_cost

__version__ = "0.1.0"

__all__ = [
    "SinkhornOutput", "anneal", "bounds", "distributed", "random_cost", "results", "signal",
    "sinkhorn", "spectra", "sweep",
]
