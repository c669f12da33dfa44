from pathlib import Path

import pytest
import torch

from cxrkit.errors import CxrkitError
from cxrkit.models import MODELS, build_model, cam_layer_name, count_parameters


@pytest.mark.parametrize("name", sorted(MODELS))
def test_every_registry_model_builds_for_grey_and_rgb(name: str):
    size = 64 if name not in ("alexnet", "cnn5") else 96
    for channels in (1, 3):
        model = build_model(name, num_classes=3, in_channels=channels, width=4, depth=2).eval()
        with torch.no_grad():
            logits = model(torch.zeros(2, channels, size, size))
        assert logits.shape == (2, 3)
        assert model.get_submodule(cam_layer_name(name)) is not None


def test_seed_004_freezing_leaves_exactly_layer4_and_fc_trainable():
    model = build_model("resnet18", num_classes=2, freeze="layer3")
    trainable = {n.split(".")[0] for n, p in model.named_parameters() if p.requires_grad}
    assert trainable == {"layer4", "fc"}
    expected = count_parameters(model.layer4) + count_parameters(model.fc)
    assert count_parameters(model, trainable_only=True) == expected == 8_394_754


def test_backbone_freezing_trains_only_the_head_as_in_seed_001():
    model = build_model("alexnet", num_classes=2, freeze="backbone")
    assert count_parameters(model, trainable_only=True) == count_parameters(model.classifier)
    assert all(not p.requires_grad for p in model.features.parameters())


def test_weights_from_an_earlier_state_dict(tmp_path):
    source = build_model("baseline_cnn", num_classes=2, width=4, depth=2)
    torch.save({"state_dict": source.state_dict()}, tmp_path / "w.pt")
    loaded = build_model("baseline_cnn", num_classes=2, width=4, depth=2, weights=str(tmp_path / "w.pt"))
    for key, value in source.state_dict().items():
        assert torch.equal(value, loaded.state_dict()[key])


@pytest.mark.parametrize("kwargs, message", [
    ({"name": "resnet99"}, "unknown model"),
    ({"name": "resnet18", "freeze": "layer9"}, "no such layer"),
    ({"name": "resnet18", "weights": "/nonexistent/w.pt"}, "no such file"),
    ({"name": "cnn5", "weights": "imagenet"}, "no ImageNet weights"),
])
def test_bad_model_options_raise_clear_errors(kwargs, message):
    with pytest.raises(CxrkitError, match=message):
        build_model(num_classes=2, **kwargs)


def test_imagenet_weights_unavailable_offline_gives_a_clear_error(monkeypatch, tmp_path):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    monkeypatch.setattr(torch.hub, "load_state_dict_from_url",
                        lambda *a, **k: (_ for _ in ()).throw(OSError("network unreachable")))
    with pytest.raises(CxrkitError, match="cannot get resnet18 ImageNet weights"):
        build_model("resnet18", num_classes=2, weights="imagenet")


def test_imagenet_weights_come_from_torchvisions_cache(monkeypatch, tmp_path):
    import torchvision

    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    reference = torchvision.models.resnet18(weights=None).state_dict()
    url = torchvision.models.get_weight("ResNet18_Weights.DEFAULT").url
    cached = tmp_path / "hub" / "checkpoints" / Path(url).name
    cached.parent.mkdir(parents=True)
    torch.save(reference, cached)
    model = build_model("resnet18", num_classes=2, in_channels=3, weights="imagenet")
    assert torch.equal(model.layer1[0].conv1.weight, reference["layer1.0.conv1.weight"])
    assert model.fc.out_features == 2
