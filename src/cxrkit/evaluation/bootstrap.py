"""95% confidence intervals by stratified bootstrap, vectorised over resamples.

Each resample draws, within every class, as many images as that class has (with
replacement), so class prevalence is fixed. A resample is represented by how many times it
picked each image (a weight); every metric is then a weighted sum, and ROC-AUC is the
Mann-Whitney statistic with ties counting one half, which is exactly scikit-learn's
`roc_auc_score`, computed for a block of resamples at once.
"""

from __future__ import annotations

import numpy as np

MAX_CELLS_PER_BLOCK = 4_000_000


def resample_weights(y_true: np.ndarray, n_resamples: int, rng: np.random.Generator) -> np.ndarray:
    """(n_resamples, N) counts: how often each image appears in each stratified resample."""
    y_true = np.asarray(y_true)
    n = len(y_true)
    counts = np.zeros(n_resamples * n, dtype=np.int64)
    offsets = (np.arange(n_resamples) * n)[:, None]
    for label in np.unique(y_true):
        members = np.flatnonzero(y_true == label)
        picks = members[rng.integers(0, len(members), size=(n_resamples, len(members)))]
        counts += np.bincount((picks + offsets).ravel(), minlength=n_resamples * n)
    return counts.reshape(n_resamples, n).astype(np.float64)


def weighted_auc(scores: np.ndarray, positive: np.ndarray, weights: np.ndarray) -> np.ndarray:
    """ROC-AUC of `scores` for each row of `weights` (ties count one half, as in sklearn)."""
    order = np.argsort(scores, kind="mergesort")
    sorted_scores = scores[order]
    starts = np.flatnonzero(np.r_[True, sorted_scores[1:] != sorted_scores[:-1]])
    sorted_weights = weights[:, order]
    is_positive = positive[order]
    positive_mass = np.add.reduceat(sorted_weights * is_positive, starts, axis=1)
    negative_mass = np.add.reduceat(sorted_weights * ~is_positive, starts, axis=1)
    negatives_below = np.cumsum(negative_mass, axis=1) - negative_mass
    wins = (positive_mass * (negatives_below + 0.5 * negative_mass)).sum(axis=1)
    pairs = positive_mass.sum(axis=1) * negative_mass.sum(axis=1)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(pairs > 0, wins / np.maximum(pairs, 1e-300), np.nan)


def bootstrap_distributions(y_true: np.ndarray, probabilities: np.ndarray, y_pred: np.ndarray,
                            positive_index: int | None, n_resamples: int = 1000,
                            seed: int = 0) -> dict[str, np.ndarray]:
    """Resampled accuracy, ROC-AUC and sensitivity/specificity (positive class, or per class)."""
    y_true = np.asarray(y_true, dtype=int)
    y_pred = np.asarray(y_pred, dtype=int)
    probabilities = np.asarray(probabilities, dtype=np.float64)
    n, n_classes = probabilities.shape
    rng = np.random.default_rng(seed)
    block = max(1, min(n_resamples, MAX_CELLS_PER_BLOCK // max(n, 1)))
    correct = (y_true == y_pred).astype(np.float64)
    classes = [positive_index] if positive_index is not None else list(range(n_classes))
    auc_classes = [positive_index] if positive_index is not None else [
        i for i in range(n_classes) if 0 < (y_true == i).sum() < n]
    parts: dict[str, list[np.ndarray]] = {}

    def add(name: str, values: np.ndarray) -> None:
        parts.setdefault(name, []).append(values)

    for start in range(0, n_resamples, block):
        weights = resample_weights(y_true, min(block, n_resamples - start), rng)
        total = weights.sum(axis=1)
        add("accuracy", weights @ correct / total)
        for index in classes:
            actual = y_true == index
            called = y_pred == index
            with np.errstate(invalid="ignore", divide="ignore"):
                add(f"sensitivity:{index}", weights @ (actual & called) / (weights @ actual))
                add(f"specificity:{index}", weights @ (~actual & ~called) / (weights @ ~actual))
        aucs = [weighted_auc(probabilities[:, i], y_true == i, weights) for i in auc_classes]
        add("roc_auc", np.mean(aucs, axis=0) if aucs else np.full(len(weights), np.nan))
    return {name: np.concatenate(values) for name, values in parts.items()}


def bootstrap_intervals(y_true: np.ndarray, probabilities: np.ndarray, y_pred: np.ndarray,
                        classes: list[str], positive_index: int | None, n_resamples: int = 1000,
                        seed: int = 0, level: float = 0.95) -> dict:
    """Percentile intervals: {"accuracy": [lo, hi], "roc_auc": ..., "sensitivity"/"specificity"
    (binary) or "per_class": {name: {"sensitivity": ..., "specificity": ...}} (multi-class)}."""
    samples = bootstrap_distributions(y_true, probabilities, y_pred, positive_index,
                                      n_resamples, seed)
    tails = [100 * (1 - level) / 2, 100 * (1 + level) / 2]

    def interval(name: str) -> list[float] | None:
        values = samples[name][np.isfinite(samples[name])]
        return [float(v) for v in np.percentile(values, tails)] if len(values) else None

    result = {"accuracy": interval("accuracy"), "roc_auc": interval("roc_auc")}
    if positive_index is not None:
        result["sensitivity"] = interval(f"sensitivity:{positive_index}")
        result["specificity"] = interval(f"specificity:{positive_index}")
    else:
        result["per_class"] = {
            name: {"sensitivity": interval(f"sensitivity:{i}"),
                   "specificity": interval(f"specificity:{i}")}
            for i, name in enumerate(classes)}
    return result


def bootstrap_threshold_rates(positive: np.ndarray, scores: np.ndarray, thresholds: np.ndarray,
                              n_resamples: int = 1000, seed: int = 0
                              ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Resampled sensitivity and specificity at every threshold, each (n_resamples, T), and AUC.

    The same stratified resamples as `resample_weights` with the same seed (an image is called
    positive when its score >= threshold). Each resample is reduced to how many positives and
    negatives it drew at each distinct score, so every threshold and the AUC come from one
    cumulative sum, without a (resamples, images) weight matrix.
    """
    positive = np.asarray(positive, dtype=bool)
    scores = np.asarray(scores, dtype=np.float64)
    thresholds = np.asarray(thresholds, dtype=np.float64)
    distinct, codes = np.unique(scores, return_inverse=True)
    n_codes = len(distinct)
    # images with a score >= threshold are those with a code >= this
    first_called = np.searchsorted(distinct, thresholds, side="left")
    rng = np.random.default_rng(seed)
    block = max(1, min(n_resamples, MAX_CELLS_PER_BLOCK // max(n_codes, len(scores), 1)))
    sensitivity, specificity, auc = [], [], []
    for start in range(0, n_resamples, block):
        size = min(block, n_resamples - start)
        offsets = (np.arange(size) * n_codes)[:, None]
        mass = {}
        for label in np.unique(positive):
            members = codes[positive == label]
            picks = members[rng.integers(0, len(members), size=(size, len(members)))]
            mass[label] = np.bincount((picks + offsets).ravel(),
                                      minlength=size * n_codes).reshape(size, n_codes)
        negative_mass, positive_mass = mass.get(False), mass.get(True)
        if negative_mass is None or positive_mass is None:
            nan = np.full((size, len(thresholds)), np.nan)
            sensitivity.append(nan), specificity.append(nan), auc.append(np.full(size, np.nan))
            continue
        padding = np.zeros((size, 1))
        positive_above = np.hstack([np.cumsum(positive_mass[:, ::-1], axis=1)[:, ::-1], padding])
        negative_below = np.hstack([padding, np.cumsum(negative_mass, axis=1)])
        n_positive, n_negative = positive_above[:, :1], negative_below[:, -1:]
        sensitivity.append(positive_above[:, first_called] / n_positive)
        specificity.append(negative_below[:, first_called] / n_negative)
        wins = (positive_mass * (negative_below[:, :-1] + 0.5 * negative_mass)).sum(axis=1)
        auc.append(wins / (n_positive[:, 0] * n_negative[:, 0]))
    return np.concatenate(sensitivity), np.concatenate(specificity), np.concatenate(auc)
