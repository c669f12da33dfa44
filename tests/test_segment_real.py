"""The shipped lung segmenter on real radiographs: Dice on held-out patients, torch vs ONNX, fallbacks."""

from __future__ import annotations

import json

import numpy as np
import pytest

from conftest import shared_data
from cxrkit.data.io import read_gray
from cxrkit.data.preprocess import Preprocessing, prepare
from cxrkit.data.splits import split_by_patient
from cxrkit.segment.lungs import dice
from cxrkit.segment.train import SegmentConfig, data_digest, load_pairs, read_mask_table
from cxrkit.segment.weights import default_weights_path, read_weights, torch_segmenter

pytestmark = pytest.mark.slow


def card() -> dict:
    return json.loads(default_weights_path().with_suffix(".json").read_text())


def held_out_table():
    """The card's test patients, rebuilt from its settings (same seed, same fractions, same data)."""
    config = SegmentConfig(**card()["config"])
    table = read_mask_table(shared_data("tb-nlm.csv"))
    table["split"] = split_by_patient(table, config.val_fraction, config.test_fraction, config.seed)
    return table


def test_shipped_weights_reach_dice_095_on_held_out_patients():
    table = held_out_table()
    assert data_digest(table[["path", "mask"]]) == card()["data_sha256_16"], "tb-nlm data changed"
    test = table[table["split"] == "test"].reset_index(drop=True)
    assert len(test) == card()["images"]["test"] and set(test["site"]) == {"Montgomery", "Shenzhen"}
    images, masks = load_pairs(test)
    results = torch_segmenter().segment_many(images)
    scores = [dice(r.mask if r.found else np.zeros_like(r.mask), m) for r, m in zip(results, masks, strict=True)]
    assert np.mean(scores) >= 0.95
    assert abs(np.mean(scores) - card()["test_dice_mean"]) < 0.002
    for site in ("Montgomery", "Shenzhen"):
        assert np.mean([s for s, where in zip(scores, test["site"], strict=True) if where == site]) >= 0.93


def test_shipped_weights_card_matches_the_file():
    from cxrkit.segment.weights import weights_digest

    assert weights_digest(read_weights()) == card()["weights_digest"]
    assert card()["command"].startswith("cxrkit segment train --data ../shared/data/tb-nlm.csv")
    assert default_weights_path().stat().st_size < 2_000_000


def test_torch_and_onnx_give_the_same_crop_on_real_images():
    from cxrkit.segment.onnx import encode, onnx_segmenter
    from cxrkit.segment.weights import onnx_bytes

    weights = read_weights()
    torch_side = torch_segmenter(weights)
    onnx_side = onnx_segmenter(encode(onnx_bytes(weights)), weights["input_size"], torch_side.digest)
    paths = sorted(shared_data("tb", "Tuberculosis").glob("*.png"))[:10] + \
        sorted(shared_data("tb-nlm", "Normal").glob("*.png"))[:10]
    prep = Preprocessing(image_size=128, lung_crop=True, lung_mask_outside=True, segmenter=torch_side.digest)
    for path in paths:
        gray = read_gray(path)
        a, b = torch_side.segment(gray), onnx_side.segment(gray)
        assert a.found == b.found and a.box(0.1) == b.box(0.1), path
        assert (a.mask != b.mask).mean() < 1e-3, path
        np.testing.assert_array_equal(prepare(gray, prep, torch_side), prepare(gray, prep, onnx_side))


def test_lungs_are_found_in_other_sources_and_not_in_photos():
    from skimage import data as samples

    segmenter = torch_segmenter()
    chests = [read_gray(p) for p in sorted(shared_data("tb", "Normal").glob("*.png"))[:40]]
    chests += [read_gray(p) for p in sorted(shared_data("pneumonia", "test", "NORMAL").glob("*"))[:20]]
    assert np.mean([r.found for r in segmenter.segment_many(chests)]) >= 0.9
    photos = [samples.camera(), samples.coins(), samples.moon(), samples.page(), samples.text(),
              (samples.astronaut().mean(axis=2)).astype(np.uint8), (samples.coffee().mean(axis=2)).astype(np.uint8)]
    assert np.mean([r.found for r in segmenter.segment_many(photos)]) <= 0.3
