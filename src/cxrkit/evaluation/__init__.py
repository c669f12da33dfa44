"""Evaluation a clinician can read: metrics with confidence intervals, frozen operating points,
plots, an HTML report, external validation and run comparison."""

from cxrkit.evaluation.compare import compare_runs
from cxrkit.evaluation.run import evaluate_run

__all__ = ["compare_runs", "evaluate_run"]
