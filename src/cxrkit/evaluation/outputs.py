"""The files an evaluation writes: predictions.csv, metrics.json, test_metrics.json, the
classification report, the Grad-CAM gallery and report.html; never over a user's files
without --overwrite."""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path

import pandas as pd

from cxrkit.errors import CxrkitError
from cxrkit.evaluation.metrics import classification_report_text
from cxrkit.evaluation.report import write_report
from cxrkit.evaluation.result import EvaluationResult, Scored
from cxrkit.run import RunFolder

logger = logging.getLogger(__name__)
RUN_OUTPUTS = ("metrics.json", "test_metrics.json", "classification_report.txt",
               "predictions.csv", "report.html", "MODEL_CARD.md", "CLAIM_checklist.md")


def guard_outputs(out_dir: Path, run_dir: Path, overwrite: bool) -> None:
    """Refuse to write over an earlier evaluation unless `overwrite`."""
    if overwrite or not out_dir.exists():
        return
    if out_dir.resolve() == run_dir.resolve():
        existing = [name for name in RUN_OUTPUTS if (out_dir / name).exists()]
    else:
        existing = sorted(p.name for p in out_dir.iterdir())
    if existing:
        raise CxrkitError(f"{out_dir} already has an evaluation ({existing[0]}); pass overwrite=True "
                          "to replace it, or out=DIR to write elsewhere")


def model_summary(predictor, run: RunFolder) -> dict:
    """What the report's model section shows: architecture, preprocessing, training record."""
    from cxrkit.models import count_parameters

    config = run.config()
    training = run.read_json("training.json") or {}
    model_config = config.get("model", {}) or {}
    summary = {"architecture": predictor.info.get("model_name") or model_config.get("name"),
               "classes (output order)": ", ".join(predictor.classes),
               "positive class": predictor.card.positive_class,
               "parameters": count_parameters(predictor.model),
               "output": "single logit (sigmoid)" if predictor.single_logit else "softmax",
               "recipe": config.get("recipe"),
               "pretrained weights": model_config.get("weights"),
               "frozen layers": model_config.get("freeze")}
    return {"summary": {k: v for k, v in summary.items() if v is not None},
            "preprocessing": predictor.preprocessing.to_dict(), "training": training,
            "config": config}


def write_outputs(out_dir: Path, result: EvaluationResult, scored: Scored, predictions: pd.DataFrame,
                  figures: dict[str, Path], predictor, gradcam: bool) -> None:
    """Every file of the evaluation into `out_dir` (plots are already in out_dir/plots)."""
    predictions.to_csv(out_dir / "predictions.csv", index=False)
    if scored.skipped:
        pd.DataFrame(scored.skipped, columns=["path", "reason"]).to_csv(
            out_dir / "skipped_images.csv", index=False)
    files = {"metrics": "metrics.json", "predictions": "predictions.csv",
             "classification_report": "classification_report.txt", "report": "report.html"}
    report_text = classification_report_text(scored.y_true, scored.y_pred, scored.classes)
    (out_dir / "classification_report.txt").write_text(report_text)
    if result.evaluated.kind == "split" and result.evaluated.split == "test":
        files["test_metrics"] = "test_metrics.json"
        (out_dir / "test_metrics.json").write_text(json.dumps(result.test_summary(), indent=2) + "\n")
    result.outputs = {"dir": str(out_dir), "files": files,
                      "plots": {k: os.path.relpath(v, out_dir) for k, v in figures.items()}}
    (out_dir / "metrics.json").write_text(json.dumps(result.to_document(), indent=2) + "\n")
    gallery = _gallery(predictor, predictions, out_dir) if gradcam else None
    write_report(out_dir / "report.html", result.to_document(), figures, gallery, report_text)


def _gallery(predictor, predictions: pd.DataFrame, out_dir: Path) -> list[dict] | None:
    """Grad-CAM examples from cxrkit.explain.gallery; None when that module is not installed."""
    from cxrkit.extras import install_hint

    try:
        from cxrkit.explain.gallery import make_gallery

        renamed = predictions.rename(columns={"true_label": "true", "predicted_label": "pred"})
        return make_gallery(predictor, renamed, out_dir / "gallery", per_group=4)
    except ModuleNotFoundError as error:
        hint = install_hint(error)
        if hint is None:
            raise
        logger.warning("Grad-CAM gallery skipped: %s", hint.replace("this needs", "it needs"))
        return None
