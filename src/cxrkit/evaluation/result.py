"""The typed outcome of an evaluation; `to_document()` is metrics.json.

`Scored` is what the model did on the evaluated images (probabilities and the decisions at
the operating point); `EvaluationResult` is what the evaluation found. The result also reads
as the metrics.json mapping (`result["roc_auc"]`), so code written against the document keeps
working.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from cxrkit.version import __version__

POINT_FILE = "operating_points.json"


@dataclass(frozen=True)
class Scored:
    """The evaluated images (path, label[, site, ood_score, lung_found]), their probabilities,
    true and decided class indices, and the images that could not be read."""

    table: pd.DataFrame
    probabilities: np.ndarray
    y_true: np.ndarray
    y_pred: np.ndarray
    classes: list[str]
    positive_index: int | None
    skipped: list[tuple[str, str]]


@dataclass(frozen=True)
class Evaluated:
    """Which images were evaluated."""

    kind: str  # "split" or "external"
    split: str | None
    source: str
    n: int
    n_skipped: int
    class_map: dict | None

    def to_dict(self) -> dict:
        return {"kind": self.kind, "split": self.split, "source": self.source, "n": self.n,
                "n_skipped": self.n_skipped, "class_map": self.class_map}


@dataclass(frozen=True)
class ChosenPoint:
    """The operating point the evaluation decided at, and where it was chosen."""

    name: str
    threshold: float | None
    rule: str | None
    chosen_on: str
    n_val: int | None
    chosen_at: str | None
    run_default: str
    source: str
    warning: str | None = None

    def to_dict(self) -> dict:
        document = {"name": self.name, "threshold": self.threshold, "rule": self.rule,
                    "chosen_on": self.chosen_on, "n_val": self.n_val, "chosen_at": self.chosen_at,
                    "file": POINT_FILE, "source": self.source}
        if self.warning:
            document["warning"] = self.warning
        return {**document, "run_default": self.run_default}


@dataclass
class EvaluationResult(Mapping):
    """Everything metrics.json holds, typed at the top level.

    `metrics` is the point metrics of `cxrkit.evaluation.metrics.compute_metrics` (accuracy,
    ROC-AUC, per-class figures, sensitivity/specificity of the positive class, ...), merged
    into the top of metrics.json.
    """

    run: str
    created: str
    evaluated: Evaluated
    classes: list[str]
    metrics: dict
    confidence_intervals: dict
    bootstrap: dict
    operating_point: ChosenPoint
    operating_points: dict
    calibration: dict
    warnings: list[str]
    skipped: list[dict]
    out_of_distribution: dict | None
    model: dict = field(default_factory=dict)
    lungs: dict | None = None
    who_tb_triage: dict | None = None
    per_site: dict | None = None
    outputs: dict = field(default_factory=dict)

    @property
    def accuracy(self) -> float:
        return self.metrics["accuracy"]

    @property
    def roc_auc(self) -> float:
        return self.metrics["roc_auc"]

    @property
    def sensitivity(self) -> float | None:
        return self.metrics.get("sensitivity")

    @property
    def specificity(self) -> float | None:
        return self.metrics.get("specificity")

    @property
    def positive_class(self) -> str | None:
        return self.metrics.get("positive_class")

    def to_document(self) -> dict:
        """The metrics.json document."""
        document = {"cxrkit_version": __version__, "created": self.created, "run": self.run,
                    "evaluated": self.evaluated.to_dict(), "classes": self.classes, **self.metrics,
                    "confidence_intervals": self.confidence_intervals, "bootstrap": self.bootstrap,
                    "operating_point": self.operating_point.to_dict(),
                    "operating_points": self.operating_points, "calibration": self.calibration,
                    "warnings": self.warnings, "skipped": self.skipped,
                    "out_of_distribution": self.out_of_distribution}
        for name in ("lungs", "who_tb_triage", "per_site"):
            if getattr(self, name) is not None:
                document[name] = getattr(self, name)
        document["model"] = self.model
        if self.outputs:
            document["outputs"] = self.outputs
        return document

    def test_summary(self) -> dict:
        """The compact test_metrics.json: point metrics, intervals and the operating point used."""
        skip = {"cxrkit_version", "run", "operating_points", "calibration", "skipped", "outputs",
                "who_tb_triage", "bootstrap", "model"}
        return {key: value for key, value in self.to_document().items() if key not in skip}

    def __getitem__(self, key: str):
        return self.to_document()[key]

    def __iter__(self) -> Iterator[str]:
        return iter(self.to_document())

    def __len__(self) -> int:
        return len(self.to_document())
