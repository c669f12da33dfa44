"""Shared fixtures: tiny generated image sets and the location of the real shared data."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

SHARED_DATA = Path(__file__).resolve().parents[2] / "shared" / "data"
CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking"]
TINY_TRAINING = {
    "data.group_near_duplicates": False,
    "preprocess.image_size": 32,
    "model.name": "baseline_cnn",
    "model.width": 4,
    "model.depth": 2,
    "train.epochs": 1,
    "train.batch_size": 8,
}


def shared_data(*parts: str) -> Path:
    """Path inside ../shared/data, skipping the test with a clear message when absent."""
    path = SHARED_DATA.joinpath(*parts)
    if not path.exists():
        pytest.skip(f"real data not found at {path} (expected ../shared/data next to the repo)")
    return path


def train_real_tb(root: Path, **overrides) -> Path:
    """A tb-fast run on ../shared/data/tb under `root` (the recipe as shipped, plus overrides)."""
    import cxrkit
    from cxrkit.config import build_config

    data = shared_data("tb")
    return cxrkit.train(build_config("tb-fast", {
        "data.source": str(data), "name": "tb-fast", "output_dir": str(root / "runs"),
        "data.cache_dir": str(root / "cache"), **overrides}))


def write_image(path: Path, value: int, size: int = 32, mode: str = "L") -> Path:
    """A small image with a class-dependent pattern so a model can learn it."""
    rng = np.random.default_rng(abs(hash(path.name)) % 2**32)
    array = rng.integers(0, 60, (size, size)).astype(np.uint8)
    array[size // 4: 3 * size // 4, size // 4: 3 * size // 4] += np.uint8(value)
    image = Image.fromarray(array)
    path.parent.mkdir(parents=True, exist_ok=True)
    image.convert(mode).save(path)
    return path


@pytest.fixture
def tiny_folder(tmp_path: Path) -> Path:
    """tmp/data/{Normal,Tuberculosis}/*.png with 16 images each, learnable."""
    root = tmp_path / "data"
    for label, value in (("Normal", 0), ("Tuberculosis", 150)):
        for index in range(16):
            write_image(root / label / f"{label.lower()}_{index:02d}.png", value)
    return root


@pytest.fixture
def tiny_overrides(tmp_path: Path):
    """Config overrides that make training take a few seconds."""

    def make(source: Path, name: str = "run", **extra) -> dict:
        overrides = {"data.source": str(source), "name": name, "output_dir": str(tmp_path / "runs"),
                     "data.cache_dir": str(tmp_path / "cache"), **TINY_TRAINING}
        overrides.update(extra)
        return overrides

    return make


@pytest.fixture
def browser():
    """Debian's headless chromium through Playwright (never `playwright install`); skips if absent."""
    if not CHROMIUM.is_file():
        pytest.skip(f"{CHROMIUM} not installed (apt-get install -y chromium)")
    sync_api = pytest.importorskip("playwright.sync_api")
    with sync_api.sync_playwright() as playwright:
        launched = playwright.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        try:
            yield launched
        finally:
            launched.close()
