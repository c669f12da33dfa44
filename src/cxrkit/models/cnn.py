"""The seeds' own CNNs: seed 002's 5-block network and seed 003's configurable baseline."""

from __future__ import annotations

from dataclasses import dataclass

from torch import nn

from cxrkit.errors import CxrkitError


def _kaiming_init(module: nn.Module) -> None:
    for layer in module.modules():
        if isinstance(layer, nn.Conv2d):
            nn.init.kaiming_normal_(layer.weight, mode="fan_out", nonlinearity="relu")
            if layer.bias is not None:
                nn.init.zeros_(layer.bias)
        elif isinstance(layer, nn.BatchNorm2d):
            nn.init.ones_(layer.weight)
            nn.init.zeros_(layer.bias)


class FiveBlockCNN(nn.Module):
    """Seed 002: five conv blocks (64-128-256-512-512) with BN, dropout and a 4096-2048 head."""

    def __init__(self, num_classes: int, in_channels: int = 3, dropout: float = 0.5):
        super().__init__()
        widths = (64, 128, 256, 512, 512)
        block_dropout = (0.25, 0.25, 0.3, 0.3, 0.3)
        layers: list[nn.Module] = []
        previous = in_channels
        for width, rate in zip(widths, block_dropout, strict=False):
            layers += [
                nn.Conv2d(previous, width, 3, padding=1, bias=False),
                nn.BatchNorm2d(width),
                nn.ReLU(inplace=True),
                nn.MaxPool2d(2),
                nn.Dropout(rate),
            ]
            previous = width
        self.features = nn.Sequential(*layers)
        self.pool = nn.AdaptiveAvgPool2d(7)
        self.classifier = nn.Sequential(
            nn.Flatten(),
            nn.Linear(512 * 7 * 7, 4096),
            nn.ReLU(inplace=True),
            nn.Dropout(dropout),
            nn.Linear(4096, 2048),
            nn.ReLU(inplace=True),
            nn.Dropout(dropout),
            nn.Linear(2048, num_classes),
        )
        _kaiming_init(self)

    def forward(self, x):
        return self.classifier(self.pool(self.features(x)))


@dataclass(frozen=True)
class ConvBlocks:
    """BaselineCNN's conv stack: `depth` blocks of conv, BatchNorm, ReLU and pooling, widths
    doubling from `width` (at most 16x); `padding` is same, valid or a number of pixels."""

    width: int = 32
    depth: int = 4
    kernel_size: int = 3
    stride: int = 1
    padding: str | int = "same"
    pooling: str = "max"

    def __post_init__(self) -> None:
        if self.pooling not in ("max", "avg"):
            raise CxrkitError(f"model.pooling={self.pooling!r}: choose max or avg")
        if not (self.padding in ("same", "valid") or (isinstance(self.padding, int) and self.padding >= 0)):
            raise CxrkitError(f"model.padding={self.padding!r}: choose same, valid or a non-negative integer")

    @property
    def pad(self) -> int:
        """Pixels of padding on each side."""
        if self.padding == "same":
            return self.kernel_size // 2
        return 0 if self.padding == "valid" else int(self.padding)


class BaselineCNN(nn.Module):
    """Seed 003: `blocks` (see ConvBlocks), then global average pooling, dropout and a linear head."""

    def __init__(self, num_classes: int, in_channels: int = 1, blocks: ConvBlocks | None = None,
                 dropout: float = 0.3):
        super().__init__()
        blocks = blocks or ConvBlocks()
        layers: list[nn.Module] = []
        previous = in_channels
        for index in range(blocks.depth):
            channels = blocks.width * 2 ** min(index, 4)
            layers += [
                nn.Conv2d(previous, channels, blocks.kernel_size, stride=blocks.stride, padding=blocks.pad,
                          bias=False),
                nn.BatchNorm2d(channels),
                nn.ReLU(inplace=True),
                nn.MaxPool2d(2) if blocks.pooling == "max" else nn.AvgPool2d(2),
            ]
            previous = channels
        self.features = nn.Sequential(*layers)
        self.classifier = nn.Sequential(
            nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Dropout(dropout), nn.Linear(previous, num_classes)
        )
        _kaiming_init(self)

    def forward(self, x):
        return self.classifier(self.features(x))
