"""The run's frozen operating points through an evaluation: chosen on the validation split only,
re-chosen only by the run's own test evaluation, and moved only by `set_default`."""

from __future__ import annotations

import logging

from cxrkit.errors import CxrkitError
from cxrkit.evaluation.bootstrap import bootstrap_intervals
from cxrkit.evaluation.calibration import fit_temperature
from cxrkit.evaluation.metrics import check_both_classes, compute_metrics
from cxrkit.evaluation.options import EvaluateOptions
from cxrkit.evaluation.prediction import predict_table
from cxrkit.evaluation.result import ChosenPoint, Scored
from cxrkit.evaluation.thresholds import (
    DEFAULT_SELECTED,
    DEFAULT_TARGET_SENSITIVITY,
    build_operating_points,
    check_point_name,
)
from cxrkit.run import OperatingPoint, OperatingPoints

logger = logging.getLogger(__name__)


def frozen_points(predictor, official: bool = False,
                  options: EvaluateOptions | None = None) -> OperatingPoints:
    """The run's frozen points, chosen on val when absent.

    Only the official evaluation (the run's test split, into the run folder) may re-choose
    stale points or a new sensitivity target; only `options.set_default` changes which point
    the run uses by default.
    """
    options = options or EvaluateOptions()
    run = predictor.run
    asked, target = options.operating_point, options.target_sensitivity
    chosen = asked if options.set_default else None
    stale = run.stale_operating_points()
    frozen = None if stale is not None else run.operating_points()
    if stale is None and frozen is None:
        _check_official_point(run.path, official, asked, chosen, DEFAULT_SELECTED)
        return run.write_operating_points(choose_on_validation(predictor, target, chosen))
    document = stale if stale is not None else frozen.document
    reasons = ["it was chosen for a different model.ckpt"] if stale is not None else []
    if target is not None and document.get("target_sensitivity") != target:
        reasons.append(f"--sensitivity {target} differs from its {document.get('target_sensitivity')}")
    if reasons and not official:
        option = f" --sensitivity {target}" if target else ""
        raise CxrkitError(f"{run.path}/operating_points.json cannot be used: {reasons[0]}; "
                          f"re-evaluate the run first (`cxrkit evaluate {run.path} --overwrite{option}`)")
    if reasons:
        if not options.overwrite:
            raise CxrkitError(f"{run.path}/operating_points.json would change ({reasons[0]}); pass "
                              "overwrite=True to re-choose the operating points on the validation split")
        previous = document["selected"]
        keep = "sensitivity" if previous.startswith("sensitivity>=") else previous
        _check_official_point(run.path, official, asked, chosen, keep)
        return run.write_operating_points(choose_on_validation(predictor, target, chosen or keep))
    if official and asked:
        name = frozen.resolve_name(asked)
        check_point_name(name, document["points"])
        _check_official_point(run.path, official, name, name if options.set_default else None,
                              frozen.selected)
        if options.set_default and name != frozen.selected:
            logger.info("default operating point of %s: %s (was %s)", run.path, name, frozen.selected)
            return run.write_operating_points({**document, "selected": name})
    return frozen


def _check_official_point(run_dir, official: bool, operating_point: str | None,
                          chosen: str | None, default: str) -> None:
    """The run folder's own evaluation is at the run's default point unless --set-default moves it."""
    if not official or not operating_point or chosen is not None:
        return
    if operating_point.split(">=")[0] != default.split(">=")[0]:
        raise CxrkitError(f"operating_point={operating_point}: the run's default is {default} "
                          f"({run_dir}/operating_points.json) and its own test evaluation is at the "
                          "default; add set_default=True to make it the default, or out=DIR to "
                          "evaluate at it without changing the run")


def choose_on_validation(predictor, target_sensitivity: float | None, selected: str | None) -> dict:
    """Predict the val split, fit the temperature and choose the operating points on it."""
    classes = predictor.classes
    val = predictor.run.split_rows("val")[["path", "label"]]
    if val.empty:
        raise CxrkitError(f"{predictor.run_dir}/split.csv has no val rows; operating points are "
                          "chosen on validation data only, so the run needs a val split")
    where = f"the val split of {predictor.run_dir}"
    probabilities, val, _ = predict_table(predictor, val, where, batch_size=32)
    y_val = val["label"].map({name: i for i, name in enumerate(classes)}).to_numpy()
    check_both_classes(y_val, classes, where)
    return build_operating_points(classes, predictor.card.positive_index, y_val, probabilities,
                                  target_sensitivity or DEFAULT_TARGET_SENSITIVITY, selected,
                                  temperature=fit_temperature(y_val, probabilities))


def decision_point(frozen: OperatingPoints, asked: str | None) -> OperatingPoint:
    """The frozen point an evaluation decides at: `asked`, else the run's default."""
    name = frozen.resolve_name(asked) if asked else frozen.selected
    check_point_name(name, frozen.document["points"])
    return frozen.point(name)


def chosen_summary(frozen: OperatingPoints, point: OperatingPoint, options: EvaluateOptions) -> ChosenPoint:
    """The point in metrics.json, with a warning when it was chosen on the data reported."""
    document = frozen.document
    chosen_on = document.get("chosen_on", "val")
    tuned = point.threshold is not None and point.name != "argmax"
    warning = None
    if not options.external and options.split == chosen_on and tuned:
        warning = ("this threshold was chosen on the data being reported (the val split); its "
                   "sensitivity and specificity here are optimistic")
    return ChosenPoint(point.name, point.threshold, point.rule, chosen_on, document.get("n_val"),
                       document.get("created"), frozen.selected, point.source, warning)


def point_table(frozen: OperatingPoints, scored: Scored, n_bootstrap: int, seed: int) -> dict:
    """Each operating point: its rule and validation figures, and how it does on this data."""
    positive_index, classes = frozen.positive_index, scored.classes
    y_true, probabilities = scored.y_true, scored.probabilities
    table = {}
    for name, point in frozen.document["points"].items():
        row = {"rule": point.get("rule"), "threshold": point.get("threshold")}
        if positive_index is not None:
            y_pred = frozen.point(name).decide(probabilities)
            measured = compute_metrics(y_true, probabilities, y_pred, classes, positive_index)
            intervals = bootstrap_intervals(y_true, probabilities, y_pred, classes, positive_index,
                                            n_bootstrap, seed)
            row["val"] = {"sensitivity": point["sensitivity"], "specificity": point["specificity"]}
            row["evaluated"] = {
                "sensitivity": measured["sensitivity"], "specificity": measured["specificity"],
                "accuracy": measured["accuracy"],
                "f1": measured["per_class"][classes[positive_index]]["f1"],
                "sensitivity_ci95": intervals["sensitivity"],
                "specificity_ci95": intervals["specificity"]}
        table[name] = row
    return table


def who_check(point: ChosenPoint, sensitivity: float, specificity: float) -> dict:
    """Does the point meet WHO's TB triage target (sensitivity >= 0.90, specificity >= 0.70)?"""
    from cxrkit.evaluation.thresholds import WHO_TB_TRIAGE

    return {"target": WHO_TB_TRIAGE, "operating_point": point.name,
            "met": bool(sensitivity >= WHO_TB_TRIAGE["sensitivity"]
                        and specificity >= WHO_TB_TRIAGE["specificity"])}

