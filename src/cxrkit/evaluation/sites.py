"""Metrics with bootstrap CIs per site (hospital) and overall, at the run's operating point.

A model that scores well overall can fail at one site; this block of metrics.json shows each
site on its own. A site with images of one class gets the rates that are defined there
(specificity for normals only, sensitivity for positives only) and says why ROC-AUC is missing.
"""

from __future__ import annotations

import numpy as np

from cxrkit.evaluation.bootstrap import bootstrap_intervals
from cxrkit.evaluation.metrics import compute_metrics
from cxrkit.evaluation.thresholds import WHO_TB_TRIAGE, is_tuberculosis

SITE_METRICS = ("accuracy", "balanced_accuracy", "roc_auc", "sensitivity", "specificity")


def per_site_metrics(sites: np.ndarray, y_true: np.ndarray, probabilities: np.ndarray,
                     y_pred: np.ndarray, classes: list[str], positive_index: int | None,
                     n_bootstrap: int = 1000, seed: int = 0) -> dict:
    """{"sites": {name: entry}, "overall": entry}; each entry has n, counts per class, the
    metrics, `confidence_intervals` (95% bootstrap), and `note` when a metric is undefined;
    a tuberculosis run's entries say whether they meet the WHO triage target."""
    sites = np.asarray(sites).astype(str)
    y_true, y_pred = np.asarray(y_true, dtype=int), np.asarray(y_pred, dtype=int)
    probabilities = np.asarray(probabilities, dtype=np.float64)

    def entry(mask: np.ndarray) -> dict:
        return site_metrics(y_true[mask], probabilities[mask], y_pred[mask], classes,
                            positive_index, n_bootstrap, seed)

    names = list(dict.fromkeys(sites))
    return {"sites": {name: entry(sites == name) for name in names},
            "overall": entry(np.ones(len(sites), dtype=bool))}


def site_metrics(y_true: np.ndarray, probabilities: np.ndarray, y_pred: np.ndarray,
                 classes: list[str], positive_index: int | None, n_bootstrap: int, seed: int) -> dict:
    """The metrics of one site; ROC-AUC (and the rate of an absent class) is None when undefined."""
    present = sorted(set(y_true.tolist()))
    result: dict = {"n": int(len(y_true)),
                    "counts": {name: int((y_true == i).sum()) for i, name in enumerate(classes)}}
    if len(present) >= 2:
        full = compute_metrics(y_true, probabilities, y_pred, classes, positive_index)
        result |= {name: full[name] for name in SITE_METRICS if name in full}
    else:
        only = classes[present[0]]
        result |= {"accuracy": float((y_true == y_pred).mean()), "balanced_accuracy": None,
                   "roc_auc": None}
        defined = "accuracy"
        if positive_index is not None:
            positive = y_true == positive_index
            called = y_pred == positive_index
            result["sensitivity"] = float(called[positive].mean()) if positive.any() else None
            result["specificity"] = float((~called[~positive]).mean()) if (~positive).any() else None
            defined = "sensitivity" if positive.any() else "specificity"
        result["note"] = (f"ROC-AUC is undefined: every image of this site is {only}, and an AUC "
                          f"needs images of two classes; only {defined} and accuracy are reported.")
    intervals = bootstrap_intervals(y_true, probabilities, y_pred, classes, positive_index,
                                    n_bootstrap, seed)
    result["confidence_intervals"] = {name: intervals.get(name) for name in SITE_METRICS
                                      if name in intervals}
    if positive_index is not None and is_tuberculosis(classes[positive_index]):
        sensitivity, specificity = result.get("sensitivity"), result.get("specificity")
        result["who_tb_triage_met"] = (None if sensitivity is None or specificity is None else
                                       bool(sensitivity >= WHO_TB_TRIAGE["sensitivity"]
                                            and specificity >= WHO_TB_TRIAGE["specificity"]))
    return result


def per_site_lines(block: dict) -> list[str]:
    """One terminal line per site and overall: n, ROC-AUC, sensitivity, specificity with CIs."""
    lines = []
    for name, entry in [*block["sites"].items(), ("overall", block["overall"])]:
        cells = [f"{name:<14} n={entry['n']:<5}"]
        for metric in ("roc_auc", "sensitivity", "specificity", "accuracy"):
            if metric in entry:
                cells.append(f"{metric} {format_with_ci(entry[metric], entry['confidence_intervals'].get(metric))}")
        lines.append("  ".join(cells))
    return lines


def format_with_ci(value: float | None, interval: list[float] | None) -> str:
    """'0.912 [0.871, 0.944]', 'n/a' when undefined."""
    if value is None:
        return "n/a"
    return f"{value:.3f} [{interval[0]:.3f}, {interval[1]:.3f}]" if interval else f"{value:.3f}"
