"""Pixel arrays to bounded 2-D uint8 grey images: the steps every decoder shares.

`cxrkit.data.io` (PNG, JPEG, TIFF, ...) and `cxrkit.data.dicom` both end here, so neither
needs the other's helpers.
"""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
from PIL import Image

from cxrkit.errors import CxrkitError

MAX_IMAGE_PIXELS = 16_384 * 16_384
MAX_DECODE_SIDE = 4096
ROWS_PER_CHUNK = 256


def check_pixel_count(width: int, height: int, path: str | Path) -> None:
    """Refuse images over MAX_IMAGE_PIXELS before decoding them (decompression-bomb guard)."""
    if width * height > MAX_IMAGE_PIXELS:
        raise CxrkitError(
            f"{path}: {width}x{height} pixels is over the {MAX_IMAGE_PIXELS:,}-pixel limit for "
            "safe decoding; downsample the file (a chest X-ray needs at most a few thousand "
            "pixels a side)")


def to_uint8(array: np.ndarray) -> np.ndarray:
    """Scale any numeric 2-D array to uint8 using its own min/max (uint8 passes unchanged).

    Rows are scaled a block at a time, so a large 16-bit image never gets a full float copy.
    """
    if array.dtype == np.uint8:
        return array
    low, high = float(array.min()), float(array.max())
    if high <= low:
        return np.zeros(array.shape, dtype=np.uint8)
    scale = 255.0 / (high - low)
    out = np.empty(array.shape, dtype=np.uint8)
    for start in range(0, array.shape[0], ROWS_PER_CHUNK):
        rows = array[start:start + ROWS_PER_CHUNK].astype(np.float64)
        out[start:start + ROWS_PER_CHUNK] = np.round((rows - low) * scale)
    return out


def limit_side(gray: np.ndarray) -> np.ndarray:
    """Shrink a uint8 grey image whose long side exceeds MAX_DECODE_SIDE (area averaging)."""
    height, width = gray.shape
    longest = max(height, width)
    if longest <= MAX_DECODE_SIDE:
        return gray
    scale = MAX_DECODE_SIDE / longest
    size = (max(1, round(width * scale)), max(1, round(height * scale)))
    return cv2.resize(gray, size, interpolation=cv2.INTER_AREA)


def array_to_gray(array: np.ndarray) -> np.ndarray:
    """Convert an HxW, HxWx1, HxWx3 or HxWx4 array to a 2-D uint8 grey array."""
    array = np.asarray(array)
    if array.ndim == 3 and array.shape[2] == 1:
        array = array[:, :, 0]
    if array.ndim == 2:
        return to_uint8(array)
    if array.ndim == 3 and array.shape[2] in (3, 4):
        rgb = to_uint8(array[:, :, :3]) if array.dtype != np.uint8 else array[:, :, :3]
        return np.asarray(Image.fromarray(np.ascontiguousarray(rgb)).convert("L"))
    raise CxrkitError(f"image array has shape {array.shape}; expected HxW, HxWx1, HxWx3 or HxWx4")
