"""A compact U-Net for lung fields: four resolutions, `width` channels at the top (torch)."""

from __future__ import annotations

import torch
from torch import nn


def _block(inputs: int, outputs: int) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(inputs, outputs, 3, padding=1, bias=False), nn.BatchNorm2d(outputs), nn.ReLU(inplace=True),
        nn.Conv2d(outputs, outputs, 3, padding=1, bias=False), nn.BatchNorm2d(outputs), nn.ReLU(inplace=True),
    )


class LungUNet(nn.Module):
    """U-Net (Ronneberger 2015) with `levels` poolings; one grey channel in, one lung logit out."""

    def __init__(self, width: int = 8, levels: int = 4):
        super().__init__()
        channels = [width * 2**i for i in range(levels + 1)]
        self.down = nn.ModuleList([_block(1, channels[0])] +
                                  [_block(channels[i], channels[i + 1]) for i in range(levels)])
        self.pool = nn.MaxPool2d(2)
        self.up = nn.ModuleList([nn.ConvTranspose2d(channels[i + 1], channels[i], 2, stride=2)
                                 for i in reversed(range(levels))])
        self.merge = nn.ModuleList([_block(channels[i] * 2, channels[i]) for i in reversed(range(levels))])
        self.head = nn.Conv2d(channels[0], 1, 1)

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        skips = []
        features = image
        for index, block in enumerate(self.down):
            features = block(features if index == 0 else self.pool(features))
            skips.append(features)
        skips.pop()
        for up, merge in zip(self.up, self.merge, strict=True):
            features = merge(torch.cat([up(features), skips.pop()], dim=1))
        return self.head(features)
