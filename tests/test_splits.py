import numpy as np
import pandas as pd
import pytest

from cxrkit.data.splits import assign_splits, merge_groups, read_split_file, write_split_file
from cxrkit.errors import CxrkitError

PINNED_COUNTS = {"train": 56, "val": 8, "test": 8}
PINNED_SPLIT_SHA256 = "dc859345f198fe542b9bb128df2cfbbe285a43c109a7d5e77d0e6348cc69d4cf"  # split.csv rows, fixed seed


def make_manifest(n_per_class=(300, 100), groups_of=1, split=None):
    rows = []
    for label, count in zip(("Normal", "TB"), n_per_class, strict=False):
        for index in range(count):
            group = f"{label}-{index // groups_of}" if groups_of > 1 else None
            rows.append((f"/x/{label}/{index}.png", label, group, split))
    return pd.DataFrame(rows, columns=["path", "label", "group", "split"])


def test_default_split_is_stratified_80_10_10_and_deterministic():
    first = assign_splits(make_manifest(), seed=7)
    second = assign_splits(make_manifest(), seed=7)
    assert list(first["split"]) == list(second["split"])
    counts = first.groupby(["split", "label"]).size()
    for split, expected in (("train", 0.8), ("val", 0.1), ("test", 0.1)):
        assert counts[split].sum() / 400 == pytest.approx(expected, abs=0.02)
        assert counts[split]["TB"] / counts[split].sum() == pytest.approx(0.25, abs=0.03)
    assert list(assign_splits(make_manifest(), seed=8)["split"]) != list(first["split"])


def test_groups_never_cross_splits():
    manifest = assign_splits(make_manifest(groups_of=4), seed=1)
    assert manifest.groupby("group")["split"].nunique().max() == 1


def test_given_test_split_is_kept_and_val_carved_from_train():
    manifest = make_manifest(split="train")
    manifest.loc[::5, "split"] = "test"
    result = assign_splits(manifest, val_fraction=0.1)
    assert (result["split"] == "test").sum() == (manifest["split"] == "test").sum()
    assert (result["split"] == "val").sum() == pytest.approx(0.1 * 320, abs=4)


def test_split_file_round_trip(tmp_path):
    manifest = assign_splits(make_manifest(), seed=3)
    write_split_file(manifest, tmp_path / "split.csv")
    again = read_split_file(tmp_path / "split.csv", make_manifest())
    assert list(again["split"]) == list(manifest["split"])
    extra = pd.concat([make_manifest(), make_manifest((1, 0)).assign(path="/y/new.png")])
    with pytest.raises(CxrkitError, match="not in it"):
        read_split_file(tmp_path / "split.csv", extra)


def test_merge_groups_links_patients_through_near_duplicates():
    manifest = make_manifest((4, 0), groups_of=2)  # groups Normal-0 (rows 0,1) and Normal-1 (rows 2,3)
    merged = merge_groups(manifest, [None, "dup", "dup", None])
    assert merged["group"].nunique() == 1
    assert merge_groups(manifest, None) is manifest
    assert np.all(merge_groups(manifest, [None] * 4)["group"] == manifest["group"])


def _pinned_dataset(root) -> str:
    """Two sites x two classes of small distinct PNGs; patients of 1-3 images; one site CSV."""
    from PIL import Image

    rng = np.random.default_rng(2024)
    rows = []
    for site in ("north", "south"):
        for label, count in (("Normal", 24), ("Tuberculosis", 12)):
            for index in range(count):
                path = root / site / label / f"p{index // 2:02d}_{index}.png"
                path.parent.mkdir(parents=True, exist_ok=True)
                Image.fromarray(rng.integers(0, 256, (24, 24), dtype=np.uint8)).save(path)
                rows.append((str(path.relative_to(root)), label, f"{label[0]}{index // 2}", site))
    csv = root / "data.csv"
    pd.DataFrame(rows, columns=["path", "label", "patient", "site"]).to_csv(csv, index=False)
    return str(csv)


def test_the_run_split_is_pinned_on_a_fixed_seed(tmp_path, monkeypatch):
    """The split a run builds (grouped, near-duplicate-merged, stratified by site x class) stays
    the same row for row: moving or refactoring split code must not change split.csv."""
    import hashlib

    from cxrkit.config import build_config
    from cxrkit.data.run_split import build_split

    monkeypatch.setenv("CXRKIT_CACHE_DIR", str(tmp_path / "cache"))
    config = build_config("tb-fast", {"data.source": _pinned_dataset(tmp_path / "data"), "data.split_seed": 7,
                                      "output_dir": str(tmp_path / "runs")})
    manifest = build_split(config)
    write_split_file(manifest, tmp_path / "split.csv")
    table = pd.read_csv(tmp_path / "split.csv")
    rows = "\n".join(f"{p.replace(str(tmp_path), '')},{s}" for p, s in zip(table["path"], table["split"], strict=True))
    assert table["split"].value_counts().to_dict() == PINNED_COUNTS
    assert hashlib.sha256(rows.encode()).hexdigest() == PINNED_SPLIT_SHA256


def test_the_segmentation_split_by_patient_is_pinned_on_a_fixed_seed():
    from cxrkit.data.splits import split_by_patient

    rows = [(f"/x/{site}/{i}.png", f"{site}-p{i // 2}", site) for site in ("a", "b", "c") for i in range(20)]
    table = pd.DataFrame(rows, columns=["path", "patient", "site"])
    split = split_by_patient(table, 0.2, 0.2, 3)
    letters = "".join({"train": "r", "val": "v", "test": "t"}[s] for s in split)
    assert letters == "rrrrvvttrrrrrrvvttrrrrrrvvvvrrttrrttrrrrrrttvvrrrrrrttvvrrrr"
    assert split.groupby(table["patient"]).nunique().max() == 1
