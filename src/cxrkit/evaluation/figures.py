"""Every figure of the evaluation report, as PNG files keyed by report section."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
from sklearn.metrics import confusion_matrix

from cxrkit.evaluation.calibration import apply_temperature
from cxrkit.evaluation.options import EvaluateOptions
from cxrkit.evaluation.plots import (
    plot_class_distribution,
    plot_confusion,
    plot_pr,
    plot_reliability,
    plot_roc,
    plot_sample_grid,
)
from cxrkit.evaluation.result import Scored
from cxrkit.run import OperatingPoints, RunFolder

GRID_SIZE = 16


def make_figures(folder: Path, scored: Scored, predictions: pd.DataFrame, frozen: OperatingPoints,
                 selected: str, run: RunFolder, options: EvaluateOptions) -> dict[str, Path]:
    """ROC, PR, confusion matrix, reliability, class distribution, sample grid and training
    curves; the ROC marks the frozen points and `selected`."""
    y_true, probabilities, classes = scored.y_true, scored.probabilities, scored.classes
    positive_index = scored.positive_index
    temperature = frozen.document.get("temperature")
    confusion = confusion_matrix(y_true, scored.y_pred, labels=list(range(len(classes))))
    figures = {
        "roc": plot_roc(y_true, probabilities, classes, positive_index, frozen.document["points"],
                              selected, folder / "roc.png"),
        "pr": plot_pr(y_true, probabilities, classes, positive_index, folder / "pr.png"),
        "confusion": plot_confusion(confusion.tolist(), classes, folder / "confusion_matrix.png"),
        "reliability": plot_reliability(
            y_true, probabilities, positive_index, folder / "reliability.png",
            apply_temperature(probabilities, temperature) if options.calibrate and temperature else None),
    }
    distribution = run.split()[["split", "label"]]
    if options.external:
        distribution = pd.concat([distribution, pd.DataFrame({"split": "external",
                                                              "label": scored.table["label"]})])
    figures["class_distribution"] = plot_class_distribution(
        distribution, folder / "class_distribution.png")
    figures["samples"] = sample_grid(predictions, classes, positive_index, folder / "samples.png")
    curves = run.file("training_curves.png")
    if not curves.is_file():
        from cxrkit.training.curves import plot_training_curves

        curves = plot_training_curves(run.file("metrics.csv"), folder / "training_curves.png")
    if curves is not None:
        figures["training_curves"] = curves
    return figures


def lung_figure(predictor, table: pd.DataFrame, folder: Path) -> Path | None:
    """Lung overlays of a few evaluated images (lung_crop runs), None when none could be shown."""
    from cxrkit.segment.predict import overlay_examples, overlay_grid

    path = folder / "lungs.png"
    shown = overlay_grid(predictor.segmenter, overlay_examples(table["path"].tolist(),
                                                               table["lung_found"].tolist()),
                         path, predictor.preprocessing.lung_crop_margin)
    return path if shown else None


def sample_grid(predictions: pd.DataFrame, classes: list[str], positive_index: int | None,
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
    return plot_sample_grid(images, titles, frame["correct"].tolist(), path)
