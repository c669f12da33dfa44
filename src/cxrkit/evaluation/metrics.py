"""Screening metrics from true labels, probabilities and decisions, all through scikit-learn.

Binary runs report sensitivity and specificity of the positive class (e.g. Tuberculosis);
multi-class runs report one-vs-rest figures per class and macro averages.
"""

from __future__ import annotations

import numpy as np
from sklearn import metrics as skm

from cxrkit.errors import CxrkitError

ECE_BINS = 10


def wilson(k: int, n: int) -> list[float] | None:
    """Wilson 95% interval of the proportion k/n (None when n is 0)."""
    from scipy.stats import binomtest

    if n == 0:
        return None
    interval = binomtest(k, n).proportion_ci(confidence_level=0.95, method="wilson")
    return [float(interval.low), float(interval.high)]


def check_probabilities(probabilities: np.ndarray, n_classes: int, where: str = "") -> np.ndarray:
    """Validate an (N, C) probability array: finite, in [0, 1], rows summing to about 1."""
    probabilities = np.asarray(probabilities, dtype=np.float64)
    place = f"{where}: " if where else ""
    if probabilities.ndim != 2 or probabilities.shape[1] != n_classes:
        raise CxrkitError(f"{place}probabilities have shape {probabilities.shape}; "
                          f"expected (N, {n_classes}) for the model's {n_classes} classes")
    bad = ~np.isfinite(probabilities).all(axis=1)
    if bad.any():
        raise CxrkitError(f"{place}the model produced NaN/inf probabilities for "
                          f"{int(bad.sum())} of {len(bad)} image(s); the checkpoint is broken "
                          "(did training diverge? retrain with a lower train.lr)")
    if (probabilities < -1e-6).any() or (probabilities > 1 + 1e-6).any() or not np.allclose(
            probabilities.sum(axis=1), 1.0, atol=1e-3):
        raise CxrkitError(f"{place}probabilities must lie in [0, 1] and sum to 1 per row")
    return probabilities


def check_both_classes(y_true: np.ndarray, classes: list[str], where: str) -> None:
    """Refuse a set with fewer than two classes: AUC, sensitivity and specificity need both."""
    present = sorted(set(np.asarray(y_true).tolist()))
    if len(present) < 2:
        only = classes[present[0]] if present else "none"
        raise CxrkitError(
            f"{where} has images of one class only ({only!r}, n={len(y_true)}); ROC-AUC, "
            "sensitivity and specificity need images of at least two classes; evaluate on a set "
            "that contains both (e.g. `data` with Normal/ and a disease folder)")


def per_class_specificity(confusion: np.ndarray) -> np.ndarray:
    """TN / (TN + FP) for each class of a confusion matrix (rows true, columns predicted)."""
    total = confusion.sum()
    predicted = confusion.sum(axis=0)
    actual = confusion.sum(axis=1)
    true_negative = total - predicted - actual + np.diag(confusion)
    negatives = total - actual
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(negatives > 0, true_negative / np.maximum(negatives, 1), np.nan)


def expected_calibration_error(correct: np.ndarray, confidence: np.ndarray,
                               n_bins: int = ECE_BINS) -> float:
    """ECE: bin-size-weighted mean |observed frequency - mean confidence| over equal-width bins."""
    correct = np.asarray(correct, dtype=np.float64)
    confidence = np.asarray(confidence, dtype=np.float64)
    bins = np.minimum((confidence * n_bins).astype(int), n_bins - 1)
    observed = np.bincount(bins, weights=correct, minlength=n_bins)
    predicted = np.bincount(bins, weights=confidence, minlength=n_bins)
    return float(np.abs(observed - predicted).sum() / max(len(correct), 1))


def calibration_target(y_true: np.ndarray, probabilities: np.ndarray,
                       positive_index: int | None) -> tuple[np.ndarray, np.ndarray]:
    """(outcome, probability) pairs a reliability diagram and ECE use.

    Binary: the positive-class probability against whether the image is positive.
    Multi-class: the top-label confidence against whether the top label is right.
    """
    if positive_index is not None:
        return (y_true == positive_index).astype(float), probabilities[:, positive_index]
    return (probabilities.argmax(axis=1) == y_true).astype(float), probabilities.max(axis=1)


def calibration_metrics(y_true: np.ndarray, probabilities: np.ndarray,
                        positive_index: int | None) -> dict:
    """Brier score (sklearn; multi-class form for more than two classes) and ECE."""
    if positive_index is not None:
        brier = skm.brier_score_loss(y_true == positive_index, probabilities[:, positive_index])
    else:
        labels = list(range(probabilities.shape[1]))
        brier = skm.brier_score_loss(y_true, probabilities, labels=labels)
    outcome, probability = calibration_target(y_true, probabilities, positive_index)
    return {"brier": float(brier), "ece": expected_calibration_error(outcome, probability)}


def roc_auc(y_true: np.ndarray, probabilities: np.ndarray, positive_index: int | None) -> dict:
    """ROC-AUC and PR-AUC (average precision); multi-class: one-vs-rest macro, present classes."""
    if positive_index is not None:
        positive = y_true == positive_index
        scores = probabilities[:, positive_index]
        return {"roc_auc": float(skm.roc_auc_score(positive, scores)),
                "pr_auc": float(skm.average_precision_score(positive, scores))}
    per_class_roc, per_class_pr = {}, {}
    for index in range(probabilities.shape[1]):
        positive = y_true == index
        if 0 < positive.sum() < len(positive):
            per_class_roc[index] = float(skm.roc_auc_score(positive, probabilities[:, index]))
            per_class_pr[index] = float(
                skm.average_precision_score(positive, probabilities[:, index]))
    return {"roc_auc": float(np.mean(list(per_class_roc.values()))),
            "pr_auc": float(np.mean(list(per_class_pr.values()))),
            "per_class_roc_auc": per_class_roc, "per_class_pr_auc": per_class_pr}


def compute_metrics(y_true: np.ndarray, probabilities: np.ndarray, y_pred: np.ndarray,
                    classes: list[str], positive_index: int | None = None) -> dict:
    """Every point metric of the report for integer labels, probabilities and decisions.

    `positive_index` marks a binary run's positive class; None means multi-class (or a
    binary run reported symmetrically). Keys are plain JSON values.
    """
    y_true = np.asarray(y_true, dtype=int)
    y_pred = np.asarray(y_pred, dtype=int)
    probabilities = check_probabilities(probabilities, len(classes))
    labels = list(range(len(classes)))
    confusion = skm.confusion_matrix(y_true, y_pred, labels=labels)
    precision, recall, f1, support = skm.precision_recall_fscore_support(
        y_true, y_pred, labels=labels, zero_division=0)
    specificity = per_class_specificity(confusion)
    with np.errstate(invalid="ignore", divide="ignore"):
        normalised = confusion / confusion.sum(axis=1, keepdims=True)
    per_class = {
        name: {"precision": float(precision[i]), "recall": float(recall[i]),
               "sensitivity": float(recall[i]), "specificity": _float(specificity[i]),
               "f1": float(f1[i]), "support": int(support[i])}
        for i, name in enumerate(classes)
    }
    result = {
        "n": int(len(y_true)),
        "accuracy": float(skm.accuracy_score(y_true, y_pred)),
        "balanced_accuracy": float(skm.balanced_accuracy_score(y_true, y_pred)),
        "per_class": per_class,
        "macro_avg": _average(precision, recall, f1, specificity, None),
        "weighted_avg": _average(precision, recall, f1, specificity, support),
        "confusion_matrix": confusion.tolist(),
        "confusion_matrix_normalised": np.nan_to_num(normalised).round(6).tolist(),
    }
    aucs = roc_auc(y_true, probabilities, positive_index)
    result["roc_auc"], result["pr_auc"] = aucs["roc_auc"], aucs["pr_auc"]
    if positive_index is not None:
        positive = classes[positive_index]
        result["positive_class"] = positive
        result["sensitivity"] = per_class[positive]["sensitivity"]
        result["specificity"] = per_class[positive]["specificity"]
    else:
        for key in ("per_class_roc_auc", "per_class_pr_auc"):
            result[key] = {classes[i]: value for i, value in aucs[key].items()}
    result.update(calibration_metrics(y_true, probabilities, positive_index))
    return result


def classification_report_text(y_true: np.ndarray, y_pred: np.ndarray, classes: list[str]) -> str:
    """scikit-learn's text classification report."""
    return skm.classification_report(y_true, y_pred, labels=list(range(len(classes))),
                                     target_names=classes, digits=4, zero_division=0)


def _average(precision, recall, f1, specificity, weights) -> dict:
    def mean(values):
        values = np.asarray(values, dtype=float)
        keep = np.isfinite(values)
        if weights is None:
            return float(values[keep].mean())
        return float(np.average(values[keep], weights=np.asarray(weights)[keep]))

    return {"precision": mean(precision), "recall": mean(recall), "f1": mean(f1),
            "specificity": mean(specificity)}


def _float(value) -> float | None:
    return None if not np.isfinite(value) else float(value)
