"""Small flax models used by the experiments (the numerical core does not import flax)."""
