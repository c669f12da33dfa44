"""A decoded, enhanced and resized uint8 image cache on disk, keyed by file content and preprocessing.

Each image is decoded once (in a thread pool); later runs and epochs read the small .npy
files, and training keeps the whole set as one in-memory uint8 array.
"""

from __future__ import annotations

import hashlib
import os
import threading
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np

from cxrkit.data.io import read_gray
from cxrkit.data.preprocess import Preprocessing, prepare
from cxrkit.errors import CxrkitError


def cache_root() -> Path:
    """Root of every cxrkit cache: $CXRKIT_CACHE_DIR, else ~/.cache/cxrkit."""
    return Path(os.environ.get("CXRKIT_CACHE_DIR") or Path.home() / ".cache" / "cxrkit").expanduser()


def default_cache_dir() -> Path:
    """Where decoded images are kept: <cache root>/images."""
    return cache_root() / "images"


def _file_digest(path: str) -> str:
    with open(path, "rb") as handle:
        return hashlib.sha1(handle.read()).hexdigest()


def _load_one(path: str, prep: Preprocessing, folder: Path) -> np.ndarray:
    try:
        digest = _file_digest(path)
    except OSError as error:
        raise CxrkitError(f"{path}: cannot read ({error})") from error
    cached = folder / digest[:2] / f"{digest}.npy"
    if cached.is_file():
        try:
            return np.load(cached, allow_pickle=False)
        except (OSError, ValueError, EOFError):  # a truncated or empty file: decode again
            cached.unlink(missing_ok=True)
    image = prepare(read_gray(path), prep)
    cached.parent.mkdir(parents=True, exist_ok=True)
    temporary = cached.with_suffix(f".{os.getpid()}-{threading.get_ident()}.tmp.npy")
    np.save(temporary, image, allow_pickle=False)
    os.replace(temporary, cached)
    return image


def load_cached_images(
    paths: Sequence[str],
    prep: Preprocessing,
    cache_dir: str | Path | None = None,
    workers: int | None = None,
    progress: Callable[[int], None] | None = None,
) -> tuple[np.ndarray, dict[str, str]]:
    """Return (N x S x S uint8 array of the readable images, {unreadable path: reason}).

    Rows of the array follow `paths` with the unreadable ones left out.
    """
    folder = Path(cache_dir or default_cache_dir()) / prep.cache_key()
    workers = workers or min(4, os.cpu_count() or 1)

    def attempt(path: str):
        try:
            return _load_one(path, prep, folder), None
        except CxrkitError as error:
            return None, str(error)
        finally:
            if progress is not None:
                progress(1)

    images: list[np.ndarray] = []
    failures: dict[str, str] = {}
    with ThreadPoolExecutor(max_workers=workers) as pool:
        for path, (image, reason) in zip(paths, pool.map(attempt, paths), strict=False):
            if image is None:
                failures[path] = reason
            else:
                images.append(image)
    size = prep.image_size
    array = np.stack(images) if images else np.zeros((0, size, size), dtype=np.uint8)
    return array, failures
