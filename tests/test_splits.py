import numpy as np
import pandas as pd
import pytest

from cxrkit.data.splits import assign_splits, merge_groups, read_split_file, write_split_file
from cxrkit.errors import CxrkitError


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
