"""Hugging Face and Kaggle sources, on local data only (tests never download)."""

from __future__ import annotations

import os
import sys

import numpy as np
import pytest
from PIL import Image

from cxrkit.data.sources import load_manifest
from cxrkit.errors import CxrkitError

datasets = pytest.importorskip("datasets")


def pil_image(value: int, size: int = 20) -> Image.Image:
    array = np.full((size, size), value, dtype=np.uint8)
    array[: size // 2] = 255 - value
    return Image.fromarray(array)


@pytest.fixture()
def saved_dataset(tmp_path, monkeypatch):
    """A DatasetDict with train/validation/test, an Image column and a ClassLabel label."""
    monkeypatch.setenv("CXRKIT_CACHE_DIR", str(tmp_path / "cache"))
    features = datasets.Features({"image": datasets.Image(),
                                  "labels": datasets.ClassLabel(names=["NORMAL", "PNEUMONIA"]),
                                  "patient_id": datasets.Value("string")})
    splits = {}
    for split, count in (("train", 6), ("validation", 2), ("test", 2)):
        splits[split] = datasets.Dataset.from_dict(
            {"image": [pil_image(20 * i) for i in range(count)],
             "labels": [i % 2 for i in range(count)],
             "patient_id": [f"{split}-p{i // 2}" for i in range(count)]}, features=features)
    folder = tmp_path / "chest_hf"
    datasets.DatasetDict(splits).save_to_disk(str(folder))
    return folder


def test_hf_save_to_disk_folder_becomes_a_manifest_of_files(saved_dataset, tmp_path):
    manifest, ignored = load_manifest(f"hf:{saved_dataset}")
    assert ignored == []
    assert len(manifest) == 10
    assert manifest["split"].value_counts().to_dict() == {"train": 6, "val": 2, "test": 2}
    assert set(manifest["label"]) == {"NORMAL", "PNEUMONIA"}
    assert manifest["group"].iloc[0] == "train-p0"
    first = manifest.iloc[1]
    assert str(tmp_path / "cache" / "hf") in first["path"]
    pixels = np.asarray(Image.open(first["path"]))
    np.testing.assert_array_equal(pixels, np.asarray(pil_image(20)))
    assert first["label"] == "PNEUMONIA"


def test_hf_images_are_written_once(saved_dataset):
    first, _ = load_manifest(f"hf:{saved_dataset}")
    stamp = {p: os.stat(p).st_mtime_ns for p in first["path"]}
    again, _ = load_manifest(f"hf:{saved_dataset}")
    assert again["path"].tolist() == first["path"].tolist()
    assert all(os.stat(p).st_mtime_ns == stamp[p] for p in again["path"])


def test_hf_single_dataset_without_classlabel_uses_a_label_column(tmp_path, monkeypatch):
    monkeypatch.setenv("CXRKIT_CACHE_DIR", str(tmp_path / "cache"))
    dataset = datasets.Dataset.from_dict(
        {"img": [pil_image(i * 30) for i in range(4)], "label": ["a", "b", "a", "b"]},
        features=datasets.Features({"img": datasets.Image(), "label": datasets.Value("string")}))
    dataset.save_to_disk(str(tmp_path / "single"))
    manifest, _ = load_manifest(f"hf:{tmp_path / 'single'}")
    assert manifest["label"].tolist() == ["a", "b", "a", "b"]
    assert set(manifest["split"]) == {"train"}


def test_hf_unknown_name_offline_gives_a_clear_error(tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf_home"))
    monkeypatch.setattr(datasets.config, "HF_HUB_OFFLINE", True, raising=False)
    with pytest.raises(CxrkitError, match=r"hf:nobody/no-such-xray-set: cannot load.*OFFLINE"):
        load_manifest("hf:nobody/no-such-xray-set")


def test_hf_missing_extra_names_the_install_command(monkeypatch):
    monkeypatch.setitem(sys.modules, "datasets", None)
    with pytest.raises(CxrkitError, match=r'pip install "cxrkit\[hf\]"'):
        load_manifest("hf:keremberke/chest-xray-classification")


def test_kaggle_download_folder_is_read_like_a_local_folder(tmp_path, monkeypatch):
    kagglehub = pytest.importorskip("kagglehub")
    root = tmp_path / "download" / "chest_xray"
    for split, label, name in (("train", "NORMAL", "IM-0001-0001.jpeg"),
                               ("train", "PNEUMONIA", "person1_bacteria_1.jpeg"),
                               ("test", "NORMAL", "IM-0002-0001.jpeg"),
                               ("test", "PNEUMONIA", "person2_bacteria_2.jpeg")):
        (root / split / label).mkdir(parents=True, exist_ok=True)
        pil_image(90).convert("RGB").save(root / split / label / name)
    (tmp_path / "download" / "__MACOSX").mkdir()
    calls = []
    monkeypatch.setattr(kagglehub, "dataset_download",
                        lambda handle: calls.append(handle) or str(tmp_path / "download"))
    manifest, _ = load_manifest("kaggle:someone/chest-xray", group_pattern=r"(person\d+)_")
    assert calls == ["someone/chest-xray"]
    assert sorted(manifest["split"]) == ["test", "test", "train", "train"]
    assert "person1" in set(manifest["group"])


def test_kaggle_failure_and_missing_extra(monkeypatch):
    kagglehub = pytest.importorskip("kagglehub")

    def offline(handle):
        raise ConnectionError("no network")

    monkeypatch.setattr(kagglehub, "dataset_download", offline)
    with pytest.raises(CxrkitError, match=r"kaggle:a/b: download failed \(ConnectionError"):
        load_manifest("kaggle:a/b")
    monkeypatch.setitem(sys.modules, "kagglehub", None)
    with pytest.raises(CxrkitError, match=r'pip install "cxrkit\[kaggle\]"'):
        load_manifest("kaggle:a/b")
