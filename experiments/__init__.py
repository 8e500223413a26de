"""The paper's experiments, one module each; ``EXPERIMENTS`` is the registry the CLI uses
(and the order in which ``jaxdsm reproduce`` runs them)."""

from experiments import (
    affine_ablation,
    bounds,
    depth,
    matching,
    orthogonal_collapse,
    residual_stagnation,
    scaling,
    spectral_gap,
)
from experiments.common import Experiment, execute

EXPERIMENTS: dict[str, Experiment] = {
    e.name: e
    for e in (
        spectral_gap.EXPERIMENT,
        orthogonal_collapse.EXPERIMENT,
        affine_ablation.EXPERIMENT,
        depth.EXPERIMENT,
        residual_stagnation.EXPERIMENT,
        bounds.EXPERIMENT,
        matching.EXPERIMENT,
        scaling.EXPERIMENT,
    )
}

__all__ = ["EXPERIMENTS", "Experiment", "execute"]
