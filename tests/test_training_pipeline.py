"""The input pipeline: worker/pinning defaults, augmentation on the training device, torch.compile.

No GPU here: the CPU tests run the very code a GPU run uses (the DataModule's loader settings,
the transfer hook that augments on the batch's device); only the device differs.
"""

import json
from types import SimpleNamespace

import pytest
import torch
from lightning.pytorch.callbacks import Callback

import cxrkit
from cxrkit.cli import main
from cxrkit.config import TrainConfig, build_config
from cxrkit.data import datamodule
from cxrkit.data.datamodule import CachedDataModule, CachedImageDataset, loader_settings
from cxrkit.data.preprocess import Preprocessing
from cxrkit.models import build_model
from cxrkit.training.module import Classifier

AUGMENT = {"augment.rotation": 10, "augment.brightness": 0.2, "augment.noise": 0.05,
           "augment.border_erase": 0.5, "augment.histogram_match": 0.5}


class RecordBatches(Callback):
    """What training_step and validation_step receive: dtype, device, loader workers and pinning."""

    def __init__(self):
        self.train, self.val = [], []

    def on_train_batch_start(self, trainer, pl_module, batch, batch_index):
        loader = trainer.train_dataloader
        self.train.append((batch[0].dtype, batch[0].device, pl_module.device, loader.num_workers,
                           loader.pin_memory, batch[0].clone()))

    def on_validation_batch_start(self, trainer, pl_module, batch, batch_index, dataloader_idx=0):
        self.val.append((batch[0].dtype, batch[0].device))


def test_auto_workers_are_zero_on_cpu_and_up_to_eight_per_gpu(monkeypatch):
    monkeypatch.setattr(datamodule, "available_cpus", lambda: 16)
    assert loader_settings("auto", on_gpu=False) == (0, False)
    assert loader_settings("auto", on_gpu=True) == (8, True)
    assert loader_settings("auto", on_gpu=True, devices=4) == (3, True)
    assert loader_settings(3, on_gpu=False) == (3, False)
    monkeypatch.setattr(datamodule, "available_cpus", lambda: 2)
    assert loader_settings("auto", on_gpu=True) == (1, True)


def test_loaders_pin_memory_and_use_workers_when_the_trainer_trains_on_a_gpu(monkeypatch):
    monkeypatch.setattr(datamodule, "available_cpus", lambda: 16)
    images = torch.zeros(8, 16, 16, dtype=torch.uint8).numpy()
    labels = torch.tensor([0, 1] * 4).numpy()
    data = CachedDataModule({"train": CachedImageDataset(images, labels)}, batch_size=4)
    data.trainer = SimpleNamespace(strategy=SimpleNamespace(root_device=torch.device("cuda", 0)), num_devices=1)
    assert data.settings() == (8, True)
    data.trainer = SimpleNamespace(strategy=SimpleNamespace(root_device=torch.device("cpu")), num_devices=1)
    assert data.settings() == (0, False)


def test_cpu_training_augments_on_the_device_after_transfer_and_never_in_validation(tiny_folder, tiny_overrides):
    recorder = RecordBatches()
    overrides = tiny_overrides(tiny_folder, "device-path", **AUGMENT, **{"data.num_workers": 2, "train.epochs": 2})
    run = cxrkit.train(build_config("tb-fast", overrides), callbacks=[recorder], use_test=False)
    assert recorder.train and recorder.val
    for dtype, device, module_device, workers, pinned, _ in recorder.train:
        assert dtype == torch.float32 and device == module_device  # augmented after the transfer
        assert workers == 2 and not pinned  # pinning is for GPUs only
    assert all(dtype == torch.uint8 for dtype, _ in recorder.val)  # validation batches untouched
    seen = torch.cat([batch for *_, batch in recorder.train])
    assert not torch.equal(seen, (seen * 255).round() / 255)  # noise etc.: not the raw uint8 levels
    info = json.loads((run / "training.json").read_text())
    assert (info["device"], info["num_workers"], info["pin_memory"]) == ("cpu", 2, False)


def test_training_without_augmentation_passes_raw_uint8_batches(tiny_folder, tiny_overrides):
    recorder = RecordBatches()
    run = cxrkit.train(build_config(None, tiny_overrides(tiny_folder, "plain")), callbacks=[recorder],
                       use_test=False)
    assert {dtype for dtype, *_ in recorder.train} == {torch.uint8}
    info = json.loads((run / "training.json").read_text())
    assert (info["num_workers"], info["pin_memory"]) == (0, False)  # data.num_workers: auto on CPU


def test_workers_flag_takes_auto_or_a_count_and_refuses_anything_else(tiny_folder, tmp_path, capsys):
    assert build_config(None, {"data.num_workers": "auto"}).data.num_workers == "auto"
    assert build_config(None, {"data.num_workers": 4}).data.num_workers == 4
    code = main(["train", "--data", str(tiny_folder), "--workers", "-1", "--output-dir", str(tmp_path)])
    assert code == 2 and "data.num_workers" in capsys.readouterr().err


def test_compile_option_compiles_the_model_in_place_keeping_its_state_dict_keys():
    plain = build_model("baseline_cnn", num_classes=2, in_channels=1, width=4, depth=2)
    keys = set(plain.state_dict())
    grey = Preprocessing(channels=1, mean=(0.5,), std=(0.25,))
    module = Classifier(plain, 2, TrainConfig(compile=True), grey)
    assert module.model._compiled_call_impl is not None
    assert set(module.model.state_dict()) == keys
    eager = Classifier(build_model("baseline_cnn", num_classes=2, in_channels=1, width=4, depth=2), 2,
                       TrainConfig(), grey)
    assert eager.model._compiled_call_impl is None


@pytest.mark.slow
def test_compiled_training_writes_a_loadable_model(tiny_folder, tiny_overrides):
    run = cxrkit.train(build_config("tb-fast", tiny_overrides(tiny_folder, "compiled", **{"train.compile": True})))
    checkpoint = torch.load(run / "model.ckpt", weights_only=True)
    assert not any(key.startswith("_orig_mod") for key in checkpoint["state_dict"])
    assert cxrkit.load(run).classes == ["Normal", "Tuberculosis"]
