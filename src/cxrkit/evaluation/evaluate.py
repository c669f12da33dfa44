"""Evaluate a run folder on its own test split, or on an external dataset, and write the report.

Straight-line orchestration of the evaluation's jobs: the frozen operating points
(`operating_points`), prediction and decisions (`prediction`), the typed result (`result`),
notes (`notes`), figures (`figures`) and the files (`outputs`). Operating points are chosen on
the run's validation split only and frozen in `operating_points.json` (with the fingerprint of
the model they belong to); every later evaluation, including external ones, reuses them and
says so.
"""

from __future__ import annotations

from datetime import datetime, timezone
from pathlib import Path

from cxrkit.errors import CxrkitError
from cxrkit.evaluation.bootstrap import bootstrap_intervals
from cxrkit.evaluation.documents import write_run_documents
from cxrkit.evaluation.figures import lung_figure, make_figures
from cxrkit.evaluation.metrics import compute_metrics
from cxrkit.evaluation.notes import (
    calibration_section,
    collapsed_interval_notes,
    data_warnings,
    leakage_notes,
    lung_summary,
    lung_warning,
    ood_section,
)
from cxrkit.evaluation.operating_points import (
    chosen_summary,
    decision_point,
    frozen_points,
    point_table,
    who_check,
)
from cxrkit.evaluation.options import EvaluateOptions
from cxrkit.evaluation.outputs import guard_outputs, model_summary, write_outputs
from cxrkit.evaluation.prediction import predictions_frame, score
from cxrkit.evaluation.result import ChosenPoint, Evaluated, EvaluationResult, Scored
from cxrkit.evaluation.sites import per_site_metrics
from cxrkit.evaluation.thresholds import is_tuberculosis
from cxrkit.run import OperatingPoints


def evaluate_run(run_dir: str | Path, options: EvaluateOptions | None = None, progress=None,
                 **settings) -> EvaluationResult:
    """Evaluate a run and write metrics.json, predictions.csv, plots and report.html.

    Without `data`: the rows of `split` in the run's split.csv, written into the run folder
    (test) or `run_dir/evaluation/<split>/`. With `data` (folder or CSV): that whole dataset,
    classes matched by name (`class_map` renames data classes to model classes), written into
    `run_dir/external/<name>/`. Options are an EvaluateOptions or its fields as keywords
    (`evaluate_run(run, n_bootstrap=200, gradcam=False)`). `progress(stage, done, total)`
    follows prediction. Returns the typed result, which also reads as metrics.json.

    The run's default operating point (used by predict, serve, export and compare) changes only
    with `set_default=True` and `operating_point`; the run's own test evaluation in the run
    folder is always at that default.
    """
    from cxrkit.inference import load_torch_predictor

    options = EvaluateOptions.of(options, settings)
    predictor = load_torch_predictor(run_dir, operating_points=False)  # chosen, checked below
    run = predictor.run
    out_dir = options.out_dir_for(run.path)
    guard_outputs(out_dir, run.path, options.overwrite)
    official = not options.external and options.split == "test" and out_dir.resolve() == run.path.resolve()
    if options.set_default and not (official and options.operating_point):
        raise CxrkitError("set_default=True needs operating_point=NAME and the run's own test "
                          "evaluation (no `data`, `split` or `out`)")
    frozen = frozen_points(predictor, official, options)
    point = decision_point(frozen, options.operating_point)
    scored, evaluated = score(predictor, options, point, progress)
    result = summarise(predictor, frozen, chosen_summary(frozen, point, options), scored, evaluated, options)

    (out_dir / "plots").mkdir(parents=True, exist_ok=True)
    predictions = predictions_frame(scored, predictor.ood_threshold)
    figures = make_figures(out_dir / "plots", scored, predictions, frozen, point.name, run, options)
    if result.lungs is not None:
        lungs = lung_figure(predictor, scored.table, out_dir / "plots")
        if lungs is not None:
            figures["lungs"] = lungs
    write_outputs(out_dir, result, scored, predictions, figures, predictor, options.gradcam)
    if official:
        write_run_documents(run)
    return result


def summarise(predictor, frozen: OperatingPoints, point: ChosenPoint, scored: Scored,
              evaluated: Evaluated, options: EvaluateOptions) -> EvaluationResult:
    """Metrics with 95% CIs, every operating point on this data, calibration, notes."""
    y_true, probabilities, y_pred = scored.y_true, scored.probabilities, scored.y_pred
    classes, positive_index = scored.classes, scored.positive_index
    n_bootstrap, seed = options.n_bootstrap, options.seed
    metrics = compute_metrics(y_true, probabilities, y_pred, classes, positive_index)
    result = EvaluationResult(
        run=str(predictor.run.path.resolve()),
        created=datetime.now(timezone.utc).isoformat(timespec="seconds"),
        evaluated=evaluated, classes=classes, metrics=metrics,
        confidence_intervals=bootstrap_intervals(y_true, probabilities, y_pred, classes,
                                                 positive_index, n_bootstrap, seed),
        bootstrap={"resamples": n_bootstrap, "seed": seed, "level": 0.95,
                   "method": "stratified by class, percentile interval"},
        operating_point=point,
        operating_points=point_table(frozen, scored, n_bootstrap, seed),
        calibration=calibration_section(frozen.document.get("temperature"), scored, options.calibrate),
        warnings=data_warnings(scored, point, options.external, predictor.run),
        skipped=[{"path": path, "reason": reason} for path, reason in scored.skipped],
        out_of_distribution=ood_section(predictor, scored.table),
        model=model_summary(predictor, predictor.run))
    result.warnings += collapsed_interval_notes(metrics, y_true, positive_index)
    if "lung_found" in scored.table.columns:
        result.lungs = lung_summary(predictor, scored.table)
        result.warnings += lung_warning(result.lungs)
    if not options.external:
        result.warnings += leakage_notes(predictor.run)
    tb_target = positive_index is not None and is_tuberculosis(classes[positive_index])
    if tb_target:
        result.who_tb_triage = who_check(point, metrics["sensitivity"], metrics["specificity"])
    if "site" in scored.table.columns:
        result.per_site = per_site_metrics(scored.table["site"].to_numpy(), y_true, probabilities,
                                           y_pred, classes, positive_index, n_bootstrap, seed)
    return result
