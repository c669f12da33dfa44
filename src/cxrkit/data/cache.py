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
from cxrkit.data.preprocess import Preprocessing, check_segmenter, prepare_with_lungs
from cxrkit.errors import CxrkitError
from cxrkit.segment.lungs import LungSegmenter


def cache_root() -> Path:
    """Root of every cxrkit cache: $CXRKIT_CACHE_DIR, else ~/.cache/cxrkit."""
    return Path(os.environ.get("CXRKIT_CACHE_DIR") or Path.home() / ".cache" / "cxrkit").expanduser()


def default_cache_dir() -> Path:
    """Where decoded images are kept: <cache root>/images."""
    return cache_root() / "images"


def _file_digest(path: str) -> str:
    with open(path, "rb") as handle:
        return hashlib.sha1(handle.read()).hexdigest()


def _load_one(path: str, prep: Preprocessing, folder: Path,
              segmenter: LungSegmenter | None) -> tuple[np.ndarray, bool | None]:
    """The prepared image and whether a plausible lung was found (None without lungs).

    A `.nolung` marker next to the cached array records a whole-image fallback.
    """
    try:
        digest = _file_digest(path)
    except OSError as error:
        raise CxrkitError(f"{path}: cannot read ({error})") from error
    cached = folder / digest[:2] / f"{digest}.npy"
    marker = cached.with_suffix(".nolung")
    if cached.is_file():
        try:
            return np.load(cached, allow_pickle=False), (not marker.exists()) if prep.uses_lungs else None
        except (OSError, ValueError):
            cached.unlink(missing_ok=True)
    image, found = prepare_with_lungs(read_gray(path), prep, segmenter)
    cached.parent.mkdir(parents=True, exist_ok=True)
    if found is False:
        marker.touch()
    temporary = cached.with_suffix(f".{os.getpid()}-{threading.get_ident()}.tmp.npy")
    np.save(temporary, image, allow_pickle=False)
    os.replace(temporary, cached)
    return image, found


def load_cached_images(
    paths: Sequence[str],
    prep: Preprocessing,
    cache_dir: str | Path | None = None,
    workers: int | None = None,
    progress: Callable[[int], None] | None = None,
    segmenter: LungSegmenter | None = None,
    lung_fallbacks: list[str] | None = None,
) -> tuple[np.ndarray, dict[str, str]]:
    """Return (N x S x S uint8 array of the readable images, {unreadable path: reason}).

    Rows of the array follow `paths` with the unreadable ones left out. A contract that uses
    the lungs needs `segmenter`; paths where no plausible lung was found (whole image used)
    are appended to `lung_fallbacks` when it is given.
    """
    if prep.uses_lungs:
        check_segmenter(prep, segmenter)
    folder = Path(cache_dir or default_cache_dir()) / prep.cache_key()
    workers = workers or min(4, os.cpu_count() or 1)

    def attempt(path: str):
        try:
            return _load_one(path, prep, folder, segmenter), None
        except CxrkitError as error:
            return (None, None), str(error)
        finally:
            if progress is not None:
                progress(1)

    images: list[np.ndarray] = []
    failures: dict[str, str] = {}
    with ThreadPoolExecutor(max_workers=workers) as pool:
        for path, ((image, found), reason) in zip(paths, pool.map(attempt, paths), strict=False):
            if image is None:
                failures[path] = reason
                continue
            images.append(image)
            if found is False and lung_fallbacks is not None:
                lung_fallbacks.append(path)
    size = prep.image_size
    array = np.stack(images) if images else np.zeros((0, size, size), dtype=np.uint8)
    return array, failures
