"""The report's figures as PNG files (matplotlib's object API: no pyplot, no global state)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
from matplotlib.figure import Figure
from sklearn.calibration import calibration_curve
from sklearn.metrics import precision_recall_curve, roc_curve

from cxrkit.evaluation.metrics import ECE_BINS, calibration_target

DPI = 110


def _save(figure: Figure, path: Path) -> Path:
    figure.tight_layout()
    figure.savefig(path, dpi=DPI, pil_kwargs={"compress_level": 3})
    return path


def _one_vs_rest(y_true: np.ndarray, probabilities: np.ndarray, classes: list[str],
                 positive_index: int | None):
    """(name, is_positive, scores) per curve: the positive class, or each class vs the rest."""
    indices = [positive_index] if positive_index is not None else range(len(classes))
    for index in indices:
        positive = y_true == index
        if 0 < positive.sum() < len(positive):
            yield classes[index], positive, probabilities[:, index]


def plot_roc(y_true: np.ndarray, probabilities: np.ndarray, classes: list[str],
             positive_index: int | None, points: dict[str, dict], selected: str,
             path: Path) -> Path:
    """ROC curve(s) with each operating point's threshold marked where it lands on this data."""
    figure = Figure(figsize=(5.5, 5))
    axes = figure.subplots()
    for name, positive, scores in _one_vs_rest(y_true, probabilities, classes, positive_index):
        fpr, tpr, _ = roc_curve(positive, scores)
        axes.plot(fpr, tpr, label=f"{name} (AUC {np.trapezoid(tpr, fpr):.3f})")
        if positive_index is None:
            continue
        for point_name, point in points.items():
            if "threshold" not in point:
                continue
            called = scores >= point["threshold"]
            marker = "*" if point_name == selected else "o"
            axes.plot((called & ~positive).sum() / (~positive).sum(),
                      (called & positive).sum() / positive.sum(), marker, markersize=12 if
                      point_name == selected else 6,
                      label=f"{point_name} (t={point['threshold']:.3f})")
    axes.plot([0, 1], [0, 1], ":", color="grey")
    axes.set(xlabel="1 - specificity (false positive rate)",
             ylabel="sensitivity (true positive rate)", title="ROC curve",
             xlim=(-0.01, 1.01), ylim=(-0.01, 1.01))
    axes.legend(loc="lower right", fontsize=8)
    return _save(figure, path)


def plot_pr(y_true: np.ndarray, probabilities: np.ndarray, classes: list[str],
            positive_index: int | None, path: Path) -> Path:
    """Precision-recall curve(s) with the prevalence as the no-skill line."""
    figure = Figure(figsize=(5.5, 5))
    axes = figure.subplots()
    for name, positive, scores in _one_vs_rest(y_true, probabilities, classes, positive_index):
        precision, recall, _ = precision_recall_curve(positive, scores)
        line = axes.plot(recall, precision, label=name)[0]
        axes.axhline(positive.mean(), linestyle=":", color=line.get_color())
    axes.set(xlabel="recall (sensitivity)", ylabel="precision (PPV)",
             title="Precision-recall curve", xlim=(-0.01, 1.01), ylim=(-0.01, 1.01))
    axes.legend(loc="lower left", fontsize=8)
    return _save(figure, path)


def plot_confusion(confusion: np.ndarray, classes: list[str], path: Path) -> Path:
    """Counts and row-normalised (per true class) confusion matrices side by side."""
    confusion = np.asarray(confusion)
    with np.errstate(invalid="ignore", divide="ignore"):
        normalised = np.nan_to_num(confusion / confusion.sum(axis=1, keepdims=True))
    figure = Figure(figsize=(4 + 2.4 * len(classes), 2.5 + 1.1 * len(classes)))
    panels = zip(figure.subplots(1, 2), (confusion, normalised),
                 ("counts", "normalised by true class"), ("{:d}", "{:.2f}"), strict=True)
    for axes, values, title, fmt in panels:
        axes.imshow(normalised, cmap="Blues", vmin=0, vmax=1)
        for (row, column), value in np.ndenumerate(values):
            axes.text(column, row, fmt.format(value), ha="center", va="center",
                      color="white" if normalised[row, column] > 0.5 else "black")
        axes.set_xticks(range(len(classes)), classes, rotation=30, ha="right")
        axes.set_yticks(range(len(classes)), classes)
        axes.set(xlabel="predicted", ylabel="true", title=title)
    return _save(figure, path)


def plot_reliability(y_true: np.ndarray, probabilities: np.ndarray, positive_index: int | None,
                     path: Path, calibrated: np.ndarray | None = None) -> Path:
    """Reliability diagram (observed frequency per probability bin), raw and temperature-scaled."""
    figure = Figure(figsize=(5.5, 5))
    axes = figure.subplots()
    axes.plot([0, 1], [0, 1], ":", color="grey", label="perfectly calibrated")
    for label, values in (("model", probabilities), ("temperature-scaled", calibrated)):
        if values is None:
            continue
        outcome, probability = calibration_target(y_true, values, positive_index)
        observed, predicted = calibration_curve(outcome, probability, n_bins=ECE_BINS,
                                                strategy="uniform")
        axes.plot(predicted, observed, "o-", label=label)
    what = "P(positive)" if positive_index is not None else "top-class confidence"
    axes.set(xlabel=f"predicted {what}", ylabel="observed frequency", title="Reliability diagram",
             xlim=(0, 1), ylim=(0, 1))
    axes.legend(loc="upper left", fontsize=8)
    return _save(figure, path)


def plot_class_distribution(table: pd.DataFrame, path: Path) -> Path:
    """Images per class in each split (a `split` and a `label` column)."""
    counts = table.groupby(["split", "label"]).size().unstack(fill_value=0)
    order = [s for s in ("train", "val", "test") if s in counts.index]
    counts = counts.loc[order + [s for s in counts.index if s not in order]]
    figure = Figure(figsize=(6, 4))
    axes = figure.subplots()
    width = 0.8 / len(counts.columns)
    for offset, label in enumerate(counts.columns):
        positions = np.arange(len(counts)) + offset * width
        bars = axes.bar(positions, counts[label], width, label=label)
        axes.bar_label(bars, fontsize=8)
    axes.set_xticks(np.arange(len(counts)) + width * (len(counts.columns) - 1) / 2, counts.index)
    axes.set(ylabel="images", title="Class distribution per split")
    axes.legend(fontsize=8)
    return _save(figure, path)


def plot_sample_grid(images: list[np.ndarray], titles: list[str], correct: list[bool], path: Path,
                     columns: int = 4) -> Path:
    """Thumbnails titled with true/predicted class and probability; green right, red wrong."""
    rows = max(1, int(np.ceil(len(images) / columns)))
    figure = Figure(figsize=(3 * columns, 3.6 * rows))
    figure.subplots_adjust(left=0.01, right=0.99, bottom=0.01, top=0.93, wspace=0.05, hspace=0.35)
    grid = np.atleast_1d(figure.subplots(rows, columns)).ravel()
    for axes in grid:
        axes.set_axis_off()
    for axes, image, title, right in zip(grid, images, titles, correct, strict=False):
        axes.imshow(image, cmap="gray", vmin=0, vmax=255)
        axes.set_title(title, fontsize=7.5, color="green" if right else "red")
    figure.savefig(path, dpi=DPI, pil_kwargs={"compress_level": 3})
    return path


def plot_roc_overlay(curves: list[tuple[str, np.ndarray, np.ndarray, float]], path: Path,
                     title: str = "ROC curves") -> Path:
    """Several runs' ROC curves on one axes: (label, fpr, tpr, auc) each."""
    figure = Figure(figsize=(6, 5.5))
    axes = figure.subplots()
    for label, fpr, tpr, auc in curves:
        axes.plot(fpr, tpr, label=f"{label} (AUC {auc:.3f})")
    axes.plot([0, 1], [0, 1], ":", color="grey")
    axes.set(xlabel="1 - specificity", ylabel="sensitivity", title=title,
             xlim=(-0.01, 1.01), ylim=(-0.01, 1.01))
    axes.legend(loc="lower right", fontsize=8)
    return _save(figure, path)
