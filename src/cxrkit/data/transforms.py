"""Training augmentation (torchvision transforms v2) on uint8 1xHxW tensors; off for val/test."""

from __future__ import annotations

from torchvision.transforms import v2

from cxrkit.config import AugmentConfig


def train_augmentation(augment: AugmentConfig, image_size: int) -> v2.Compose | None:
    """Seed 002's list, each switchable: flip, rotation, translate, resized crop, jitter."""
    steps = []
    if augment.resized_crop_scale < 1.0:
        steps.append(v2.RandomResizedCrop(image_size, scale=(augment.resized_crop_scale, 1.0),
                                          ratio=(0.9, 1.1), antialias=True))
    if augment.hflip > 0:
        steps.append(v2.RandomHorizontalFlip(augment.hflip))
    if augment.rotation > 0 or augment.translate > 0:
        translate = (augment.translate, augment.translate) if augment.translate > 0 else None
        steps.append(v2.RandomAffine(degrees=augment.rotation, translate=translate))
    if augment.brightness > 0 or augment.contrast > 0:
        steps.append(v2.ColorJitter(brightness=augment.brightness, contrast=augment.contrast))
    return v2.Compose(steps) if steps else None
