"""Out-of-distribution warning on the real shared data (issue 10, must-show item 4).

Trains short tb-fast and pneumonia-fast runs (minutes). To check runs you already have, set
CXRKIT_OOD_TB_RUN / CXRKIT_OOD_PNEUMONIA_RUN to their folders.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

import cxrkit
from conftest import shared_data
from cxrkit.config import build_config
from cxrkit.ood import ood_flag_rates, probe_images

pytestmark = pytest.mark.slow


def _run(tmp_path_factory, variable: str, recipe: str, data: Path, epochs: int) -> Path:
    given = os.environ.get(variable)
    if given:
        return Path(given)
    out = tmp_path_factory.mktemp(recipe)
    config = build_config(recipe, {"data.source": str(data), "name": recipe, "output_dir": str(out),
                                   "train.epochs": epochs})
    return cxrkit.train(config)


@pytest.fixture(scope="module")
def tb_run(tmp_path_factory) -> Path:
    return _run(tmp_path_factory, "CXRKIT_OOD_TB_RUN", "tb-fast", shared_data("tb"), 3)


@pytest.fixture(scope="module")
def pneumonia_run(tmp_path_factory) -> Path:
    return _run(tmp_path_factory, "CXRKIT_OOD_PNEUMONIA_RUN", "pneumonia-fast",
                shared_data("pneumonia"), 1)


def _test_paths(run: Path) -> list[str]:
    split = pd.read_csv(run / "split.csv", dtype=str)
    return split.loc[split["split"] == "test", "path"].tolist()


def test_photos_rotated_and_inverted_xrays_are_flagged(tb_run: Path):
    probes = probe_images(_test_paths(tb_run), n=200, seed=0)
    rates = ood_flag_rates(tb_run, [image for _, image in probes])
    kinds = np.array([kind for kind, _ in probes])
    flagged = rates["scores"] > cxrkit.load(tb_run).ood_threshold
    per_kind = {kind: flagged[kinds == kind].mean() for kind in set(kinds)}
    assert rates["share_flagged"] >= 0.95, per_kind


def test_few_of_the_runs_own_test_images_are_flagged(tb_run: Path):
    assert ood_flag_rates(tb_run, _test_paths(tb_run))["share_flagged"] <= 0.05


def test_a_childrens_pneumonia_model_flags_adult_chests(pneumonia_run: Path):
    adults = sorted(shared_data("tb", "Normal").glob("*.png"))
    assert ood_flag_rates(pneumonia_run, adults)["share_flagged"] > 0.5
    assert ood_flag_rates(pneumonia_run, _test_paths(pneumonia_run))["share_flagged"] <= 0.05
