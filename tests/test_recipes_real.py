"""Every recipe trains one full epoch on a stratified subset of the real shared data (slow)."""

from pathlib import Path

import pandas as pd
import pytest

import cxrkit
from conftest import shared_data
from cxrkit.config import build_config, recipe_names
from cxrkit.data.sources import load_manifest

SUBSET_PER_CLASS = 40
DATASETS = {"tb": "tb", "pneumonia": "pneumonia", "chest3": "chest3.csv"}


def subset_csv(dataset: str, out: Path) -> Path:
    """A CSV manifest over a few real images per class (and per split, for pre-split data)."""
    manifest, _ = load_manifest(shared_data(DATASETS[dataset]))
    keys = ["split", "label"] if manifest["split"].notna().any() else ["label"]
    subset = manifest.groupby(keys, dropna=False).head(SUBSET_PER_CLASS)
    columns = ["path", "label"] + (["split"] if "split" in keys else [])
    subset[columns].to_csv(out, index=False)
    return out


def dataset_of(recipe: str) -> str:
    return next(name for name in DATASETS if recipe.startswith(name))


@pytest.mark.slow
@pytest.mark.parametrize("recipe", recipe_names())
def test_recipe_trains_one_epoch_on_real_data(recipe: str, tmp_path: Path):
    csv = subset_csv(dataset_of(recipe), tmp_path / "subset.csv")
    overrides = {"data.source": str(csv), "train.epochs": 1, "name": recipe, "output_dir": str(tmp_path)}
    if build_config(recipe).model.weights == "imagenet":
        overrides["model.weights"] = "none"  # no model hub offline; weights=imagenet is tested in test_models.py
    run = cxrkit.train(build_config(recipe, overrides))
    assert (run / "model.ckpt").is_file()
    assert (run / "test_metrics.json").is_file()
    assert len(pd.read_csv(run / "split.csv")) == len(pd.read_csv(csv))
