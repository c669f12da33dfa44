"""Datasets over the on-disk uint8 image cache and the LightningDataModule that serves them."""

from __future__ import annotations

import lightning as L
import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset, WeightedRandomSampler


class CachedImageDataset(Dataset):
    """Prepared uint8 images and integer labels; yields (uint8 1xHxW tensor, label).

    `images` is a `cxrkit.data.cache.CachedImages` (rows read from the on-disk store) or an
    N x H x W uint8 array.
    """

    def __init__(self, images, labels: np.ndarray, augment=None):
        self.images = images
        self.labels = torch.from_numpy(labels.astype(np.int64))
        self.augment = augment

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, index: int):
        image = torch.from_numpy(np.array(self.images[index], dtype=np.uint8)).unsqueeze(0)
        if self.augment is not None:
            image = self.augment(image)
        return image, self.labels[index]


class CachedDataModule(L.LightningDataModule):
    """Train/val/test loaders; optional oversampling of rare classes in training."""

    def __init__(self, datasets: dict[str, CachedImageDataset], batch_size: int,
                 num_workers: int = 0, oversample: bool = False, seed: int = 42):
        super().__init__()
        self.datasets = datasets
        self.batch_size = batch_size
        self.num_workers = num_workers
        self.oversample = oversample
        self.seed = seed

    def _loader(self, split: str, train: bool) -> DataLoader:
        dataset = self.datasets[split]
        sampler = None
        if train and self.oversample:
            counts = torch.bincount(dataset.labels).double()
            weights = (1.0 / counts)[dataset.labels]
            generator = torch.Generator().manual_seed(self.seed)
            sampler = WeightedRandomSampler(weights, len(dataset), replacement=True, generator=generator)
        if not train and self.trainer is not None and self.trainer.world_size > 1:
            # each validation image on exactly one rank (Lightning's default pads with repeats)
            from lightning.pytorch.overrides.distributed import UnrepeatedDistributedSampler

            sampler = UnrepeatedDistributedSampler(dataset, num_replicas=self.trainer.world_size,
                                                   rank=self.trainer.global_rank, shuffle=False)
        return DataLoader(
            dataset, batch_size=self.batch_size, shuffle=train and sampler is None, sampler=sampler,
            num_workers=self.num_workers, persistent_workers=self.num_workers > 0,
            drop_last=train and len(dataset) > self.batch_size,
        )

    def train_dataloader(self) -> DataLoader:
        return self._loader("train", train=True)

    def val_dataloader(self) -> DataLoader:
        return self._loader("val", train=False)

    def test_dataloader(self) -> DataLoader:
        return self._loader("test", train=False)
