"""The Predictor: a run folder (or exported model) in, class probabilities and decisions out.

`cxrkit.load(run_dir)` reads the run through `RunFolder`: `model.ckpt` (weights and the model
card: class names, positive class, preprocessing contract) with `weights_only=True`, and the
frozen operating points, checked against the checkpoint. Nothing is re-guessed and nothing
untrusted is unpickled. `predict` decides at the run's frozen default operating point, like
scikit-learn's FixedThresholdClassifier, unless told another one.
"""

from __future__ import annotations

import threading
from collections import deque
from collections.abc import Iterable, Sequence
from itertools import islice
from pathlib import Path
from typing import TYPE_CHECKING, NamedTuple

import numpy as np

from cxrkit.data.io import read_gray, to_gray
from cxrkit.data.preprocess import Preprocessing, prepare, prepare_with_lungs
from cxrkit.errors import CxrkitError
from cxrkit.run import ModelCard, OperatingPoint, RunFolder

if TYPE_CHECKING:
    import torch


class Predictions(NamedTuple):
    """What one prediction pass gives for N inputs."""

    probabilities: np.ndarray
    ood_scores: np.ndarray | None
    lung_found: list[bool | None]


class FilePredictions(NamedTuple):
    """What `predict_files` gives: `Predictions` for the readable files, in input order, plus
    those paths and {unreadable path: reason}."""

    probabilities: np.ndarray
    ood_scores: np.ndarray | None
    lung_found: list[bool | None]
    paths: list[str]
    failures: dict[str, str]


_TRACE_LOCK = threading.Lock()  # torch.fx tracing patches torch globally: one trace at a time


def probabilities_from_logits(logits, single_logit: bool):
    """Softmax over classes, or for a single-logit binary head [1 - sigmoid, sigmoid]."""
    import torch

    if single_logit:
        positive = torch.sigmoid(logits.float().reshape(-1))
        return torch.stack([1 - positive, positive], dim=1)
    return torch.softmax(logits.float(), dim=1)


class BasePredictor:
    """What every predictor shares: preprocessing, batching, the decision rule and sklearn-style
    predict/predict_proba.

    Subclasses set `card` (the ModelCard) and `segmenter` (when the contract uses the lungs)
    and implement `_outputs(batch)` for a uint8 (N, H, W) array of prepared images; the model
    normalises them itself (`cxrkit.data.normalise.Normaliser`).
    """

    card: ModelCard
    segmenter = None

    @property
    def classes(self) -> list[str]:
        return list(self.card.classes)

    @property
    def preprocessing(self) -> Preprocessing:
        return self.card.preprocessing

    @property
    def single_logit(self) -> bool:
        return self.card.single_logit

    @property
    def info(self) -> dict:
        """model_name, recipe, run (as recorded at training)."""
        name = self.card.model_name
        return {**({"model_name": name} if name else {}), **self.card.info}

    @property
    def model_id(self) -> str | None:
        return self.card.model_id

    def operating_point(self, which: OperatingPoint | str | float | None = None) -> OperatingPoint:
        """The point decisions are made at: None gives the run's frozen default (the most
        probable class before the run is evaluated); or a frozen point's name ('youden',
        'sensitivity', 'site:NAME', 'argmax'), a threshold on P(positive), an OperatingPoint."""
        return self.card.operating_point(which)

    def decide(self, probabilities: np.ndarray,
               operating_point: OperatingPoint | str | float | None = None) -> np.ndarray:
        """Class indices for (N, n_classes) probabilities at `operating_point` (default: frozen)."""
        return self.operating_point(operating_point).decide(probabilities)

    def prepare(self, image) -> np.ndarray:
        """Decode, focus on the lungs (if set), enhance and resize one input to the uint8 image the model sees."""
        return prepare(to_gray(image), self.preprocessing, self.segmenter)

    def prepare_with_lungs(self, image) -> tuple[np.ndarray, bool | None]:
        """`prepare` plus whether a plausible lung was found (None when the model uses no lungs)."""
        return prepare_with_lungs(to_gray(image), self.preprocessing, self.segmenter)

    ood_threshold: float | None = None

    def _outputs(self, batch: np.ndarray) -> tuple[np.ndarray, np.ndarray | None]:
        """Probabilities and, when the model has an OOD reference, OOD scores for a uint8 (N, H, W)
        batch of prepared images."""
        raise NotImplementedError

    def predict_details(self, images, batch_size: int = 32, progress=None) -> Predictions:
        """Probabilities, OOD scores and lung_found for every input, in one pass.

        `ood_scores` is None without a reference; `lung_found` is False where no plausible lung
        was found (the whole image was used) and None when the model uses no lungs.
        `progress` is called with each batch size.
        """
        if batch_size < 1:
            raise CxrkitError(f"batch_size {batch_size}: give 1 or more")
        images = _as_list(images)
        return self._predict_prepared((self.prepare_with_lungs(image) for image in images), batch_size,
                                      progress)

    def _predict_prepared(self, prepared: Iterable[tuple[np.ndarray, bool | None]], batch_size: int,
                          progress=None) -> Predictions:
        """Run the model on full batches of (prepared uint8 image, lung_found) pairs."""
        probabilities, scores, found, pending = [], [], [], []

        def run() -> None:
            batch_probabilities, batch_scores = self._outputs(np.stack([array for array, _ in pending]))
            probabilities.append(batch_probabilities)
            scores.append(batch_scores)
            found.extend(flag for _, flag in pending)
            if progress is not None:
                progress(len(pending))
            pending.clear()

        for item in prepared:
            pending.append(item)
            if len(pending) == batch_size:
                run()
        if pending:
            run()
        has_scores = self.ood_threshold is not None
        if not probabilities:
            return Predictions(np.zeros((0, len(self.classes)), dtype=np.float32),
                               np.zeros(0, dtype=np.float32) if has_scores else None, [])
        return Predictions(np.concatenate(probabilities).astype(np.float32),
                           np.concatenate(scores).astype(np.float32) if has_scores else None, found)

    def predict_with_ood(self, images, batch_size: int = 32,
                         progress=None) -> tuple[np.ndarray, np.ndarray | None]:
        """(N, n_classes) probabilities and N out-of-distribution scores (None without a reference)."""
        details = self.predict_details(images, batch_size, progress)
        return details.probabilities, details.ood_scores

    def predict_proba(self, images, batch_size: int = 32, progress=None) -> np.ndarray:
        """An (N, n_classes) array of probabilities; `progress` is called with each batch size."""
        return self.predict_details(images, batch_size, progress).probabilities

    def ood_score(self, images, batch_size: int = 32) -> np.ndarray:
        """Out-of-distribution scores: above `ood_threshold` means unlike the training images."""
        if self.ood_threshold is None:
            raise CxrkitError("this model has no out-of-distribution reference; add one with "
                              "`cxrkit ood RUN` (and re-export an ONNX file)")
        return self.predict_details(images, batch_size).ood_scores

    def is_out_of_distribution(self, images, batch_size: int = 32) -> np.ndarray:
        """True for each image whose OOD score is above the threshold chosen on validation."""
        return self.ood_score(images, batch_size) > self.ood_threshold

    def predict_files(self, paths: Sequence[str], batch_size: int = 32, workers: int | None = None,
                      progress=None) -> FilePredictions:
        """Probabilities, OOD scores and lung_found for the readable files, which files those
        are (input order) and {unreadable path: reason}.

        Files are decoded and prepared in `workers` processes (default: every core; the lung
        segmenter goes with them when the contract uses the lungs) while the model runs on full
        batches here. `progress(stage, done, total)` follows the files.
        """
        paths = [str(p) for p in paths]
        kept, failures = [], {}

        def readable():
            for done, (path, image, found, reason) in enumerate(
                    _prepared(paths, self.preprocessing, batch_size, workers, self.segmenter), start=1):
                if image is None:
                    failures[path] = reason
                else:
                    kept.append(path)
                    yield image, found
                if progress is not None and (done % batch_size == 0 or done == len(paths)):
                    progress("predict", done, len(paths))

        details = self._predict_prepared(readable(), batch_size)
        return FilePredictions(*details, kept, failures)

    def predict(self, images, batch_size: int = 32,
                operating_point: OperatingPoint | str | float | None = None) -> list[str]:
        """The decided class name for each input, at the run's frozen default operating point
        unless `operating_point` names another (see `operating_point`)."""
        point = self.operating_point(operating_point)
        return point.labels(self.predict_proba(images, batch_size))


class Predictor(BasePredictor):
    """Probabilities for images given as paths, PIL images or arrays, like sklearn's predict_proba.

    Built in memory from a model and its contract, or by `cxrkit.load(run)` (`from_card`), which
    adds the run's card, folder, OOD reference and lung segmenter.
    """

    def __init__(self, model, classes: Sequence[str], preprocessing: Preprocessing,
                 single_logit: bool = False, info: dict | None = None, ood: dict | None = None,
                 segmenter=None):
        from cxrkit.data.normalise import Normaliser

        self.model = model.eval()
        self.segmenter = segmenter
        self.card = ModelCard.for_model(classes, preprocessing, single_logit, info)
        self.normaliser = Normaliser.from_preprocessing(preprocessing)
        self.run: RunFolder | None = None
        self._inference_model = None
        self.ood = ood
        self.ood_threshold = None if ood is None else float(ood["threshold"])
        self._scorer = None

    @classmethod
    def from_card(cls, model, card: ModelCard, run: RunFolder | None = None, ood: dict | None = None,
                  segmenter=None) -> Predictor:
        """A Predictor whose facts come from `card` (and, for a run, its folder)."""
        predictor = cls(model, card.classes, card.preprocessing, card.single_logit, card.info, ood,
                        segmenter)
        predictor.card, predictor.run = card, run
        return predictor

    @property
    def run_dir(self) -> Path | None:
        return None if self.run is None else self.run.path

    @property
    def ood_scorer(self):
        """The model traced to return logits and the OOD score (built on first use)."""
        with _TRACE_LOCK:  # torch.fx tracing is not thread-safe
            if self._scorer is None and self.ood is not None:
                import torch

                from cxrkit.ood.reference import OodScorer

                side = self.preprocessing.image_size
                example = torch.zeros(2, self.preprocessing.channels, side, side)
                scorer = OodScorer(self.model, self.ood, example).eval()
                scorer.features = _fused_channels_last(scorer.features)
                self._scorer = scorer
        return self._scorer

    def to_tensor(self, images: Iterable) -> torch.Tensor:
        """Normalised model input batch (N, C, H, W) as a float32 torch tensor."""
        from cxrkit.data.normalise import model_input

        return model_input(np.stack([self.prepare(image) for image in images]), self.preprocessing)

    def inference_model(self):
        """`model` as prediction runs it (see `_fused_channels_last`); `model` itself stays as
        it is for explanations."""
        with _TRACE_LOCK:  # concurrent first requests would trace at once (not thread-safe)
            if self._inference_model is None:
                self._inference_model = _fused_channels_last(self.model)
        return self._inference_model

    def _outputs(self, batch: np.ndarray) -> tuple[np.ndarray, np.ndarray | None]:
        import torch

        # Build the traced models first: while torch.fx traces, every module call in any thread breaks.
        scorer = self.ood_scorer
        model = self.inference_model() if scorer is None else None
        with torch.inference_mode():
            inputs = self.normaliser(torch.from_numpy(batch)[:, None]).contiguous(
                memory_format=torch.channels_last)
            if scorer is None:
                logits, scores = model(inputs), None
            else:
                logits, scores = scorer(inputs)
                scores = scores.numpy()
            return probabilities_from_logits(logits, self.single_logit).numpy(), scores


def _fused_channels_last(model):
    """A copy of `model` for prediction: BatchNorm folded into the convolutions before it
    (torch.fx) and channels_last memory; the same outputs to float rounding, about twice as
    fast on CPUs. A model torch.fx cannot trace runs unfused."""
    import contextlib
    import copy

    import torch
    from torch.fx.experimental.optimization import fuse

    model = copy.deepcopy(model).eval()
    with contextlib.suppress(Exception):
        # a GraphModule (the OOD scorer's features) is fused as traced: its GridMean modules
        # stay modules and choose their eager or export form when they run
        model = fuse(model, no_trace=isinstance(model, torch.fx.GraphModule))
    return model.to(memory_format=torch.channels_last)


def _prepare_files(paths: list[str], prep: dict,
                   segmenter=None) -> list[tuple[str, np.ndarray | None, bool | None, str]]:
    """(path, prepared uint8 image or None, lung_found, failure reason) for each file."""
    settings = Preprocessing.from_dict(prep)
    results = []
    for path in paths:
        try:
            results.append((path, *prepare_with_lungs(read_gray(path), settings, segmenter), ""))
        except CxrkitError as error:
            results.append((path, None, None, str(error)))
    return results


def _prepared(paths: list[str], prep: Preprocessing, chunk: int, workers: int | None, segmenter=None):
    """Yield (path, prepared image or None, lung_found, reason) in input order, decoded ahead in
    processes (in this one for a lung segmenter that cannot travel: see `LungSegmenter.portable`)."""
    from cxrkit.data.cache import default_workers, in_workers, process_pool

    chunks = [paths[start:start + chunk] for start in range(0, len(paths), chunk)]
    workers = workers or default_workers()
    segmenter = segmenter if prep.uses_lungs else None
    if workers <= 1 or len(chunks) <= 2 or not in_workers(segmenter):
        for part in chunks:
            yield from _prepare_files(part, prep.to_dict(), segmenter)
        return
    remaining = iter(chunks)
    with process_pool(workers) as pool:
        ahead = deque(pool.submit(_prepare_files, part, prep.to_dict(), segmenter)
                      for part in islice(remaining, 4 * workers))  # bounded read-ahead
        try:
            while ahead:
                results = ahead.popleft().result()
                following = next(remaining, None)
                if following is not None:
                    ahead.append(pool.submit(_prepare_files, following, prep.to_dict(), segmenter))
                yield from results
        finally:
            pool.shutdown(cancel_futures=True)


def _as_list(images) -> list:
    if isinstance(images, (str, Path)) or hasattr(images, "mode"):
        return [images]
    if isinstance(images, np.ndarray) and images.ndim in (2, 3) and (images.ndim == 2 or images.shape[-1] in (1, 3, 4)):
        return [images]
    return list(images)


def load_torch_predictor(path: str | Path, operating_points: bool = True) -> Predictor:
    """Build a Predictor from a run folder or model.ckpt, with the run's card;
    `operating_points=False` loads it without the frozen points (which refuse to load when
    chosen for another model.ckpt): for evaluation, which re-chooses them."""
    run = RunFolder(path)
    return predictor_from_checkpoint(run, run.read_checkpoint(), operating_points)


def predictor_from_checkpoint(run: RunFolder, data: dict, operating_points: bool = True) -> Predictor:
    """The Predictor of `run` from its model.ckpt contents `data` (read once by the caller)."""
    from cxrkit.models import build_model

    card = run.card(with_points=operating_points)
    source = run.checkpoint_path
    try:
        model = build_model(**card.model, weights="none", freeze="none")
        model.load_state_dict(data["state_dict"])
    except (KeyError, TypeError, ValueError, AttributeError, RuntimeError) as error:
        reason = str(error).strip().splitlines()[0] if str(error).strip() else ""
        raise CxrkitError(f"{source}: the checkpoint is malformed ({type(error).__name__}: "
                          f"{reason}); train the run again") from error
    segmenter = None
    if card.preprocessing.uses_lungs:
        from cxrkit.segment.weights import torch_segmenter

        if not isinstance(data.get("segmenter"), dict):
            raise CxrkitError(f"{source}: the preprocessing uses the lung segmenter but its weights "
                              "are not in the checkpoint; retrain the run")
        segmenter = torch_segmenter(data["segmenter"])
    ood = data.get("ood")
    if ood is not None:
        from cxrkit.ood.flags import check_reference

        ood = check_reference(ood, str(source))
    return Predictor.from_card(model, card, run, ood, segmenter)

