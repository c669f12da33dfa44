"""Image decoding: 16-bit scaling, colour to grey, bad files and the large-image guards."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from cxrkit.data import pixels
from cxrkit.data.io import image_info, read_gray, to_gray
from cxrkit.errors import CxrkitError


def test_16_bit_png_is_scaled_by_its_real_range(tmp_path):
    twelve_bit = (np.arange(64 * 64, dtype=np.uint32).reshape(64, 64) % 4096).astype(np.uint16)
    path = tmp_path / "x16.png"
    Image.fromarray(twelve_bit).save(path)
    assert Image.open(path).mode.startswith("I"), "the file must really be 16-bit"
    gray = read_gray(path)
    assert gray.dtype == np.uint8 and gray.min() == 0 and gray.max() == 255
    expected = np.round(twelve_bit / 4095 * 255).astype(np.uint8)
    np.testing.assert_array_equal(gray, expected)
    assert image_info(path)["bit_depth"] == 16


def test_narrow_16_bit_range_is_not_clipped_to_white(tmp_path):
    narrow = np.full((32, 32), 40_000, dtype=np.uint16)
    narrow[:, 16:] = 40_100
    Image.fromarray(narrow).save(tmp_path / "n.png")
    gray = read_gray(tmp_path / "n.png")
    assert set(np.unique(gray)) == {0, 255}


def test_rgb_and_rgba_become_grey(tmp_path):
    rgb = np.zeros((8, 8, 3), dtype=np.uint8)
    rgb[..., 1] = 200
    Image.fromarray(rgb).save(tmp_path / "rgb.jpg")
    gray = read_gray(tmp_path / "rgb.jpg")
    assert gray.shape == (8, 8) and abs(int(gray.mean()) - 117) <= 3
    rgba = np.dstack([rgb, np.full((8, 8), 255, np.uint8)])
    np.testing.assert_array_equal(to_gray(rgba), to_gray(rgb))


def test_zero_byte_and_corrupt_files_name_the_file(tmp_path):
    (tmp_path / "empty.png").write_bytes(b"")
    (tmp_path / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n garbage")
    with pytest.raises(CxrkitError, match=r"empty\.png: file is empty"):
        read_gray(tmp_path / "empty.png")
    with pytest.raises(CxrkitError, match=r"broken\.png: not a readable image"):
        read_gray(tmp_path / "broken.png")


def test_images_over_the_pixel_limit_are_refused_before_decoding(tmp_path, monkeypatch):
    Image.fromarray(np.zeros((40, 50), dtype=np.uint8)).save(tmp_path / "big.png")
    monkeypatch.setattr(pixels, "MAX_IMAGE_PIXELS", 1999)
    with pytest.raises(CxrkitError, match=r"big\.png: 50x40 pixels is over the 1,999-pixel limit"):
        read_gray(tmp_path / "big.png")


def test_long_images_are_shrunk_to_the_decode_limit(tmp_path, monkeypatch):
    stripes = np.tile(np.array([0, 255], dtype=np.uint8), (60, 100))
    Image.fromarray(stripes).save(tmp_path / "wide.png")
    Image.fromarray(stripes).save(tmp_path / "wide.jpg", quality=95)
    monkeypatch.setattr(pixels, "MAX_DECODE_SIDE", 50)
    for name in ("wide.png", "wide.jpg"):
        gray = read_gray(tmp_path / name)
        assert gray.shape == (15, 50), name
        assert abs(float(gray.mean()) - 127.5) < 5, "area averaging keeps the mean"


def test_to_uint8_scales_large_arrays_in_blocks():
    values = np.linspace(-5.0, 5.0, 1000 * 3).reshape(1000, 3)
    out = pixels.to_uint8(values)
    assert out[0, 0] == 0 and out[-1, -1] == 255
    np.testing.assert_array_equal(out, np.round((values + 5) * 25.5).astype(np.uint8))
