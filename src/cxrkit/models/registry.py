"""Build any supported architecture by name, with weights, input channels and freezing.

Like timm's `create_model`: one entry point, a registry of builders, and for every model
the name of its classification head and of the layer Grad-CAM should look at.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from cxrkit.errors import CxrkitError
from cxrkit.models.cnn import BaselineCNN, ConvBlocks, FiveBlockCNN


@dataclass(frozen=True)
class ModelSpec:
    """How to build one architecture and where its head and last conv block are."""

    builder: Callable[..., nn.Module]
    head: str
    cam_layer: str
    torchvision_weights: str | None = None
    description: str = ""


def _tv(name: str) -> Callable[..., nn.Module]:
    def build(num_classes: int, **_: object) -> nn.Module:
        import torchvision  # imported only for its models: a slow import the small CNNs skip

        return getattr(torchvision.models, name)(weights=None)

    return build


MODELS: dict[str, ModelSpec] = {
    "densenet121": ModelSpec(_tv("densenet121"), "classifier", "features", "DenseNet121_Weights.DEFAULT",
                             "torchvision DenseNet-121 (seed 000)"),
    "resnet18": ModelSpec(_tv("resnet18"), "fc", "layer4", "ResNet18_Weights.DEFAULT",
                          "torchvision ResNet-18 (seed 004)"),
    "resnet34": ModelSpec(_tv("resnet34"), "fc", "layer4", "ResNet34_Weights.DEFAULT", "torchvision ResNet-34"),
    "resnet50": ModelSpec(_tv("resnet50"), "fc", "layer4", "ResNet50_Weights.DEFAULT", "torchvision ResNet-50"),
    "alexnet": ModelSpec(_tv("alexnet"), "classifier", "features.11", "AlexNet_Weights.DEFAULT",
                         "torchvision AlexNet with seed 001's dropout-510-ReLU head"),
    "efficientnet_b0": ModelSpec(_tv("efficientnet_b0"), "classifier", "features",
                                 "EfficientNet_B0_Weights.DEFAULT", "torchvision EfficientNet-B0"),
    "mobilenet_v3_small": ModelSpec(_tv("mobilenet_v3_small"), "classifier", "features",
                                    "MobileNet_V3_Small_Weights.DEFAULT", "torchvision MobileNetV3-Small"),
    "mobilenet_v3_large": ModelSpec(_tv("mobilenet_v3_large"), "classifier", "features",
                                    "MobileNet_V3_Large_Weights.DEFAULT", "torchvision MobileNetV3-Large"),
    "cnn5": ModelSpec(lambda num_classes, in_channels=3, dropout=0.5, **_: FiveBlockCNN(
        num_classes, in_channels, dropout), "classifier", "features", None,
        "seed 002's 5-block CNN (BN, dropout, Kaiming init)"),
    "baseline_cnn": ModelSpec(lambda num_classes, in_channels=1, dropout=0.3, **blocks: BaselineCNN(
        num_classes, in_channels, ConvBlocks(**blocks), dropout), "classifier", "features", None,
        "seed 003's configurable CNN (width, depth, kernel, stride, padding, pooling)"),
}
CNN_OPTIONS = ("width", "depth", "kernel_size", "stride", "padding", "pooling", "dropout")


def get_module(model: nn.Module, dotted: str) -> nn.Module:
    """The submodule at a dotted path such as 'layer4' or 'features.11'."""
    try:
        return model.get_submodule(dotted)
    except AttributeError as error:
        raise CxrkitError(f"model has no layer {dotted!r}") from error


def _set_module(model: nn.Module, dotted: str, module: nn.Module) -> None:
    parent, _, child = dotted.rpartition(".")
    setattr(model.get_submodule(parent) if parent else model, child, module)


def _replace_head(model: nn.Module, name: str, spec: ModelSpec, num_classes: int, dropout: float) -> None:
    head = get_module(model, spec.head)
    if name == "alexnet":
        _set_module(model, spec.head, nn.Sequential(
            nn.Dropout(dropout), nn.Linear(256 * 6 * 6, 510), nn.ReLU(inplace=True), nn.Linear(510, num_classes)))
        return
    if isinstance(head, nn.Linear):
        _set_module(model, spec.head, nn.Linear(head.in_features, num_classes))
        return
    last_index = max(i for i, m in enumerate(head) if isinstance(m, nn.Linear))
    head[last_index] = nn.Linear(head[last_index].in_features, num_classes)


def _adapt_first_conv(model: nn.Module, in_channels: int) -> None:
    """Make the first conv take `in_channels`; summed RGB filters keep pretrained responses on grey."""
    for name, module in model.named_modules():
        if isinstance(module, nn.Conv2d):
            if module.in_channels == in_channels:
                return
            new = nn.Conv2d(in_channels, module.out_channels, module.kernel_size, module.stride,
                            module.padding, module.dilation, module.groups, module.bias is not None)
            with torch.no_grad():
                summed = module.weight.sum(dim=1, keepdim=True)
                new.weight.copy_(summed.repeat(1, in_channels, 1, 1) / in_channels)
                if module.bias is not None:
                    new.bias.copy_(module.bias)
            _set_module(model, name, new)
            return


def _imagenet_state_dict(name: str, spec: ModelSpec) -> dict:
    if spec.torchvision_weights is None:
        raise CxrkitError(f"model.weights=imagenet: {name} has no ImageNet weights; use weights: none")
    import torchvision

    weights = torchvision.models.get_weight(spec.torchvision_weights)
    try:
        return weights.get_state_dict(progress=False, check_hash=True)
    except Exception as error:
        cache = Path(torch.hub.get_dir()) / "checkpoints" / Path(weights.url).name
        raise CxrkitError(
            f"model.weights=imagenet: cannot get {name} ImageNet weights (not in the torch cache "
            f"{cache} and the download failed: {type(error).__name__}); copy the file there, "
            "or use weights: none") from error


def state_dict_from_path(path: Path) -> dict:
    """The state dict in a weights file or run folder, loaded weights-only; CxrkitError if unsafe."""
    from cxrkit.run.checkpoint import CHECKPOINT_NAME, safe_torch_load

    if path.is_dir():
        path = path / CHECKPOINT_NAME
    if not path.is_file():
        raise CxrkitError(f"model.weights={path}: no such file; give imagenet, none, a state dict or a run")
    data = safe_torch_load(path, "model.weights file")
    state = data.get("state_dict", data) if isinstance(data, dict) else None
    if not isinstance(state, dict):
        raise CxrkitError(f"model.weights={path}: no state dict inside")
    return {k.removeprefix("model."): v for k, v in state.items()}


def build_model(
    name: str,
    num_classes: int,
    in_channels: int = 3,
    weights: str = "none",
    freeze: str = "none",
    dropout: float = 0.5,
    **options: object,
) -> nn.Module:
    """Build a model by registry name; `weights` is none, imagenet, or a path to a state dict/run."""
    if name not in MODELS:
        raise CxrkitError(f"unknown model {name!r}; choose one of {', '.join(MODELS)}")
    if num_classes < 1:
        raise CxrkitError(f"num_classes={num_classes} must be at least 1")
    spec = MODELS[name]
    cnn_options = {k: v for k, v in options.items() if k in CNN_OPTIONS and v is not None}
    if name in ("cnn5", "baseline_cnn"):
        if weights == "imagenet":
            _imagenet_state_dict(name, spec)
        model = spec.builder(num_classes, in_channels=in_channels, dropout=dropout, **(
            {k: v for k, v in cnn_options.items() if k != "dropout"} if name == "baseline_cnn" else {}))
    else:
        model = spec.builder(num_classes)
        if weights == "imagenet":
            model.load_state_dict(_imagenet_state_dict(name, spec))
        _replace_head(model, name, spec, num_classes, dropout)
        _adapt_first_conv(model, in_channels)
    if weights not in ("none", "imagenet", "", None):
        state = state_dict_from_path(Path(weights).expanduser())
        own = model.state_dict()
        compatible = {k: v for k, v in state.items() if k in own and own[k].shape == v.shape}
        if not compatible:
            raise CxrkitError(f"model.weights={weights}: no tensor matches {name}; is it the same architecture?")
        model.load_state_dict(compatible, strict=False)
    apply_freeze(model, freeze, spec.head)
    return model


def apply_freeze(model: nn.Module, freeze: str, head: str) -> None:
    """none; 'backbone' (all but the head); or a layer name: freeze it and everything before it."""
    if freeze in ("none", "", None):
        return
    names = [n for n, _ in model.named_parameters()]
    if freeze == "backbone":
        for name, parameter in model.named_parameters():
            parameter.requires_grad = name.startswith(head + ".")
        return
    matching = [i for i, n in enumerate(names) if n.startswith(freeze + ".")]
    if not matching:
        tops = ", ".join(dict.fromkeys(n.split(".")[0] for n in names))
        raise CxrkitError(f"model.freeze={freeze!r}: no such layer; use none, backbone or one of {tops}")
    last = max(matching)
    for index, (_, parameter) in enumerate(model.named_parameters()):
        parameter.requires_grad = index > last


def cam_layer_name(name: str) -> str:
    """The layer whose activations Grad-CAM uses for a registry model."""
    if name not in MODELS:
        raise CxrkitError(f"unknown model {name!r}; choose one of {', '.join(MODELS)}")
    return MODELS[name].cam_layer


def count_parameters(model: nn.Module, trainable_only: bool = False) -> int:
    """Number of parameters (optionally only the trainable ones)."""
    return sum(p.numel() for p in model.parameters() if p.requires_grad or not trainable_only)
