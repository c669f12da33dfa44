"""What cxrkit keeps on disk between runs: content hashes of image files and decoded images.

**File index** (`<cache root>/files.sqlite`): the sha256 of every file seen, keyed by
(path, size, mtime, inode), so an unchanged file is never read again to learn its content
hash. A file modified in the last few seconds is not remembered (its mtime could still be
shared by a later write: the "racy git" problem), so it is hashed again next time.
The hash keys the decoded-image store here and the fingerprint cache of `cxrkit.data.hashing`.

**Image store** (`<cache root>/images/<Preprocessing.cache_key()>/`): `pixels.u8`, one flat
uint8 array of S x S rows, and `index.sqlite`, which maps a file's content (sha256 + suffix) to
its row, the row's CRC-32 and, for a contract that uses the lungs, whether a plausible lung was
found (so lung fallbacks are reported on warm runs too). Images are decoded once, in parallel
processes (one thread each) that write their rows in place; the lung segmenter travels to
them as plain data (`LungSegmenter.portable`) and each builds its network once. The index is
committed after the pixels, so a reader never sees a half-written row. Training opens the
array read-only through `CachedImages`, which every DataLoader worker and DDP rank shares
through the operating system's page cache: memory stays flat as the dataset grows. Rows are
read with positioned reads rather than `mmap` so that a file truncated under a running job
gives a clean error path instead of SIGBUS, and every row read is checked against its CRC: a
damaged, truncated or deleted cache file is repaired from the source image, never served wrong.

Writers take an exclusive lock on the store (`lock`), so two runs filling the same cache at
once take turns and the second finds the images already there.
"""

from __future__ import annotations

import fcntl
import hashlib
import logging
import multiprocessing
import os
import sqlite3
import sys
import time
import zlib
from collections.abc import Callable, Sequence
from concurrent.futures import ProcessPoolExecutor, ThreadPoolExecutor, as_completed
from contextlib import closing, contextmanager
from pathlib import Path

import cv2
import numpy as np

from cxrkit.data.io import read_gray
from cxrkit.data.preprocess import Preprocessing, check_segmenter, prepare_with_lungs
from cxrkit.errors import CxrkitError
from cxrkit.segment.lungs import LungSegmenter

log = logging.getLogger(__name__)

PIXELS = "pixels.u8"
INDEX = "index.sqlite"
LOCK = "lock"
_CHUNK = 64
_IN_PROCESS_BELOW = 256
_SQL_BATCH = 500
FILES_TABLE = "files_v1"
IMAGES_TABLE = "images_v2"
RECENT_NS = 3_000_000_000

Progress = Callable[[str, int, int], None]
"""progress(stage, done, total): stage is "hash" (reading new files) or "decode"."""


def cache_root() -> Path:
    """Root of every cxrkit cache: $CXRKIT_CACHE_DIR, else ~/.cache/cxrkit."""
    return Path(os.environ.get("CXRKIT_CACHE_DIR") or Path.home() / ".cache" / "cxrkit").expanduser()


def default_cache_dir() -> Path:
    """Where decoded images are kept: <cache root>/images."""
    return cache_root() / "images"


def default_workers() -> int:
    """Processes or threads to use: the cores this process may run on."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:
        return max(1, os.cpu_count() or 1)


# ---------------------------------------------------------------- file index (content hashes)


def _hash_file(path: str) -> dict:
    """sha256 of one file's bytes, or an `error` ("empty"/"unreadable") and `reason`."""
    digest = hashlib.sha256()
    size = 0
    try:
        with open(path, "rb") as handle:
            for block in iter(lambda: handle.read(1 << 20), b""):
                digest.update(block)
                size += len(block)
    except OSError as error:
        return {"path": path, "bytes": 0, "sha256": None, "error": "unreadable",
                "reason": f"{path}: cannot read ({error.strerror or error})"}
    if not size:
        return {"path": path, "bytes": 0, "sha256": None, "error": "empty",
                "reason": f"{path}: file is empty (0 bytes)"}
    return {"path": path, "bytes": size, "sha256": digest.hexdigest(), "error": None}


def _connect(database: Path) -> sqlite3.Connection:
    connection = sqlite3.connect(database, timeout=120)
    connection.execute("PRAGMA journal_mode=WAL")
    return connection


def _known_hashes(database: Path, keys: list[str]) -> dict[str, tuple[int, int, int, str]]:
    if not database.is_file():
        return {}
    found = {}
    try:
        with closing(_connect(database)) as connection:
            for start in range(0, len(keys), _SQL_BATCH):
                chunk = keys[start:start + _SQL_BATCH]
                rows = connection.execute(
                    f"SELECT path, size, mtime_ns, inode, sha256 FROM {FILES_TABLE} WHERE path IN "
                    f"({','.join('?' * len(chunk))})", chunk)
                found.update((path, tuple(rest)) for path, *rest in rows)
    except sqlite3.Error:
        return {}
    return found


def _remember_hashes(database: Path, rows: list[tuple[str, int, int, int, str]]) -> None:
    if not rows:
        return
    try:
        database.parent.mkdir(parents=True, exist_ok=True)
        with closing(_connect(database)) as connection, connection:
            connection.execute(f"CREATE TABLE IF NOT EXISTS {FILES_TABLE} (path TEXT PRIMARY KEY, "
                               "size INTEGER NOT NULL, mtime_ns INTEGER NOT NULL, inode INTEGER NOT NULL, "
                               "sha256 TEXT NOT NULL)")
            connection.executemany(f"INSERT OR REPLACE INTO {FILES_TABLE} VALUES (?, ?, ?, ?, ?)", rows)
    except (OSError, sqlite3.Error) as error:
        log.warning("cannot update the file index %s (%s); hashes are recomputed next time",
                    database, error)


def file_index_path() -> Path:
    """The file index: <cache root>/files.sqlite."""
    return cache_root() / "files.sqlite"


def content_hashes(paths: Sequence[str], workers: int | None = None,
                   progress: Progress | None = None) -> list[dict]:
    """path, bytes, sha256 and error/reason per file, in input order.

    Files whose (path, size, mtime) are in the file index are not read; the others are
    hashed on a thread pool and remembered.
    """
    database = file_index_path()
    absolute = [os.path.abspath(p) for p in paths]
    known = _known_hashes(database, absolute)
    records: list[dict | None] = [None] * len(absolute)
    todo: list[int] = []
    stats: dict[int, os.stat_result] = {}
    for position, (path, shown) in enumerate(zip(absolute, paths, strict=True)):
        try:
            stat = os.stat(path)
        except OSError as error:
            records[position] = {"path": str(shown), "bytes": 0, "sha256": None, "error": "unreadable",
                                 "reason": f"{shown}: cannot read ({error.strerror or error})"}
            continue
        entry = known.get(path)
        if stat.st_size and entry and entry[:3] == (stat.st_size, stat.st_mtime_ns, stat.st_ino):
            records[position] = {"path": str(shown), "bytes": stat.st_size, "sha256": entry[3],
                                 "error": None}
        else:
            todo.append(position)
            stats[position] = stat
    new_rows = []
    settled = time.time_ns() - RECENT_NS
    if todo:
        with ThreadPoolExecutor(max_workers=workers or default_workers()) as pool:
            hashed = pool.map(_hash_file, [str(paths[i]) for i in todo])
            for done, (position, record) in enumerate(zip(todo, hashed, strict=True), start=1):
                records[position] = record
                stat = stats[position]
                if record["sha256"] and record["bytes"] == stat.st_size and stat.st_mtime_ns < settled:
                    new_rows.append((absolute[position], stat.st_size, stat.st_mtime_ns, stat.st_ino,
                                     record["sha256"]))
                if progress is not None and (done % _CHUNK == 0 or done == len(todo)):
                    progress("hash", done, len(todo))
    _remember_hashes(database, new_rows)
    return records  # type: ignore[return-value]


# ---------------------------------------------------------------- decoded-image store


def _key(record: dict) -> str:
    return f"{record['sha256']}{Path(record['path']).suffix.lower()}"


class CachedImages:
    """A read-only view of some rows of a store's pixels.u8: `images[i]` is an S x S uint8 array.

    Safe to pass to DataLoader workers (forked or spawned) and to use from DDP ranks. A row
    whose bytes are missing or fail their CRC is decoded again from its source file (with a
    warning), in a worker too: a portable lung segmenter travels with the images. If that
    fails, CxrkitError says which cache file to delete.
    """

    def __init__(self, pixels: Path, rows: np.ndarray, crcs: np.ndarray, sources: np.ndarray,
                 prep: Preprocessing, segmenter: LungSegmenter | None = None):
        self.pixels = Path(pixels)
        self.rows = np.asarray(rows, dtype=np.int64)
        self.crcs = np.asarray(crcs, dtype=np.uint32)
        self.sources = np.asarray(sources, dtype=str)
        self.prep = prep
        self.segmenter = segmenter
        self.image_size = prep.image_size
        self.fill: dict = {}
        self._fd: int | None = None
        self._pid = -1
        self._warned = False

    def __len__(self) -> int:
        return len(self.rows)

    def __getstate__(self) -> dict:
        state = dict(self.__dict__)
        state["_fd"], state["_pid"] = None, -1
        if self.segmenter is not None and not self.segmenter.portable:
            state["segmenter"] = None  # a closure with no spec stays in this process
        return state

    def __del__(self) -> None:
        if self._fd is not None and self._pid == os.getpid():
            os.close(self._fd)

    def subset(self, selection) -> CachedImages:
        """The images picked by a boolean mask or index array."""
        picked = CachedImages(self.pixels, self.rows[selection], self.crcs[selection],
                              self.sources[selection], self.prep, self.segmenter)
        picked.fill = self.fill
        return picked

    def mean_std(self, count: int) -> tuple[float, float]:
        """Mean and standard deviation of the pixels (0-1) of up to `count` images spread evenly
        over the set, read one at a time so memory stays small."""
        total = squares = pixels = 0.0
        for index in range(0, len(self), max(1, len(self) // count)):
            image = self._read(index).astype(np.float64) / 255.0
            total, squares, pixels = total + image.sum(), squares + np.square(image).sum(), pixels + image.size
        mean = total / max(pixels, 1)
        return float(mean), float(np.sqrt(max(squares / max(pixels, 1) - mean * mean, 0.0)))

    def _descriptor(self) -> int | None:
        if self._fd is None or self._pid != os.getpid():
            self._pid = os.getpid()
            try:
                self._fd = os.open(self.pixels, os.O_RDONLY)
            except OSError:
                self._fd = None
        return self._fd

    def __getitem__(self, index):
        """An int gives one S x S image, a slice a stacked (N, S, S) batch, and a boolean mask
        or index array a lazy `CachedImages` subset (nothing read until used)."""
        if isinstance(index, slice):
            picked = range(len(self))[index]
            if not picked:
                return np.zeros((0, self.image_size, self.image_size), dtype=np.uint8)
            return np.stack([self._read(i) for i in picked])
        if isinstance(index, (np.ndarray, list)):
            return self.subset(np.asarray(index))
        return self._read(index)

    def _read(self, index: int) -> np.ndarray:
        side = self.image_size
        size = side * side
        descriptor = self._descriptor()
        data = b""
        if descriptor is not None:
            data = os.pread(descriptor, size, int(self.rows[index]) * size)
        if len(data) == size and zlib.crc32(data) == int(self.crcs[index]):
            return np.frombuffer(data, dtype=np.uint8).reshape(side, side)
        return self._recover(index)

    def _recover(self, index: int) -> np.ndarray:
        source = str(self.sources[index])
        if not self._warned:
            self._warned = True
            log.warning("cache file %s is missing, truncated or changed (row %d); decoding "
                        "affected images from their source files again", self.pixels,
                        int(self.rows[index]))
        try:
            return prepare_with_lungs(read_gray(source), self.prep, self.segmenter)[0]
        except CxrkitError as error:
            raise CxrkitError(f"cache file {self.pixels} is damaged and the source image cannot "
                              f"be read again ({error}); delete {self.pixels.parent} and rerun") from error


@contextmanager
def _locked(folder: Path, waiting: Callable[[], None]):
    folder.mkdir(parents=True, exist_ok=True)
    with open(folder / LOCK, "a+") as handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            waiting()
            fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def _read_index(folder: Path, row_bytes: int) -> dict[str, tuple[int, int, bool | None]]:
    """key -> (row, crc, lung_found) for rows that lie inside pixels.u8 (a shorter file drops
    the rest); lung_found is None when the contract uses no lungs."""
    database = folder / INDEX
    pixels = folder / PIXELS
    if not database.is_file():
        return {}
    rows_on_disk = pixels.stat().st_size // row_bytes if pixels.is_file() else 0
    try:
        with closing(_connect(database)) as connection:
            entries = connection.execute(f"SELECT key, row, crc, lung_found FROM {IMAGES_TABLE}").fetchall()
    except sqlite3.Error:
        return {}
    return {key: (row, crc, None if lung is None else bool(lung))
            for key, row, crc, lung in entries if row < rows_on_disk}


def _write_index(folder: Path, entries: list[tuple[str, int, int, bool | None]],
                 drop_from_row: int | None = None) -> None:
    with closing(_connect(folder / INDEX)) as connection, connection:
        connection.execute(f"CREATE TABLE IF NOT EXISTS {IMAGES_TABLE} (key TEXT PRIMARY KEY, "
                           "row INTEGER NOT NULL, crc INTEGER NOT NULL, lung_found INTEGER)")
        if drop_from_row is not None:
            connection.execute(f"DELETE FROM {IMAGES_TABLE} WHERE row >= ?", (drop_from_row,))
        connection.executemany(f"INSERT OR REPLACE INTO {IMAGES_TABLE} VALUES (?, ?, ?, ?)", entries)


def _decode_rows(pixels: str, prep: dict, items: list[tuple[int, str]],
                 segmenter: LungSegmenter | None = None) -> list[tuple[int, int | None, bool | None, str]]:
    """Decode images into their rows of pixels.u8; (row, crc or None, lung_found, failure
    reason) each."""
    settings = Preprocessing.from_dict(prep)
    row_bytes = settings.image_size ** 2
    results = []
    descriptor = os.open(pixels, os.O_WRONLY | os.O_CREAT, 0o644)
    try:
        for row, path in items:
            try:
                image, found = prepare_with_lungs(read_gray(path), settings, segmenter)
            except CxrkitError as error:
                results.append((row, None, None, str(error)))
                continue
            data = image.tobytes()
            os.pwrite(descriptor, data, row * row_bytes)
            results.append((row, zlib.crc32(data), found, ""))
    finally:
        os.close(descriptor)
    return results


def _one_thread_each() -> None:
    """Start of a decode worker: OpenCV and torch (the lung segmenter) use one thread, so
    N workers keep N cores busy rather than fighting over them."""
    cv2.setNumThreads(1)
    if "torch" in sys.modules:
        sys.modules["torch"].set_num_threads(1)
    else:  # read by the OpenMP and MKL runtimes when torch is first imported
        os.environ.update(OMP_NUM_THREADS="1", MKL_NUM_THREADS="1")


def process_pool(workers: int) -> ProcessPoolExecutor:
    """Worker processes for decoding, one thread each: forked from a forkserver (safe next to
    threads) that has imported the decoders once, so each worker starts at once; spawned where
    unavailable."""
    if "forkserver" not in multiprocessing.get_all_start_methods():
        return ProcessPoolExecutor(max_workers=workers, mp_context=multiprocessing.get_context("spawn"),
                                   initializer=_one_thread_each)
    context = multiprocessing.get_context("forkserver")
    context.set_forkserver_preload(["cxrkit.data.cache", "cxrkit.inference"])
    return ProcessPoolExecutor(max_workers=workers, mp_context=context, initializer=_one_thread_each)


def in_workers(segmenter: LungSegmenter | None) -> bool:
    """True when images can be prepared in worker processes: no segmenter, or a portable one."""
    return segmenter is None or segmenter.portable


def _fill(folder: Path, prep: Preprocessing, missing: dict[str, str], workers: int,
          progress: Progress | None, segmenter: LungSegmenter | None
          ) -> tuple[dict[str, tuple[int, int, bool | None]], dict[str, str]]:
    """Decode `missing` {key: path} into new rows (caller holds the lock); return new entries, failures."""
    row_bytes = prep.image_size ** 2
    pixels = folder / PIXELS
    segmenter = segmenter if prep.uses_lungs else None
    size = pixels.stat().st_size if pixels.is_file() else 0
    _write_index(folder, [], drop_from_row=size // row_bytes)  # rows lost to truncation or deletion
    index = _read_index(folder, row_bytes)
    missing = {key: path for key, path in missing.items() if key not in index}
    first = max([-(-size // row_bytes), *[row + 1 for row, _, _ in index.values()]])
    items = [(first + offset, key, path) for offset, (key, path) in enumerate(missing.items())]
    by_row = {row: key for row, key, _ in items}
    path_of = {row: path for row, _, path in items}
    chunks = [[(row, path) for row, _, path in items[start:start + _CHUNK]]
              for start in range(0, len(items), _CHUNK)]
    added: dict[str, tuple[int, int, bool | None]] = {}
    failures: dict[str, str] = {}
    done = 0

    def commit(results) -> None:
        nonlocal done
        entries = []
        for row, crc, found, reason in results:
            if crc is None:
                failures[path_of[row]] = reason
            else:
                added[by_row[row]] = (row, crc, found)
                entries.append((by_row[row], row, crc, found))
        _write_index(folder, entries)
        done += len(results)
        if progress is not None:
            progress("decode", done, len(items))

    if len(items) < _IN_PROCESS_BELOW or workers <= 1 or not in_workers(segmenter):
        for chunk in chunks:
            commit(_decode_rows(str(pixels), prep.to_dict(), chunk, segmenter))
    else:
        with process_pool(workers) as pool:
            futures = [pool.submit(_decode_rows, str(pixels), prep.to_dict(), chunk, segmenter)
                       for chunk in chunks]
            try:
                for future in as_completed(futures):
                    commit(future.result())
            except BaseException:
                pool.shutdown(cancel_futures=True)
                raise
    return added, failures


def load_cached_images(
    paths: Sequence[str],
    prep: Preprocessing,
    cache_dir: str | Path | None = None,
    workers: int | None = None,
    progress: Progress | None = None,
    segmenter: LungSegmenter | None = None,
    lung_fallbacks: list[str] | None = None,
) -> tuple[CachedImages, dict[str, str]]:
    """(the readable images as CachedImages, {unreadable path: reason}).

    Rows follow `paths` with the unreadable ones left out. Images not yet in the store are
    decoded in `workers` processes (default: every core). `images.fill` holds what it took:
    hashed, decoded and cached counts and seconds. A contract that uses the lungs needs
    `segmenter`; paths where no plausible lung was found (whole image used) are appended to
    `lung_fallbacks` when it is given, whether decoded now or read from the store.
    """
    if prep.uses_lungs:
        check_segmenter(prep, segmenter)
    started = time.perf_counter()
    workers = workers or default_workers()
    folder = Path(cache_dir or default_cache_dir()).expanduser() / prep.cache_key()
    row_bytes = prep.image_size ** 2
    records = content_hashes(paths, workers, progress)
    hashed_at = time.perf_counter()
    failures = {str(r["path"]): r["reason"] for r in records if r["error"]}
    readable = [r for r in records if not r["error"]]
    index = _read_index(folder, row_bytes)
    missing = {_key(r): str(r["path"]) for r in readable if _key(r) not in index}
    decoded = 0
    if missing:
        def waiting() -> None:
            log.warning("another run is filling the image cache %s; waiting for it", folder)

        try:
            with _locked(folder, waiting):
                added, failed = _fill(folder, prep, missing, workers, progress, segmenter)
        except OSError as error:
            raise CxrkitError(f"cannot write the image cache in {folder} ({error}); set "
                              "data.cache_dir or $CXRKIT_CACHE_DIR to a writable folder") from error
        index = _read_index(folder, row_bytes) | added
        failures.update(failed)
        decoded = len(added)
    kept = [r for r in readable if _key(r) in index]
    failures.update({str(r["path"]): f"{r['path']}: not decoded (cache {folder})"
                     for r in readable if _key(r) not in index and str(r["path"]) not in failures})
    entries = [index[_key(r)] for r in kept]
    images = CachedImages(folder / PIXELS, [row for row, _, _ in entries], [crc for _, crc, _ in entries],
                          [str(r["path"]) for r in kept], prep, segmenter)
    if lung_fallbacks is not None:
        lung_fallbacks.extend(str(r["path"]) for r, (_, _, found) in zip(kept, entries, strict=True)
                              if found is False)
    finished = time.perf_counter()
    images.fill = {"images": len(paths), "decoded": decoded, "cached": len(kept) - decoded,
                   "failed": len(failures), "hash_s": round(hashed_at - started, 2),
                   "decode_s": round(finished - hashed_at, 2)}
    return images, failures
