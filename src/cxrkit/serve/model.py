"""The model behind the server: predictor, id, operating point, test metrics and examples."""

from __future__ import annotations

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
from cxrkit.run import OperatingPoint
from cxrkit.serve.decode import DEFAULT_MAX_PIXELS

DEFAULT_CONCURRENT_DECODES = 2
EXAMPLES_PER_CLASS = 2
MAX_EXAMPLES = 8
OOD_MESSAGE = ("out of distribution: this image is unlike the images the model was trained on "
               "(another kind of image, view, population or site); do not trust its output")


def _decoder(workers: int) -> ThreadPoolExecutor:
    return ThreadPoolExecutor(max_workers=workers, thread_name_prefix="cxrkit-decode")


@dataclass
class ServedModel:
    """Everything the page and the API share about the model they serve."""

    predictor: Any
    model_id: str
    runtime: str
    point: OperatingPoint
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
        return [{**decided, "out_of_distribution": self.ood_check(None if scores is None else scores[index]),
                 "lung_found": lung_found[index]}
                for index, decided in enumerate(self.point.predictions(probabilities))]

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
            rows.append({**prediction, "image_sha256": digest, "ood_flag": ood.get("flagged"),
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
            "positive_class": self.predictor.card.positive_class,
            "decision": self.point.as_dict(),
            "test_metrics": self.test_metrics,
            "out_of_distribution": reference_summary(getattr(self.predictor, "ood", None)),
        })


def load_served_model(path: str | Path, examples: str | Path | None = None,
                      site: str | None = None) -> ServedModel:
    """Load a run folder, model.ckpt or exported .onnx file for serving. Decisions are made at
    the run's frozen default operating point, or at site point `site` (made by `cxrkit
    calibrate --select`)."""
    from cxrkit.loader import load

    path = Path(path).expanduser()
    predictor = load(path)
    point = predictor.operating_point(None if site is None else f"site:{site}")
    run = getattr(predictor, "run", None)
    if run is None:
        runtime, source, default_examples = "onnxruntime", path, []
    else:
        runtime, source = "pytorch", run.path
        default_examples = test_split_examples(run)
    example_files = folder_examples(examples) if examples is not None else default_examples
    return ServedModel(predictor, predictor.model_id or path.name, runtime, point,
                       predictor.card.test_metrics, source, example_files)


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


def test_split_examples(run) -> list[Path]:
    """A few test-split images per class from the run's split.csv (a RunFolder).

    Only files that still exist, are images, and lie under the run's data source are used;
    a run that names no data source gets no examples.
    """
    data_root = run.data_root()
    if data_root is None:
        return []
    try:
        test = run.split_rows("test")
    except CxrkitError:
        return []
    chosen: dict[str, list[Path]] = {}
    for path, label in zip(test["path"], test["label"], strict=True):
        picked = chosen.setdefault(label, [])
        if path and len(picked) < EXAMPLES_PER_CLASS and usable_example(Path(path), data_root):
            picked.append(Path(path))
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
