"""The on-disk image cache: file index, one pixels file per preprocessing, recovery, concurrency."""

from __future__ import annotations

import logging
import multiprocessing
import os
import pickle
import shutil
import time
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from cxrkit.data import cache
from cxrkit.data.cache import PIXELS, content_hashes, load_cached_images
from cxrkit.data.io import read_gray
from cxrkit.data.preprocess import Preprocessing, prepare
from cxrkit.errors import CxrkitError

PREP = Preprocessing(image_size=24, resize="pad", enhancement="clahe")


@pytest.fixture(autouse=True)
def own_cache_root(tmp_path, monkeypatch):
    monkeypatch.setenv("CXRKIT_CACHE_DIR", str(tmp_path / "root"))


def make_images(folder: Path, count: int, seed: int = 0) -> list[str]:
    rng = np.random.default_rng(seed)
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for index in range(count):
        shape = (30 + index % 7, 40 - index % 5)
        path = folder / f"img_{index:03d}.png"
        Image.fromarray(rng.integers(0, 256, shape).astype(np.uint8)).save(path)
        settle(path)
        paths.append(str(path))
    return paths


def settle(path, age_s: int = 3600) -> None:
    """Date a file back: the file index only trusts files not modified in the last seconds."""
    past = time.time() - age_s
    os.utime(path, (past, past))


def expected(path: str) -> np.ndarray:
    return prepare(read_gray(path), PREP)


def assert_images(images, paths: list[str]) -> None:
    assert len(images) == len(paths)
    assert list(images.sources) == paths
    for index, path in enumerate(paths):
        np.testing.assert_array_equal(images[index], expected(path))


def test_fill_then_reuse_without_reading_or_decoding(tmp_path, monkeypatch):
    paths = make_images(tmp_path / "data", 12)
    (tmp_path / "data" / "broken.png").write_bytes(b"not a png")
    (tmp_path / "data" / "empty.png").write_bytes(b"")
    wanted = paths[:5] + [str(tmp_path / "data" / "broken.png"), str(tmp_path / "data" / "empty.png")] + paths[5:]
    seen = []
    images, failures = load_cached_images(wanted, PREP, tmp_path / "cache",
                                          progress=lambda *event: seen.append(event))
    assert set(failures) == {wanted[5], wanted[6]}
    assert "not a readable image" in failures[wanted[5]] and "empty" in failures[wanted[6]]
    assert_images(images, paths)
    assert images.fill["decoded"] == 12 and images.fill["cached"] == 0
    assert ("decode", 13, 13) in seen and seen[-1][0] == "decode"
    pixels = tmp_path / "cache" / PREP.cache_key() / PIXELS
    assert pixels.stat().st_size == 13 * 24 * 24  # one row per decoding attempt, one file

    def must_not(*args, **kwargs):
        raise AssertionError("read or decoded again")

    monkeypatch.setattr(cache, "_hash_file", must_not)
    monkeypatch.setattr(cache, "_decode_rows", must_not)
    again, _ = load_cached_images(paths, PREP, tmp_path / "cache")
    assert again.fill["decoded"] == 0 and again.fill["cached"] == 12
    assert_images(again, paths)
    subset = again.subset(np.arange(12) % 3 == 0)
    assert_images(subset, paths[::3])


def test_file_index_rehashes_only_changed_files(tmp_path, monkeypatch):
    paths = make_images(tmp_path / "data", 4)
    first = content_hashes(paths)
    read = []
    original = cache._hash_file
    monkeypatch.setattr(cache, "_hash_file", lambda path: read.append(path) or original(path))
    assert content_hashes(paths) == first and read == []
    Image.fromarray(np.full((33, 33), 7, np.uint8)).save(paths[2])
    changed = content_hashes(paths)
    assert read == [paths[2]]
    assert changed[2]["sha256"] != first[2]["sha256"] and changed[:2] == first[:2]
    content_hashes(paths)
    assert read == [paths[2]] * 2  # written seconds ago: its mtime may not tell the next write apart
    settle(paths[2], age_s=60)
    content_hashes(paths)
    content_hashes(paths)
    assert read == [paths[2]] * 3


def test_other_preprocessing_gets_its_own_array(tmp_path):
    paths = make_images(tmp_path / "data", 3)
    load_cached_images(paths, PREP, tmp_path / "cache")
    other = Preprocessing(image_size=16, resize="stretch")
    images, _ = load_cached_images(paths, other, tmp_path / "cache")
    assert images[0].shape == (16, 16)
    np.testing.assert_array_equal(images[1], prepare(read_gray(paths[1]), other))
    assert len(list((tmp_path / "cache").iterdir())) == 2


def test_truncated_cache_mid_run_recovers_then_repairs(tmp_path, caplog):
    paths = make_images(tmp_path / "data", 10)
    images, _ = load_cached_images(paths, PREP, tmp_path / "cache")
    images[0]  # the file is open
    pixels = images.pixels
    os.truncate(pixels, 4 * 24 * 24 + 100)
    with caplog.at_level(logging.WARNING):
        assert_images(images, paths)  # rows past the cut are decoded from the source again
    assert "missing, truncated or changed" in caplog.text
    repaired, _ = load_cached_images(paths, PREP, tmp_path / "cache")
    assert repaired.fill["decoded"] == 6 and repaired.fill["cached"] == 4
    assert_images(repaired, paths)


def test_deleted_cache_mid_run_recovers(tmp_path):
    paths = make_images(tmp_path / "data", 6)
    images, _ = load_cached_images(paths, PREP, tmp_path / "cache")
    images[0]
    shutil.rmtree(tmp_path / "cache")
    assert_images(images, paths)  # the open file lives on until closed
    in_new_worker = pickle.loads(pickle.dumps(images))  # a spawned DataLoader worker reopens by path
    assert_images(in_new_worker, paths)  # gone: decoded from the sources
    refilled, _ = load_cached_images(paths, PREP, tmp_path / "cache")
    assert refilled.fill["decoded"] == 6
    assert_images(refilled, paths)


def test_changed_bytes_are_never_served(tmp_path):
    paths = make_images(tmp_path / "data", 5)
    images, _ = load_cached_images(paths, PREP, tmp_path / "cache")
    with open(images.pixels, "r+b") as handle:
        handle.seek(int(images.rows[2]) * 24 * 24 + 10)
        handle.write(b"\xff" * 20)
    assert_images(images, paths)


def test_damaged_cache_and_missing_source_is_a_one_line_error(tmp_path):
    paths = make_images(tmp_path / "data", 3)
    images, _ = load_cached_images(paths, PREP, tmp_path / "cache")
    os.truncate(images.pixels, 0)
    os.remove(paths[1])
    with pytest.raises(CxrkitError, match=r"damaged and the source image cannot be read.*delete") as error:
        images[1]
    assert "\n" not in str(error.value)


def _fill_in_other_process(paths, cache_dir, root, queue):
    os.environ["CXRKIT_CACHE_DIR"] = root
    images, failures = load_cached_images(paths, PREP, cache_dir, workers=1)
    queue.put((images.fill, [images[i].tobytes() for i in range(len(images))], failures))


def test_two_runs_filling_the_same_cache_at_once(tmp_path):
    paths = make_images(tmp_path / "data", 40)
    context = multiprocessing.get_context("spawn")
    queue = context.Queue()
    runs = [context.Process(target=_fill_in_other_process,
                            args=(paths, str(tmp_path / "cache"), os.environ["CXRKIT_CACHE_DIR"], queue))
            for _ in range(2)]
    for run in runs:
        run.start()
    results = [queue.get(timeout=120) for _ in runs]
    for run in runs:
        run.join(timeout=60)
    truth = [expected(p).tobytes() for p in paths]
    for _, rows, failures in results:
        assert rows == truth and failures == {}
    assert sorted(fill["decoded"] for fill, _, _ in results) == [0, 40]  # the second waited and reused
    pixels = tmp_path / "cache" / PREP.cache_key() / PIXELS
    assert pixels.stat().st_size == 40 * 24 * 24


def test_parallel_decoding_processes(tmp_path, monkeypatch):
    monkeypatch.setattr(cache, "_IN_PROCESS_BELOW", 0)
    monkeypatch.setattr(cache, "_CHUNK", 7)
    paths = make_images(tmp_path / "data", 30)
    images, failures = load_cached_images(paths, PREP, tmp_path / "cache", workers=2)
    assert failures == {} and images.fill["decoded"] == 30
    assert_images(images, paths)


def test_unwritable_cache_is_a_clear_error(tmp_path):
    paths = make_images(tmp_path / "data", 2)
    blocker = tmp_path / "file"
    blocker.write_text("x")
    with pytest.raises(CxrkitError, match="cannot write the image cache"):
        load_cached_images(paths, PREP, blocker / "cache")


def test_near_duplicate_groups_are_kept_by_content(tmp_path, monkeypatch):
    from cxrkit.data import audit

    paths = make_images(tmp_path / "data", 5)
    shutil.copy(paths[0], tmp_path / "data" / "copy.png")
    paths.append(str(tmp_path / "data" / "copy.png"))
    first = audit.near_duplicate_groups(paths)
    assert first[0] == first[5] is not None

    def must_not(*args, **kwargs):
        raise AssertionError("compared again")

    monkeypatch.setattr(audit, "close_pairs", must_not)
    assert audit.near_duplicate_groups(paths) == first
    Image.fromarray(np.zeros((30, 30), np.uint8)).save(paths[2])
    settle(paths[2], age_s=60)
    with pytest.raises(AssertionError, match="compared again"):
        audit.near_duplicate_groups(paths)


def test_split_is_kept_for_the_same_inputs(monkeypatch):
    import pandas as pd

    from cxrkit.data import splits

    manifest = pd.DataFrame({"path": [f"{i}.png" for i in range(60)], "label": ["a", "b"] * 30,
                             "group": [f"p{i // 3}" if i < 30 else None for i in range(60)], "split": None})
    first = splits.assign_splits_cached(manifest, 0.2, 0.2, seed=3)
    pd.testing.assert_frame_equal(first, splits.assign_splits(manifest, 0.2, 0.2, seed=3))

    def must_not(*args, **kwargs):
        raise AssertionError("split again")

    monkeypatch.setattr(splits, "assign_splits", must_not)
    pd.testing.assert_frame_equal(splits.assign_splits_cached(manifest, 0.2, 0.2, seed=3), first)
    with pytest.raises(AssertionError, match="split again"):
        splits.assign_splits_cached(manifest, 0.2, 0.2, seed=4)
