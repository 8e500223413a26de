"""The paper's experiments, one module each; ``EXPERIMENTS`` is the registry the CLI uses."""

from experiments import orthogonal_collapse, spectral_gap
from experiments.common import Experiment, execute

EXPERIMENTS: dict[str, Experiment] = {e.name: e for e in (spectral_gap.EXPERIMENT, orthogonal_collapse.EXPERIMENT)}

__all__ = ["EXPERIMENTS", "Experiment", "execute"]
