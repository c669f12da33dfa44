"""How probabilities become a class, in one place: an OperatingPoint and the run's frozen set.

An image is called the positive class when P(positive) >= threshold; a point without a
threshold decides the most probable class. `Predictor.predict`, `cxrkit predict`, the REST API,
the web page, the evaluation's predictions.csv and the Grad-CAM gallery all decide through
`OperatingPoint.decide`, so they agree.

The frozen set (`operating_points.json`) is always checked against the fingerprint of the
model it was chosen for before any of its points is used.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, replace

import numpy as np

from cxrkit.errors import CxrkitError

ARGMAX = "argmax"
SITE_PREFIX = "site:"
NOT_EVALUATED = "no frozen operating point (the run has not been evaluated)"
_NEGATIVE_NAME = re.compile(r"(?<![a-z])(normal|healthy|negative|no[ _-]?finding)(?![a-z])")


def positive_class_index(classes: list[str] | tuple[str, ...], declared: str | None = None) -> int | None:
    """Index of the class a threshold is put on: the positive ("disease") class of a binary run.

    The rule, decided once and stored in the model card: `declared` (the config's
    `data.positive_class`) when given; else, of two classes, the one not named like normal
    (normal, healthy, negative, No Finding), or the second when both or neither are (scikit-
    learn's `pos_label` convention); None for more than two classes (the most probable class
    decides).
    """
    classes = list(classes)
    if declared is not None:
        if declared not in classes:
            raise CxrkitError(f"positive_class {declared!r} is not one of the classes "
                              f"({', '.join(classes)}); give one of them or leave it unset")
        if len(classes) != 2:
            raise CxrkitError(f"positive_class {declared!r}: a positive class applies to two-class "
                              f"runs only (this one has {len(classes)}); leave it unset")
        return classes.index(declared)
    if len(classes) != 2:
        return None
    negative = [bool(_NEGATIVE_NAME.search(name.lower())) for name in classes]
    if negative.count(True) == 1:
        return negative.index(False)
    return 1


def sensitivity_point_name(target: float) -> str:
    """'sensitivity>=0.90' for a target of 0.9."""
    return f"sensitivity>={target:.2f}"


@dataclass(frozen=True)
class OperatingPoint:
    """One decision rule: P(positive) >= `threshold`, or the most probable class without one.

    `name` says which point it is (argmax, youden, sensitivity>=0.90, site:NAME, ...) and
    `source` where it was chosen (the validation split, a site's calibration data, ...).
    """

    name: str
    classes: tuple[str, ...]
    positive_index: int | None = None
    threshold: float | None = None
    source: str = NOT_EVALUATED
    rule: str | None = None

    @property
    def positive_class(self) -> str | None:
        return None if self.positive_index is None else self.classes[self.positive_index]

    def decide(self, probabilities: np.ndarray) -> np.ndarray:
        """Class indices for (N, n_classes) probabilities (a single row gives one index)."""
        probabilities = np.atleast_2d(np.asarray(probabilities))
        if self.positive_index is None or self.threshold is None:
            return probabilities.argmax(axis=1)
        called = probabilities[:, self.positive_index] >= self.threshold
        return np.where(called, self.positive_index, 1 - self.positive_index)

    def labels(self, probabilities: np.ndarray) -> list[str]:
        """Class names decided for each row of `probabilities`."""
        return [self.classes[index] for index in self.decide(probabilities)]

    def predictions(self, probabilities: np.ndarray) -> list[dict]:
        """Per row: probabilities by class, decision, threshold, positive class and point name
        (what the API, FHIR, DICOM SR and the request log carry)."""
        probabilities = np.atleast_2d(np.asarray(probabilities))
        return [{"probabilities": dict(zip(self.classes, map(float, row), strict=True)),
                 "decision": decision, "threshold": self.threshold,
                 "positive_class": self.positive_class, "operating_point": self.name}
                for row, decision in zip(probabilities, self.labels(probabilities), strict=True)]

    def with_threshold(self, threshold: float, source: str) -> OperatingPoint:
        """The same positive class at another threshold (e.g. the web page's slider)."""
        return replace(self, name="adjusted", threshold=float(threshold), source=source,
                       rule="a threshold set by hand")

    def describe(self) -> str:
        """One line: the rule, its threshold and where it was chosen."""
        if self.positive_index is None:
            return "the most probable class (a multi-class model has no threshold)"
        if self.threshold is None:
            return f"the most probable class; {self.source}"
        rule = f" ({self.rule})" if self.rule else ""
        return (f"operating point {self.name}{rule}: {self.positive_class} when "
                f"P({self.positive_class}) >= {self.threshold:.4g}, chosen on {self.source}")

    def as_dict(self) -> dict:
        return {"rule": "threshold" if self.threshold is not None else ARGMAX,
                "operating_point": self.name, "positive_class": self.positive_class,
                "threshold": self.threshold, "source": self.source, "description": self.describe()}


class StaleOperatingPoints(CxrkitError):
    """The frozen operating points belong to other weights than the model's now."""

    def __init__(self, message: str, document: dict):
        super().__init__(message)
        self.document = document


class OperatingPoints:
    """A run's frozen operating points (the `operating_points.json` document), checked.

    Built only from a document that names the model it was chosen for (`model_sha256`);
    `fingerprint` is the sha256 of that model's model.ckpt, None where it is not known (ONNX
    files exported before the card). A malformed document or one of other weights is refused.
    """

    def __init__(self, document: dict, classes: tuple[str, ...], positive_index: int | None,
                 fingerprint: str | None, source: str):
        self.document, self.classes, self.source = document, tuple(classes), source
        self.positive_index = positive_index
        self._check(fingerprint)

    def _check(self, fingerprint: str | None) -> None:
        document, source = self.document, self.source
        try:
            selected = str(document["selected"])
            points = document["points"]
            for point in [points[selected], *points.values()]:
                threshold = point.get("threshold")
                if threshold is not None and not (isinstance(threshold, (int, float))
                                                  and 0.0 <= threshold <= 1.0):
                    raise ValueError(f"threshold {threshold!r}")
            positive = document.get("positive_class")
        except (KeyError, TypeError, ValueError, AttributeError) as error:
            raise CxrkitError(f"{source}: operating point is malformed ({error!r} missing or invalid); "
                              "re-run `cxrkit evaluate RUN --overwrite`") from error
        if positive != self.positive_class:
            raise CxrkitError(f"{source}: operating point (positive class {positive!r}) does not fit "
                              f"the model (classes {list(self.classes)}, positive class "
                              f"{self.positive_class!r}); re-run `cxrkit evaluate RUN --overwrite`")
        recorded = document.get("model_sha256")
        if fingerprint is not None and recorded != fingerprint:
            why = "a different model.ckpt" if recorded else "an unknown model.ckpt (no fingerprint)"
            raise StaleOperatingPoints(
                f"{source} was chosen for {why}, not the one in this run; re-evaluate the run "
                "first (`cxrkit evaluate RUN --overwrite`)", document)
        self.fingerprint = fingerprint

    @property
    def positive_class(self) -> str | None:
        return None if self.positive_index is None else self.classes[self.positive_index]

    @property
    def selected(self) -> str:
        return self.document["selected"]

    @property
    def sites(self) -> dict[str, dict]:
        return dict(self.document.get("sites") or {})

    def resolve_name(self, name: str) -> str:
        """'sensitivity' is shorthand for the run's sensitivity point."""
        if name == "sensitivity":
            return sensitivity_point_name(self.document.get("target_sensitivity") or 0.90)
        return name

    def default(self) -> OperatingPoint:
        """The run's default point, changed only by `cxrkit evaluate RUN --operating-point X
        --set-default`."""
        return self.point(self.selected)

    def point(self, name: str) -> OperatingPoint:
        """A frozen point by name (argmax, youden, max_f1, sensitivity, sensitivity>=S) or a
        site point (`site:NAME`)."""
        if name.startswith(SITE_PREFIX):
            return self.site(name.removeprefix(SITE_PREFIX))
        name = self.resolve_name(name)
        points = self.document["points"]
        if name not in points:
            raise CxrkitError(f"operating_point={name!r} is not one of this run's points "
                              f"({', '.join(points)}); for another sensitivity target use "
                              "operating_point=sensitivity target_sensitivity=S set_default=True overwrite=True")
        point = points[name]
        chosen_on = self.document.get("chosen_on", "val")
        where = "the validation split" if chosen_on == "val" else str(chosen_on)
        details = [f"{self.document['n_val']} images" if self.document.get("n_val") else "",
                   str(self.document.get("created") or "")]
        details = [text for text in details if text]
        source = where + (f" ({', '.join(details)})" if details else "")
        return OperatingPoint(name, self.classes, self.positive_index, point.get("threshold"),
                              source, point.get("rule"))

    def site(self, name: str) -> OperatingPoint:
        """Site point `name` (frozen by `cxrkit calibrate --select`), refused when it was
        calibrated for another model.ckpt."""
        sites = self.sites
        if name not in sites:
            known = ", ".join(sites) or "none"
            raise CxrkitError(f"site={name}: {self.source} has no such site operating point (it "
                              f"has: {known}); make one with `cxrkit calibrate RUN --data SITE.csv "
                              f"--site {name} --select 'sensitivity>=0.90'`")
        point = sites[name]
        if self.fingerprint is None or point.get("model_sha256") != self.fingerprint:
            raise CxrkitError(f"site={name}: its threshold was calibrated for a different "
                              f"model.ckpt than the one {self.source} belongs to; calibrate this "
                              "model again (`cxrkit calibrate ... --overwrite`)")
        data = point.get("data") or {}
        source = (f"site calibration data {data.get('source')} (sha256 "
                  f"{str(data.get('sha256'))[:12]}, {data.get('n_calibration')} of {data.get('n')} "
                  f"images, {point.get('created')})")
        return OperatingPoint(SITE_PREFIX + name, self.classes, self.positive_index,
                              float(point["threshold"]), source, point.get("rule"))


def choose_point(points: OperatingPoints | None, classes: tuple[str, ...], positive_index: int | None,
                 which: OperatingPoint | str | float | None = None) -> OperatingPoint:
    """The point to decide at: `which` as an OperatingPoint, a frozen point's name, `site:NAME`,
    'argmax' or a threshold on P(positive); None: the run's default (the most probable class
    when the run has no frozen points)."""
    if isinstance(which, OperatingPoint):
        return which
    most_probable = OperatingPoint(ARGMAX, tuple(classes), positive_index, None, NOT_EVALUATED,
                                   "the most probable class")
    if isinstance(which, (int, float)) and not isinstance(which, bool):
        if positive_index is None or not (math.isfinite(which) and 0.0 <= which <= 1.0):
            raise CxrkitError(f"operating point {which!r}: a threshold needs a two-class model and "
                              "a value between 0 and 1")
        return OperatingPoint(f"threshold={which:g}", tuple(classes), positive_index, float(which),
                              "a threshold given by the caller", "a threshold given by the caller")
    if points is None:
        if which in (None, ARGMAX):
            return most_probable
        raise CxrkitError(f"operating point {which!r}: this model has no frozen operating points; "
                          "choose them with `cxrkit evaluate RUN`")
    return points.default() if which is None else points.point(str(which))
