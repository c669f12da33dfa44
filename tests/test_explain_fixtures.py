"""Models with a known answer for the explanation tests (only the top-left quadrant counts)."""

from __future__ import annotations

import numpy as np
import torch
from torch import nn

from cxrkit.data.preprocess import Preprocessing
from cxrkit.inference import Predictor

SIZE = 32


class QuadrantModel(nn.Module):
    """Logit of 'Tuberculosis' = features of the top-left quadrant; nothing else counts."""

    def __init__(self, single_logit: bool = False):
        super().__init__()
        self.conv = nn.Conv2d(1, 4, 3, padding=1)
        self.relu = nn.ReLU()
        self.mask = Mask(SIZE)
        self.pool = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten())
        self.head = nn.Linear(4, 1 if single_logit else 2)
        with torch.no_grad():
            self.conv.weight.fill_(1 / 9)
            self.conv.bias.zero_()
            self.head.bias.zero_()
            if single_logit:
                self.head.weight.fill_(10.0)
            else:
                self.head.weight.copy_(torch.tensor([[-5.0] * 4, [5.0] * 4]))

    def forward(self, x):
        return self.head(self.pool(self.mask(self.relu(self.conv(x)))))


class Mask(nn.Module):
    """Zero every activation outside the top-left quadrant."""

    def __init__(self, size: int):
        super().__init__()
        mask = torch.zeros(1, 1, size, size)
        mask[..., : size // 2, : size // 2] = 1
        self.register_buffer("weights", mask)

    def forward(self, x):
        return x * self.weights


def quadrant_predictor(single_logit: bool = False) -> Predictor:
    prep = Preprocessing(image_size=SIZE, channels=1, mean=(0.5,), std=(0.25,))
    return Predictor(QuadrantModel(single_logit), ["Normal", "Tuberculosis"], prep, single_logit=single_logit)


def blobs_image(seed: int = 0) -> np.ndarray:
    """Dark noise with a bright square in each quadrant."""
    rng = np.random.default_rng(seed)
    image = rng.integers(0, 40, (SIZE, SIZE)).astype(np.uint8)
    for top in (4, 20):
        for left in (4, 20):
            image[top : top + 8, left : left + 8] = 220
    return image


def dark_images(count: int = 4) -> list[np.ndarray]:
    rng = np.random.default_rng(1)
    return [rng.integers(0, 40, (SIZE, SIZE)).astype(np.uint8) for _ in range(count)]


def top_left_share(heatmap: np.ndarray) -> float:
    """Fraction of the heatmap's mass inside the top-left quadrant."""
    half = heatmap.shape[0] // 2
    return float(heatmap[:half, :half].sum() / max(heatmap.sum(), 1e-12))


def test_quadrant_model_only_sees_the_top_left_quadrant():
    predictor = quadrant_predictor()
    image = blobs_image()
    changed_elsewhere = image.copy()
    changed_elsewhere[SIZE // 2 :, :] = 0
    changed_top_left = image.copy()
    changed_top_left[: SIZE // 2, : SIZE // 2] = 0
    base = predictor.predict_proba(image)[0, 1]
    assert predictor.predict_proba(changed_elsewhere)[0, 1] == base
    assert predictor.predict_proba(changed_top_left)[0, 1] < base - 0.2


def test_single_logit_quadrant_model_agrees_on_the_class():
    image = blobs_image()
    assert quadrant_predictor(single_logit=True).predict(image) == ["Tuberculosis"]
    assert quadrant_predictor().predict(image) == ["Tuberculosis"]
