"""Evaluate a run folder on its own test split, or on an external dataset, and write the report.

Operating points are chosen on the run's validation split only and frozen in
`operating_points.json` (with a fingerprint of the model they belong to); every later
evaluation, including external ones, reuses them and says so.
"""

from __future__ import annotations

import json
import logging
import os
import re
from datetime import datetime, timezone
from pathlib import Path

import numpy as np
import pandas as pd

from cxrkit import __version__
from cxrkit.errors import CxrkitError
from cxrkit.evaluation import plots
from cxrkit.evaluation.bootstrap import bootstrap_intervals
from cxrkit.evaluation.calibration import apply_temperature, fit_temperature
from cxrkit.evaluation.external import external_name, external_table
from cxrkit.evaluation.metrics import (
    calibration_metrics,
    check_both_classes,
    classification_report_text,
    compute_metrics,
)
from cxrkit.evaluation.report import write_report
from cxrkit.evaluation.sites import per_site_metrics
from cxrkit.evaluation.thresholds import (
    DEFAULT_SELECTED,
    DEFAULT_TARGET_SENSITIVITY,
    WHO_TB_TRIAGE,
    build_operating_points,
    check_point_name,
)
from cxrkit.run import OperatingPoints, RunFolder

logger = logging.getLogger(__name__)

RUN_OUTPUTS = ("metrics.json", "test_metrics.json", "classification_report.txt",
               "predictions.csv", "report.html")
GRID_SIZE = 16


def evaluate_run(run_dir: str | Path, data: str | Path | None = None, split: str = "test",
                 class_map: dict[str, str] | None = None, out_dir: str | Path | None = None,
                 n_bootstrap: int = 1000, seed: int = 0, operating_point: str | None = None,
                 target_sensitivity: float | None = None, calibrate: bool = True,
                 overwrite: bool = False, batch_size: int = 32, gradcam: bool = True,
                 set_default: bool = False, progress=None) -> dict:
    """Evaluate a run and write metrics.json, predictions.csv, plots and report.html.

    Without `data`: the rows of `split` in the run's split.csv, written into the run folder
    (test) or `run_dir/evaluation/<split>/`. With `data` (folder or CSV): that whole dataset,
    classes matched by name (`class_map` renames data classes to model classes), written into
    `run_dir/external/<name>/`. `gradcam=False` leaves out the Grad-CAM gallery (it is the
    slowest part on CPU). `progress(stage, done, total)` follows prediction. Returns the
    metrics.json document.

    The run's default operating point (in operating_points.json, used by serve, export and
    compare) changes only with `set_default=True` and `operating_point`; the run's own test
    evaluation in the run folder is always at that default.
    """
    from cxrkit.inference import load_torch_predictor

    run = RunFolder(run_dir)
    run_dir = run.path
    predictor = load_torch_predictor(run_dir)
    classes = predictor.classes
    run_split = run.split()
    external = data is not None
    if external and split != "test":
        raise CxrkitError(f"--split {split} applies to the run's own data; with --data the whole "
                          "dataset is evaluated, so leave --split out")
    if n_bootstrap < 100:
        raise CxrkitError(f"--bootstrap {n_bootstrap}: use at least 100 resamples "
                          "(1000 recommended)")
    out_dir = Path(out_dir).expanduser() if out_dir else default_out_dir(run_dir, data, split)
    _guard_outputs(out_dir, run_dir, overwrite)

    official = not external and split == "test" and out_dir.resolve() == run_dir.resolve()
    if set_default and not (official and operating_point):
        raise CxrkitError("--set-default needs --operating-point NAME and the run's own test "
                          "evaluation (no --data, --split or --out)")
    frozen = _operating_points(predictor, run_split, official, operating_point, target_sensitivity,
                               overwrite, set_default)
    points = frozen.document
    selected = frozen.resolve_name(operating_point) if operating_point else frozen.selected
    check_point_name(selected, points["points"])
    decision = frozen.point(selected)

    table, mapping, where = evaluation_set(run_dir, run_split, classes, data, split, class_map)
    probabilities, table, skipped = predict_table(predictor, table, where, batch_size, progress)
    y_true = table["label"].map({name: i for i, name in enumerate(classes)}).to_numpy()
    check_both_classes(y_true, classes, where)
    positive_index = predictor.card.positive_index
    y_pred = decision.decide(probabilities)

    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / "plots").mkdir(exist_ok=True)
    predictions = predictions_frame(table, probabilities, y_pred, classes)
    ood = ood_section(predictor, table)
    if ood is not None:
        predictions["out_of_distribution"] = predictions["ood_score"] > ood["threshold"]
    predictions.to_csv(out_dir / "predictions.csv", index=False)
    if skipped:
        pd.DataFrame(skipped, columns=["path", "reason"]).to_csv(out_dir / "skipped_images.csv",
                                                                 index=False)

    document = {
        "cxrkit_version": __version__,
        "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "run": str(run_dir.resolve()),
        "evaluated": {"kind": "external" if external else "split",
                      "split": None if external else split,
                      "source": str(data) if external else f"{run_dir}/split.csv",
                      "n": int(len(table)), "n_skipped": len(skipped),
                      "class_map": mapping or None},
        "classes": classes,
        **compute_metrics(y_true, probabilities, y_pred, classes, positive_index),
        "confidence_intervals": bootstrap_intervals(y_true, probabilities, y_pred, classes,
                                                    positive_index, n_bootstrap, seed),
        "bootstrap": {"resamples": n_bootstrap, "seed": seed, "level": 0.95,
                      "method": "stratified by class, percentile interval"},
        "operating_point": {**_selected_summary(points, selected, split, external),
                            "run_default": points["selected"]},
        "operating_points": _point_table(frozen, y_true, probabilities, classes, n_bootstrap, seed),
        "calibration": _calibration(points, y_true, probabilities, positive_index, calibrate),
        "warnings": _warnings(points, selected, split, external, table, run_split, skipped, y_true,
                              classes),
        "skipped": [{"path": path, "reason": reason} for path, reason in skipped],
        "out_of_distribution": ood,
    }
    document["warnings"] += collapsed_interval_notes(document, y_true, positive_index)
    if "lung_found" in table.columns:
        document["lungs"] = _lung_summary(predictor, table)
        if document["lungs"]["no_lung_found"]:
            document["warnings"].append(
                f"No plausible lung found in {document['lungs']['no_lung_found']} of {len(table)} image(s): "
                "the whole image was used for them (lung_found=false in predictions.csv).")
    if not external:
        document["warnings"] += leakage_notes(run_dir)
    tb_target = positive_index is not None and is_tuberculosis(classes[positive_index])
    if tb_target:
        document["who_tb_triage"] = _who_check(document)
    if "site" in table.columns:
        document["per_site"] = per_site_metrics(table["site"].to_numpy(), y_true, probabilities,
                                                y_pred, classes, positive_index, n_bootstrap, seed,
                                                tb_target)
    document["model"] = model_summary(predictor, run_dir)
    figures = make_figures(out_dir / "plots", run_dir, y_true, probabilities, predictions,
                           document["confusion_matrix"], classes, positive_index, points, selected,
                           run_split, table, external, calibrate)
    if "lung_found" in table.columns:
        from cxrkit.segment.predict import overlay_examples, overlay_grid

        shown = overlay_grid(predictor.segmenter, overlay_examples(table["path"].tolist(),
                                                                   table["lung_found"].tolist()),
                             out_dir / "plots" / "lungs.png", predictor.preprocessing.lung_crop_margin)
        if shown:
            figures["lungs"] = out_dir / "plots" / "lungs.png"
    files = {"metrics": "metrics.json", "predictions": "predictions.csv",
             "classification_report": "classification_report.txt", "report": "report.html"}
    (out_dir / "classification_report.txt").write_text(
        classification_report_text(y_true, y_pred, classes))
    if not external and split == "test":
        files["test_metrics"] = "test_metrics.json"
        (out_dir / "test_metrics.json").write_text(
            json.dumps(test_summary(document), indent=2) + "\n")
    document["outputs"] = {"dir": str(out_dir), "files": files,
                           "plots": {k: os.path.relpath(v, out_dir) for k, v in figures.items()}}
    (out_dir / "metrics.json").write_text(json.dumps(document, indent=2) + "\n")
    gallery = _gallery(predictor, predictions, out_dir) if gradcam else None
    write_report(out_dir / "report.html", document, figures, gallery,
                 (out_dir / "classification_report.txt").read_text())
    return document


def ood_section(predictor, table: pd.DataFrame) -> dict | None:
    """Share of images flagged out of distribution, the warning line and the method; None when
    the model has no reference."""
    from cxrkit.ood import flag_summary, warning_text
    from cxrkit.ood.flags import reference_summary

    if predictor.ood_threshold is None:
        return None
    summary = flag_summary(table["ood_score"].to_numpy(), predictor.ood_threshold)
    reference = reference_summary(predictor.ood)
    return {**summary, "message": warning_text(summary), "method": reference["method"],
            "percentile": reference["percentile"], "n_val": reference["n_val"]}


def _lung_summary(predictor, table: pd.DataFrame) -> dict:
    """How the lung focus went: the options, and how many images fell back to the whole image."""
    prep = predictor.preprocessing
    return {"lung_crop": prep.lung_crop, "lung_crop_margin": prep.lung_crop_margin,
            "lung_mask_outside": prep.lung_mask_outside, "segmenter": prep.segmenter,
            "no_lung_found": int((~table["lung_found"].astype(bool)).sum()), "n": int(len(table))}


def evaluation_set(run_dir: Path, run_split: pd.DataFrame, classes: list[str], data, split: str,
                   class_map: dict[str, str] | None) -> tuple[pd.DataFrame, dict, str]:
    """(rows with path and model-class label, class mapping, a name for messages)."""
    if data is not None:
        table, mapping = external_table(data, classes, class_map)
        return table, mapping, f"--data {data}"
    if split not in set(run_split["split"]):
        raise CxrkitError(f"--split {split}: {run_dir}/split.csv has no {split!r} rows "
                          f"(it has {', '.join(sorted(set(run_split['split'])))})")
    columns = ["path", "label"] + (["site"] if "site" in run_split.columns else [])
    table = run_split.loc[run_split["split"] == split, columns]
    return table, {}, f"the {split} split of {run_dir}"


def model_summary(predictor, run_dir: Path) -> dict:
    """What the report's model section shows: architecture, preprocessing, training record."""
    from cxrkit.config import read_yaml_mapping
    from cxrkit.models import count_parameters

    config_path, training_path = run_dir / "config.yaml", run_dir / "training.json"
    config = read_yaml_mapping(config_path) if config_path.is_file() else {}
    training = json.loads(training_path.read_text()) if training_path.is_file() else {}
    model_config = (config or {}).get("model", {})
    summary = {"architecture": predictor.info.get("model_name") or model_config.get("name"),
               "classes (output order)": ", ".join(predictor.classes),
               "parameters": count_parameters(predictor.model),
               "output": "single logit (sigmoid)" if predictor.single_logit else "softmax",
               "recipe": (config or {}).get("recipe"),
               "pretrained weights": model_config.get("weights"),
               "frozen layers": model_config.get("freeze")}
    return {"summary": {k: v for k, v in summary.items() if v is not None},
            "preprocessing": predictor.preprocessing.to_dict(), "training": training,
            "config": config or {}}


def default_out_dir(run_dir: Path, data, split: str) -> Path:
    if data is not None:
        return run_dir / "external" / external_name(data)
    return run_dir if split == "test" else run_dir / "evaluation" / split


def _guard_outputs(out_dir: Path, run_dir: Path, overwrite: bool) -> None:
    if overwrite or not out_dir.exists():
        return
    if out_dir.resolve() == run_dir.resolve():
        existing = [name for name in RUN_OUTPUTS if (out_dir / name).exists()]
    else:
        existing = sorted(p.name for p in out_dir.iterdir())
    if existing:
        raise CxrkitError(f"{out_dir} already has an evaluation ({existing[0]}); pass --overwrite "
                          "to replace it, or --out DIR to write elsewhere")


def _operating_points(predictor, run_split: pd.DataFrame, official: bool,
                      operating_point: str | None, target_sensitivity: float | None,
                      overwrite: bool, set_default: bool = False) -> OperatingPoints:
    """The run's frozen points, chosen on val when absent.

    Only the official evaluation (the run's test split, into the run folder) may re-choose
    stale points or a new sensitivity target; only `set_default` changes which point the run
    uses by default.
    """
    run = predictor.run
    run_dir = run.path
    chosen = operating_point if set_default else None
    stale = run.stale_operating_points()
    frozen = None if stale is not None else run.operating_points()
    if stale is None and frozen is None:
        _check_official_point(run_dir, official, operating_point, chosen, DEFAULT_SELECTED)
        return run.write_operating_points(
            choose_on_validation(predictor, run_split, target_sensitivity, chosen))
    reasons = []
    if stale is not None:
        reasons.append("it was chosen for a different model.ckpt")
    document = stale if stale is not None else frozen.document
    if target_sensitivity is not None and document.get("target_sensitivity") != target_sensitivity:
        reasons.append(f"--sensitivity {target_sensitivity} differs from its "
                       f"{document.get('target_sensitivity')}")
    if reasons and not official:
        option = f" --sensitivity {target_sensitivity}" if target_sensitivity else ""
        raise CxrkitError(f"{run_dir}/operating_points.json cannot be used: {reasons[0]}; "
                          f"re-evaluate the run first (`cxrkit evaluate {run_dir} --overwrite"
                          f"{option}`)")
    if reasons:
        _check_can_replace(run_dir, overwrite, reasons[0])
        previous = document["selected"]
        keep = "sensitivity" if previous.startswith("sensitivity>=") else previous
        _check_official_point(run_dir, official, operating_point, chosen, keep)
        return run.write_operating_points(
            choose_on_validation(predictor, run_split, target_sensitivity, chosen or keep))
    if official and operating_point:
        name = frozen.resolve_name(operating_point)
        check_point_name(name, document["points"])
        _check_official_point(run_dir, official, name, name if set_default else None,
                              frozen.selected)
        if set_default and name != frozen.selected:
            logger.info("default operating point of %s: %s (was %s)", run_dir, name, frozen.selected)
            return run.write_operating_points({**document, "selected": name})
    return frozen


def _check_official_point(run_dir: Path, official: bool, operating_point: str | None,
                          chosen: str | None, default: str) -> None:
    """The run folder's own evaluation is at the run's default point unless --set-default moves it."""
    if not official or not operating_point or chosen is not None:
        return
    if operating_point.split(">=")[0] != default.split(">=")[0]:
        raise CxrkitError(f"--operating-point {operating_point}: the run's default is {default} "
                          f"({run_dir}/operating_points.json) and its own test evaluation is at the "
                          "default; add --set-default to make it the default, or --out DIR to "
                          "evaluate at it without changing the run")


def _check_can_replace(run_dir: Path, overwrite: bool, why: str) -> None:
    if not overwrite:
        raise CxrkitError(f"{run_dir}/operating_points.json would change ({why}); pass --overwrite "
                          "to re-choose the operating points on the validation split")


def choose_on_validation(predictor, run_split: pd.DataFrame, target_sensitivity: float | None,
                         selected: str | None) -> dict:
    """Predict the val split, fit the temperature and choose the operating points on it."""
    classes = predictor.classes
    val = run_split.loc[run_split["split"] == "val", ["path", "label"]]
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


def predict_table(predictor, table: pd.DataFrame, where: str, batch_size: int,
                  progress=None) -> tuple[np.ndarray, pd.DataFrame, list[tuple[str, str]]]:
    """Probabilities for the rows of `table` (decoded in parallel processes); unreadable images
    are skipped and listed. `progress(stage, done, total)` follows the images.

    When the model has an out-of-distribution reference, the returned table has `ood_score`.
    """
    if batch_size < 1:
        raise CxrkitError(f"batch_size {batch_size}: give 1 or more")
    unknown = sorted(set(table["label"]) - set(predictor.classes))
    if unknown:
        raise CxrkitError(f"{where}: label(s) {unknown} are not classes of the model "
                          f"({', '.join(predictor.classes)})")
    paths = table["path"].tolist()
    logger.info("predicting %d images of %s", len(paths), where)
    probabilities, scores, lung_found, kept, failures = predictor.predict_files(
        paths, batch_size, progress=progress)
    skipped = list(failures.items())
    if not kept:
        raise CxrkitError(f"{where}: none of the {len(paths)} images could be read "
                          f"(e.g. {skipped[0][1] if skipped else 'no images'})")
    probabilities = probabilities.astype(np.float64)
    bad = ~np.isfinite(probabilities).all(axis=1)
    if bad.any():
        raise CxrkitError(f"{predictor.run_dir}/model.ckpt produced NaN probabilities for "
                          f"{int(bad.sum())} of {len(bad)} images of {where} (e.g. "
                          f"{kept[int(np.flatnonzero(bad)[0])]}); the model is broken (did "
                          "training diverge? retrain with a lower train.lr)")
    probabilities /= probabilities.sum(axis=1, keepdims=True)  # float32 softmax -> exact rows
    kept_set = set(kept)
    table = table[table["path"].isin(kept_set)].drop_duplicates("path")
    order = {path: i for i, path in enumerate(kept)}
    table = table.iloc[np.argsort(table["path"].map(order).to_numpy())].reset_index(drop=True)
    if predictor.preprocessing.uses_lungs and len(table) == len(lung_found):
        table = table.assign(lung_found=lung_found)
    if len(table) != len(probabilities):
        raise CxrkitError(f"{where}: some images are listed twice; remove the duplicate rows")
    if predictor.ood_threshold is not None:
        table = table.assign(ood_score=scores)
    return probabilities, table, skipped


def predictions_frame(table: pd.DataFrame, probabilities: np.ndarray, y_pred: np.ndarray,
                      classes: list[str]) -> pd.DataFrame:
    """path, [site,] true_label, predicted_label, prob_<class> per image (and ood_score when
    scored)."""
    frame = pd.DataFrame({"path": table["path"].to_numpy(), "true_label": table["label"].to_numpy(),
                          "predicted_label": [classes[i] for i in y_pred]})
    if "site" in table.columns:
        frame.insert(1, "site", table["site"].to_numpy())
    for index, name in enumerate(classes):
        frame[f"prob_{name}"] = probabilities[:, index]
    if "ood_score" in table:
        frame["ood_score"] = table["ood_score"].to_numpy()
    if "lung_found" in table.columns:
        frame["lung_found"] = table["lung_found"].to_numpy()
    return frame


def test_summary(document: dict) -> dict:
    """The compact test_metrics.json: point metrics, intervals and the operating point used."""
    skip = {"cxrkit_version", "run", "operating_points", "calibration", "skipped", "outputs",
            "who_tb_triage", "bootstrap", "model"}
    return {key: value for key, value in document.items() if key not in skip}


def _selected_summary(points: dict, selected: str, split: str, external: bool) -> dict:
    point = points["points"][selected]
    summary = {"name": selected, "threshold": point.get("threshold"), "rule": point.get("rule"),
               "chosen_on": points.get("chosen_on", "val"), "n_val": points.get("n_val"),
               "chosen_at": points.get("created"), "file": "operating_points.json"}
    tuned = "threshold" in point and selected != "argmax"
    if not external and split == summary["chosen_on"] and tuned:
        summary["warning"] = ("this threshold was chosen on the data being reported (the val "
                              "split); its sensitivity and specificity here are optimistic")
    return summary


def _point_table(frozen: OperatingPoints, y_true: np.ndarray, probabilities: np.ndarray,
                 classes: list[str], n_bootstrap: int, seed: int) -> dict:
    """Each operating point: its rule and validation figures, and how it does on this data."""
    positive_index = frozen.positive_index
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
                "accuracy": measured["accuracy"], "f1": measured["per_class"][
                    classes[positive_index]]["f1"],
                "sensitivity_ci95": intervals["sensitivity"],
                "specificity_ci95": intervals["specificity"]}
        table[name] = row
    return table


def _calibration(points: dict, y_true: np.ndarray, probabilities: np.ndarray,
                 positive_index: int | None, calibrate: bool) -> dict:
    result = {"model": calibration_metrics(y_true, probabilities, positive_index)}
    temperature = points.get("temperature")
    if calibrate and temperature:
        scaled = apply_temperature(probabilities, temperature)
        result |= {"temperature": temperature, "fitted_on": "val",
                   "temperature_scaled": calibration_metrics(y_true, scaled, positive_index),
                   "note": "temperature scaling changes probabilities, not decisions; thresholds "
                           "apply to the model's raw probabilities"}
    return result


def is_tuberculosis(name: str) -> bool:
    """True for a class named like tuberculosis (the WHO triage target applies to TB only)."""
    return bool(re.search(r"tubercul|(?<![a-z])tb(?![a-z])", name.lower()))


def _who_check(document: dict) -> dict:
    """Does the selected point meet WHO's TB triage target (sens >= 0.90, spec >= 0.70)?"""
    return {"target": WHO_TB_TRIAGE, "operating_point": document["operating_point"]["name"],
            "met": bool(document["sensitivity"] >= WHO_TB_TRIAGE["sensitivity"]
                        and document["specificity"] >= WHO_TB_TRIAGE["specificity"])}


def _warnings(points, selected, split, external, table, run_split, skipped, y_true,
              classes) -> list:
    warnings = []
    summary = _selected_summary(points, selected, split, external)
    if "warning" in summary:
        warnings.append(summary["warning"].capitalize() + ".")
    if external:
        seen = run_split.set_index("path")["split"]
        overlap = table["path"][table["path"].isin(seen.index)]
        if len(overlap):
            counts = seen[overlap].value_counts().to_dict()
            if set(counts) == {"test"}:
                warnings.append(f"{len(overlap)} image(s) of this data are the run's own test split: "
                                "this is not external validation (data from outside the run); the "
                                "run's test split is evaluated by `cxrkit evaluate RUN`.")
            else:
                warnings.append(f"{len(overlap)} image(s) of this data were also used to train or "
                                f"tune the run ({counts}); results are not independent of training.")
    if skipped:
        warnings.append(f"{len(skipped)} image(s) could not be read and were left out "
                        "(listed in skipped_images.csv).")
    absent = [classes[i] for i in range(len(classes)) if i not in set(y_true.tolist())]
    if absent:
        warnings.append(f"No images of class(es) {', '.join(absent)}: their sensitivity and "
                        "ROC-AUC are undefined and left out of the macro averages.")
    return warnings


def leakage_notes(run_dir: Path) -> list[str]:
    """Training's record of patient / near-duplicate groups crossing a given split, as a warning."""
    training = run_dir / "training.json"
    try:
        leakage = json.loads(training.read_text()).get("split_leakage") or {}
    except (OSError, ValueError, AttributeError):
        return []
    patients, duplicates = leakage.get("patient_groups", 0), leakage.get("near_duplicate_groups", 0)
    if not patients and not duplicates:
        return []
    return [f"The split given to training puts {patients} patient group(s) "
            f"({leakage.get('patient_images', 0)} images) and {duplicates} near-duplicate group(s) "
            f"({leakage.get('near_duplicate_images', 0)} images) in more than one split: the test "
            "metrics are optimistic (re-split by patient, or train with --strict to refuse)."]


def collapsed_interval_notes(document: dict, y_true: np.ndarray,
                             positive_index: int | None) -> list[str]:
    """A bootstrap interval collapses to a point at 0 or 100%; give the Wilson interval instead."""
    from scipy.stats import binomtest

    counts = {"accuracy": len(y_true)}
    if positive_index is not None:
        counts |= {"sensitivity": int((y_true == positive_index).sum()),
                   "specificity": int((y_true != positive_index).sum())}
    notes = []
    for name, n in counts.items():
        value = document[name]
        if value in (0.0, 1.0) and n > 0:
            k = round(value * n)
            interval = binomtest(k, n).proportion_ci(confidence_level=0.95, method="wilson")
            notes.append(f"{name.capitalize()} is {value:.3f} ({k} of {n}): the bootstrap "
                         "interval collapses to a point when there are no errors; the Wilson 95% "
                         f"interval is {interval.low:.3f} to {interval.high:.3f}.")
    return notes


def make_figures(folder: Path, run_dir: Path, y_true, probabilities, predictions, confusion,
                 classes, positive_index, points, selected, run_split, table, external,
                 calibrate) -> dict[str, Path]:
    """Every PNG of the report, keyed by section name."""
    figures = {
        "roc": plots.plot_roc(y_true, probabilities, classes, positive_index, points["points"],
                              selected, folder / "roc.png"),
        "pr": plots.plot_pr(y_true, probabilities, classes, positive_index, folder / "pr.png"),
        "confusion": plots.plot_confusion(confusion, classes, folder / "confusion_matrix.png"),
        "reliability": plots.plot_reliability(
            y_true, probabilities, positive_index, folder / "reliability.png",
            apply_temperature(probabilities, points["temperature"])
            if calibrate and points.get("temperature") else None),
    }
    distribution = run_split[["split", "label"]]
    if external:
        distribution = pd.concat([distribution, pd.DataFrame({"split": "external",
                                                              "label": table["label"]})])
    figures["class_distribution"] = plots.plot_class_distribution(
        distribution, folder / "class_distribution.png")
    figures["samples"] = _sample_grid(predictions, classes, positive_index, folder / "samples.png")
    curves = run_dir / "training_curves.png"
    if not curves.is_file():
        from cxrkit.training.curves import plot_training_curves

        curves = plot_training_curves(run_dir / "metrics.csv", folder / "training_curves.png")
    if curves is not None:
        figures["training_curves"] = curves
    return figures


def _sample_grid(predictions: pd.DataFrame, classes: list[str], positive_index: int | None,
                 path: Path) -> Path:
    """Most confident errors first, then the most confident correct predictions."""
    import cv2

    from cxrkit.data.io import read_gray

    frame = predictions.copy()
    frame["correct"] = frame["true_label"] == frame["predicted_label"]
    frame["confidence"] = [frame.at[index, f"prob_{label}"]
                           for index, label in frame["predicted_label"].items()]
    frame = frame.sort_values(["correct", "confidence"], ascending=[True, False], kind="stable")
    frame = frame.head(GRID_SIZE)
    images, titles = [], []
    for _, row in frame.iterrows():
        image = read_gray(row["path"])
        scale = 160 / max(image.shape)
        images.append(cv2.resize(image, None, fx=scale, fy=scale, interpolation=cv2.INTER_AREA))
        shown = classes[positive_index] if positive_index is not None else row["predicted_label"]
        titles.append(f"{Path(row['path']).name[:24]}\ntrue {row['true_label']} | pred "
                      f"{row['predicted_label']}\nP({shown}) = {row[f'prob_{shown}']:.2f}")
    return plots.plot_sample_grid(images, titles, frame["correct"].tolist(), path)


def _gallery(predictor, predictions: pd.DataFrame, out_dir: Path) -> list[dict] | None:
    """Grad-CAM examples from cxrkit.explain.gallery; None when that module is not installed."""
    from cxrkit.extras import install_hint

    try:
        from cxrkit.explain.gallery import make_gallery

        renamed = predictions.rename(columns={"true_label": "true", "predicted_label": "pred"})
        return make_gallery(predictor, renamed, out_dir / "gallery", per_group=4)
    except ModuleNotFoundError as error:
        hint = install_hint(error)
        if hint is None:
            raise
        logger.warning("Grad-CAM gallery skipped: %s", hint.replace("this needs", "it needs"))
        return None
