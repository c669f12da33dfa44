"""Dataset audit: duplicates, leakage, unreadable files, shortcut hints, report files, CLI."""

from __future__ import annotations

import json

import cv2
import numpy as np
import pytest
from PIL import Image

from cxrkit.cli import main
from cxrkit.data import hashing
from cxrkit.data.audit import audit_dataset, detect_group_pattern, near_duplicate_groups
from cxrkit.errors import CxrkitError


@pytest.fixture(autouse=True)
def private_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("CXRKIT_CACHE_DIR", str(tmp_path / "cache"))


def texture(seed: int, size: int = 96) -> np.ndarray:
    """A smooth random grey image; different seeds give unrelated pictures."""
    noise = np.random.default_rng(seed).uniform(0, 255, (size, size)).astype(np.float32)
    smooth = cv2.GaussianBlur(noise, (0, 0), 4)
    return cv2.normalize(smooth, None, 0, 255, cv2.NORM_MINMAX).astype(np.uint8)


def save(path, array, **options) -> str:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(array).save(path, **options)
    return str(path)


def test_near_duplicate_groups_join_copies_resized_and_recompressed(tmp_path):
    original = texture(1)
    paths = [
        save(tmp_path / "a.png", original),
        save(tmp_path / "b.png", texture(2)),
        save(tmp_path / "a_small.jpg", cv2.resize(original, (70, 70)), quality=85),
        save(tmp_path / "c.png", texture(3)),
        save(tmp_path / "a_copy.png", original),
        save(tmp_path / "a_brighter.png", np.clip(original.astype(int) + 12, 0, 255)
             .astype(np.uint8)),
    ]
    (tmp_path / "empty.png").write_bytes(b"")
    groups = near_duplicate_groups(paths + [str(tmp_path / "empty.png")])
    assert groups == ["dup-1", None, "dup-1", None, "dup-1", "dup-1", None]
    assert near_duplicate_groups(paths, max_distance=0)[1] is None


def test_fingerprints_are_cached_by_content(tmp_path, monkeypatch):
    paths = [save(tmp_path / f"{i}.png", texture(i)) for i in range(3)]
    first = hashing.inspect_images(paths)
    assert hashing.cache_path().is_file()

    def must_not_decode(path):
        raise AssertionError(f"{path} decoded again")

    monkeypatch.setattr(hashing, "_fingerprint_content", must_not_decode)
    assert hashing.inspect_images(paths) == first
    save(tmp_path / "0.png", texture(9))
    with pytest.raises(AssertionError, match="decoded again"):
        hashing.inspect_images(paths)


def test_close_pairs_match_brute_force():
    rng = np.random.default_rng(0)
    hashes = rng.integers(0, 2**63, size=(40, 4), dtype=np.uint64)
    hashes[7] = hashes[3]
    hashes[7, 0] ^= np.uint64(0b1011)
    other = rng.integers(0, 2**63, size=(25, 4), dtype=np.uint64)
    other[5] = hashes[9]

    def bits(a, b):
        return int(sum(bin(int(x) ^ int(y)).count("1") for x, y in zip(a, b, strict=True)))

    within = sorted((bits(hashes[i], hashes[j]), i, j)
                    for i in range(40) for j in range(i + 1, 40))
    pairs, closest = hashing.close_pairs(hashes, max_bits=100, closest=5)
    assert [(i, j, d) for d, i, j in within if d <= 100] == pairs
    assert closest[0] == (3, 7, 3)
    assert [d for _, _, d in closest] == [d for d, _, _ in within[:5]]
    across, nearest = hashing.close_pairs(hashes, other, max_bits=0, closest=1)
    assert across == [(9, 5, 0)] and nearest == [(9, 5, 0)]


def test_group_pattern_detection():
    kermany = ["person1_bacteria_1.jpeg", "person1_bacteria_2.jpeg", "IM-0115-0001.jpeg",
               "NORMAL2-IM-0135-0001.jpeg", "person3_virus_9.jpeg"]
    description, pattern = detect_group_pattern(kermany)
    assert "Kermany" in description and "person" in pattern
    assert detect_group_pattern(["Normal-1.png", "Normal-2.png", "Tuberculosis-1.png"]) is None


@pytest.fixture()
def leaky_dataset(tmp_path):
    """train/test folders with a duplicate and a patient across splits, bad files, a shortcut."""
    root = tmp_path / "data"
    for i in range(6):
        save(root / "train" / "NORMAL" / f"IM-{i:04d}-0001.png", texture(100 + i))
        save(root / "train" / "PNEUMONIA" / f"person{i}_bacteria_{i}.jpeg", texture(200 + i))
    for i in range(6, 9):
        save(root / "test" / "NORMAL" / f"IM-{i:04d}-0001.png", texture(100 + i))
    save(root / "test" / "PNEUMONIA" / "person0_bacteria_50.jpeg", texture(300))
    save(root / "test" / "PNEUMONIA" / "person7_bacteria_51.jpeg", texture(201))
    save(root / "test" / "PNEUMONIA" / "person8_bacteria_52.jpeg", texture(302))
    (root / "test" / "NORMAL" / "IM-0099-0001.png").write_bytes(b"")
    (root / "test" / "NORMAL" / "IM-0098-0001.png").write_bytes(b"\x89PNG\r\n\x1a\nbroken")
    (root / "train" / "NORMAL" / "notes.txt").write_text("not an image")
    return root


def test_audit_finds_leakage_bad_files_and_shortcuts(leaky_dataset, tmp_path):
    out = tmp_path / "report"
    report = audit_dataset(leaky_dataset, out_dir=out)
    assert report["images"] == 20
    assert report["classes"] == {"NORMAL": 11, "PNEUMONIA": 9}
    assert report["splits"]["test"] == {"NORMAL": 5, "PNEUMONIA": 3}
    assert [p["path"].endswith("IM-0099-0001.png") for p in report["problems"]["empty"]] == [True]
    assert len(report["problems"]["unreadable"]) == 1
    assert report["ignored_files"][0].endswith("notes.txt")
    assert report["grouping"]["source"] == "auto-detected"
    leakage = report["leakage"]
    assert leakage["found"]
    patients = leakage["patients_across_splits"]
    assert patients["shared_groups"] == 1 and patients["by_splits"] == {"test & train": 1}
    [crossing] = leakage["duplicates_across_splits"]
    assert sorted(crossing["splits"]) == ["test", "train"]
    assert any(p.endswith("person7_bacteria_51.jpeg") for p in crossing["paths"])
    hints = {(h["feature"], h["class"]) for h in report["shortcuts"]}
    assert ("format", "PNEUMONIA") in hints and ("format", "NORMAL") in hints
    files = {p.name for p in out.iterdir()}
    assert {"audit.json", "audit.html", "images.csv", "class_distribution.png", "samples.png",
            "closest_pairs.png"} <= files
    saved = json.loads((out / "audit.json").read_text())
    assert saved["leakage"]["found"] and saved["outputs"]["html"] == "audit.html"
    assert "LEAKAGE FOUND" in (out / "audit.html").read_text()


def test_audit_against_a_second_dataset(leaky_dataset, tmp_path):
    other = tmp_path / "external"
    save(other / "NORMAL" / "x.png", texture(103))
    save(other / "PNEUMONIA" / "y.png", texture(999))
    report = audit_dataset(leaky_dataset / "train", against=other, out_dir=tmp_path / "r")
    against = report["leakage"]["against"]
    assert against["exact_duplicates"] == 1 and against["images_shared"] == 1
    assert against["pairs"][0]["other_path"].endswith("x.png")
    assert (tmp_path / "r" / "against_pairs.png").is_file()


def test_audit_refuses_to_overwrite(leaky_dataset, tmp_path):
    out = tmp_path / "report"
    out.mkdir()
    (out / "mine.txt").write_text("keep")
    with pytest.raises(CxrkitError, match="out_dir=.*not empty.*overwrite=True"):
        audit_dataset(leaky_dataset, out_dir=out)
    audit_dataset(leaky_dataset, out_dir=out, overwrite=True)
    assert (out / "mine.txt").read_text() == "keep"


def test_cli_strict_exit_codes(leaky_dataset, tmp_path, capsys):
    assert main(["data", "audit", str(leaky_dataset), "--out", str(tmp_path / "a")]) == 0
    printed = capsys.readouterr().out
    assert "LEAKAGE FOUND" in printed and "patient ids auto-detected" in printed
    assert main(["data", "audit", str(leaky_dataset), "--out", str(tmp_path / "b"),
                 "--strict"]) == 1
    clean = tmp_path / "clean"
    for i in range(3):
        save(clean / "a" / f"{i}.png", texture(400 + i))
        save(clean / "b" / f"{i}.png", texture(500 + i))
    assert main(["data", "audit", str(clean), "--out", str(tmp_path / "c"), "--strict"]) == 0
    assert "no leakage found" in capsys.readouterr().out
    assert main(["data", "audit", str(tmp_path / "missing"), "--out", str(tmp_path / "d")]) == 2
    assert "error: --data" in capsys.readouterr().err


def test_split_file_puts_a_copy_in_another_split(tmp_path):
    root = tmp_path / "flat"
    paths = [save(root / "a" / f"{i}.png", texture(600 + i)) for i in range(4)]
    paths += [save(root / "b" / f"{i}.png", texture(700 + i)) for i in range(4)]
    paths.append(save(root / "b" / "copy_of_a0.png", texture(600)))
    splits = ["train", "train", "val", "test", "train", "train", "val", "test", "test"]
    split_file = tmp_path / "split.csv"
    split_file.write_text("path,label,group,split\n" + "".join(
        f"{p},{'a' if '/a/' in p else 'b'},,{s}\n" for p, s in zip(paths, splits, strict=True)))
    report = audit_dataset(root, split_file=split_file)
    [crossing] = report["leakage"]["duplicates_across_splits"]
    assert sorted(crossing["splits"]) == ["test", "train"]
    assert report["duplicates"]["label_conflicts"] == [crossing], "a copy filed under b"
    assert report["leakage"]["patients_across_splits"] is None
    assert report["splits"]["test"] == {"a": 1, "b": 2}


def test_training_split_keeps_near_duplicate_groups_together(tmp_path):
    from cxrkit.config import build_config
    from cxrkit.data.run_split import build_split

    root = tmp_path / "dups"
    for label, offset in (("Normal", 0), ("Tuberculosis", 5000)):
        for i in range(30):
            original = texture(offset + i)
            save(root / label / f"{i}.png", original)
            if i < 12:
                save(root / label / f"{i}_again.jpg", cv2.resize(original, (80, 80)), quality=90)
    config = build_config("tb-fast", {"data.source": str(root), "data.group_near_duplicates": True})
    manifest = build_split(config)
    groups = near_duplicate_groups(manifest["path"].tolist())
    assert sum(g is not None for g in groups) == 48
    split_of_group: dict[str, set] = {}
    for group, split in zip(groups, manifest["split"], strict=True):
        if group:
            split_of_group.setdefault(group, set()).add(split)
    assert all(len(splits) == 1 for splits in split_of_group.values())
    assert set(manifest["split"]) == {"train", "val", "test"}
