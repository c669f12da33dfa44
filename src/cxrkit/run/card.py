"""The model card: every fact about a trained model that a runtime, a report or a reader needs.

Written identically (`ModelCard.to_dict()`) into `model.ckpt` (key `card`) and the ONNX
metadata, and read back by the PyTorch Predictor and the ONNX predictor alike. The facts fixed
at training (classes, positive class, preprocessing, output, architecture, training data, the
out-of-distribution reference's summary) are in model.ckpt from the start; the facts the run
gains later (the model's fingerprint and id, the frozen operating points, test and per-site
metrics) are added by `RunFolder.card()` and travel in the exported file.
"""

from __future__ import annotations

from dataclasses import dataclass, field, fields, replace

from cxrkit.data.preprocess import Preprocessing
from cxrkit.errors import CxrkitError
from cxrkit.run.decision import OperatingPoint, OperatingPoints, choose_point, positive_class_index

CARD_FORMAT = "cxrkit-card-v1"
RUN_FACTS = ("model_id", "model_sha256", "operating_points", "test_metrics", "per_site_metrics")


@dataclass(frozen=True)
class ModelCard:
    """What a model is and how it decides; `source` names where it was read (for messages)."""

    classes: tuple[str, ...]
    preprocessing: Preprocessing
    positive_class: str | None = None
    single_logit: bool = False
    model: dict = field(default_factory=dict)
    info: dict = field(default_factory=dict)
    training_data: dict | None = None
    ood: dict | None = None
    model_id: str | None = None
    model_sha256: str | None = None
    operating_points: dict | None = None
    test_metrics: dict | None = None
    per_site_metrics: dict | None = None
    source: str = field(default="the model", compare=False)

    @classmethod
    def for_model(cls, classes, preprocessing: Preprocessing, single_logit: bool = False,
                  info: dict | None = None) -> ModelCard:
        """The card of a model built in memory (no run folder): the positive class by the rule."""
        classes = tuple(classes)
        index = positive_class_index(classes)
        return cls(classes, preprocessing, None if index is None else classes[index],
                   bool(single_logit), {}, dict(info or {}))

    @property
    def positive_index(self) -> int | None:
        return None if self.positive_class is None else self.classes.index(self.positive_class)

    @property
    def model_name(self) -> str | None:
        return self.info.get("model_name") or self.model.get("name")

    def points(self) -> OperatingPoints | None:
        """The frozen operating points, checked against this card's model; None before evaluation."""
        if self.operating_points is None:
            return None
        return OperatingPoints(self.operating_points, self.classes, self.positive_index,
                               self.model_sha256, f"the operating points of {self.source}")

    def operating_point(self, which: OperatingPoint | str | float | None = None) -> OperatingPoint:
        """The point to decide at (see `cxrkit.run.decision.choose_point`); None: the default."""
        return choose_point(self.points(), self.classes, self.positive_index, which)

    def training_facts(self) -> ModelCard:
        """The card as model.ckpt holds it: without the facts the run gains after training."""
        return replace(self, **dict.fromkeys(RUN_FACTS))

    def to_dict(self) -> dict:
        """Plain JSON values, the same in model.ckpt and in the ONNX metadata."""
        data = {item.name: getattr(self, item.name) for item in fields(self) if item.name != "source"}
        data["classes"] = list(self.classes)
        data["preprocessing"] = self.preprocessing.to_dict()
        return {"format": CARD_FORMAT, **data}

    @classmethod
    def from_dict(cls, data: object, source: str) -> ModelCard:
        """A card from `to_dict()` output; one-line error naming `source` when malformed."""
        try:
            if not isinstance(data, dict) or data.get("format") != CARD_FORMAT:
                raise ValueError(f"not a {CARD_FORMAT} card")
            known = {item.name for item in fields(cls)} - {"source"}
            values = {key: value for key, value in data.items() if key in known}
            card = cls(**{**values, "classes": tuple(values["classes"]),
                          "preprocessing": Preprocessing.from_dict(values["preprocessing"]),
                          "source": source})
            card.check()
        except (KeyError, TypeError, ValueError, AttributeError) as error:
            raise CxrkitError(f"{source}: the model card is malformed ({type(error).__name__}: "
                              f"{error}); train or export the run again") from error
        return card

    @classmethod
    def from_checkpoint(cls, checkpoint: dict, source: str) -> ModelCard:
        """The card in a model.ckpt; a checkpoint from before the card gets one built from its
        keys (classes, preprocessing, model, single_logit, info, ood), the positive class by
        the rule."""
        if "card" in checkpoint:
            return cls.from_dict(checkpoint["card"], source)
        from cxrkit.ood.flags import reference_summary

        try:
            classes = tuple(str(name) for name in checkpoint["classes"])
            index = positive_class_index(classes)
            card = cls(classes, Preprocessing.from_dict(checkpoint["preprocessing"]),
                       None if index is None else classes[index],
                       bool(checkpoint.get("single_logit", False)), dict(checkpoint["model"]),
                       dict(checkpoint.get("info") or {}),
                       ood=reference_summary(checkpoint.get("ood")), source=source)
            card.check()
        except (KeyError, TypeError, ValueError, AttributeError) as error:
            reason = str(error).strip().splitlines()[0] if str(error).strip() else ""
            raise CxrkitError(f"{source}: the checkpoint is malformed ({type(error).__name__}: "
                              f"{reason}); train the run again") from error
        return card

    def check(self) -> None:
        """ValueError when the facts contradict each other."""
        if len(self.classes) < 2 or len(set(self.classes)) != len(self.classes):
            raise ValueError(f"classes {list(self.classes)}: need two or more distinct names")
        if self.positive_class is not None and self.positive_class not in self.classes:
            raise ValueError(f"positive class {self.positive_class!r} is not one of the classes")
        if self.single_logit and len(self.classes) != 2:
            raise ValueError("a single-logit model has two classes")
        for name in ("model", "info"):
            if not isinstance(getattr(self, name), dict):
                raise ValueError(f"{name} is not a mapping")
