"""The preprocessing contract: lung focus, enhancement and resize in numpy, and the
normalisation constants (channels, mean, std).

The same functions serve training (through the cache), the Predictor and the ONNX
runtime path, so an image is prepared identically everywhere. Normalisation itself runs in
torch, on the device and inside exported graphs (`cxrkit.data.normalise`). No torch import
here: the lung segmenter is passed in as an object whose network runs on torch or onnxruntime.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass, field

import cv2
import numpy as np

from cxrkit.errors import CxrkitError
from cxrkit.segment.lungs import LungSegmenter, grow

ENHANCEMENTS = ("none", "contrast_stretch", "histeq", "clahe")
RESIZE_MODES = ("pad", "stretch")
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
PIXEL_MAX = 255.0  # prepared images are uint8; the model sees pixel / PIXEL_MAX, then mean/std


@dataclass(frozen=True)
class Preprocessing:
    """Everything needed to turn a grey image into model input; saved with the weights."""

    image_size: int = 224
    resize: str = "pad"
    channels: int = 3
    enhancement: str = "none"
    clahe_clip_limit: float = 2.0
    clahe_tile_grid: int = 8
    mean: tuple[float, ...] = field(default=IMAGENET_MEAN)
    std: tuple[float, ...] = field(default=IMAGENET_STD)
    lung_crop: bool = False
    lung_crop_margin: float = 0.1
    lung_mask_outside: bool = False
    segmenter: str = ""

    @property
    def uses_lungs(self) -> bool:
        """True when the lung segmenter takes part (crop to the lungs and/or blank what lies outside)."""
        return self.lung_crop or self.lung_mask_outside

    def cache_key(self) -> str:
        """Hash of the fields that change the cached uint8 image (not mean/std/channels).

        With lungs in use it includes the lung options and the segmenter weights' digest.
        """
        fields = {
            "image_size": self.image_size,
            "resize": self.resize,
            "enhancement": self.enhancement,
            "clahe": (self.clahe_clip_limit, self.clahe_tile_grid),
            "version": 1,
        }
        if self.uses_lungs:
            fields["lungs"] = (self.lung_crop, self.lung_crop_margin, self.lung_mask_outside, self.segmenter)
        return hashlib.sha1(json.dumps(fields, sort_keys=True).encode()).hexdigest()[:12]

    def to_dict(self) -> dict:
        data = asdict(self)
        data["mean"], data["std"] = list(self.mean), list(self.std)
        return data

    @classmethod
    def from_dict(cls, data: dict) -> Preprocessing:
        data = dict(data)
        data["mean"], data["std"] = tuple(data["mean"]), tuple(data["std"])
        return cls(**data)


def enhance(gray: np.ndarray, method: str, clip_limit: float = 2.0, tile_grid: int = 8) -> np.ndarray:
    """Apply seed 003's contrast enhancement to a uint8 grey image."""
    if method == "none":
        return gray
    if method == "contrast_stretch":
        low, high = np.percentile(gray, (2, 98))
        if high <= low:
            return gray
        stretched = (gray.astype(np.float32) - low) * (255.0 / (high - low))
        return np.clip(stretched, 0, 255).astype(np.uint8)
    if method == "histeq":
        return cv2.equalizeHist(gray)
    if method == "clahe":
        clahe = cv2.createCLAHE(clipLimit=clip_limit, tileGridSize=(tile_grid, tile_grid))
        return clahe.apply(gray)
    raise ValueError(f"unknown enhancement {method!r}; choose one of {', '.join(ENHANCEMENTS)}")


def resize(gray: np.ndarray, size: int, mode: str) -> np.ndarray:
    """Resize to size x size, either padding to square first (keeps aspect) or stretching."""
    if mode == "pad":
        height, width = gray.shape
        side = max(height, width)
        if height != width:
            top, left = (side - height) // 2, (side - width) // 2
            gray = cv2.copyMakeBorder(
                gray, top, side - height - top, left, side - width - left, cv2.BORDER_CONSTANT, value=0
            )
    elif mode != "stretch":
        raise ValueError(f"unknown resize mode {mode!r}; choose one of {', '.join(RESIZE_MODES)}")
    if gray.shape == (size, size):
        return gray
    shrinking = gray.shape[0] > size
    interpolation = cv2.INTER_AREA if shrinking else cv2.INTER_LINEAR
    return cv2.resize(gray, (size, size), interpolation=interpolation)


def prepare(gray: np.ndarray, prep: Preprocessing, segmenter: LungSegmenter | None = None) -> np.ndarray:
    """Lung focus (if set), enhance and resize a uint8 grey image: the form kept in the cache."""
    return prepare_with_lungs(gray, prep, segmenter)[0]


def prepare_with_lungs(gray: np.ndarray, prep: Preprocessing,
                       segmenter: LungSegmenter | None = None) -> tuple[np.ndarray, bool | None]:
    """`prepare`, plus whether a plausible lung was found (None when the contract uses no lungs).

    Where no plausible lung is found, the whole image is used (no crop, nothing blanked).
    """
    keep, found = None, None
    if prep.uses_lungs:
        lungs = check_segmenter(prep, segmenter).segment(gray)
        found = lungs.found
        whole = (0, gray.shape[0], 0, gray.shape[1])
        top, bottom, left, right = lungs.box(prep.lung_crop_margin) if prep.lung_crop else whole
        if prep.lung_mask_outside and found:
            keep = grow(lungs.mask, prep.lung_crop_margin)[top:bottom, left:right]
        gray = gray[top:bottom, left:right]
    gray = enhance(gray, prep.enhancement, prep.clahe_clip_limit, prep.clahe_tile_grid)
    if keep is not None:
        gray = np.where(keep, gray, 0).astype(np.uint8)
    return np.ascontiguousarray(resize(gray, prep.image_size, prep.resize)), found


def check_segmenter(prep: Preprocessing, segmenter: LungSegmenter | None) -> LungSegmenter:
    """The segmenter, refused if missing or if its weights differ from those the contract names."""
    if segmenter is None:
        raise CxrkitError("this preprocessing uses the lung segmenter (preprocess.lung_crop / "
                          "lung_mask_outside) but none was given; load models with cxrkit.load")
    if prep.segmenter and segmenter.digest != prep.segmenter:
        raise CxrkitError(f"lung segmenter {segmenter.digest} differs from the one this model was "
                          f"trained with ({prep.segmenter}); use the segmenter stored with the model")
    return segmenter


def channel_stats(channels: int, mean: float, std: float) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """Per-channel mean/std tuples for a grey image repeated over `channels`."""
    return (mean,) * channels, (std,) * channels


def imagenet_stats(channels: int) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """ImageNet mean/std, averaged to one channel for 1-channel models."""
    if channels == 3:
        return IMAGENET_MEAN, IMAGENET_STD
    return channel_stats(channels, float(np.mean(IMAGENET_MEAN)), float(np.mean(IMAGENET_STD)))
