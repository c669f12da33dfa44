"""The seeds' own CNNs: seed 002's 5-block network and seed 003's configurable baseline."""

from __future__ import annotations

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


class BaselineCNN(nn.Module):
    """Seed 003: `depth` conv blocks, widths doubling from `width`, configurable conv and pooling."""

    def __init__(
        self,
        num_classes: int,
        in_channels: int = 1,
        width: int = 32,
        depth: int = 4,
        kernel_size: int = 3,
        stride: int = 1,
        padding: str | int = "same",
        pooling: str = "max",
        dropout: float = 0.3,
    ):
        super().__init__()
        if pooling not in ("max", "avg"):
            raise CxrkitError(f"model.pooling={pooling!r}: choose max or avg")
        if padding == "same":
            pad = kernel_size // 2
        elif padding == "valid":
            pad = 0
        elif isinstance(padding, int) and padding >= 0:
            pad = padding
        else:
            raise CxrkitError(f"model.padding={padding!r}: choose same, valid or a non-negative integer")
        layers: list[nn.Module] = []
        previous = in_channels
        for index in range(depth):
            channels = width * 2 ** min(index, 4)
            layers += [
                nn.Conv2d(previous, channels, kernel_size, stride=stride, padding=pad, bias=False),
                nn.BatchNorm2d(channels),
                nn.ReLU(inplace=True),
                nn.MaxPool2d(2) if pooling == "max" else nn.AvgPool2d(2),
            ]
            previous = channels
        self.features = nn.Sequential(*layers)
        self.classifier = nn.Sequential(
            nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Dropout(dropout), nn.Linear(previous, num_classes)
        )
        _kaiming_init(self)

    def forward(self, x):
        return self.classifier(self.features(x))
