"""Validation metrics stay right under DDP: synced across ranks, each image counted once."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from sklearn.metrics import balanced_accuracy_score, roc_auc_score

from conftest import write_image
from cxrkit.config import MONITOR_MODES, TrainConfig, monitor_mode
from cxrkit.training.fit import is_main_process
from cxrkit.training.module import validation_metrics


def test_every_monitor_has_one_direction():
    assert set(MONITOR_MODES) == set(TrainConfig.model_fields["monitor"].annotation.__args__)
    assert monitor_mode("val_loss") == "min" and monitor_mode("val_auroc") == "max"


@pytest.mark.parametrize(("environment", "main"), [
    ({}, True), ({"LOCAL_RANK": "1"}, False), ({"RANK": "0", "LOCAL_RANK": "0"}, True),
    ({"RANK": "5", "LOCAL_RANK": "1", "NODE_RANK": "1"}, False), ({"SLURM_PROCID": "0"}, True),
    ({"SLURM_PROCID": "0", "LOCAL_RANK": "1"}, False), ({"NODE_RANK": "1", "LOCAL_RANK": "0"}, False),
])
def test_only_global_rank_zero_writes_the_run_folder(monkeypatch, environment, main):
    for name in ("RANK", "SLURM_PROCID", "NODE_RANK", "LOCAL_RANK"):
        monkeypatch.delenv(name, raising=False)
    for name, value in environment.items():
        monkeypatch.setenv(name, value)
    assert is_main_process() is main


def test_validation_metrics_match_scikit_learn():
    rng = np.random.default_rng(0)
    probabilities = torch.softmax(torch.tensor(rng.normal(size=(50, 3)), dtype=torch.float32), dim=1)
    targets = torch.tensor(rng.integers(0, 3, 50))
    metrics = validation_metrics(3)
    for start in range(0, 50, 16):  # batch by batch, as in validation_step
        metrics.update(probabilities[start:start + 16], targets[start:start + 16])
    result = metrics.compute()
    predictions = probabilities.argmax(1).numpy()
    assert result["acc"].item() == pytest.approx((predictions == targets.numpy()).mean())
    assert result["balanced_acc"].item() == pytest.approx(balanced_accuracy_score(targets, predictions))
    assert result["support"][:, 4].tolist() == np.bincount(targets.numpy(), minlength=3).tolist()


def test_ddp_training_logs_the_auroc_a_single_process_evaluation_finds(tmp_path):
    """`cxrkit train --devices 2 --strategy ddp` on CPU; val AUROC == evaluate of model.ckpt on val."""
    data = tmp_path / "data"
    for label, value in (("Normal", 0), ("Tuberculosis", 40)):
        for index in range(41):
            write_image(data / label / f"{label.lower()}_{index:02d}.png", value + index % 7 * 9)
    env = {**os.environ, "CXRKIT_CACHE_DIR": str(tmp_path / "cache"), "OMP_NUM_THREADS": "1",
           "PYTHONPATH": os.pathsep.join([str(Path(__file__).resolve().parents[1] / "src"),
                                          os.environ.get("PYTHONPATH", "")])}
    command = [sys.executable, "-m", "cxrkit", "train", "--data", str(data), "--name", "ddp",
               "--output-dir", str(tmp_path / "runs"), "--accelerator", "cpu", "--devices", "2",
               "--strategy", "ddp", "--precision", "32", "--image-size", "32", "--epochs", "2",
               "--batch-size", "8", "--val-fraction", "0.3", "--model", "baseline_cnn",
               "--set", "model.width=4", "--set", "model.depth=2", "--set", "train.channels_last=false",
               "--set", "data.group_near_duplicates=false"]
    done = subprocess.run(command, env=env, capture_output=True, text=True, timeout=600, cwd=tmp_path)
    assert done.returncode == 0, done.stderr[-3000:]
    run = tmp_path / "runs" / "ddp"
    assert done.stdout.count("run folder:") == 1  # rank 1 writes and prints nothing
    split = pd.read_csv(run / "split.csv")
    n_val = int((split["split"] == "val").sum())
    assert n_val % 2 == 1  # uneven shards: padding would count an image twice

    from cxrkit.loader import load

    predictor = load(run)
    val = split[split["split"] == "val"]
    probabilities, _, _, kept, failures = predictor.predict_files(val["path"].tolist(), workers=1)
    assert failures == {} and len(kept) == n_val
    truth = (val["label"] == "Tuberculosis").to_numpy()
    single_process = roc_auc_score(truth, probabilities[:, predictor.classes.index("Tuberculosis")])
    logs = pd.read_csv(run / "metrics.csv").dropna(subset=["val_auroc"])
    best = logs.loc[logs["val_auroc"].idxmax()]  # model.ckpt is the best epoch by val_auroc
    assert best["val_auroc"] == pytest.approx(single_process, abs=1e-6)
    assert (run / "test_metrics.json").is_file()
