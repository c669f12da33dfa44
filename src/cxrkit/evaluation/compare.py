"""Several evaluated runs side by side: one table (Markdown and CSV) and overlaid ROC curves."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
from sklearn.metrics import roc_auc_score, roc_curve

from cxrkit.errors import CxrkitError
from cxrkit.evaluation.plots import plot_roc_overlay
from cxrkit.run import RunFolder
from cxrkit.run.folder import METRICS_FILE

OUTPUTS = ("comparison.md", "comparison.csv", "roc_overlay.png")


def _read_run(run_dir: Path) -> tuple[dict, pd.DataFrame]:
    run = RunFolder(run_dir)
    metrics, predictions_path = run.read_json(METRICS_FILE), run.file("predictions.csv")
    if metrics is None or not predictions_path.is_file():
        raise CxrkitError(f"{run_dir}: no metrics.json/predictions.csv; evaluate it first with "
                          f"`cxrkit evaluate {run_dir}`")
    return metrics, pd.read_csv(predictions_path)


def _interval(values) -> str:
    return "" if not values else f"{values[0]:.3f}-{values[1]:.3f}"


def _row(label: str, metrics: dict) -> dict:
    intervals = metrics["confidence_intervals"]
    point = metrics["operating_point"]
    return {
        "run": label,
        "model": metrics.get("model", {}).get("summary", {}).get("architecture"),
        "n_test": metrics["n"],
        "accuracy": round(metrics["accuracy"], 4),
        "accuracy_ci95": _interval(intervals["accuracy"]),
        "balanced_accuracy": round(metrics["balanced_accuracy"], 4),
        "roc_auc": round(metrics["roc_auc"], 4),
        "roc_auc_ci95": _interval(intervals["roc_auc"]),
        "sensitivity": round(metrics["sensitivity"], 4) if "sensitivity" in metrics else None,
        "sensitivity_ci95": _interval(intervals.get("sensitivity")),
        "specificity": round(metrics["specificity"], 4) if "specificity" in metrics else None,
        "specificity_ci95": _interval(intervals.get("specificity")),
        "macro_f1": round(metrics["macro_avg"]["f1"], 4),
        "operating_point": point["name"],
        "threshold": point["threshold"],
    }


def _curve(metrics: dict, predictions: pd.DataFrame) -> tuple[str, np.ndarray, np.ndarray, float]:
    """The positive-class ROC of a binary run, the micro-averaged one-vs-rest ROC otherwise."""
    classes = metrics["classes"]
    scores = predictions[[f"prob_{name}" for name in classes]].to_numpy()
    onehot = (predictions["true_label"].to_numpy()[:, None] == np.array(classes)[None, :])
    positive = metrics.get("positive_class")
    if positive is not None:
        index = classes.index(positive)
        truth, score, kind = onehot[:, index], scores[:, index], positive
    else:
        truth, score, kind = onehot.ravel(), scores.ravel(), "micro-average"
    fpr, tpr, _ = roc_curve(truth, score)
    return kind, fpr, tpr, float(roc_auc_score(truth, score))


def markdown_table(table: pd.DataFrame) -> str:
    """A GitHub-style Markdown table."""
    cells = table.astype(object).where(table.notna(), "")
    lines = ["| " + " | ".join(table.columns) + " |", "|" + "---|" * len(table.columns)]
    lines += ["| " + " | ".join(str(v) for v in row) + " |"
              for row in cells.itertuples(index=False)]
    return "\n".join(lines)


def compare_runs(run_dirs: list[str | Path], out_dir: str | Path = "comparison",
                 overwrite: bool = False) -> dict:
    """Write comparison.md, comparison.csv and roc_overlay.png; return the table and warnings."""
    if len(run_dirs) < 1:
        raise CxrkitError("give at least one run folder to compare")
    out_dir = Path(out_dir).expanduser()
    existing = [name for name in OUTPUTS if (out_dir / name).exists()]
    if existing and not overwrite:
        raise CxrkitError(f"{out_dir / existing[0]} exists; pass overwrite=True or choose out_dir=DIR")
    runs = [Path(r).expanduser() for r in run_dirs]
    names = [r.name for r in runs]
    labels = names if len(set(names)) == len(names) else [str(r) for r in runs]
    rows, curves, test_sets, warnings = [], [], {}, []
    for label, run in zip(labels, runs, strict=True):
        metrics, predictions = _read_run(run)
        rows.append(_row(label, metrics))
        kind, fpr, tpr, auc = _curve(metrics, predictions)
        curves.append((f"{label} [{kind}]", fpr, tpr, auc))
        test_sets[label] = frozenset(predictions["path"])
    if len(set(test_sets.values())) > 1:
        warnings.append("The runs were evaluated on different test images; their figures are not "
                        "directly comparable (train with `split_file` to share one test set).")
    table = pd.DataFrame(rows)
    out_dir.mkdir(parents=True, exist_ok=True)
    table.to_csv(out_dir / "comparison.csv", index=False)
    text = "# Run comparison (test split)\n\n" + markdown_table(table) + "\n"
    if warnings:
        text += "\n" + "\n".join(f"> **Warning:** {w}" for w in warnings) + "\n"
    text += "\n![ROC curves](roc_overlay.png)\n"
    (out_dir / "comparison.md").write_text(text)
    plot_roc_overlay(curves, out_dir / "roc_overlay.png", "ROC curves on the test split")
    return {"table": table, "markdown": text, "warnings": warnings,
            "files": [str(out_dir / name) for name in OUTPUTS]}
