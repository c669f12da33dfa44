"""Systematic experiments (a grid of runs on one split, ranked) and hyper-parameter search."""

from cxrkit.experiments.runner import run_experiment
from cxrkit.experiments.spec import ExperimentSpec, load_spec

__all__ = ["ExperimentSpec", "load_spec", "run_experiment"]
