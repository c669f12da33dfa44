"""Resume loses at most the epoch in progress, never silently retrains a finished run, and keeps
wall time and metrics.csv right across sessions (issue 14)."""

from __future__ import annotations

import json
import os
import signal
import time
from pathlib import Path

import pandas as pd
import pytest
import torch
from lightning.pytorch.callbacks import Callback

import cxrkit
from cxrkit.cli import main
from cxrkit.config import build_config
from cxrkit.training.curves import merge_epoch_logs


class FlatMonitor(Callback):
    """Reports the same monitored value every epoch (it never improves after the first)."""

    def on_validation_epoch_end(self, trainer, pl_module):
        trainer.callback_metrics[trainer.checkpoint_callback.monitor] = torch.tensor(0.5)


class Crash(Callback):
    """A hard failure at the start of `epoch`, after sleeping `pause` s in each earlier epoch."""

    def __init__(self, epoch: int, pause: float = 0.0):
        self.epoch, self.pause = epoch, pause

    def on_train_epoch_end(self, trainer, pl_module):
        time.sleep(self.pause)

    def on_train_epoch_start(self, trainer, pl_module):
        if trainer.current_epoch == self.epoch:
            raise RuntimeError("simulated crash")


def test_last_checkpoint_follows_every_epoch_and_resume_keeps_time_and_metrics(tiny_folder,
                                                                               tiny_overrides):
    config = build_config("tb-fast", tiny_overrides(tiny_folder, **{"train.epochs": 4}))
    run = Path(config.output_dir) / config.name
    started = time.perf_counter()
    with pytest.raises(RuntimeError, match="simulated crash"):
        cxrkit.train(config, callbacks=[FlatMonitor(), Crash(epoch=3, pause=2.0)])
    first_session = time.perf_counter() - started
    last = torch.load(run / "checkpoints" / "last.ckpt", weights_only=True)
    assert last["epoch"] == 2  # saved after every epoch although the monitor stopped improving

    cxrkit.train(resume=run)
    info = json.loads((run / "training.json").read_text())
    assert info["epochs_run"] == 4
    assert info["wall_time_s"] >= 0.8 * first_session  # the first session's time is kept
    epochs = pd.read_csv(run / "metrics.csv").dropna(subset=["val_loss"])["epoch"].tolist()
    assert epochs == [0, 1, 2, 3]


def test_resume_of_a_finished_run_refuses_without_overwrite(tiny_folder, tiny_overrides, capsys):
    run = cxrkit.train(build_config("tb-fast", tiny_overrides(tiny_folder)))
    before = (run / "model.ckpt").stat().st_mtime_ns
    assert main(["train", "--resume", str(run)]) == 2
    err = capsys.readouterr().err
    assert "already finished" in err and "--overwrite" in err
    assert (run / "model.ckpt").stat().st_mtime_ns == before
    assert main(["train", "--resume", str(run), "--overwrite"]) == 0


class Terminate(Callback):
    """Sends this process SIGTERM in the middle of the second epoch."""

    def on_train_batch_start(self, trainer, pl_module, batch, batch_index):
        if trainer.current_epoch == 1 and batch_index == 1:
            os.kill(os.getpid(), signal.SIGTERM)


def test_sigterm_saves_a_checkpoint_and_exits_130(tiny_folder, tiny_overrides, monkeypatch, capsys):
    import cxrkit.training.fit as fit

    original = fit.train
    monkeypatch.setattr(fit, "train", lambda *a, **k: original(*a, callbacks=[Terminate()], **k))
    overrides = tiny_overrides(tiny_folder, **{"train.epochs": 3})
    args = ["train", "--data", str(tiny_folder), "--name", "run", "--output-dir",
            overrides["output_dir"]] + [item for key, value in overrides.items()
                                        if key not in ("data.source", "name", "output_dir")
                                        for item in ("--set", f"{key}={value}")]
    assert main(args) == 130
    assert "--resume" in capsys.readouterr().err
    run = Path(overrides["output_dir"]) / "run"
    assert (run / "checkpoints" / "interrupted.ckpt").is_file()
    monkeypatch.setattr(fit, "train", original)
    assert main(["train", "--resume", str(run)]) == 0
    assert json.loads((run / "training.json").read_text())["epochs_run"] == 3


def test_metrics_of_resumed_attempts_keep_one_row_per_epoch(tmp_path):
    logs = tmp_path / "logs"
    attempts = {0: [0, 1, 2], 2: [2, 3], 10: [3, 4]}  # version_10 sorts after version_2
    for version, epochs in attempts.items():
        folder = logs / f"version_{version}"
        folder.mkdir(parents=True)
        pd.DataFrame({"epoch": epochs, "val_loss": [float(version)] * len(epochs)}).to_csv(
            folder / "metrics.csv", index=False)
    merge_epoch_logs(logs, tmp_path / "metrics.csv")
    table = pd.read_csv(tmp_path / "metrics.csv")
    assert table["epoch"].tolist() == [0, 1, 2, 3, 4]
    assert table["val_loss"].tolist() == [0, 0, 2, 10, 10]


@pytest.mark.parametrize("command, target", [("experiment", "cxrkit.experiments.run_experiment"),
                                             ("tune", "cxrkit.experiments.tune.run_tune")])
def test_sigterm_stops_experiment_and_tune_with_one_line(tmp_path, monkeypatch, capsys, command, target):
    import importlib

    module_name, function = target.rsplit(".", 1)

    def terminated(*args, **kwargs):
        os.kill(os.getpid(), signal.SIGTERM)
        time.sleep(5)
        raise AssertionError("SIGTERM did not stop the command")

    monkeypatch.setattr(importlib.import_module(module_name), function, terminated)
    monkeypatch.setattr("cxrkit.extras.require", lambda *modules: None)
    spec = tmp_path / "spec.yaml"
    spec.write_text("name: s\nrecipe: tb-fast\naxes:\n  train.lr: [0.001, 0.01]\n")
    extra = ["--trials", "1"] if command == "tune" else []
    assert main([command, str(spec), *extra]) == 130
    err = capsys.readouterr().err.strip().splitlines()
    assert err == ["interrupted: run the same command again to continue"]
    assert signal.getsignal(signal.SIGTERM) is signal.SIG_DFL or callable(signal.getsignal(signal.SIGTERM))


def test_python_api_training_is_quiet(tiny_folder, tiny_overrides, capsys, caplog):
    import logging

    caplog.set_level(logging.INFO)
    before = logging.getLogger("lightning.pytorch").level
    cxrkit.train(build_config("tb-fast", tiny_overrides(tiny_folder)), use_test=False)
    captured = capsys.readouterr()
    text = captured.out + captured.err + caplog.text
    assert "GPU available" not in text and "Tip:" not in text
    assert logging.getLogger("lightning.pytorch").level == before  # restored afterwards


def test_progress_bar_counts_epochs_like_the_summary():
    from types import SimpleNamespace

    from cxrkit.training.callbacks import epoch_progress_bar

    bar = epoch_progress_bar()
    if bar is None:
        pytest.skip("rich is not installed: Lightning's own bar is used")
    bar._trainer = SimpleNamespace(max_epochs=12)
    assert bar._get_train_description(11).strip() == "Epoch 12/12"
