"""Grad-CAM on the model's most confident hits and misses, for the evaluation report."""

from __future__ import annotations

import re
from pathlib import Path

import pandas as pd
from PIL import Image

from cxrkit.errors import CxrkitError
from cxrkit.explain.methods import explain
from cxrkit.explain.overlay import panel
from cxrkit.run import ModelCard

GROUPS = ("true positive", "false positive", "false negative")


def positive_classes(card: ModelCard) -> list[str]:
    """Binary: the model card's positive class; multi-class: every class (one-vs-rest)."""
    return [card.positive_class] if card.positive_class is not None else list(card.classes)


def select_cases(predictions: pd.DataFrame, positive: str, per_group: int) -> dict[str, pd.DataFrame]:
    """The most confident true positives, false positives and false negatives for `positive`."""
    probability = predictions[f"prob_{positive}"]
    is_true, is_pred = predictions["true"] == positive, predictions["pred"] == positive
    by_confidence = {
        "true positive": probability[is_true & is_pred].sort_values(ascending=False),
        "false positive": probability[~is_true & is_pred].sort_values(ascending=False),
        "false negative": probability[is_true & ~is_pred].sort_values(ascending=True),
    }
    return {group: predictions.loc[order.index[:per_group]] for group, order in by_confidence.items()}


def make_gallery(
    predictor, predictions: pd.DataFrame, out_dir: Path, per_group: int = 4, method: str = "gradcam"
) -> list[dict]:
    """Write explanation panels for the most confident TP/FP/FN (per class one-vs-rest when
    multi-class) into `out_dir`, replacing earlier gallery files; return one dict per panel
    with `group`, `title`, `image_path` (and `class`), ordered TP, FP, FN. `predictions`
    holds `pred`, the decisions at the evaluation's operating point.
    """
    needed = {"path", "true", "pred"} | {f"prob_{name}" for name in predictor.classes}
    missing = sorted(needed - set(predictions.columns))
    if missing:
        raise CxrkitError(f"predictions lack column(s) {', '.join(missing)} for the gallery")
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    entries = []
    for positive in positive_classes(predictor.card):
        for group, cases in select_cases(predictions, positive, per_group).items():
            for rank, row in enumerate(cases.itertuples(index=False), 1):
                explanation = explain(predictor, row.path, method, target=positive)
                title = f"{group}: {Path(row.path).name} (true {row.true}, predicted {row.pred})"
                image_path = out_dir / f"{_slug(positive)}_{_slug(group)}_{rank}.png"
                Image.fromarray(panel(explanation, subtitle=title)).save(image_path)
                entries.append(
                    {
                        "group": group,
                        "class": positive,
                        "title": title,
                        "image_path": str(image_path),
                    }
                )
    return sorted(entries, key=lambda entry: GROUPS.index(entry["group"]))


def _slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9]+", "-", text).strip("-").lower() or "class"
