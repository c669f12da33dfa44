"""Read a single-frame DICOM radiograph as the grey image a reader would see on screen.

The display pipeline of the standard, in order: the modality LUT (rescale slope/intercept),
the VOI LUT or window, then MONOCHROME1 inversion so that bone is always bright. The result
is scaled to uint8 by its own range, like any other 12- to 16-bit image in cxrkit.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from cxrkit.data.pixels import array_to_gray, check_pixel_count, limit_side, to_uint8
from cxrkit.errors import CxrkitError

DECODER_HINT = ('install the decoders with `pip install pylibjpeg pylibjpeg-libjpeg '
                'pylibjpeg-openjpeg` (or `pip install python-gdcm`), or convert the file to '
                'uncompressed DICOM or PNG')


def _one_line(error: Exception) -> str:
    return " ".join(str(error).split())


def _pydicom():
    try:
        import pydicom
    except ImportError as error:
        raise CxrkitError('reading DICOM needs pydicom: pip install "cxrkit[dicom]"') from error
    return pydicom


def _read_dataset(path: Path, stop_before_pixels: bool):
    pydicom = _pydicom()
    try:
        try:
            return pydicom.dcmread(path, stop_before_pixels=stop_before_pixels)
        except pydicom.errors.InvalidDicomError:
            dataset = pydicom.dcmread(path, stop_before_pixels=stop_before_pixels, force=True)
            if "Rows" not in dataset:
                raise
            return dataset
    except pydicom.errors.InvalidDicomError as error:
        raise CxrkitError(f"{path}: not a DICOM file ({_one_line(error)})") from error
    except (OSError, ValueError, EOFError, AttributeError, KeyError) as error:
        raise CxrkitError(f"{path}: unreadable DICOM ({_one_line(error)})") from error


def _check_single_frame(dataset, path: Path) -> None:
    frames = int(dataset.get("NumberOfFrames", 1) or 1)
    if frames > 1:
        raise CxrkitError(f"{path}: multi-frame DICOM ({frames} frames) is not supported; "
                          "save the frame you want as a single-frame DICOM or PNG")


def _transfer_syntax(dataset):
    file_meta = getattr(dataset, "file_meta", None)
    return file_meta.get("TransferSyntaxUID") if file_meta is not None else None


def dicom_info(path: str | Path) -> dict:
    """Format, photometric interpretation, bits stored and size from the DICOM header."""
    path = Path(path)
    dataset = _read_dataset(path, stop_before_pixels=True)
    syntax = _transfer_syntax(dataset)
    return {"format": "DICOM", "mode": str(dataset.get("PhotometricInterpretation", "")),
            "bit_depth": int(dataset.get("BitsStored", dataset.get("BitsAllocated", 0)) or 0),
            "width": int(dataset.get("Columns", 0)), "height": int(dataset.get("Rows", 0)),
            "transfer_syntax": syntax.name if syntax else None}


def _decode_pixels(dataset, path: Path) -> np.ndarray:
    syntax = _transfer_syntax(dataset)
    try:
        return dataset.pixel_array
    except (RuntimeError, NotImplementedError) as error:
        if syntax is not None and syntax.is_compressed:
            raise CxrkitError(f"{path}: cannot decode {syntax.name} pixel data "
                              f"({_one_line(error)}); {DECODER_HINT}") from error
        raise CxrkitError(f"{path}: cannot decode DICOM pixel data ({_one_line(error)})") from error
    except (ValueError, AttributeError, KeyError, TypeError) as error:
        raise CxrkitError(f"{path}: corrupt DICOM pixel data ({_one_line(error)})") from error


def read_dicom_gray(path: str | Path) -> np.ndarray:
    """Read a single-frame DICOM as a 2-D uint8 grey array, bone bright whatever the encoding."""
    from pydicom.pixels import apply_modality_lut, apply_voi_lut

    path = Path(path)
    dataset = _read_dataset(path, stop_before_pixels=False)
    if "PixelData" not in dataset:
        raise CxrkitError(f"{path}: DICOM has no pixel data (a report, DICOMDIR or "
                          "presentation state?); give the image files instead")
    _check_single_frame(dataset, path)
    check_pixel_count(int(dataset.get("Columns", 0)), int(dataset.get("Rows", 0)), path)
    pixels = _decode_pixels(dataset, path)
    photometric = str(dataset.get("PhotometricInterpretation", "MONOCHROME2")).upper()
    if not photometric.startswith("MONOCHROME"):
        return limit_side(array_to_gray(pixels))
    try:
        values = apply_voi_lut(apply_modality_lut(pixels, dataset), dataset, index=0)
    except (ValueError, NotImplementedError, AttributeError, TypeError) as error:
        raise CxrkitError(f"{path}: invalid rescale, VOI LUT or window ({_one_line(error)})") \
            from error
    values = np.asarray(values, dtype=np.float64)
    if photometric == "MONOCHROME1":
        values = -values
    return limit_side(to_uint8(values))
