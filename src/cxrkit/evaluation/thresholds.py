"""Operating points for binary runs, chosen on the validation split and frozen into the run.

Rule everywhere (cxrkit.run.OperatingPoint): an image is called positive when P(positive) >=
threshold; the positive class is the model card's. Points:
`argmax` (0.5, the most probable class), `youden` (max sensitivity + specificity - 1),
`max_f1` and `sensitivity>=S` (the highest threshold whose validation sensitivity is at
least S, i.e. the best specificity meeting the target; WHO's TB triage target is S = 0.90
with specificity >= 0.70). The default selected point is `argmax`; choose another with
`cxrkit evaluate RUN --operating-point youden|max_f1|sensitivity [--sensitivity 0.9] --set-default
--overwrite` (without --set-default a point is only used for that evaluation, written elsewhere).
The selected point is what `Predictor.predict`, `cxrkit predict`, the server and the report
decide at.
"""

from __future__ import annotations

import re
from datetime import datetime, timezone

import numpy as np
from sklearn.metrics import precision_recall_curve, roc_curve

from cxrkit.errors import CxrkitError
from cxrkit.run.decision import sensitivity_point_name

DEFAULT_SELECTED = "argmax"
DEFAULT_TARGET_SENSITIVITY = 0.90
WHO_TB_TRIAGE = {"sensitivity": 0.90, "specificity": 0.70}
def is_tuberculosis(name: str) -> bool:
    """True for a class named like tuberculosis (the WHO triage target applies to TB only)."""
    return bool(re.search(r"tubercul|(?<![a-z])tb(?![a-z])", name.lower()))


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


def build_operating_points(classes: list[str], positive_index: int | None, y_val: np.ndarray,
                           probabilities_val: np.ndarray,
                           target_sensitivity: float = DEFAULT_TARGET_SENSITIVITY,
                           selected: str | None = None, temperature: float | None = None) -> dict:
    """The operating_points.json document, chosen on validation labels and probabilities for the
    model card's positive class (`positive_index`; None: multi-class, argmax only)."""
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


SITE_POINTS_KEY = "sites"


def add_site_point(document: dict, name: str, point: dict, overwrite: bool = False) -> dict:
    """Record a site operating point (chosen on local calibration data) in the run's document."""
    sites = document.setdefault(SITE_POINTS_KEY, {})
    if name in sites and not overwrite:
        raise CxrkitError(f"the run already has a site operating point {name!r} (calibrated "
                          f"{sites[name].get('created')}); pass overwrite=True to replace it, or "
                          "site=OTHER to keep both")
    sites[name] = point
    return document
