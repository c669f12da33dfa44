"""Lung segmenter: numpy pre/post-processing, the lung_crop contract, training, predict, torch vs ONNX."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pandas as pd
import pytest
import torch

from cxrkit.cli import main
from cxrkit.data.preprocess import Preprocessing, prepare, prepare_with_lungs
from cxrkit.errors import CxrkitError
from cxrkit.segment.lungs import LungSegmenter, clean_mask, crop_box, dice, is_plausible, network_input

SIZE = 96


def synthetic_chest(rng: np.random.Generator, size: int = SIZE) -> tuple[np.ndarray, np.ndarray]:
    """A bright thorax with two dark lung ellipses and a white label box in the top-left corner."""
    y, x = np.mgrid[0:size, 0:size] / size
    image = np.full((size, size), 190.0)
    mask = np.zeros((size, size), dtype=bool)
    for side in (-1, 1):
        cx, cy = 0.5 + side * rng.uniform(0.16, 0.2), rng.uniform(0.5, 0.56)
        mask |= (((x - cx) / rng.uniform(0.11, 0.14)) ** 2 + ((y - cy) / rng.uniform(0.24, 0.28)) ** 2) < 1
    image[mask] = 60
    image[2:10, 2:16] = 255
    image += rng.normal(0, 6, image.shape)
    return np.clip(image, 0, 255).astype(np.uint8), mask


def dark_is_lung(batch: np.ndarray) -> np.ndarray:
    """A stand-in network: dark pixels (negative z-score) are lung, away from the label box."""
    return -6.0 * batch - 3.0


def fake_segmenter(digest: str = "fake") -> LungSegmenter:
    return LungSegmenter(dark_is_lung, 48, digest, "numpy")


def test_network_input_is_standardised():
    image, _ = synthetic_chest(np.random.default_rng(0))
    data = network_input(image, 32)
    assert data.shape == (1, 32, 32) and data.dtype == np.float32
    assert abs(data.mean()) < 1e-4 and abs(data.std() - 1) < 1e-3


def test_clean_mask_keeps_two_lungs_and_drops_specks():
    probability = np.zeros((40, 40), dtype=np.float32)
    probability[5:35, 4:16] = probability[5:35, 24:36] = 1.0
    probability[0, 39] = 1.0
    mask = clean_mask(probability, (80, 80))
    assert mask.shape == (80, 80)
    assert not mask[0:2, 76:].any()
    assert mask[40, 20] and mask[40, 60] and not mask[40, 40]
    assert is_plausible(mask)


def test_implausible_masks_are_refused():
    tiny = np.zeros((100, 100), dtype=bool)
    tiny[10:14, 10:14] = True
    assert not is_plausible(tiny)
    assert not is_plausible(np.ones((100, 100), dtype=bool))


def test_crop_box_grows_by_margin_and_stays_inside():
    mask = np.zeros((100, 100), dtype=bool)
    mask[20:80, 10:90] = True
    assert crop_box(mask, 0.0) == (20, 80, 10, 90)
    assert crop_box(mask, 0.1) == (14, 86, 2, 98)
    assert crop_box(mask, 0.5) == (0, 100, 0, 100)


def test_segmenter_finds_the_synthetic_lungs():
    image, truth = synthetic_chest(np.random.default_rng(1))
    lungs = fake_segmenter().segment(image)
    assert lungs.found
    assert dice(lungs.mask, truth) > 0.9


def test_lung_crop_cuts_away_the_corner_label():
    image, truth = synthetic_chest(np.random.default_rng(2))
    prep = Preprocessing(image_size=32, lung_crop=True, lung_crop_margin=0.05, segmenter="fake")
    prepared, found = prepare_with_lungs(image, prep, fake_segmenter())
    assert found is True and prepared.shape == (32, 32)
    top, bottom, left, right = fake_segmenter().segment(image).box(0.05)
    assert top >= 10 or left >= 16  # the label box (rows 2-9, columns 2-15) is cut away
    expected = prepare(image[top:bottom, left:right], Preprocessing(image_size=32))
    np.testing.assert_array_equal(prepared, expected)


def test_lung_mask_outside_blanks_what_is_not_lung():
    image, truth = synthetic_chest(np.random.default_rng(3))
    prep = Preprocessing(image_size=SIZE, resize="stretch", lung_mask_outside=True, lung_crop_margin=0.0,
                         segmenter="fake")
    prepared = prepare(image, prep, fake_segmenter())
    assert prepared[5, 5] == 0 and prepared[SIZE // 2, 2] == 0
    assert (prepared[truth] > 0).mean() > 0.95


def test_no_plausible_lung_falls_back_to_the_whole_image():
    flat = np.full((64, 64), 120, dtype=np.uint8)
    prep = Preprocessing(image_size=32, lung_crop=True, lung_mask_outside=True, segmenter="fake")
    prepared, found = prepare_with_lungs(flat, prep, fake_segmenter())
    assert found is False
    np.testing.assert_array_equal(prepared, prepare(flat, Preprocessing(image_size=32)))


def test_contract_needs_the_right_segmenter():
    image, _ = synthetic_chest(np.random.default_rng(4))
    prep = Preprocessing(image_size=32, lung_crop=True, segmenter="abc")
    with pytest.raises(CxrkitError, match="lung segmenter"):
        prepare(image, prep)
    with pytest.raises(CxrkitError, match="differs from the one this model was trained with"):
        prepare(image, prep, fake_segmenter("other"))
    assert prepare_with_lungs(image, Preprocessing(image_size=32))[1] is None


def test_cache_key_covers_lung_options_and_weights():
    plain = Preprocessing()
    crop = Preprocessing(lung_crop=True, segmenter="a")
    assert plain.cache_key() == Preprocessing(lung_crop_margin=0.3).cache_key()
    assert len({plain.cache_key(), crop.cache_key(), Preprocessing(lung_crop=True, segmenter="b").cache_key(),
                Preprocessing(lung_crop=True, lung_crop_margin=0.2, segmenter="a").cache_key(),
                Preprocessing(lung_mask_outside=True, segmenter="a").cache_key()}) == 5
    assert Preprocessing.from_dict(crop.to_dict()) == crop


def write_mask_set(root: Path, count: int = 40, size: int = SIZE) -> Path:
    """images/, masks/ and lungs.csv (path,mask,patient,site) of synthetic chests."""
    rng = np.random.default_rng(0)
    rows = []
    for index in range(count):
        image, mask = synthetic_chest(rng, size)
        (root / "images").mkdir(parents=True, exist_ok=True)
        (root / "masks").mkdir(exist_ok=True)
        cv2.imwrite(str(root / "images" / f"p{index:02d}.png"), image)
        cv2.imwrite(str(root / "masks" / f"p{index:02d}.png"), mask.astype(np.uint8) * 255)
        rows.append({"path": f"images/p{index:02d}.png", "mask": f"masks/p{index:02d}.png",
                     "patient": f"p{index:02d}", "site": "A" if index % 2 else "B"})
    pd.DataFrame(rows).to_csv(root / "lungs.csv", index=False)
    return root / "lungs.csv"


TINY = ["--set", "image_size=32", "--set", "width=4", "--set", "levels=2", "--set", "epochs=20",
        "--set", "batch_size=8", "--set", "lr=0.02", "--set", "threads=1"]


@pytest.fixture(scope="module")
def tiny_weights(tmp_path_factory) -> Path:
    """A tiny U-Net trained by `cxrkit segment train` on synthetic chests (a few seconds)."""
    root = tmp_path_factory.mktemp("lungs")
    csv_path = write_mask_set(root)
    assert main(["segment", "train", "--data", str(csv_path), "--out", str(root / "out"), *TINY]) == 0
    return root / "out" / "lung_unet.pt"


def test_segment_train_writes_weights_card_and_split(tiny_weights: Path):
    from cxrkit.segment.weights import read_weights

    out = tiny_weights.parent
    weights = torch.load(tiny_weights, weights_only=True)
    assert all(t.dtype == torch.float16 for t in weights["state_dict"].values() if t.is_floating_point())
    card = (out / "lung_unet.json").read_text()
    assert '"test_dice_mean"' in card and "cxrkit segment train" in card and "data_sha256_16" in card
    split = pd.read_csv(out / "split.csv")
    assert set(split["split"]) == {"train", "val", "test"}
    assert split.groupby("patient")["split"].nunique().max() == 1
    assert read_weights(tiny_weights)["input_size"] == 32


def test_tiny_segmenter_learns_the_synthetic_lungs(tiny_weights: Path):
    card = __import__("json").loads((tiny_weights.parent / "lung_unet.json").read_text())
    assert card["test_dice_mean"] > 0.8


def test_torch_and_onnx_segmenters_agree(tiny_weights: Path):
    from cxrkit.segment.onnx import encode, onnx_segmenter
    from cxrkit.segment.weights import onnx_bytes, read_weights, torch_segmenter

    weights = read_weights(tiny_weights)
    torch_side = torch_segmenter(weights)
    onnx_side = onnx_segmenter(encode(onnx_bytes(weights)), weights["input_size"], torch_side.digest)
    rng = np.random.default_rng(9)
    images = [synthetic_chest(rng)[0] for _ in range(4)]
    np.testing.assert_allclose(onnx_side.probabilities(images), torch_side.probabilities(images), atol=1e-4)
    prep = Preprocessing(image_size=32, lung_crop=True, lung_mask_outside=True, segmenter=torch_side.digest)
    for image in images:
        a, b = torch_side.segment(image), onnx_side.segment(image)
        assert a.found == b.found and a.box(0.1) == b.box(0.1)
        assert (a.mask != b.mask).mean() < 1e-3
        np.testing.assert_array_equal(prepare(image, prep, torch_side), prepare(image, prep, onnx_side))


def test_segment_predict_writes_masks_overlays_and_asks_before_replacing(tiny_weights: Path, tmp_path, capsys):
    image, _ = synthetic_chest(np.random.default_rng(5))
    source = tmp_path / "in" / "chest.png"
    source.parent.mkdir()
    cv2.imwrite(str(source), image)
    out = tmp_path / "lungs"
    args = ["segment", "predict", str(source.parent), "--out", str(out), "--weights", str(tiny_weights)]
    assert main(args) == 0
    mask = cv2.imread(str(out / "chest_mask.png"), cv2.IMREAD_GRAYSCALE)
    assert mask.shape == image.shape and set(np.unique(mask)) <= {0, 255}
    assert cv2.imread(str(out / "chest_overlay.png")).shape == (*image.shape, 3)
    assert pd.read_csv(out / "lungs.csv")["lung_found"].tolist() == [True]
    before = (out / "chest_mask.png").read_bytes()
    capsys.readouterr()
    assert main(args) == 2
    assert "already exists" in capsys.readouterr().err
    assert (out / "chest_mask.png").read_bytes() == before


def test_wrong_size_mask_is_a_one_line_error(tmp_path, capsys):
    csv_path = write_mask_set(tmp_path, count=12)
    cv2.imwrite(str(tmp_path / "masks" / "p03.png"), np.zeros((50, 40), dtype=np.uint8))
    code = main(["segment", "train", "--data", str(csv_path), "--out", str(tmp_path / "out"), *TINY])
    err = capsys.readouterr().err.strip()
    assert code == 2 and len(err.splitlines()) == 1
    assert "p03.png" in err and "40x50" in err
    assert not (tmp_path / "out").exists()


def test_missing_weight_file_is_a_one_line_error(tmp_path, capsys):
    image, _ = synthetic_chest(np.random.default_rng(6))
    cv2.imwrite(str(tmp_path / "chest.png"), image)
    missing = tmp_path / "nope" / "lung_unet.pt"
    code = main(["segment", "predict", str(tmp_path / "chest.png"), "--out", str(tmp_path / "o"),
                 "--weights", str(missing)])
    err = capsys.readouterr().err.strip()
    assert code == 2 and len(err.splitlines()) == 1
    assert str(missing) in err and "cxrkit segment train" in err


def test_train_refuses_to_replace_weights(tiny_weights: Path, capsys):
    before = tiny_weights.read_bytes()
    code = main(["segment", "train", "--data", "unused.csv", "--out", str(tiny_weights.parent), *TINY])
    assert code == 2 and "--overwrite" in capsys.readouterr().err
    assert tiny_weights.read_bytes() == before


def test_image_cache_keeps_lung_found_for_warm_runs_and_repairs_with_the_segmenter(tmp_path, monkeypatch):
    from cxrkit.data import cache
    from cxrkit.data.io import read_gray

    monkeypatch.setenv("CXRKIT_CACHE_DIR", str(tmp_path / "root"))
    chest, flat = str(tmp_path / "chest.png"), str(tmp_path / "flat.png")
    cv2.imwrite(chest, synthetic_chest(np.random.default_rng(3))[0])
    cv2.imwrite(flat, np.full((SIZE, SIZE), 120, dtype=np.uint8))
    prep = Preprocessing(image_size=32, lung_crop=True, lung_mask_outside=True, segmenter="fake")
    segmenter = fake_segmenter()
    expected = [prepare(read_gray(path), prep, segmenter) for path in (chest, flat)]
    with pytest.raises(CxrkitError, match="lung segmenter"):
        cache.load_cached_images([chest], prep, tmp_path / "cache")
    fallbacks: list[str] = []
    images, failures = cache.load_cached_images([chest, flat], prep, tmp_path / "cache", workers=2,
                                                segmenter=segmenter, lung_fallbacks=fallbacks)
    assert failures == {} and fallbacks == [flat]
    for index, image in enumerate(expected):
        np.testing.assert_array_equal(images[index], image)

    def must_not(*args, **kwargs):
        raise AssertionError("a warm run decoded again")

    monkeypatch.setattr(cache, "_decode_rows", must_not)
    warm: list[str] = []
    images, _ = cache.load_cached_images([chest, flat], prep, tmp_path / "cache", segmenter=segmenter,
                                         lung_fallbacks=warm)
    assert warm == [flat] and images.fill["decoded"] == 0
    with open(images.pixels, "r+b") as handle:  # damage the chest's row: repaired with the segmenter
        handle.seek(int(images.rows[0]) * 32 * 32)
        handle.write(bytes(32 * 32))
    np.testing.assert_array_equal(images[0], expected[0])


def lung_images(folder: Path, count: int = 9) -> list[str]:
    """Synthetic chests of a few sizes and one flat image (no plausible lung) as PNG files."""
    rng = np.random.default_rng(21)
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for index in range(count):
        image = synthetic_chest(rng, SIZE + 8 * index)[0]
        paths.append(str(folder / f"c{index}.png"))
        cv2.imwrite(paths[-1], image)
    paths.append(str(folder / "flat.png"))
    cv2.imwrite(paths[-1], np.full((SIZE, SIZE), 120, dtype=np.uint8))
    return paths


def test_torch_and_onnx_segmenters_travel_as_plain_data(tiny_weights: Path):
    import pickle

    from cxrkit.segment.onnx import encode, onnx_segmenter
    from cxrkit.segment.weights import onnx_bytes, read_weights, torch_segmenter

    weights = read_weights(tiny_weights)
    model = onnx_bytes(weights)
    images = [synthetic_chest(np.random.default_rng(4))[0]]
    for segmenter in (torch_segmenter(weights), onnx_segmenter(encode(model), weights["input_size"], "tiny")):
        blob = pickle.dumps(segmenter)
        assert b"torch._utils" not in blob and len(blob) < 2 * len(model) + 10_000  # arrays or bytes, no tensors
        first, second = pickle.loads(blob), pickle.loads(blob)
        assert first is second and first.digest == segmenter.digest  # built once per process
        np.testing.assert_array_equal(first.probabilities(images), segmenter.probabilities(images))
    with pytest.raises(TypeError, match="cannot be sent"):
        pickle.dumps(fake_segmenter())


def test_lung_contract_decodes_bit_identically_in_worker_processes(tiny_weights: Path, tmp_path, monkeypatch):
    from cxrkit import inference
    from cxrkit.data import cache
    from cxrkit.inference import _prepared
    from cxrkit.segment.weights import torch_segmenter

    monkeypatch.setenv("CXRKIT_CACHE_DIR", str(tmp_path / "root"))
    paths = lung_images(tmp_path / "images")
    segmenter = torch_segmenter(tiny_weights)
    prep = Preprocessing(image_size=32, lung_crop=True, lung_mask_outside=True, segmenter=segmenter.digest)
    threads = torch.get_num_threads()
    torch.set_num_threads(2)  # this process may use more threads than a worker: masks must not change
    try:
        here: list[str] = []
        in_process, _ = cache.load_cached_images(paths, prep, tmp_path / "one", workers=1,
                                                 segmenter=segmenter, lung_fallbacks=here)
        monkeypatch.setattr(cache, "_IN_PROCESS_BELOW", 0)
        monkeypatch.setattr(cache, "_CHUNK", 3)
        sequential = list(_prepared(paths, prep, 2, 1, segmenter))

        def must_not(*args):
            raise AssertionError("decoded in this process, not in a worker")

        monkeypatch.setattr(cache, "prepare_with_lungs", must_not)  # workers import their own copy
        monkeypatch.setattr(inference, "prepare_with_lungs", must_not)
        there: list[str] = []
        in_workers, _ = cache.load_cached_images(paths, prep, tmp_path / "two", workers=2,
                                                 segmenter=segmenter, lung_fallbacks=there)
        assert in_workers.fill["decoded"] == len(paths)
        assert 0 < len(here) < len(paths) and here == there
        np.testing.assert_array_equal(in_workers[:], in_process[:])
        parallel = list(_prepared(paths, prep, 2, 2, segmenter))
        assert [found for _, _, found, _ in parallel] == [found for _, _, found, _ in sequential]
        assert [path for path, *_ in parallel] == paths
        np.testing.assert_array_equal(np.stack([image for _, image, _, _ in parallel]), in_process[:])
        assert torch.get_num_threads() == 2
    finally:
        torch.set_num_threads(threads)


def test_spawned_dataloader_worker_repairs_a_damaged_lung_row(tiny_weights: Path, tmp_path, monkeypatch):
    from torch.utils.data import DataLoader

    from cxrkit.data import cache
    from cxrkit.segment.weights import torch_segmenter

    monkeypatch.setenv("CXRKIT_CACHE_DIR", str(tmp_path / "root"))
    paths = lung_images(tmp_path / "images", count=3)
    segmenter = torch_segmenter(tiny_weights)
    prep = Preprocessing(image_size=32, lung_crop=True, lung_mask_outside=True, segmenter=segmenter.digest)
    images, _ = cache.load_cached_images(paths, prep, tmp_path / "cache", segmenter=segmenter)
    expected = images[:]
    with open(images.pixels, "r+b") as handle:  # damage every row: the worker decodes them again
        handle.write(bytes(len(paths) * 32 * 32))
    loader = DataLoader(images, batch_size=None, num_workers=1, multiprocessing_context="spawn")
    np.testing.assert_array_equal(np.stack([batch.numpy() for batch in loader]), expected)


@pytest.fixture
def lung_run(tiny_weights: Path, tmp_path: Path, tiny_overrides) -> Path:
    """A tiny classifier trained with lung_crop + lung_mask_outside on synthetic chests."""
    import cxrkit
    from cxrkit.config import build_config

    rng = np.random.default_rng(11)
    for label in ("Normal", "Tuberculosis"):
        for index in range(16):
            image, mask = synthetic_chest(rng)
            if label == "Tuberculosis":
                image[mask & (rng.random(image.shape) < 0.3)] = 230
            (tmp_path / "chests" / label).mkdir(parents=True, exist_ok=True)
            cv2.imwrite(str(tmp_path / "chests" / label / f"{index:02d}.png"), image)
    cv2.imwrite(str(tmp_path / "chests" / "Normal" / "flat.png"), np.full((SIZE, SIZE), 120, dtype=np.uint8))
    overrides = tiny_overrides(tmp_path / "chests", **{
        "preprocess.lung_crop": True, "preprocess.lung_mask_outside": True,
        "preprocess.lung_weights": str(tiny_weights)})
    return cxrkit.train(build_config("tb-fast", overrides))


def test_lung_crop_runs_through_train_predict_and_onnx(lung_run: Path, tiny_weights: Path, tmp_path, capsys):
    import json
    import subprocess
    import sys

    import cxrkit
    from cxrkit.export import export_model
    from cxrkit.segment.weights import read_weights, weights_digest

    checkpoint = torch.load(lung_run / "model.ckpt", weights_only=True)
    digest = weights_digest(read_weights(tiny_weights))
    preprocessing = checkpoint["card"]["preprocessing"]
    assert preprocessing["lung_crop"] and preprocessing["segmenter"] == digest
    assert weights_digest(checkpoint["segmenter"]) == digest
    assert json.loads((lung_run / "training.json").read_text())["lung_fallbacks"] >= 1
    assert "flat.png" in (lung_run / "lung_fallbacks.csv").read_text()
    metrics = json.loads((lung_run / "metrics.json").read_text())
    assert metrics["lungs"]["lung_crop"] and metrics["lungs"]["n"] == len(pd.read_csv(lung_run / "predictions.csv"))
    assert "lung_found" in pd.read_csv(lung_run / "predictions.csv").columns
    assert (lung_run / "plots" / "lungs.png").is_file()
    assert "Lung fields" in (lung_run / "report.html").read_text()

    predictor = cxrkit.load(lung_run)
    images = sorted(str(p) for p in (tmp_path / "chests" / "Normal").glob("*.png"))
    probabilities, _, found = predictor.predict_details(images)
    assert found[images.index(str(tmp_path / "chests" / "Normal" / "flat.png"))] is False
    assert sum(found) >= len(images) - 3

    in_parallel = predictor.predict_files(images, workers=2)
    assert in_parallel.paths == images and in_parallel.lung_found == found
    np.testing.assert_allclose(in_parallel.probabilities, probabilities, atol=1e-6)

    out = tmp_path / "preds.csv"
    assert main(["predict", str(lung_run), *images, "--out", str(out)]) == 0
    flat = str(tmp_path / "chests" / "Normal" / "flat.png")
    assert not pd.read_csv(out).set_index("path").loc[flat, "lung_found"]
    assert "no plausible lung found in" in capsys.readouterr().out

    from cxrkit.data.io import read_gray
    from cxrkit.serve.model import load_served_model

    served = load_served_model(lung_run).predict([read_gray(flat), read_gray(images[0])])
    assert [reply["lung_found"] for reply in served] == [False, found[0]]

    exported = export_model(lung_run)
    assert exported["max_abs_diff"] < 1e-4
    onnx_predictor = cxrkit.load(exported["path"])
    assert onnx_predictor.segmenter.backend == "onnx" and onnx_predictor.segmenter.digest == digest
    onnx_probabilities, _, onnx_found = onnx_predictor.predict_details(images)
    assert onnx_found == found
    np.testing.assert_allclose(onnx_probabilities, probabilities, atol=1e-4)
    for image in images[:4]:
        np.testing.assert_array_equal(onnx_predictor.prepare(image), predictor.prepare(image))

    code = ("import sys, cxrkit\n"
            f"p = cxrkit.load({str(exported['path'])!r})\n"
            f"print(p.predict_details([{images[0]!r}]).lung_found[0])\n"
            "assert 'torch' not in sys.modules, 'torch was imported'\n")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() in ("True", "False")


def test_same_seed_gives_the_same_weights(tiny_weights: Path, tmp_path):
    from cxrkit.segment.weights import read_weights, weights_digest

    again = tmp_path / "again"
    csv_path = tiny_weights.parent.parent / "lungs.csv"
    assert main(["segment", "train", "--data", str(csv_path), "--out", str(again), *TINY]) == 0
    assert weights_digest(read_weights(again / "lung_unet.pt")) == weights_digest(read_weights(tiny_weights))


def test_audit_shows_lung_overlays(tmp_path):
    import json

    from cxrkit.data.audit import audit_dataset

    rng = np.random.default_rng(12)
    for label in ("Normal", "Tuberculosis"):
        for index in range(5):
            (tmp_path / "data" / label).mkdir(parents=True, exist_ok=True)
            cv2.imwrite(str(tmp_path / "data" / label / f"{index}.png"), synthetic_chest(rng)[0])
    audit_dataset(tmp_path / "data", out_dir=tmp_path / "audit")
    lungs = json.loads((tmp_path / "audit" / "audit.json").read_text())["lungs"]
    assert lungs["shown"] == 8 and 0 <= lungs["no_lung_found"] <= 8
    assert (tmp_path / "audit" / "lung_overlays.png").is_file()
    assert "Lung fields" in (tmp_path / "audit" / "audit.html").read_text()


def test_shipped_weights_load_and_have_a_card():
    from cxrkit.segment.weights import default_weights_path, read_weights, weights_digest

    path = default_weights_path()
    card = __import__("json").loads(path.with_suffix(".json").read_text())
    assert weights_digest(read_weights()) == card["weights_digest"]
    assert card["test_dice_mean"] >= 0.95 and "cxrkit segment train" in card["command"]
    assert path.with_suffix(".md").is_file() and path.stat().st_size < 2_000_000
