"""Lung fields from a grey chest X-ray, in numpy: network input, mask clean-up, plausibility, crop box.

The network itself runs behind a backend (torch in `cxrkit.segment.weights`, onnxruntime in
`cxrkit.segment.onnx`); everything before and after it lives here, so training, the torch
Predictor and the torch-free ONNX path prepare and read the network identically.

A segmenter built by a backend carries a `spec` (plain data: the weights as arrays or ONNX
bytes) and pickles as that spec, so it reaches decode workers and spawned DataLoader workers;
each process builds the network from a spec once (`rebuilt`). The network runs on one thread
in every process, so a mask is the same bit for bit wherever it is computed.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Protocol

import cv2
import numpy as np

MIN_AREA_FRACTION = 0.05
MAX_AREA_FRACTION = 0.8
MIN_BOX_FRACTION = 0.25
SECOND_LUNG_MIN_RATIO = 0.05
MIN_CERTAINTY = 0.6


def network_input(gray: np.ndarray, size: int) -> np.ndarray:
    """A uint8 grey image as the (1, size, size) float32 array the network reads: resized, z-scored."""
    small = cv2.resize(gray, (size, size), interpolation=cv2.INTER_AREA).astype(np.float32) / 255.0
    return standardise(small)[None]


def standardise(image: np.ndarray) -> np.ndarray:
    """Zero mean, unit variance per image (robust to exposure differences between sites)."""
    return (image - image.mean()) / (image.std() + 1e-6)


def clean_mask(probability: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    """Upsample a lung probability map to `shape`, threshold it and keep the two lungs.

    Keeps the largest connected region and the second largest when it is at least
    SECOND_LUNG_MIN_RATIO of the first (a small second blob is noise, not a lung).
    """
    height, width = shape
    upsampled = cv2.resize(probability.astype(np.float32), (width, height), interpolation=cv2.INTER_LINEAR)
    binary = (upsampled > 0.5).astype(np.uint8)
    count, labels, stats, _ = cv2.connectedComponentsWithStats(binary, connectivity=8)
    if count <= 1:
        return np.zeros(shape, dtype=bool)
    areas = stats[1:, cv2.CC_STAT_AREA]
    order = np.argsort(areas)[::-1][:2]
    keep = [order[0] + 1] + [i + 1 for i in order[1:] if areas[i] >= SECOND_LUNG_MIN_RATIO * areas[order[0]]]
    return np.isin(labels, keep)


def is_plausible(mask: np.ndarray) -> bool:
    """A lung mask covers 5-80% of the image and spans at least a quarter of it each way."""
    area = mask.mean()
    if not MIN_AREA_FRACTION <= area <= MAX_AREA_FRACTION:
        return False
    rows, columns = np.flatnonzero(mask.any(axis=1)), np.flatnonzero(mask.any(axis=0))
    height, width = mask.shape
    return bool(rows[-1] - rows[0] + 1 >= MIN_BOX_FRACTION * height
                and columns[-1] - columns[0] + 1 >= MIN_BOX_FRACTION * width)


def crop_box(mask: np.ndarray, margin: float) -> tuple[int, int, int, int]:
    """(top, bottom, left, right), end-exclusive: the mask's bounding box grown by `margin` of its size."""
    rows, columns = np.flatnonzero(mask.any(axis=1)), np.flatnonzero(mask.any(axis=0))
    top, bottom, left, right = rows[0], rows[-1] + 1, columns[0], columns[-1] + 1
    pad_y, pad_x = round(margin * (bottom - top)), round(margin * (right - left))
    height, width = mask.shape
    return (int(max(0, top - pad_y)), int(min(height, bottom + pad_y)),
            int(max(0, left - pad_x)), int(min(width, right + pad_x)))


def grow(mask: np.ndarray, margin: float) -> np.ndarray:
    """The mask dilated by `margin` of its larger bounding-box side (the region kept when masking)."""
    if margin <= 0:
        return mask
    top, bottom, left, right = crop_box(mask, 0.0)
    radius = max(1, round(margin * max(bottom - top, right - left)))
    kernel = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (2 * radius + 1, 2 * radius + 1))
    return cv2.dilate(mask.astype(np.uint8), kernel).astype(bool)


def certainty(probability: np.ndarray) -> float:
    """Mean of |2p - 1| over the map: near 1 when the network is sure of every pixel, near 0 when unsure."""
    return float(np.abs(2.0 * probability - 1.0).mean())


@dataclass(frozen=True)
class LungResult:
    """One image's lungs: the mask at image size, whether it was plausible (else: whole image),
    and the network's certainty (see `certainty`)."""

    mask: np.ndarray
    found: bool
    certainty: float = 1.0

    def box(self, margin: float) -> tuple[int, int, int, int]:
        """Crop box with `margin`; the whole image when no plausible lung was found."""
        if not self.found:
            return 0, self.mask.shape[0], 0, self.mask.shape[1]
        return crop_box(self.mask, margin)


class SegmenterSpec(Protocol):
    """What rebuilds a segmenter in another process: plain data that pickles cheaply."""

    backend: str
    digest: str

    def build(self) -> LungSegmenter:
        """The segmenter this spec describes (its network built here)."""
        ...


class LungSegmenter:
    """Lung masks for uint8 grey images; `run` maps a (N, 1, S, S) float32 batch to lung logits.

    A mask counts as found when the network is sure enough (certainty >= MIN_CERTAINTY) and the
    mask is plausible (`is_plausible`); otherwise the whole image is used.

    `digest` names the weights (it is part of the preprocessing contract and the cache key);
    `backend` says what runs the network ("torch" or "onnx"). With a `spec` the segmenter can
    be sent to other processes (`portable`); it travels as the spec.
    """

    def __init__(self, run: Callable[[np.ndarray], np.ndarray], input_size: int, digest: str, backend: str,
                 spec: SegmenterSpec | None = None):
        self.run = run
        self.input_size = input_size
        self.digest = digest
        self.backend = backend
        self.spec = spec

    @property
    def portable(self) -> bool:
        """True when it can be pickled to worker processes (it was built from a spec)."""
        return self.spec is not None

    def __reduce__(self):
        if self.spec is None:
            raise TypeError(f"lung segmenter {self.digest} ({self.backend}) has no spec: it cannot be "
                            "sent to another process")
        return rebuilt, (self.spec,)

    def probabilities(self, grays: Sequence[np.ndarray]) -> np.ndarray:
        """(N, S, S) lung probabilities at the network's resolution."""
        batch = np.stack([network_input(gray, self.input_size) for gray in grays])
        logits = np.asarray(self.run(batch), dtype=np.float32)[:, 0]
        return 1.0 / (1.0 + np.exp(-logits))

    def segment_many(self, grays: Sequence[np.ndarray]) -> list[LungResult]:
        results = []
        for gray, probability in zip(grays, self.probabilities(grays), strict=True):
            mask = clean_mask(probability, gray.shape)
            sure = certainty(probability)
            found = sure >= MIN_CERTAINTY and bool(mask.any()) and is_plausible(mask)
            results.append(LungResult(mask if found else np.ones(gray.shape, dtype=bool), found, round(sure, 4)))
        return results

    def segment(self, gray: np.ndarray) -> LungResult:
        """The lungs of one uint8 grey image (HxW), mask at the image's own size."""
        return self.segment_many([gray])[0]


_BUILT: dict[tuple[str, str], LungSegmenter] = {}


def rebuilt(spec: SegmenterSpec) -> LungSegmenter:
    """The segmenter `spec` describes, built once per process (what unpickling a segmenter gives)."""
    key = (spec.backend, spec.digest)
    if key not in _BUILT:
        _BUILT[key] = spec.build()
    return _BUILT[key]


def dice(predicted: np.ndarray, target: np.ndarray) -> float:
    """Dice overlap of two boolean masks (1.0 when both are empty)."""
    total = predicted.sum() + target.sum()
    return 1.0 if total == 0 else float(2.0 * np.logical_and(predicted, target).sum() / total)
