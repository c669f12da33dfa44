import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from lightning.pytorch.callbacks import Callback
from PIL import Image

import cxrkit
from cxrkit.cli import main
from cxrkit.config import build_config
from cxrkit.errors import CxrkitError, TrainingInterrupted


def test_training_writes_a_complete_run_folder(tiny_folder, tiny_overrides):
    (tiny_folder / "Tuberculosis" / "broken.png").write_bytes(b"not really a png")
    (tiny_folder / "Normal" / "empty.png").write_bytes(b"")
    (tiny_folder / "Normal" / "readme.txt").write_text("notes")
    run = cxrkit.train(build_config("tb-fast", tiny_overrides(tiny_folder)))
    for name in ("config.yaml", "split.csv", "classes.json", "model.ckpt", "metrics.csv",
                 "training.json", "training_curves.png", "checkpoints/last.ckpt",
                 "metrics.json", "operating_points.json", "predictions.csv", "report.html"):
        assert (run / name).is_file(), name  # cxrkit.train chains the test evaluation
    assert json.loads((run / "classes.json").read_text()) == ["Normal", "Tuberculosis"]
    skipped = pd.read_csv(run / "skipped.csv")
    assert {Path(p).name for p in skipped["path"]} == {"broken.png", "empty.png", "readme.txt"}
    split = pd.read_csv(run / "split.csv")
    assert set(split["split"]) == {"train", "val", "test"} and len(split) == 32
    checkpoint = torch.load(run / "model.ckpt", weights_only=True)
    assert checkpoint["card"]["preprocessing"]["image_size"] == 32
    assert checkpoint["card"]["classes"] == ["Normal", "Tuberculosis"]


def test_training_alone_does_not_evaluate(tiny_folder, tiny_overrides):
    from cxrkit.training.fit import train

    run = train(build_config("tb-fast", tiny_overrides(tiny_folder)))
    assert (run / "model.ckpt").is_file() and (run / "training.json").is_file()
    for name in ("metrics.json", "operating_points.json", "predictions.csv", "report.html"):
        assert not (run / name).exists(), name


def test_existing_run_is_never_overwritten_without_flag(tiny_folder, tiny_overrides):
    config = build_config("tb-fast", tiny_overrides(tiny_folder))
    run = cxrkit.train(config)
    before = (run / "model.ckpt").stat().st_mtime_ns
    with pytest.raises(CxrkitError, match="overwrite=True"):
        cxrkit.train(config)
    assert (run / "model.ckpt").stat().st_mtime_ns == before
    cxrkit.train(config, overwrite=True)


def test_split_file_reuse_gives_identical_test_sets(tiny_folder, tiny_overrides):
    first = cxrkit.train(build_config("tb-fast", tiny_overrides(tiny_folder, name="a")))
    second = cxrkit.train(build_config("tb-fast", tiny_overrides(
        tiny_folder, name="b", **{"data.split_file": str(first / "split.csv"), "data.split_seed": 99})))
    a, b = pd.read_csv(first / "split.csv"), pd.read_csv(second / "split.csv")
    assert list(a["split"]) == list(b["split"])


class InterruptAtEpoch(Callback):
    """Simulates Ctrl-C in the middle of the second epoch."""

    def on_train_batch_start(self, trainer, pl_module, batch, batch_index):
        if trainer.current_epoch == 1 and batch_index == 1:
            raise KeyboardInterrupt


def test_interrupted_run_saves_a_checkpoint_and_resumes(tiny_folder, tiny_overrides):
    config = build_config("tb-fast", tiny_overrides(tiny_folder, **{"train.epochs": 2}))
    with pytest.raises(TrainingInterrupted, match="--resume"):
        cxrkit.train(config, callbacks=[InterruptAtEpoch()])
    run = Path(config.output_dir) / config.name
    assert (run / "checkpoints" / "interrupted.ckpt").is_file()
    assert not (run / "model.ckpt").exists()
    cxrkit.train(resume=run)
    epochs = pd.read_csv(run / "metrics.csv")["epoch"].dropna().unique()
    assert sorted(epochs) == [0, 1]
    assert (run / "model.ckpt").is_file()


def test_predictor_accepts_paths_pil_images_and_arrays_of_any_mode(tiny_folder, tiny_overrides, tmp_path):
    run = cxrkit.train(build_config("tb-fast", tiny_overrides(tiny_folder)))
    predictor = cxrkit.load(run)
    path = sorted((tiny_folder / "Tuberculosis").glob("*.png"))[0]
    grey = np.asarray(Image.open(path))
    inputs = [str(path), Image.open(path).convert("RGB"), Image.open(path).convert("RGBA"),
              grey, np.stack([grey] * 3, axis=-1), np.dstack([grey, grey, grey, np.full_like(grey, 255)])]
    probabilities = predictor.predict_proba(inputs)
    assert probabilities.shape == (6, 2)
    np.testing.assert_allclose(probabilities.sum(1), 1, rtol=1e-5)
    np.testing.assert_allclose(probabilities, probabilities[[0] * 6], atol=1e-5)
    assert predictor.predict(str(path))[0] in ("Normal", "Tuberculosis")


def test_predict_cli_writes_a_probability_per_class(tiny_folder, tiny_overrides, tmp_path, capsys):
    run = cxrkit.train(build_config("tb-fast", tiny_overrides(tiny_folder)))
    out = tmp_path / "preds.csv"
    assert main(["predict", str(run), str(tiny_folder / "Normal"), "--out", str(out)]) == 0
    table = pd.read_csv(out)
    assert list(table.columns) == ["path", "decision", "prob_Normal", "prob_Tuberculosis", "ood_score",
                                   "out_of_distribution", "operating_point", "threshold", "chosen_on"]
    assert len(table) == 16
    assert main(["predict", str(run), str(tiny_folder), "--out", str(out)]) == 2
    assert "already exists" in capsys.readouterr().err


def test_single_logit_bce_head_trains_and_predicts(tiny_folder, tiny_overrides):
    run = cxrkit.train(build_config("tb-fast", tiny_overrides(tiny_folder, **{"train.loss": "bce"})))
    predictor = cxrkit.load(run)
    assert predictor.single_logit
    assert predictor.predict_proba(str(next((tiny_folder / "Normal").glob("*.png")))).shape == (1, 2)
