"""Evaluation a clinician can read: metrics with confidence intervals, frozen operating points,
plots, an HTML report, external validation and run comparison."""

from cxrkit.evaluation.compare import compare_runs
from cxrkit.evaluation.evaluate import evaluate_run
from cxrkit.evaluation.options import EvaluateOptions
from cxrkit.evaluation.result import EvaluationResult

__all__ = ["EvaluateOptions", "EvaluationResult", "compare_runs", "evaluate_run"]
