"""Audit checks on the shared real chest X-ray sets (slow; skipped when the data is absent)."""

from __future__ import annotations

from pathlib import Path

import pytest

from cxrkit.data.audit import audit_dataset, near_duplicate_groups
from cxrkit.data.sources import load_manifest

DATA = Path(__file__).resolve().parents[2] / "shared" / "data"

pytestmark = pytest.mark.slow


@pytest.fixture(autouse=True)
def private_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("CXRKIT_CACHE_DIR", str(tmp_path / "cache"))


def need(name: str) -> Path:
    path = DATA / name
    if not path.is_dir():
        pytest.skip(f"real data {path} not found (expected ../shared/data/{name})")
    return path


def test_tb_near_duplicates_are_found():
    manifest, _ = load_manifest(need("tb"))
    groups = near_duplicate_groups(manifest["path"].tolist())
    members: dict[str, set[str]] = {}
    for path, group in zip(manifest["path"], groups, strict=True):
        if group:
            members.setdefault(group, set()).add(Path(path).name)
    expected = [{"Tuberculosis-467.png", "Tuberculosis-468.png", "Tuberculosis-470.png"},
                {"Tuberculosis-579.png", "Tuberculosis-582.png"}]
    assert all(group in members.values() for group in expected)
    assert sum(len(m) for m in members.values()) <= 10, "default threshold stays precise"


def test_pneumonia_audit_reports_patients_across_train_and_test():
    data = need("pneumonia")
    report = audit_dataset(data)
    assert report["grouping"]["source"] == "auto-detected"
    assert set(report["splits"]) == {"train", "test"}
    patients = report["leakage"]["patients_across_splits"]
    assert patients["shared_groups"] == 0, "bacteria/virus-numbered patients do not cross"
    assert report["leakage"]["duplicates_across_splits"] == []
    assert len(report["duplicates"]["exact_groups"]) >= 25
    by_person_number = audit_dataset(data, group_pattern=r"person(\d+)_")
    shared = by_person_number["leakage"]["patients_across_splits"]["shared_groups"]
    assert shared > 100 and by_person_number["leakage"]["found"]


def test_tb_training_split_keeps_near_duplicate_groups_in_one_split():
    from cxrkit.config import build_config
    from cxrkit.data.run_split import build_split

    config = build_config("tb-fast", {"data.source": str(need("tb")),
                                      "data.group_near_duplicates": True})
    manifest = build_split(config)
    groups = near_duplicate_groups(manifest["path"].tolist())
    splits_by_group: dict[str, set[str]] = {}
    for group, split in zip(groups, manifest["split"], strict=True):
        if group:
            splits_by_group.setdefault(group, set()).add(split)
    assert len(splits_by_group) >= 2
    assert all(len(splits) == 1 for splits in splits_by_group.values())
