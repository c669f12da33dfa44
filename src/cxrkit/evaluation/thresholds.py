"""Operating points for binary runs, chosen on the validation split and frozen into the run.

Rule everywhere: an image is called positive when P(positive) >= threshold. Points:
`argmax` (0.5, what `Predictor.predict` does), `youden` (max sensitivity + specificity - 1),
`max_f1` and `sensitivity>=S` (the highest threshold whose validation sensitivity is at
least S, i.e. the best specificity meeting the target; WHO's TB triage target is S = 0.90
with specificity >= 0.70). The default selected point is `argmax`, so the run's headline
accuracy matches `Predictor.predict` and published figures; choose another with
`cxrkit evaluate RUN --operating-point youden|max_f1|sensitivity [--sensitivity 0.9] --set-default
--overwrite` (without --set-default a point is only used for that evaluation, written elsewhere).
"""

from __future__ import annotations

import json
import re
from datetime import datetime, timezone
from pathlib import Path

import numpy as np
from sklearn.metrics import precision_recall_curve, roc_curve

from cxrkit.errors import CxrkitError

OPERATING_POINTS_FILE = "operating_points.json"
DEFAULT_SELECTED = "argmax"
DEFAULT_TARGET_SENSITIVITY = 0.90
WHO_TB_TRIAGE = {"sensitivity": 0.90, "specificity": 0.70}
_NEGATIVE_NAME = re.compile(r"(?<![a-z])(normal|healthy|negative|no[ _-]?finding)(?![a-z])")


def is_tuberculosis(name: str) -> bool:
    """True for a class named like tuberculosis (the WHO triage target applies to TB only)."""
    return bool(re.search(r"tubercul|(?<![a-z])tb(?![a-z])", name.lower()))


def positive_class_index(classes: list[str]) -> int | None:
    """Index of the disease class of a binary run (the one not named like 'normal', else 1)."""
    if len(classes) != 2:
        return None
    negative = [bool(_NEGATIVE_NAME.search(name.lower())) for name in classes]
    if negative.count(True) == 1:
        return negative.index(False)
    return 1


def sensitivity_point_name(target: float) -> str:
    """'sensitivity>=0.90' for a target of 0.9."""
    return f"sensitivity>={target:.2f}"


def resolve_point_name(name: str, target: float) -> str:
    """Accept 'sensitivity' as shorthand for the run's sensitivity point."""
    return sensitivity_point_name(target) if name == "sensitivity" else name


def _rates(positive: np.ndarray, scores: np.ndarray, threshold: float) -> dict:
    called = scores >= threshold
    return {"threshold": float(threshold),
            "sensitivity": float((called & positive).sum() / positive.sum()),
            "specificity": float((~called & ~positive).sum() / (~positive).sum())}


def choose_thresholds(positive: np.ndarray, scores: np.ndarray,
                      target_sensitivity: float = DEFAULT_TARGET_SENSITIVITY) -> dict[str, dict]:
    """The four operating points with their validation sensitivity and specificity."""
    if not 0 < target_sensitivity < 1:
        raise CxrkitError(f"target_sensitivity={target_sensitivity} must be between 0 and 1 (e.g. 0.9)")
    positive = np.asarray(positive, dtype=bool)
    scores = np.asarray(scores, dtype=np.float64)
    fpr, tpr, roc_thresholds = roc_curve(positive, scores, drop_intermediate=False)
    finite = np.isfinite(roc_thresholds)
    fpr, tpr, roc_thresholds = fpr[finite], tpr[finite], roc_thresholds[finite]
    youden = roc_thresholds[np.argmax(tpr - fpr)]
    meets = np.flatnonzero(tpr >= target_sensitivity)
    sensitive = roc_thresholds[meets[0]]
    precision, recall, pr_thresholds = precision_recall_curve(positive, scores)
    with np.errstate(invalid="ignore", divide="ignore"):
        f1 = np.nan_to_num(2 * precision * recall / (precision + recall))[:-1]
    best_f1 = pr_thresholds[np.argmax(f1)]
    points = {
        "argmax": _rates(positive, scores, 0.5) | {
            "rule": "P(positive) >= 0.5 (the most probable class)"},
        "youden": _rates(positive, scores, youden) | {"rule": "max sensitivity + specificity - 1"},
        "max_f1": _rates(positive, scores, best_f1) | {"rule": "max F1 of the positive class"},
        sensitivity_point_name(target_sensitivity): _rates(positive, scores, sensitive) | {
            "rule": f"best specificity with sensitivity >= {target_sensitivity:.2f}",
            "target_sensitivity": float(target_sensitivity)},
    }
    return points


def build_operating_points(classes: list[str], y_val: np.ndarray, probabilities_val: np.ndarray,
                           target_sensitivity: float = DEFAULT_TARGET_SENSITIVITY,
                           selected: str | None = None, temperature: float | None = None) -> dict:
    """The operating_points.json document, chosen on validation labels and probabilities."""
    positive_index = positive_class_index(classes)
    document: dict = {"chosen_on": "val", "n_val": int(len(y_val)),
                      "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
                      "temperature": temperature}
    if positive_index is None:
        points = {"argmax": {"rule": "the most probable class"}}
        document |= {"positive_class": None, "positive_index": None}
    else:
        points = choose_thresholds(np.asarray(y_val) == positive_index,
                                   probabilities_val[:, positive_index], target_sensitivity)
        document |= {"positive_class": classes[positive_index], "positive_index": positive_index,
                     "target_sensitivity": float(target_sensitivity)}
    selected = resolve_point_name(selected or DEFAULT_SELECTED, target_sensitivity)
    check_point_name(selected, points)
    return {"positive_class": document.pop("positive_class"),
            "positive_index": document.pop("positive_index"),
            "selected": selected, **document, "points": points}


def check_point_name(name: str, points: dict) -> None:
    if name not in points:
        raise CxrkitError(f"operating_point={name!r} is not one of this run's points "
                          f"({', '.join(points)}); for another sensitivity target use "
                          "operating_point=sensitivity target_sensitivity=S set_default=True overwrite=True")


def predict_at(probabilities: np.ndarray, operating_points: dict,
               name: str | None = None) -> np.ndarray:
    """Class indices decided at an operating point (its threshold, or argmax without one)."""
    point = operating_points["points"][name or operating_points["selected"]]
    positive_index = operating_points.get("positive_index")
    if positive_index is None or "threshold" not in point:
        return probabilities.argmax(axis=1)
    called = probabilities[:, positive_index] >= point["threshold"]
    return np.where(called, positive_index, 1 - positive_index)


def read_operating_points(run_dir: Path) -> dict | None:
    path = Path(run_dir) / OPERATING_POINTS_FILE
    if not path.is_file():
        return None
    try:
        return json.loads(path.read_text())
    except json.JSONDecodeError as error:
        raise CxrkitError(f"{path}: not valid JSON ({error}); delete it and run "
                          "`cxrkit evaluate RUN --overwrite` to choose the points again") from error


def write_operating_points(run_dir: Path, document: dict) -> Path:
    path = Path(run_dir) / OPERATING_POINTS_FILE
    path.write_text(json.dumps(document, indent=2) + "\n")
    return path


SITE_POINTS_KEY = "sites"
SITE_PREFIX = "site:"


def add_site_point(document: dict, name: str, point: dict, overwrite: bool = False) -> dict:
    """Record a site operating point (chosen on local calibration data) in the run's document."""
    sites = document.setdefault(SITE_POINTS_KEY, {})
    if name in sites and not overwrite:
        raise CxrkitError(f"the run already has a site operating point {name!r} (calibrated "
                          f"{sites[name].get('created')}); pass overwrite=True to replace it, or "
                          "site=OTHER to keep both")
    sites[name] = point
    return document


def site_operating_points(document: dict | None, name: str, model_sha256: str,
                          where: str) -> dict:
    """An operating-points document whose selected point is site point `name`.

    Refused when the run has no such site, or when it was calibrated for another model.ckpt.
    The result works with `predict_at` and the server's decision rule like the val points.
    """
    sites = (document or {}).get(SITE_POINTS_KEY, {})
    if name not in sites:
        known = ", ".join(sites) or "none"
        raise CxrkitError(f"site={name}: {where} has no such site operating point (it has: "
                          f"{known}); make one with `cxrkit calibrate RUN --data SITE.csv "
                          f"--site {name} --select 'sensitivity>=0.90'`")
    point = sites[name]
    if point.get("model_sha256") != model_sha256:
        raise CxrkitError(f"site={name}: its threshold was calibrated for a different "
                          f"model.ckpt than {where} has now; calibrate this model again "
                          "(`cxrkit calibrate ... --overwrite`)")
    selected = SITE_PREFIX + name
    return {"positive_class": document["positive_class"],
            "positive_index": document["positive_index"], "selected": selected,
            "chosen_on": f"site calibration data ({point['data']['n_calibration']} images)",
            "points": {selected: point}}


def describe_point(document: dict) -> str:
    """One line: which point decides, its threshold and where it was chosen."""
    name = document["selected"]
    point = document["points"][name]
    if "threshold" not in point:
        return f"operating point {name}: the most probable class"
    text = (f"operating point {name} ({point.get('rule')}): {document['positive_class']} when "
            f"P >= {point['threshold']:.4f}")
    data = point.get("data")
    if data:
        text += (f", calibrated on {data['source']} (sha256 {data['sha256'][:12]}, "
                 f"{data['n_calibration']} of {data['n']} images, {point.get('created')})")
    else:
        text += f", chosen on the validation split ({document.get('created')})"
    return text


def load_site_points(run_dir: Path | None, name: str) -> dict:
    """The run's operating points with site point `name` selected (see site_operating_points)."""
    if run_dir is None:
        raise CxrkitError(f"site={name}: site operating points live in a run folder; pass the "
                          "run folder rather than an exported model")
    from cxrkit.run_facts import model_fingerprint

    run_dir = Path(run_dir)
    return site_operating_points(read_operating_points(run_dir), name,
                                 model_fingerprint(run_dir), str(run_dir))
