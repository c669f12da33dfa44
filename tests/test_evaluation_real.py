"""Evaluation on the real shared data (slow: trains small runs on CPU)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from sklearn import metrics as skm

from conftest import shared_data, train_real_tb
from cxrkit.cli import main
from cxrkit.config import build_config

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def tb_run(tmp_path_factory) -> Path:
    """A tb-fast run on ../shared/data/tb (the recipe as shipped)."""
    return train_real_tb(tmp_path_factory.mktemp("tb"))


def test_tb_metrics_equal_sklearn_from_predictions(tb_run: Path):
    metrics = json.loads((tb_run / "test_metrics.json").read_text())
    predictions = pd.read_csv(tb_run / "predictions.csv")
    y_true = (predictions["true_label"] == "Tuberculosis").to_numpy()
    y_pred = (predictions["predicted_label"] == "Tuberculosis").to_numpy()
    score = predictions["prob_Tuberculosis"].to_numpy()
    assert metrics["accuracy"] == pytest.approx(skm.accuracy_score(y_true, y_pred))
    assert metrics["roc_auc"] == pytest.approx(skm.roc_auc_score(y_true, score))
    assert metrics["sensitivity"] == pytest.approx(skm.recall_score(y_true, y_pred))
    assert metrics["specificity"] == pytest.approx(skm.recall_score(~y_true, ~y_pred))
    assert metrics["confusion_matrix"] == skm.confusion_matrix(y_true, y_pred).tolist()


def test_tb_sensitivity_threshold_from_val_holds_on_test(tb_run: Path):
    metrics = json.loads((tb_run / "metrics.json").read_text())
    row = metrics["operating_points"]["sensitivity>=0.90"]
    assert row["val"]["sensitivity"] >= 0.90
    low, high = row["evaluated"]["sensitivity_ci95"]
    assert low <= row["evaluated"]["sensitivity"] <= high
    assert high >= 0.90, f"test sensitivity {row['evaluated']} never reaches the 0.90 target"


@pytest.fixture(scope="module")
def pneumonia_run(tmp_path_factory) -> Path:
    """A short pneumonia-fast run on pneumonia/train only (val and test carved by patient), so
    the official test folder is external to it."""
    import cxrkit

    data = shared_data("pneumonia", "train")
    root = tmp_path_factory.mktemp("pneumonia")
    return cxrkit.train(build_config("pneumonia-fast", {
        "data.source": str(data), "name": "pneumonia", "output_dir": str(root / "runs"),
        "data.cache_dir": str(root / "cache"), "preprocess.image_size": 64, "train.epochs": 2,
        "train.limit_train_batches": 0.5}))


def test_pneumonia_run_on_official_test_folder(pneumonia_run: Path, capsys):
    data = shared_data("pneumonia", "test")
    assert main(["evaluate", str(pneumonia_run), "--data", str(data), "--no-gradcam"]) == 0
    assert "report.html" in capsys.readouterr().out
    out = pneumonia_run / "external" / "pneumonia-test"
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["evaluated"]["n"] == 624 and metrics["evaluated"]["kind"] == "external"
    assert metrics["operating_point"]["chosen_on"] == "val"
    assert metrics["roc_auc"] > 0.8


def test_pneumonia_run_on_renamed_classes_needs_class_map(pneumonia_run: Path, tmp_path: Path,
                                                          capsys):
    data = shared_data("pneumonia", "test")
    rows = [(str(p), "no_finding" if p.parent.name == "NORMAL" else "pneumonia")
            for p in sorted(data.glob("*/*.jpeg"))]
    manifest = tmp_path / "hospital.csv"
    pd.DataFrame(rows, columns=["path", "label"]).to_csv(manifest, index=False)
    assert main(["evaluate", str(pneumonia_run), "--data", str(manifest), "--no-gradcam"]) == 2
    assert "--class-map no_finding=NORMAL" in capsys.readouterr().err
    assert main(["evaluate", str(pneumonia_run), "--data", str(manifest), "--no-gradcam",
                 "--class-map", "no_finding=NORMAL", "--out", str(tmp_path / "out")]) == 0
    metrics = json.loads((tmp_path / "out" / "metrics.json").read_text())
    assert metrics["evaluated"]["class_map"] == {"no_finding": "NORMAL", "pneumonia": "PNEUMONIA"}
    assert np.isfinite(metrics["roc_auc"])
