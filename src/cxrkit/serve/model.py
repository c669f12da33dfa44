"""The model behind the server: predictor, id, frozen decision rule, test metrics and examples."""

from __future__ import annotations

import csv
import math
import shutil
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from cxrkit.data.io import is_image_file
from cxrkit.data.pixels import check_pixel_count
from cxrkit.errors import CxrkitError
from cxrkit.ood.flags import reference_summary
from cxrkit.serve.decode import DEFAULT_MAX_PIXELS

DEFAULT_CONCURRENT_DECODES = 2
EXAMPLES_PER_CLASS = 2
MAX_EXAMPLES = 8
OOD_MESSAGE = ("out of distribution: this image is unlike the images the model was trained on "
               "(another kind of image, view, population or site); do not trust its output")


@dataclass(frozen=True)
class DecisionRule:
    """How probabilities become a decision: a threshold on the positive class, or the argmax.

    `threshold` is the run's frozen operating point (chosen on validation); None means the
    run has none and the decision is the most probable class.
    """

    classes: tuple[str, ...]
    positive_class: str | None = None
    threshold: float | None = None
    operating_point: str | None = None
    chosen_on: str = "the validation split"

    def decide(self, probabilities: np.ndarray, threshold: float | None = None) -> str:
        """The decided class; `threshold` overrides the frozen one (binary models only)."""
        threshold = self.threshold if threshold is None else threshold
        if self.positive_class is None or threshold is None:
            return self.classes[int(np.argmax(probabilities))]
        positive = self.classes.index(self.positive_class)
        if probabilities[positive] >= threshold:
            return self.positive_class
        return self.classes[1 - positive]

    def describe(self) -> str:
        """One line a person can read next to the decision."""
        if self.positive_class is None:
            return "the most probable class (a multi-class model has no threshold)"
        if self.threshold is None:
            return ("no frozen operating point in this model (run `cxrkit evaluate RUN`): "
                    "the decision is the most probable class")
        return (f"{self.positive_class} when P({self.positive_class}) >= {self.threshold:.4g}, "
                f"the operating point '{self.operating_point}' chosen on {self.chosen_on}")

    def as_dict(self) -> dict:
        rule = "threshold" if self.threshold is not None else "argmax"
        return {"rule": rule, "positive_class": self.positive_class, "threshold": self.threshold,
                "operating_point": self.operating_point, "description": self.describe()}


def decision_rule(classes: list[str], operating_point: dict | None, source: str) -> DecisionRule:
    """Parse `operating_points.json` ({positive_class, selected, points{name: {threshold}}})."""
    classes = tuple(classes)
    binary_positive = classes[1] if len(classes) == 2 else None
    if operating_point is None:
        return DecisionRule(classes, binary_positive)
    if len(classes) != 2 and operating_point.get("positive_class") is None:
        return DecisionRule(classes)
    try:
        positive = operating_point["positive_class"]
        selected = operating_point["selected"]
        threshold = float(operating_point["points"][selected]["threshold"])
    except (KeyError, TypeError, ValueError) as error:
        raise CxrkitError(f"{source}: operating point is malformed ({error!r} missing or invalid); "
                          "re-run `cxrkit evaluate RUN`") from error
    if len(classes) != 2 or positive not in classes or not 0.0 <= threshold <= 1.0:
        raise CxrkitError(f"{source}: operating point (positive class {positive!r}, threshold "
                          f"{threshold}) does not fit classes {list(classes)}; "
                          "re-run `cxrkit evaluate`")
    chosen_on = operating_point.get("chosen_on", "val")
    return DecisionRule(classes, positive, threshold, str(selected),
                        "the validation split" if chosen_on == "val" else chosen_on)


def _decoder(workers: int) -> ThreadPoolExecutor:
    return ThreadPoolExecutor(max_workers=workers, thread_name_prefix="cxrkit-decode")


@dataclass
class ServedModel:
    """Everything the page and the API share about the model they serve."""

    predictor: Any
    model_id: str
    runtime: str
    rule: DecisionRule
    test_metrics: dict | None
    source: Path
    examples: list[Path] = field(default_factory=list)
    max_pixels: int = DEFAULT_MAX_PIXELS
    decoder: ThreadPoolExecutor = field(default_factory=lambda: _decoder(DEFAULT_CONCURRENT_DECODES))

    def limit_decoding(self, max_pixels: int, concurrent: int) -> None:
        """The decoding budget: pixels per image and decodes at once (server-wide)."""
        self.max_pixels = int(max_pixels)
        self.decoder.shutdown(wait=False)
        self.decoder = _decoder(int(concurrent))

    def decoding(self, work: Callable[[], Any]) -> Any:
        """Run `work` (decode and predict) on one of the few decoder threads and wait for it.

        Full-size images live only on these threads, so the memory they take is bounded by
        their number however many requests arrive at once.
        """
        return self.decoder.submit(work).result()
    request_log: Any = None  # a cxrkit.deployment.request_log.RequestLog with `serve --log`

    @property
    def classes(self) -> list[str]:
        return list(self.predictor.classes)

    @property
    def can_explain(self) -> bool:
        """Grad-CAM needs the PyTorch model; an ONNX graph has no gradients to offer."""
        return self.runtime == "pytorch"

    def predict(self, grays: list[np.ndarray]) -> list[dict]:
        """Probabilities, decision, out-of-distribution check and lung_found for decoded grey images."""
        probabilities, scores, lung_found = self.predictor.predict_details(grays)
        return [{"probabilities": dict(zip(self.classes, map(float, row), strict=True)),
                 "decision": self.rule.decide(row),
                 "threshold": self.rule.threshold,
                 "positive_class": self.rule.positive_class,
                 "out_of_distribution": self.ood_check(None if scores is None else scores[index]),
                 "lung_found": lung_found[index]}
                for index, row in enumerate(probabilities)]

    def ood_check(self, score: float | None) -> dict | None:
        """{flagged, score, threshold, message} for one image; None without a reference."""
        threshold = self.predictor.ood_threshold
        if score is None or threshold is None:
            return None
        flagged = bool(score > threshold)
        message = (OOD_MESSAGE if flagged else
                   "similar to the training images (score below the threshold)")
        return {"flagged": flagged, "score": float(score), "threshold": threshold,
                "message": message}

    def log_requests(self, predictions: list[dict], image_hashes: list[str]) -> None:
        """Record scored images in the request log, if the server keeps one (never the image)."""
        if self.request_log is None:
            return
        rows = []
        for prediction, digest in zip(predictions, image_hashes, strict=True):
            ood = prediction.get("out_of_distribution") or {}
            rows.append({**prediction, "operating_point": self.rule.operating_point,
                         "image_sha256": digest, "ood_flag": ood.get("flagged"),
                         "ood_score": ood.get("score")})
        self.request_log.record(self.model_id, rows)

    def card(self) -> dict:
        """What a client needs to know: classes, input contract, decision rule, test metrics."""
        return finite_json({
            "model_id": self.model_id,
            "runtime": self.runtime,
            "model_name": self.predictor.info.get("model_name"),
            "classes": self.classes,
            "single_logit": bool(self.predictor.single_logit),
            "input": self.predictor.preprocessing.to_dict(),
            "decision": self.rule.as_dict(),
            "test_metrics": self.test_metrics,
            "out_of_distribution": reference_summary(getattr(self.predictor, "ood", None)),
        })


def load_served_model(path: str | Path, examples: str | Path | None = None,
                      site: str | None = None) -> ServedModel:
    """Load a run folder, model.ckpt or exported .onnx file for serving; `site` names a site
    operating point of the run (made by `cxrkit calibrate --select`) to decide at."""
    from cxrkit.loader import load
    from cxrkit.run_facts import frozen_operating_point, read_run_json, run_model_id

    path = Path(path).expanduser()
    predictor = load(path)
    if predictor.run_dir is None:
        runtime, model_id, metrics = "onnxruntime", predictor.model_id, predictor.test_metrics
        source, operating_point = path, predictor.operating_point
        default_examples: list[Path] = []
        if site is not None:
            from cxrkit.evaluation.thresholds import load_site_points

            load_site_points(None, site)  # refuses: site points live in the run folder
    else:
        run_dir = predictor.run_dir
        runtime, source, model_id = "pytorch", run_dir, run_model_id(run_dir)
        metrics = read_run_json(run_dir, "test_metrics.json")
        operating_point = frozen_operating_point(run_dir)
        default_examples = test_split_examples(run_dir / "split.csv", run_data_root(run_dir))
        if site is not None:
            from cxrkit.evaluation.thresholds import load_site_points

            operating_point = load_site_points(run_dir, site)
    rule = decision_rule(predictor.classes, operating_point, str(source))
    example_files = folder_examples(examples) if examples is not None else default_examples
    return ServedModel(predictor, model_id, runtime, rule, metrics, source, example_files)


def run_data_root(run_dir: Path) -> Path | None:
    """The folder of the data source named in the run's config.yaml (None if it names none)."""
    import yaml

    try:
        config = yaml.safe_load((run_dir / "config.yaml").read_text()) or {}
        source = str((config.get("data") or {}).get("source") or "")
    except (OSError, ValueError, AttributeError, yaml.YAMLError):
        return None
    if not source:
        return None
    if source.startswith(("hf:", "kaggle:")):
        from cxrkit.data.cache import cache_root

        return cache_root().resolve()
    path = Path(source).expanduser().resolve()
    return path if path.is_dir() else path.parent


def usable_example(path: Path, root: Path | None) -> bool:
    """An example a page may show: an image suffix, a regular file under `root`, readable header."""
    from cxrkit.data.io import image_info

    try:
        resolved = path.resolve(strict=True)
    except (OSError, RuntimeError):
        return False
    if not is_image_file(resolved) or not resolved.is_file():
        return False
    if root is not None and not resolved.is_relative_to(root):
        return False
    try:
        info = image_info(resolved)
        check_pixel_count(info["width"], info["height"], resolved)
    except (CxrkitError, KeyError, TypeError):
        return False
    return True


def test_split_examples(split_file: Path, data_root: Path | None) -> list[Path]:
    """A few test-split images per class from the run's split.csv.

    Only files that still exist, are images, and lie under the run's data source are used;
    a run that names no data source gets no examples.
    """
    if not split_file.is_file() or data_root is None:
        return []
    chosen: dict[str, list[Path]] = {}
    with open(split_file, newline="") as handle:
        for row in csv.DictReader(handle):
            if row.get("split") != "test" or not row.get("path"):
                continue
            picked = chosen.setdefault(row.get("label", ""), [])
            path = Path(row["path"])
            if len(picked) < EXAMPLES_PER_CLASS and usable_example(path, data_root):
                picked.append(path)
    return [path for paths in chosen.values() for path in paths][:MAX_EXAMPLES]


def folder_examples(folder: str | Path) -> list[Path]:
    """Up to MAX_EXAMPLES image files from a folder given with --examples."""
    folder = Path(folder).expanduser()
    if not folder.is_dir():
        raise CxrkitError(f"examples={folder}: no such folder")
    root = folder.resolve()
    files = sorted(path for path in folder.iterdir() if usable_example(path, root))
    if not files:
        raise CxrkitError(f"examples={folder}: no readable PNG, JPEG or DICOM images in it")
    return files[:MAX_EXAMPLES]


def copy_examples(examples: list[Path], folder: Path) -> list[Path]:
    """Copy the example files into `folder` (server-owned), the only folder the page may serve."""
    copies = []
    for index, path in enumerate(examples):
        target = folder / f"example-{index}{path.suffix.lower()}"
        shutil.copyfile(path, target)
        copies.append(target)
    return copies


def finite_json(value):
    """The value with NaN and infinities replaced by None, so it is valid JSON."""
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {str(key): finite_json(item) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [finite_json(item) for item in value]
    return value
