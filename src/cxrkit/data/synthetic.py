"""A small synthetic chest-like image set for the quickstart smoke test (never a medical result).

Two classes: `Clear` (two dark lung fields in a bright thorax) and `Opacity` (the same with
bright blotches inside the lungs). It exercises the whole pipeline without any download.
"""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path

import numpy as np
from PIL import Image

CLASSES = ("Clear", "Opacity")


@lru_cache(maxsize=4)
def _canvas(size: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """x and y coordinates (0-1) and the bright thorax every image starts from, made once per size."""
    y, x = np.mgrid[0:size, 0:size] / size
    thorax = np.exp(-(((x - 0.5) / 0.42) ** 2 + ((y - 0.55) / 0.5) ** 2) ** 2)
    return x, y, 60 + 140 * thorax


def _chest(rng: np.random.Generator, size: int, opacity: bool) -> np.ndarray:
    x, y, thorax = _canvas(size)
    image = thorax.copy()
    for side in (-1, 1):
        cx = 0.5 + side * rng.uniform(0.17, 0.22)
        cy = rng.uniform(0.48, 0.55)
        lung = (((x - cx) / rng.uniform(0.12, 0.15)) ** 2 + ((y - cy) / rng.uniform(0.25, 0.3)) ** 2) < 1
        image[lung] -= rng.uniform(70, 90)
    if opacity:
        for _ in range(rng.integers(2, 5)):
            cx = 0.5 + rng.choice([-1, 1]) * rng.uniform(0.12, 0.25)
            cy = rng.uniform(0.35, 0.7)
            radius = rng.uniform(0.04, 0.09)
            blob = np.exp(-(((x - cx) ** 2 + (y - cy) ** 2) / radius**2))
            image += rng.uniform(40, 70) * blob
    image += rng.normal(0, 8, image.shape)
    return np.clip(image, 0, 255).astype(np.uint8)


def make_synthetic_dataset(root: str | Path, per_class: int = 60, size: int = 96, seed: int = 0,
                           prefix: str = "") -> Path:
    """Write `root/<class>/<prefix><class>_<i>.png` for both classes and return root."""
    root = Path(root)
    rng = np.random.default_rng(seed)
    for label_index, label in enumerate(CLASSES):
        folder = root / label
        folder.mkdir(parents=True, exist_ok=True)
        for index in range(per_class):
            Image.fromarray(_chest(rng, size, bool(label_index))).save(
                folder / f"{prefix}{label.lower()}_{index:03d}.png", compress_level=1)
    return root
