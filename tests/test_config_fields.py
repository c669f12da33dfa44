"""Config fields are checked when the config is built: one line naming the field and what it takes."""

from __future__ import annotations

import pytest
import torch

from cxrkit.cli import main
from cxrkit.config import build_config, config_to_yaml, load_config_file
from cxrkit.errors import CxrkitError


def refused(overrides: dict) -> str:
    with pytest.raises(CxrkitError) as raised:
        build_config("tb-fast", overrides)
    message = str(raised.value)
    assert "\n" not in message
    return message


@pytest.mark.parametrize("overrides, fragments", [
    ({"model.weights": "imagnet"}, ["model.weights", "none, imagenet, a state dict file or a run folder",
                                    "'imagnet'"]),
    ({"model.name": "cnn5", "model.weights": "imagenet"}, ["model.weights=imagenet", "cnn5 has no ImageNet"]),
    ({"model.freeze": "layer9"}, ["model.freeze='layer9'", "none, backbone or one of features, classifier"]),
    ({"model.name": "resnet18", "model.freeze": "layer9"}, ["model.freeze='layer9'", "layer1", "layer4", "fc"]),
    ({"model.padding": "half"}, ["model.padding", "same, valid or a number of pixels"]),
    ({"model.padding": -1}, ["model.padding", "same, valid or a number of pixels"]),
    ({"train.accelerator": "gpux"}, ["train.accelerator", "'auto', 'cpu', 'gpu', 'cuda', 'mps' or 'tpu'"]),
    ({"train.strategy": "ddpp"}, ["train.strategy", "unknown Lightning strategy 'ddpp'", "auto", "ddp, "]),
    ({"train.devices": 0}, ["train.devices", "auto, -1 (every device), a number of devices or indices"]),
    ({"train.devices": "gpu0"}, ["train.devices", "auto, -1 (every device)"]),
    ({"train.limit_train_batches": 0}, ["train.limit_train_batches", "a fraction of the batches"]),
    ({"train.limit_train_batches": 1.5}, ["train.limit_train_batches", "a fraction of the batches"]),
    ({"data.group_pattern": "person(\\d+"}, ["data.group_pattern", "not a valid regular expression"]),
])
def test_a_bad_field_fails_when_the_config_is_built(overrides, fragments):
    message = refused(overrides)
    for fragment in fragments:
        assert fragment in message, message


@pytest.mark.parametrize("overrides", [
    {"model.padding": 1}, {"model.padding": "valid"}, {"model.freeze": "features"},
    {"model.name": "resnet18", "model.freeze": "layer3"}, {"model.name": "resnet18", "model.weights": "imagenet"},
    {"train.accelerator": "cpu"}, {"train.strategy": "ddp"}, {"train.devices": 2}, {"train.devices": "0,1"},
    {"train.devices": -1}, {"train.limit_train_batches": 0.25}, {"train.limit_train_batches": 3},
    {"data.group_pattern": r"person(\d+)_"},
])
def test_good_values_pass(overrides):
    config = build_config("tb-fast", overrides)
    for key, value in overrides.items():
        section, field = key.split(".")
        assert getattr(getattr(config, section), field) == value


def test_a_weights_path_must_exist_in_a_new_config_but_a_saved_one_stays_readable(tmp_path):
    weights = tmp_path / "w.pt"
    torch.save({"state_dict": {}}, weights)
    config = build_config("tb-fast", {"model.weights": str(weights)})
    (tmp_path / "config.yaml").write_text(config_to_yaml(config))
    weights.unlink()
    assert "model.weights" in refused({"model.weights": str(weights)})
    assert load_config_file(tmp_path).model.weights == str(weights)


def test_the_cli_refuses_a_bad_field_before_reading_any_image(tmp_path, capsys):
    code = main(["train", "--data", str(tmp_path / "never-read"), "--accelerator", "gpux",
                 "--output-dir", str(tmp_path / "runs")])
    err = capsys.readouterr().err.strip()
    assert code == 2 and err.startswith("error: train.accelerator") and len(err.splitlines()) == 1
    assert not (tmp_path / "runs").exists()
