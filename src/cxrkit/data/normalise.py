"""The one normaliser: prepared grey images to model input, as a torch module.

Training (on the device, after the batch augmentation), the Predictor, explanations and the
exported ONNX/TorchScript graph all run this module, built from the preprocessing contract
(`Preprocessing.channels`, `.mean`, `.std`), so the model sees the same numbers everywhere.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
from torch import nn

from cxrkit.data.preprocess import PIXEL_MAX, Preprocessing


def unit_scale(images: torch.Tensor) -> torch.Tensor:
    """uint8 images (0-255) to float32 in [0, 1]; float images are taken as already in [0, 1]."""
    return images.float().div(PIXEL_MAX) if images.dtype == torch.uint8 else images.float()


class Normaliser(nn.Module):
    """(N, 1, H, W) grey images, uint8 (0-255) or float (0-1), to float32 (N, C, H, W) model
    input: the grey channel repeated `channels` times, minus `mean`, divided by `std`, per channel.

    mean/std are buffers that follow the module to its device but are not saved in state dicts:
    their home is the preprocessing contract.
    """

    def __init__(self, channels: int, mean: Sequence[float], std: Sequence[float]):
        super().__init__()
        self.channels = channels
        self.register_buffer("mean", torch.tensor(mean, dtype=torch.float32).view(1, -1, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(std, dtype=torch.float32).view(1, -1, 1, 1), persistent=False)

    @classmethod
    def from_preprocessing(cls, prep: Preprocessing) -> Normaliser:
        """The normaliser a preprocessing contract describes."""
        return cls(prep.channels, prep.mean, prep.std)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return (unit_scale(images).expand(-1, self.channels, -1, -1) - self.mean) / self.std


def model_input(prepared: np.ndarray, prep: Preprocessing) -> torch.Tensor:
    """Normalised float32 (N, C, H, W) model input for prepared uint8 image(s) (H x W or N x H x W)."""
    prepared = np.ascontiguousarray(prepared)
    # a read-only array (a memory-mapped cache row) is copied: torch tensors are writable
    batch = torch.from_numpy(prepared if prepared.flags.writeable else prepared.copy())
    batch = batch[None] if batch.ndim == 2 else batch
    return Normaliser.from_preprocessing(prep)(batch[:, None])
