"""Decode an uploaded file (PNG, JPEG, DICOM, ...) to a grey array, or say clearly why not.

Uploads are untrusted: the pixel count read from the header is checked against a budget
(`max_pixels`, `cxrkit serve --max-pixels`) before anything is decompressed, and any decoder
failure becomes a `CxrkitError` naming the file, never a server error.
"""

from __future__ import annotations

import io
import tempfile
from pathlib import Path

import numpy as np
from PIL import Image

from cxrkit.data.io import DICOM_SUFFIXES, pil_to_gray, read_gray
from cxrkit.errors import CxrkitError

MAX_SIDE = 8192
DEFAULT_MAX_PIXELS = 4096 * 4096
DICOM_MAGIC_OFFSET = 128


class UploadTooLarge(CxrkitError):
    """An upload whose bytes or pixel dimensions exceed what the server accepts."""


def is_dicom(data: bytes, filename: str) -> bool:
    """DICOM by suffix or by the 'DICM' marker after the 128-byte preamble."""
    marker = data[DICOM_MAGIC_OFFSET:DICOM_MAGIC_OFFSET + 4] == b"DICM"
    return marker or Path(filename).suffix.lower() in DICOM_SUFFIXES


def decode_image(data: bytes, filename: str, max_pixels: int = DEFAULT_MAX_PIXELS) -> np.ndarray:
    """A 2-D uint8 grey array for the uploaded bytes; CxrkitError (or UploadTooLarge) if not."""
    try:
        if not data:
            raise CxrkitError("file is empty (0 bytes)")
        decode = _decode_dicom if is_dicom(data, filename) else _decode_pillow
        gray = decode(data, max_pixels)
        _check_size(gray.shape[1], gray.shape[0], max_pixels)
        return gray
    except CxrkitError as error:
        raise type(error)(f"{filename}: {error}") from error
    except Exception as error:  # decoders raise many types on crafted files; all mean "bad file"
        reason = f"{type(error).__name__}: {error}"
        raise CxrkitError(f"{filename}: not a readable image ({reason})") from error


def _decode_pillow(data: bytes, max_pixels: int) -> np.ndarray:
    try:
        image = Image.open(io.BytesIO(data))
    except Image.DecompressionBombError as error:
        raise UploadTooLarge(f"image has too many pixels to decode safely ({error})") from error
    except Exception as error:
        raise CxrkitError("not a PNG, JPEG, BMP, TIFF or DICOM image") from error
    with image:
        _check_size(*image.size, max_pixels)  # header only: nothing decompressed yet
        image.draft("L", (4096, 4096))
        return pil_to_gray(image)


def _decode_dicom(data: bytes, max_pixels: int) -> np.ndarray:
    from cxrkit.data.dicom import dicom_info

    with tempfile.TemporaryDirectory(prefix="cxrkit-upload-") as folder:
        path = Path(folder) / "upload.dcm"
        path.write_bytes(data)
        try:
            info = dicom_info(path)
            _check_size(int(info.get("width") or 0), int(info.get("height") or 0), max_pixels)
            return read_gray(path)
        except CxrkitError as error:
            raise type(error)(str(error).removeprefix(f"{path}: ")) from error


def _check_size(width: int, height: int, max_pixels: int) -> None:
    if max(width, height) > MAX_SIDE or width * height > max_pixels:
        raise UploadTooLarge(f"image is {width}x{height} pixels; the server accepts at most "
                             f"{max_pixels:,} pixels and {MAX_SIDE} a side, downsize it first")
