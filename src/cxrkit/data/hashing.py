"""Fingerprints of image files: content hash, perceptual hash, header facts, intensity stats.

`inspect_images` reads many files on a thread pool (decoding and hashing release the GIL) and
keeps results in a small SQLite cache keyed by file content; content hashes come from the
file index of `cxrkit.data.cache`, so a second audit or training run on unchanged files reads
nothing at all. `close_pairs` finds hashes within a Hamming
distance of each other, block by block so memory stays bounded.

The perceptual hash is imagehash's DCT hash with 256 bits: chest X-rays look alike, and
the usual 64-bit hash puts different patients a few bits apart. Distances are reported on a
64-bit scale (differing bits divided by 4) so thresholds read like the familiar ones.
"""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import closing
from pathlib import Path

import numpy as np
from PIL import Image

from cxrkit.data.cache import cache_root, content_hashes, default_workers
from cxrkit.data.io import image_info, read_gray
from cxrkit.errors import CxrkitError

HASH_SIZE = 16
BITS_PER_UNIT = HASH_SIZE * HASH_SIZE // 64
CACHE_TABLE = "fingerprints_v1"
BORDER_FRACTION = 0.08
_PAIR_BLOCK = 4_000_000


def cache_path() -> Path:
    """The fingerprint cache file: $CXRKIT_CACHE_DIR or ~/.cache/cxrkit, fingerprints.sqlite."""
    return cache_root() / "fingerprints.sqlite"


def _cache_key(sha256: str, path: str) -> str:
    return f"{sha256}{Path(path).suffix.lower()}"


def _fingerprint_content(path: str) -> dict:
    """Header facts, perceptual hash and intensity stats, or an `error` and `reason`."""
    import imagehash

    try:
        facts = image_info(path)
    except CxrkitError as error:
        return {"error": "unreadable", "reason": str(error)}
    try:
        gray = read_gray(path)
    except CxrkitError as error:
        return {**facts, "error": "corrupt", "reason": str(error)}
    height, width = gray.shape
    band = max(1, round(min(height, width) * BORDER_FRACTION))
    border = np.concatenate([gray[:band].ravel(), gray[-band:].ravel(),
                             gray[:, :band].ravel(), gray[:, -band:].ravel()])
    return {
        **facts,
        "error": None,
        "phash": str(imagehash.phash(Image.fromarray(gray), hash_size=HASH_SIZE)),
        "mean": round(float(gray.mean()), 3),
        "std": round(float(gray.std()), 3),
        "border_mean": round(float(border.mean()), 3),
    }


def _read_cache(database: Path, keys: list[str]) -> dict[str, dict]:
    if not database.is_file() or not keys:
        return {}
    found: dict[str, dict] = {}
    try:
        with closing(sqlite3.connect(database, timeout=30)) as connection:
            for start in range(0, len(keys), 500):
                chunk = keys[start:start + 500]
                marks = ",".join("?" * len(chunk))
                rows = connection.execute(
                    f"SELECT key, facts FROM {CACHE_TABLE} WHERE key IN ({marks})", chunk)
                found.update((key, json.loads(facts)) for key, facts in rows)
    except sqlite3.Error:
        return {}
    return found


def _write_cache(database: Path, records: list[dict]) -> None:
    """Store fingerprints of readable files (failures may be fixed by installing a decoder)."""
    rows = [(_cache_key(r["sha256"], r["path"]),
             json.dumps({k: v for k, v in r.items() if k not in ("path", "bytes", "sha256")}))
            for r in records if r["error"] is None]
    if not rows:
        return
    try:
        database.parent.mkdir(parents=True, exist_ok=True)
        with closing(sqlite3.connect(database, timeout=30)) as connection, connection:
            connection.execute(f"CREATE TABLE IF NOT EXISTS {CACHE_TABLE} "
                               "(key TEXT PRIMARY KEY, facts TEXT NOT NULL)")
            connection.executemany(f"INSERT OR REPLACE INTO {CACHE_TABLE} VALUES (?, ?)", rows)
    except (OSError, sqlite3.Error):
        return


def inspect_images(
    paths: Sequence[str],
    workers: int | None = None,
    use_cache: bool = True,
    progress: Callable[[int, int], None] | None = None,
) -> list[dict]:
    """Fingerprint files on a thread pool, in input order.

    Each record has path, bytes, sha256, error (None, "empty", "unreadable" or "corrupt")
    with a reason, and for readable files format, mode, bit_depth, width, height, phash,
    mean, std and border_mean (grey levels 0-255).
    """
    database = cache_path()
    pool = ThreadPoolExecutor(max_workers=workers or default_workers())
    try:
        records = content_hashes([str(p) for p in paths], workers)
        hashed = [r for r in records if r["sha256"]]
        keys = [_cache_key(r["sha256"], r["path"]) for r in hashed]
        cached = _read_cache(database, keys) if use_cache else {}
        todo = []
        for record, key in zip(hashed, keys, strict=True):
            if key in cached:
                record.update(cached[key])
            else:
                todo.append(record)
        fingerprints = pool.map(lambda r: _fingerprint_content(r["path"]), todo)
        for done, (record, facts) in enumerate(zip(todo, fingerprints, strict=True), start=1):
            record.update(facts)
            if progress:
                progress(done, len(todo))
    finally:
        pool.shutdown(cancel_futures=True)  # Ctrl-C must not wait for every queued file
    if use_cache:
        _write_cache(database, todo)
    return records


def hash_matrix(hex_hashes: Sequence[str]) -> np.ndarray:
    """Hex perceptual hashes as an (N, words) uint64 array for fast Hamming distances."""
    if not hex_hashes:
        return np.zeros((0, BITS_PER_UNIT), dtype=np.uint64)
    raw = np.frombuffer(b"".join(bytes.fromhex(h) for h in hex_hashes), dtype=">u8")
    return raw.reshape(len(hex_hashes), -1).astype(np.uint64)


def _by_distance(pair: tuple[int, int, int]) -> tuple[int, int, int]:
    return pair[2], pair[0], pair[1]


def close_pairs(
    hashes: np.ndarray,
    other: np.ndarray | None = None,
    max_bits: int = 16,
    closest: int = 0,
) -> tuple[list[tuple[int, int, int]], list[tuple[int, int, int]]]:
    """Pairs (i, j, differing bits) within max_bits, and the `closest` nearest pairs overall.

    With `other`, pairs run between `hashes` (i) and `other` (j); without, within `hashes`
    with i < j. Both lists are sorted by distance.
    """
    within = other is None
    other = hashes if within else other
    if len(hashes) == 0 or len(other) == 0:
        return [], []
    excluded = np.iinfo(np.int32).max
    block = max(1, _PAIR_BLOCK // len(other))
    pairs: list[tuple[int, int, int]] = []
    best: list[tuple[int, int, int]] = []
    for start in range(0, len(hashes), block):
        rows = hashes[start:start + block]
        first = start if within else 0  # within one set only j >= start can pair (j > i): half the work
        columns = other[first:]
        distance = np.zeros((len(rows), len(columns)), dtype=np.int32)
        for word in range(hashes.shape[1]):
            distance += np.bitwise_count(rows[:, word, None] ^ columns[None, :, word])
        if within:
            local = np.arange(len(rows))[:, None]
            distance[np.arange(len(columns))[None, :] <= local] = excluded
        chosen = [np.nonzero(distance.ravel() <= max_bits)[0]]
        if closest:
            take = min(closest, distance.size)
            chosen.append(np.argpartition(distance.ravel(), take - 1)[:take])
        found = []
        for flat in chosen:
            i, j = np.unravel_index(flat, distance.shape)
            found.append([(int(a) + start, int(b) + first, int(distance[a, b]))
                          for a, b in zip(i, j, strict=True) if distance[a, b] != excluded])
        pairs += found[0]
        if closest:
            best = sorted(best + found[1], key=_by_distance)[:closest]
    return sorted(pairs, key=_by_distance), best
