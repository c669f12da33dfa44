"""Decode any supported image file to a 2-D uint8 grayscale array.

X-rays are grey-level images: RGB and RGBA inputs are converted to grey, 16-bit PNG/TIFF
is scaled by its real range, and DICOM goes through `cxrkit.data.dicom`.

Decoding is bounded (limits in `cxrkit.data.pixels`): files over `MAX_IMAGE_PIXELS` are
refused before their pixels are read (a decompression bomb cannot exhaust memory), JPEGs are
decoded at reduced scale by libjpeg, and every decoded image longer than `MAX_DECODE_SIDE` is
shrunk to it, far above any model input size.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image, UnidentifiedImageError

from cxrkit.data import pixels
from cxrkit.data.pixels import ROWS_PER_CHUNK, array_to_gray, check_pixel_count, limit_side, to_uint8
from cxrkit.errors import CxrkitError

IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".dcm", ".dicom"}
DICOM_SUFFIXES = {".dcm", ".dicom"}
Image.MAX_IMAGE_PIXELS = pixels.MAX_IMAGE_PIXELS
BIT_DEPTHS = {"1": 1, "L": 8, "P": 8, "LA": 8, "PA": 8, "RGB": 8, "RGBA": 8, "CMYK": 8,
              "YCbCr": 8, "I;16": 16, "I;16B": 16, "I;16L": 16, "I": 32, "F": 32}


def is_image_file(path: str | Path) -> bool:
    """True for a file whose suffix cxrkit can decode."""
    return Path(path).suffix.lower() in IMAGE_SUFFIXES


def pil_to_gray(image: Image.Image) -> np.ndarray:
    """Convert a PIL image of any mode to a 2-D uint8 grey array."""
    if image.mode in ("I;16", "I;16B", "I;16L", "I", "F"):
        return to_uint8(np.asarray(image))
    if image.mode == "P":
        return _palette_to_gray(image)
    if image.mode in ("RGBA", "LA", "PA"):
        return _alpha_over_black(image)
    return np.asarray(image.convert("L"))


def _alpha_over_black(image: Image.Image) -> np.ndarray:
    """Grey composited over black, a strip of rows at a time (no full-size RGBA or LA copies)."""
    width, height = image.size
    out = np.empty((height, width), dtype=np.uint8)
    for start in range(0, height, ROWS_PER_CHUNK):
        strip = image.crop((0, start, width, min(height, start + ROWS_PER_CHUNK))).convert("LA")
        pairs = np.asarray(strip).astype(np.uint16)
        out[start:start + ROWS_PER_CHUNK] = (pairs[..., 0] * pairs[..., 1] + 127) // 255
    return out


def _palette_to_gray(image: Image.Image) -> np.ndarray:
    """A palette image through a 256-entry grey lookup table (transparency over black)."""
    palette = Image.new("P", (256, 1))
    mode = image.palette.mode if image.palette is not None else "RGB"
    palette.putpalette(image.getpalette(mode) or [value for value in range(256) for _ in mode], mode)
    if "transparency" in image.info:
        palette.info["transparency"] = image.info["transparency"]
    palette.putdata(list(range(256)))
    lookup = _alpha_over_black(palette.convert("LA"))[0]
    return lookup[np.asarray(image)]


def _check_file(path: Path) -> None:
    if not path.is_file():
        raise CxrkitError(f"{path}: no such image file")
    if path.stat().st_size == 0:
        raise CxrkitError(f"{path}: file is empty (0 bytes); remove or replace it")


def read_gray(path: str | Path) -> np.ndarray:
    """Read an image file as a 2-D uint8 grey array, or raise CxrkitError naming the file.

    Images longer than MAX_DECODE_SIDE come back shrunk to it (see the module docstring).
    """
    path = Path(path)
    _check_file(path)
    if path.suffix.lower() in DICOM_SUFFIXES:
        from cxrkit.data.dicom import read_dicom_gray

        return read_dicom_gray(path)
    try:
        with Image.open(path) as image:
            check_pixel_count(*image.size, path)
            image.draft("L", (pixels.MAX_DECODE_SIDE, pixels.MAX_DECODE_SIDE))
            return limit_side(pil_to_gray(image))
    except Image.DecompressionBombError as error:
        raise CxrkitError(f"{path}: image too large to decode safely ({error})") from error
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as error:
        raise CxrkitError(f"{path}: not a readable image ({error})") from error


def image_info(path: str | Path) -> dict:
    """Format, mode, bit depth and size read from the file header, without decoding pixels."""
    path = Path(path)
    _check_file(path)
    if path.suffix.lower() in DICOM_SUFFIXES:
        from cxrkit.data.dicom import dicom_info

        return dicom_info(path)
    try:
        with Image.open(path) as image:
            width, height = image.size
            return {"format": image.format or path.suffix.lstrip(".").upper(), "mode": image.mode,
                    "bit_depth": BIT_DEPTHS.get(image.mode, 8), "width": width, "height": height}
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
    raise CxrkitError(f"cannot read an image from {type(image).__name__}; "
                      "pass a path, PIL image or array")
