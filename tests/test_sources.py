from pathlib import Path

import pandas as pd
import pytest

from conftest import write_image
from cxrkit.data.sources import load_manifest
from cxrkit.errors import CxrkitError


def test_class_per_folder_lists_images_and_ignores_other_files(tiny_folder: Path):
    (tiny_folder / "Normal" / "notes.txt").write_text("not an image")
    manifest, ignored = load_manifest(tiny_folder)
    assert len(manifest) == 32
    assert sorted(manifest["label"].unique()) == ["Normal", "Tuberculosis"]
    assert manifest["split"].isna().all()
    assert ignored == [str(tiny_folder / "Normal" / "notes.txt")]


def test_pre_split_folders_keep_their_split(tmp_path: Path):
    for split in ("train", "test"):
        for label in ("NORMAL", "PNEUMONIA"):
            for index in range(3):
                write_image(tmp_path / split / label / f"person{index}_{split}.jpeg", 10, mode="RGB")
    manifest, _ = load_manifest(tmp_path, group_pattern=r"person(\d+)_")
    assert set(manifest["split"]) == {"train", "test"}
    assert set(manifest["group"]) == {"0", "1", "2"}


def test_csv_manifest_resolves_relative_paths_and_reads_splits(tmp_path: Path):
    for index in range(4):
        write_image(tmp_path / "img" / f"a{index}.png", 0)
        write_image(tmp_path / "img" / f"b{index}.png", 100)
    rows = [(f"img/a{i}.png", "Normal", "train" if i else "test", f"p{i}") for i in range(4)]
    rows += [(f"img/b{i}.png", "TB", "train" if i else "test", f"q{i}") for i in range(4)]
    csv = tmp_path / "manifest.csv"
    pd.DataFrame(rows, columns=["path", "label", "split", "patient"]).to_csv(csv, index=False)
    manifest, _ = load_manifest(csv)
    assert all(Path(p).is_file() for p in manifest["path"])
    assert list(manifest["group"][:2]) == ["p0", "p1"]
    assert (manifest["split"] == "test").sum() == 2


@pytest.mark.parametrize("case, message", [
    ("missing", "no such file or folder"),
    ("one_class", "only one class"),
    ("csv_missing_column", "missing column"),
    ("empty", "no images found"),
])
def test_bad_sources_give_one_line_errors(tmp_path: Path, case: str, message: str):
    source = tmp_path / "src"
    if case == "one_class":
        write_image(source / "Normal" / "a.png", 0)
    elif case == "csv_missing_column":
        source = tmp_path / "m.csv"
        source.write_text("file,label\na.png,x\n")
    elif case == "empty":
        (source / "Normal").mkdir(parents=True)
    with pytest.raises(CxrkitError, match=message) as error:
        load_manifest(source)
    assert "\n" not in str(error.value)
