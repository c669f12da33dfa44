"""What a reader must be told about an evaluation: warnings, calibration, OOD and lung notes."""

from __future__ import annotations

import numpy as np
import pandas as pd

from cxrkit.errors import CxrkitError
from cxrkit.evaluation.calibration import apply_temperature
from cxrkit.evaluation.metrics import calibration_metrics
from cxrkit.evaluation.result import ChosenPoint, Scored
from cxrkit.run import RunFolder


def data_warnings(scored: Scored, point: ChosenPoint, external: bool, run: RunFolder) -> list[str]:
    """The threshold chosen on the data reported, overlap with the run's own data, unreadable
    images and absent classes."""
    warnings = []
    if point.warning:
        warnings.append(point.warning.capitalize() + ".")
    if external:
        seen = run.split().set_index("path")["split"]
        overlap = scored.table["path"][scored.table["path"].isin(seen.index)]
        if len(overlap):
            counts = seen[overlap].value_counts().to_dict()
            if set(counts) == {"test"}:
                warnings.append(f"{len(overlap)} image(s) of this data are the run's own test split: "
                                "this is not external validation (data from outside the run); the "
                                "run's test split is evaluated by `cxrkit evaluate RUN`.")
            else:
                warnings.append(f"{len(overlap)} image(s) of this data were also used to train or "
                                f"tune the run ({counts}); results are not independent of training.")
    if scored.skipped:
        warnings.append(f"{len(scored.skipped)} image(s) could not be read and were left out "
                        "(listed in skipped_images.csv).")
    present = set(scored.y_true.tolist())
    absent = [name for index, name in enumerate(scored.classes) if index not in present]
    if absent:
        warnings.append(f"No images of class(es) {', '.join(absent)}: their sensitivity and "
                        "ROC-AUC are undefined and left out of the macro averages.")
    return warnings


def leakage_notes(run: RunFolder) -> list[str]:
    """Training's record of patient / near-duplicate groups crossing a given split, as a warning."""
    try:
        leakage = (run.read_json("training.json") or {}).get("split_leakage") or {}
    except (CxrkitError, AttributeError):
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


def calibration_section(temperature: float | None, scored: Scored, calibrate: bool) -> dict:
    """Calibration of the model's probabilities, and after temperature scaling fitted on val."""
    y_true, probabilities, positive_index = scored.y_true, scored.probabilities, scored.positive_index
    result = {"model": calibration_metrics(y_true, probabilities, positive_index)}
    if calibrate and temperature:
        scaled = apply_temperature(probabilities, temperature)
        result |= {"temperature": temperature, "fitted_on": "val",
                   "temperature_scaled": calibration_metrics(y_true, scaled, positive_index),
                   "note": "temperature scaling changes probabilities, not decisions; thresholds "
                           "apply to the model's raw probabilities"}
    return result


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


def lung_summary(predictor, table: pd.DataFrame) -> dict:
    """How the lung focus went: the options, and how many images fell back to the whole image."""
    prep = predictor.preprocessing
    return {"lung_crop": prep.lung_crop, "lung_crop_margin": prep.lung_crop_margin,
            "lung_mask_outside": prep.lung_mask_outside, "segmenter": prep.segmenter,
            "no_lung_found": int((~table["lung_found"].astype(bool)).sum()), "n": int(len(table))}


def lung_warning(lungs: dict) -> list[str]:
    if not lungs["no_lung_found"]:
        return []
    return [f"No plausible lung found in {lungs['no_lung_found']} of {lungs['n']} image(s): the whole "
            "image was used for them (lung_found=false in predictions.csv)."]

