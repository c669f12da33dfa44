"""Screening tables over thresholds: sensitivity and specificity with bootstrap CIs, and what
they mean for a programme at a stated prevalence (WHO TB screening calibration style).

At prevalence p, sensitivity se and specificity sp, per person screened:
referred = se p + (1 - sp)(1 - p); PPV = se p / referred; NPV = sp (1 - p) / (1 - referred);
number needed to test (confirmatory tests per case found) = referred / (se p) = 1 / PPV;
cases missed = p (1 - se); cost per case found = cost of one confirmatory test x NNT.
Every derived figure gets its CI from the same bootstrap resamples of se and sp.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from cxrkit.evaluation.bootstrap import bootstrap_threshold_rates

WHO_TPP = {"minimal": {"sensitivity": 0.90, "specificity": 0.70},
           "optimal": {"sensitivity": 0.95, "specificity": 0.80}}
GRID_POINTS = 101
LEVEL = 0.95


def threshold_grid(scores: np.ndarray, extra: list[float] | tuple = ()) -> np.ndarray:
    """Thresholds at evenly spaced score quantiles (so referral steps evenly), plus `extra`."""
    quantiles = np.quantile(np.asarray(scores, dtype=np.float64), np.linspace(0, 1, GRID_POINTS))
    return np.unique(np.r_[quantiles, np.asarray(extra, dtype=np.float64)])


def programme_figures(sensitivity, specificity, prevalence: float, cost_test: float | None) -> dict:
    """Per-threshold programme figures (works elementwise on arrays of any shape)."""
    sensitivity, specificity = np.asarray(sensitivity), np.asarray(specificity)
    found = sensitivity * prevalence
    referred = found + (1 - specificity) * (1 - prevalence)
    with np.errstate(invalid="ignore", divide="ignore"):
        figures = {"ppv": found / referred,
                   "npv": specificity * (1 - prevalence) / (1 - referred),
                   "referred_share": referred,
                   "tests_per_1000": 1000 * referred,
                   "number_needed_to_test": referred / found,
                   "missed_per_1000": 1000 * prevalence * (1 - sensitivity)}
        if cost_test is not None:
            figures["cost_per_case_found"] = cost_test * referred / found
    return figures


def rates_at(positive: np.ndarray, scores: np.ndarray, thresholds: np.ndarray
             ) -> tuple[np.ndarray, np.ndarray]:
    """Exact sensitivity and specificity at each threshold (called when score >= threshold)."""
    positive = np.asarray(positive, dtype=bool)
    scores = np.asarray(scores, dtype=np.float64)
    thresholds = np.asarray(thresholds, dtype=np.float64)
    positive_scores, negative_scores = np.sort(scores[positive]), np.sort(scores[~positive])
    called_positive = len(positive_scores) - np.searchsorted(positive_scores, thresholds, "left")
    called_negative = len(negative_scores) - np.searchsorted(negative_scores, thresholds, "left")
    with np.errstate(invalid="ignore", divide="ignore"):
        return (called_positive / len(positive_scores),
                1 - called_negative / len(negative_scores))


def threshold_table(positive: np.ndarray, scores: np.ndarray, thresholds: np.ndarray,
                    prevalence: float, cost_test: float | None = None, n_resamples: int = 1000,
                    seed: int = 0) -> tuple[pd.DataFrame, dict]:
    """One row per threshold: sensitivity, specificity and programme figures, each with a 95% CI.

    Returns (table, {"roc_auc": value, "roc_auc_ci95": [lo, hi]}).
    """
    from sklearn.metrics import roc_auc_score

    sensitivity, specificity = rates_at(positive, scores, thresholds)
    boot_sensitivity, boot_specificity, boot_auc = bootstrap_threshold_rates(
        positive, scores, thresholds, n_resamples, seed)
    columns = {"threshold": thresholds, "sensitivity": sensitivity, "specificity": specificity}
    columns |= programme_figures(sensitivity, specificity, prevalence, cost_test)
    resampled = {"sensitivity": boot_sensitivity, "specificity": boot_specificity}
    resampled |= programme_figures(boot_sensitivity, boot_specificity, prevalence, cost_test)
    table = pd.DataFrame(columns)
    tails = [100 * (1 - LEVEL) / 2, 100 * (1 + LEVEL) / 2]
    for name, values in resampled.items():
        low, high = _percentiles(values, tails)
        position = table.columns.get_loc(name) + 1
        table.insert(position, f"{name}_high", high)
        table.insert(position, f"{name}_low", low)
    auc_interval = _percentiles(boot_auc[:, None], tails)
    summary = {"roc_auc": float(roc_auc_score(positive, scores)),
               "roc_auc_ci95": [float(auc_interval[0][0]), float(auc_interval[1][0])]}
    return table, summary


def _percentiles(values: np.ndarray, tails: list[float]) -> tuple[np.ndarray, np.ndarray]:
    """Percentile interval per column, ignoring undefined (NaN/inf) resamples."""
    import warnings

    values = np.where(np.isfinite(values), values, np.nan)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # an all-undefined column: no interval
        low, high = np.nanpercentile(values, tails, axis=0)
    return low, high


def who_rows(table: pd.DataFrame) -> list[dict]:
    """Per WHO target product profile: the thresholds meeting it, and the best-specificity one
    reaching its sensitivity (whether or not its specificity is reached)."""
    rows = []
    for profile, target in WHO_TPP.items():
        meets = (table["sensitivity"] >= target["sensitivity"]) & (
            table["specificity"] >= target["specificity"])
        reaching = table[table["sensitivity"] >= target["sensitivity"]]
        best = reaching.loc[reaching["threshold"].idxmax()] if len(reaching) else None
        row = {"profile": profile, "target_sensitivity": target["sensitivity"],
               "target_specificity": target["specificity"], "n_thresholds_meeting": int(meets.sum()),
               "thresholds_meeting": ([float(table.loc[meets, "threshold"].min()),
                                       float(table.loc[meets, "threshold"].max())]
                                      if meets.any() else None)}
        if best is not None:
            row |= {"threshold": float(best["threshold"]),
                    **{key: _finite(best[key]) for key in (
                        "sensitivity", "sensitivity_low", "sensitivity_high", "specificity",
                        "specificity_low", "specificity_high", "referred_share", "ppv",
                        "number_needed_to_test")},
                    "met": bool(best["specificity"] >= target["specificity"])}
        else:
            row |= {"threshold": None, "met": False}
        rows.append(row)
    return rows


def _finite(value) -> float | None:
    value = float(value)
    return value if np.isfinite(value) else None
