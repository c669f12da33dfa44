"""The Predictor: a run folder (or exported model) in, class probabilities out.

`cxrkit.load(run_dir)` reads `model.ckpt` (weights, class names, preprocessing contract)
with `weights_only=True`, so nothing is re-guessed and nothing untrusted is unpickled.
"""

from __future__ import annotations

import json
from collections import deque
from collections.abc import Iterable, Sequence
from itertools import islice
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from cxrkit.data.io import read_gray, to_gray
from cxrkit.data.preprocess import Preprocessing, normalise, prepare
from cxrkit.errors import CxrkitError

if TYPE_CHECKING:
    import torch

CHECKPOINT_NAME = "model.ckpt"
CHECKPOINT_FORMAT = "cxrkit-model-v1"


def resolve_checkpoint(path: str | Path) -> Path:
    """Path to model.ckpt given a run folder or the file itself."""
    path = Path(path).expanduser()
    if path.is_dir():
        path = path / CHECKPOINT_NAME
    if not path.is_file():
        raise CxrkitError(f"{path}: no model checkpoint; pass a run folder made by `cxrkit train`")
    return path


def read_checkpoint(path: str | Path) -> dict:
    """Load a cxrkit checkpoint dict safely (weights_only=True)."""
    import torch

    path = resolve_checkpoint(path)
    try:
        data = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:
        raise CxrkitError(f"{path}: not a readable cxrkit checkpoint ({error})") from error
    if not isinstance(data, dict) or data.get("format") != CHECKPOINT_FORMAT:
        raise CxrkitError(f"{path}: not a cxrkit model checkpoint (format {CHECKPOINT_FORMAT})")
    return data


def probabilities_from_logits(logits, single_logit: bool):
    """Softmax over classes, or for a single-logit binary head [1 - sigmoid, sigmoid]."""
    import torch

    if single_logit:
        positive = torch.sigmoid(logits.float().reshape(-1))
        return torch.stack([1 - positive, positive], dim=1)
    return torch.softmax(logits.float(), dim=1)


class BasePredictor:
    """What every predictor shares: preprocessing, batching and sklearn-style predict/predict_proba.

    Subclasses set `classes` and `preprocessing` and implement `_outputs(batch)` for a
    float32 (N, C, H, W) array.
    """

    classes: list[str]
    preprocessing: Preprocessing

    def prepare(self, image) -> np.ndarray:
        """Decode, enhance and resize one input to the uint8 image the model sees."""
        return prepare(to_gray(image), self.preprocessing)

    def to_array(self, images: Iterable) -> np.ndarray:
        """Model input batch (N, C, H, W) float32 for a list of inputs."""
        return normalise(np.stack([self.prepare(image) for image in images]), self.preprocessing)

    ood_threshold: float | None = None

    def _outputs(self, batch: np.ndarray) -> tuple[np.ndarray, np.ndarray | None]:
        """Probabilities and, when the model has an OOD reference, OOD scores for a batch."""
        raise NotImplementedError

    def predict_with_ood(self, images, batch_size: int = 32,
                         progress=None) -> tuple[np.ndarray, np.ndarray | None]:
        """(N, n_classes) probabilities and N out-of-distribution scores (None without a
        reference) in one pass; `progress` is called with each batch size."""
        images = _as_list(images)
        probabilities, scores = [], []
        for start in range(0, len(images), batch_size):
            batch = self.to_array(images[start:start + batch_size])
            batch_probabilities, batch_scores = self._outputs(batch)
            probabilities.append(batch_probabilities)
            scores.append(batch_scores)
            if progress is not None:
                progress(len(batch))
        has_scores = self.ood_threshold is not None
        if not probabilities:
            return (np.zeros((0, len(self.classes)), dtype=np.float32),
                    np.zeros(0, dtype=np.float32) if has_scores else None)
        return (np.concatenate(probabilities).astype(np.float32),
                np.concatenate(scores).astype(np.float32) if has_scores else None)

    def predict_proba(self, images, batch_size: int = 32, progress=None) -> np.ndarray:
        """An (N, n_classes) array of probabilities; `progress` is called with each batch size."""
        return self.predict_with_ood(images, batch_size, progress)[0]

    def ood_score(self, images, batch_size: int = 32) -> np.ndarray:
        """Out-of-distribution scores: above `ood_threshold` means unlike the training images."""
        if self.ood_threshold is None:
            raise CxrkitError("this model has no out-of-distribution reference; add one with "
                              "`cxrkit ood RUN` (and re-export an ONNX file)")
        return self.predict_with_ood(images, batch_size)[1]

    def is_out_of_distribution(self, images, batch_size: int = 32) -> np.ndarray:
        """True for each image whose OOD score is above the threshold chosen on validation."""
        return self.ood_score(images, batch_size) > self.ood_threshold

    def predict_files(self, paths: Sequence[str], batch_size: int = 32, workers: int | None = None,
                      progress=None) -> tuple[np.ndarray, np.ndarray | None, list[str], dict[str, str]]:
        """(probabilities, OOD scores or None, the readable paths in input order, {unreadable
        path: reason}).

        Files are decoded and prepared in `workers` processes (default: every core) while the
        model runs on full batches here; `progress(stage, done, total)` follows the files.
        """
        paths = [str(p) for p in paths]
        probabilities, scores, kept, failures, pending = [], [], [], {}, []

        def run(images: list[np.ndarray]) -> None:
            batch_probabilities, batch_scores = self._outputs(normalise(np.stack(images), self.preprocessing))
            probabilities.append(batch_probabilities)
            scores.append(batch_scores)

        for done, (path, image, reason) in enumerate(_prepared(paths, self.preprocessing, batch_size,
                                                               workers), start=1):
            if image is None:
                failures[path] = reason
            else:
                kept.append(path)
                pending.append(image)
            if len(pending) == batch_size:
                run(pending)
                pending = []
            if progress is not None and (done % batch_size == 0 or done == len(paths)):
                progress("predict", done, len(paths))
        if pending:
            run(pending)
        has_scores = self.ood_threshold is not None
        if not probabilities:
            return (np.zeros((0, len(self.classes)), dtype=np.float32),
                    np.zeros(0, dtype=np.float32) if has_scores else None, kept, failures)
        return (np.concatenate(probabilities).astype(np.float32),
                np.concatenate(scores).astype(np.float32) if has_scores else None, kept, failures)

    def predict(self, images, batch_size: int = 32) -> list[str]:
        """The most probable class name for each input."""
        probabilities = self.predict_proba(images, batch_size)
        return [self.classes[i] for i in probabilities.argmax(axis=1)]


class Predictor(BasePredictor):
    """Probabilities for images given as paths, PIL images or arrays, like sklearn's predict_proba."""

    def __init__(self, model, classes: Sequence[str], preprocessing: Preprocessing,
                 single_logit: bool = False, run_dir: Path | None = None, info: dict | None = None,
                 ood: dict | None = None):
        self.model = model.eval()
        self.classes = list(classes)
        self.preprocessing = preprocessing
        self.single_logit = single_logit
        self.run_dir = run_dir
        self.info = info or {}
        self._inference_model = None
        self.ood = ood
        self.ood_threshold = None if ood is None else float(ood["threshold"])
        self._scorer = None

    @property
    def ood_scorer(self):
        """The model traced to return logits and the OOD score (built on first use)."""
        if self._scorer is None and self.ood is not None:
            import torch

            from cxrkit.ood.reference import OodScorer

            side = self.preprocessing.image_size
            example = torch.zeros(2, self.preprocessing.channels, side, side)
            self._scorer = OodScorer(self.model, self.ood, example).eval()
        return self._scorer

    @property
    def operating_point(self) -> dict | None:
        """The run's frozen operating point (threshold chosen on validation), if evaluated."""
        if self.run_dir is None:
            return None
        path = self.run_dir / "operating_points.json"
        return json.loads(path.read_text()) if path.is_file() else None

    def to_tensor(self, images: Iterable) -> torch.Tensor:
        """Model input batch (N, C, H, W) as a float32 torch tensor."""
        import torch

        return torch.from_numpy(self.to_array(images))

    def inference_model(self):
        """`model` as prediction runs it: BatchNorm folded into the convolutions before it
        (torch.fx) and channels_last memory; the same outputs to float rounding, about twice
        as fast on CPUs. `model` itself stays as it is for explanations."""
        import contextlib
        import copy

        import torch
        from torch.fx.experimental.optimization import fuse

        if self._inference_model is None:
            model = copy.deepcopy(self.model).eval()
            with contextlib.suppress(Exception):  # a model torch.fx cannot trace runs unfused
                model = fuse(model)
            self._inference_model = model.to(memory_format=torch.channels_last)
        return self._inference_model

    def _outputs(self, batch: np.ndarray) -> tuple[np.ndarray, np.ndarray | None]:
        import torch

        inputs = torch.from_numpy(batch).contiguous(memory_format=torch.channels_last)
        with torch.inference_mode():
            if self.ood_scorer is None:
                logits, scores = self.inference_model()(inputs), None
            else:
                logits, scores = self.ood_scorer(torch.from_numpy(batch))
                scores = scores.numpy()
            return probabilities_from_logits(logits, self.single_logit).numpy(), scores


def _prepare_files(paths: list[str], prep: dict) -> list[tuple[str, np.ndarray | None, str]]:
    """(path, prepared uint8 image or None, failure reason) for each file."""
    settings = Preprocessing.from_dict(prep)
    results = []
    for path in paths:
        try:
            results.append((path, prepare(read_gray(path), settings), ""))
        except CxrkitError as error:
            results.append((path, None, str(error)))
    return results


def _prepared(paths: list[str], prep: Preprocessing, chunk: int, workers: int | None):
    """Yield (path, prepared image or None, reason) in input order, decoded ahead in processes."""
    from cxrkit.data.cache import default_workers, process_pool

    chunks = [paths[start:start + chunk] for start in range(0, len(paths), chunk)]
    workers = workers or default_workers()
    if workers <= 1 or len(chunks) <= 2:
        for part in chunks:
            yield from _prepare_files(part, prep.to_dict())
        return
    remaining = iter(chunks)
    with process_pool(workers) as pool:
        ahead = deque(pool.submit(_prepare_files, part, prep.to_dict())
                      for part in islice(remaining, 4 * workers))  # bounded read-ahead
        try:
            while ahead:
                results = ahead.popleft().result()
                following = next(remaining, None)
                if following is not None:
                    ahead.append(pool.submit(_prepare_files, following, prep.to_dict()))
                yield from results
        finally:
            pool.shutdown(cancel_futures=True)


def _as_list(images) -> list:
    if isinstance(images, (str, Path)) or hasattr(images, "mode"):
        return [images]
    if isinstance(images, np.ndarray) and images.ndim in (2, 3) and (images.ndim == 2 or images.shape[-1] in (1, 3, 4)):
        return [images]
    return list(images)


def load_torch_predictor(path: str | Path) -> Predictor:
    """Build a Predictor from a run folder or model.ckpt."""
    from cxrkit.models import build_model

    checkpoint_path = resolve_checkpoint(path)
    data = read_checkpoint(checkpoint_path)
    spec = data["model"]
    model = build_model(**spec, weights="none", freeze="none")
    model.load_state_dict(data["state_dict"])
    ood = data.get("ood")
    if ood is not None:
        from cxrkit.ood.flags import check_reference

        ood = check_reference(ood, str(checkpoint_path))
    return Predictor(model, data["classes"], Preprocessing.from_dict(data["preprocessing"]),
                     single_logit=bool(data.get("single_logit", False)),
                     run_dir=checkpoint_path.parent, info=data.get("info", {}), ood=ood)


def load(path: str | Path):
    """A Predictor for a run folder or model.ckpt; an ONNX file gets the torch-free runtime."""
    path = Path(path).expanduser()
    if path.suffix.lower() == ".onnx":
        from cxrkit.onnx_predictor import load_onnx_predictor

        return load_onnx_predictor(path)
    return load_torch_predictor(path)
