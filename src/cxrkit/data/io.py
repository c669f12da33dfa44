"""Decode any supported image file to a 2-D uint8 grayscale array.

X-rays are grey-level images: RGB and RGBA inputs are converted to grey, 16-bit PNG/TIFF
is scaled by its real range, and DICOM goes through `cxrkit.data.dicom`.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image, UnidentifiedImageError

from cxrkit.errors import CxrkitError

IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".dcm", ".dicom"}
DICOM_SUFFIXES = {".dcm", ".dicom"}
MAX_IMAGE_PIXELS = 20_000 * 20_000
Image.MAX_IMAGE_PIXELS = MAX_IMAGE_PIXELS


def is_image_file(path: str | Path) -> bool:
    """True for a file whose suffix cxrkit can decode."""
    return Path(path).suffix.lower() in IMAGE_SUFFIXES


def to_uint8(array: np.ndarray) -> np.ndarray:
    """Scale any numeric 2-D array to uint8 using its own min/max (uint8 passes unchanged)."""
    if array.dtype == np.uint8:
        return array
    array = array.astype(np.float32)
    low, high = float(array.min()), float(array.max())
    if high <= low:
        return np.zeros(array.shape, dtype=np.uint8)
    return np.round((array - low) * (255.0 / (high - low))).astype(np.uint8)


def pil_to_gray(image: Image.Image) -> np.ndarray:
    """Convert a PIL image of any mode to a 2-D uint8 grey array."""
    if image.mode in ("I;16", "I;16B", "I;16L", "I", "F"):
        return to_uint8(np.asarray(image))
    if image.mode in ("RGBA", "LA", "P", "PA"):
        image = image.convert("RGBA")
        background = Image.new("RGBA", image.size, (0, 0, 0, 255))
        image = Image.alpha_composite(background, image)
    return np.asarray(image.convert("L"))


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


def read_gray(path: str | Path) -> np.ndarray:
    """Read an image file as a 2-D uint8 grey array, or raise CxrkitError naming the file."""
    path = Path(path)
    if not path.is_file():
        raise CxrkitError(f"{path}: no such image file")
    if path.stat().st_size == 0:
        raise CxrkitError(f"{path}: file is empty (0 bytes); remove or replace it")
    if path.suffix.lower() in DICOM_SUFFIXES:
        from cxrkit.data.dicom import read_dicom_gray

        return read_dicom_gray(path)
    try:
        with Image.open(path) as image:
            image.draft("L", (4096, 4096))
            return pil_to_gray(image)
    except Image.DecompressionBombError as error:
        raise CxrkitError(f"{path}: image too large to decode safely ({error})") from error
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as error:
        raise CxrkitError(f"{path}: not a readable image ({error})") from error


def to_gray(image) -> np.ndarray:
    """Accept a path, PIL image or numpy array and return a 2-D uint8 grey array."""
    if isinstance(image, (str, Path)):
        return read_gray(image)
    if isinstance(image, Image.Image):
        return pil_to_gray(image)
    if isinstance(image, np.ndarray):
        return array_to_gray(image)
    raise CxrkitError(f"cannot read an image from {type(image).__name__}; pass a path, PIL image or array")
