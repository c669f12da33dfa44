"""DICOM decoding: display pipeline, encodings that must agree, and clear refusals."""

from __future__ import annotations

import numpy as np
import pytest

pydicom = pytest.importorskip("pydicom")

from pydicom.dataset import Dataset, FileMetaDataset  # noqa: E402
from pydicom.uid import (  # noqa: E402
    DigitalXRayImageStorageForPresentation,
    ExplicitVRLittleEndian,
    JPEGLSLossless,
    RLELossless,
    generate_uid,
)

from cxrkit.data.dicom import dicom_info, read_dicom_gray  # noqa: E402
from cxrkit.data.io import read_gray  # noqa: E402
from cxrkit.data.normalise import model_input as normalised_input  # noqa: E402
from cxrkit.data.preprocess import Preprocessing, prepare  # noqa: E402
from cxrkit.errors import CxrkitError  # noqa: E402


def chest_like(bits: int = 12, shape=(48, 40)) -> np.ndarray:
    """A smooth 12-bit phantom with dark lungs and a bright spine and border."""
    rows, cols = np.mgrid[0:shape[0], 0:shape[1]]
    image = 1500 + 900 * np.cos(cols / shape[1] * 2 * np.pi) + 8 * rows
    image[:, shape[1] // 2 - 2: shape[1] // 2 + 2] = 3800
    image[:3] = 0
    return np.clip(image, 0, 2**bits - 1).astype(np.uint16)


def write_dicom(path, pixels: np.ndarray, photometric: str = "MONOCHROME2", bits: int = 12,
                **elements) -> str:
    dataset = Dataset()
    dataset.file_meta = FileMetaDataset()
    dataset.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    dataset.file_meta.MediaStorageSOPClassUID = DigitalXRayImageStorageForPresentation
    dataset.SOPClassUID = DigitalXRayImageStorageForPresentation
    dataset.SOPInstanceUID = generate_uid()
    dataset.Modality = "DX"
    dataset.set_pixel_data(pixels, photometric, bits)
    for keyword, value in elements.items():
        setattr(dataset, keyword, value)
    dataset.save_as(path, enforce_file_format=True)
    return str(path)


def model_input(path) -> np.ndarray:
    prep = Preprocessing(image_size=32)
    return normalised_input(prepare(read_gray(path), prep), prep).numpy()


def test_monochrome1_and_monochrome2_give_the_same_model_input(tmp_path):
    image = chest_like()
    mono2 = write_dicom(tmp_path / "m2.dcm", image, "MONOCHROME2")
    mono1 = write_dicom(tmp_path / "m1.dcm", (4095 - image).astype(np.uint16), "MONOCHROME1")
    gray = read_dicom_gray(mono2)
    assert gray[0, 0] == 0 and gray[10, 20] == 255, "air must be dark and bone bright"
    np.testing.assert_array_equal(read_dicom_gray(mono1), gray)
    np.testing.assert_array_equal(model_input(mono1), model_input(mono2))


def test_monochrome1_with_mirrored_window_matches_monochrome2(tmp_path):
    image = chest_like()
    mono2 = write_dicom(tmp_path / "m2.dcm", image, "MONOCHROME2",
                        WindowCenter=1800, WindowWidth=1601)
    mono1 = write_dicom(tmp_path / "m1.dcm", (4095 - image).astype(np.uint16), "MONOCHROME1",
                        WindowCenter=4095 - 1800 + 1, WindowWidth=1601)
    np.testing.assert_array_equal(read_dicom_gray(mono1), read_dicom_gray(mono2))


def test_window_saturates_outside_its_range(tmp_path):
    image = chest_like()
    windowed = read_dicom_gray(write_dicom(tmp_path / "w.dcm", image, WindowCenter=1500,
                                           WindowWidth=400))
    plain = read_dicom_gray(write_dicom(tmp_path / "p.dcm", image))
    low, high = 1500 - 200, 1500 + 200
    assert (windowed[image <= low] == 0).all() and (windowed[image >= high] == 255).all()
    assert not np.array_equal(windowed, plain)


def test_rescale_slope_and_intercept_are_applied(tmp_path):
    image = chest_like()
    negative_slope = read_dicom_gray(write_dicom(tmp_path / "r.dcm", image,
                                                 RescaleSlope=-1, RescaleIntercept=4095))
    plain = read_dicom_gray(write_dicom(tmp_path / "p.dcm", image))
    difference = negative_slope.astype(int) - (255 - plain.astype(int))
    assert np.abs(difference).max() <= 1, "a negative slope inverts the image (up to rounding)"


def test_16_bit_signed_pixels(tmp_path):
    image = (chest_like(bits=15).astype(np.int32) * 2 - 32000).astype(np.int16)
    gray = read_dicom_gray(write_dicom(tmp_path / "s.dcm", image, bits=16))
    assert gray.dtype == np.uint8 and gray.min() == 0 and gray.max() == 255
    assert gray[10, 20] == 255


def test_voi_lut_sequence_is_applied(tmp_path):
    image = chest_like()
    lut_item = Dataset()
    lut_item.LUTDescriptor = [4096, 0, 16]
    lut_item.LUTData = np.minimum(np.arange(4096), 2047).astype("<u2").tobytes()
    path = write_dicom(tmp_path / "lut.dcm", image, VOILUTSequence=[lut_item])
    gray = read_dicom_gray(path)
    assert (gray[image >= 2047] == 255).all(), "the LUT clips everything above 2047"


def test_rle_compressed_pixels_decode_like_uncompressed(tmp_path):
    image = chest_like()
    plain = write_dicom(tmp_path / "plain.dcm", image)
    dataset = pydicom.dcmread(plain)
    dataset.compress(RLELossless)
    dataset.save_as(tmp_path / "rle.dcm")
    np.testing.assert_array_equal(read_dicom_gray(tmp_path / "rle.dcm"), read_dicom_gray(plain))


def test_compressed_syntax_without_decoder_gives_a_clear_error(tmp_path):
    plain = write_dicom(tmp_path / "plain.dcm", chest_like())
    dataset = pydicom.dcmread(plain)
    dataset.file_meta.TransferSyntaxUID = JPEGLSLossless
    dataset.PixelData = pydicom.encaps.encapsulate([b"\xff\xd8 not really jpeg-ls \xff\xd9"])
    dataset["PixelData"].VR = "OB"
    dataset.save_as(tmp_path / "jls.dcm")
    with pytest.raises(CxrkitError, match=r"jls\.dcm: cannot decode JPEG-LS.*pip install"):
        read_gray(tmp_path / "jls.dcm")


def test_multi_frame_is_rejected(tmp_path):
    frames = np.stack([chest_like(), chest_like()])
    dataset = Dataset()
    dataset.file_meta = FileMetaDataset()
    dataset.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    dataset.SOPClassUID = DigitalXRayImageStorageForPresentation
    dataset.SOPInstanceUID = generate_uid()
    dataset.set_pixel_data(frames, "MONOCHROME2", 12)
    dataset.save_as(tmp_path / "multi.dcm", enforce_file_format=True)
    with pytest.raises(CxrkitError, match=r"multi\.dcm: multi-frame DICOM \(2 frames\)"):
        read_gray(tmp_path / "multi.dcm")


def test_not_a_dicom_and_no_pixels(tmp_path):
    (tmp_path / "text.dcm").write_text("hello, not a DICOM")
    with pytest.raises(CxrkitError, match=r"text\.dcm: "):
        read_gray(tmp_path / "text.dcm")
    dataset = pydicom.dcmread(write_dicom(tmp_path / "p.dcm", chest_like()))
    del dataset.PixelData
    dataset.save_as(tmp_path / "nopix.dcm")
    with pytest.raises(CxrkitError, match=r"nopix\.dcm: DICOM has no pixel data"):
        read_gray(tmp_path / "nopix.dcm")


def test_dicom_info_reads_the_header(tmp_path):
    path = write_dicom(tmp_path / "m1.dcm", chest_like(), "MONOCHROME1")
    info = dicom_info(path)
    assert info["format"] == "DICOM" and info["mode"] == "MONOCHROME1"
    assert (info["bit_depth"], info["width"], info["height"]) == (12, 40, 48)
