"""Datasets over the in-memory uint8 cache and the LightningDataModule that serves them.

Loaders yield raw uint8 batches; augmentation happens later, on whole batches on the training
device (see cxrkit.data.transforms and Classifier.on_after_batch_transfer).
"""

from __future__ import annotations

import os

import lightning as L
import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset, WeightedRandomSampler


class CachedImageDataset(Dataset):
    """Prepared uint8 images and integer labels; yields (uint8 1xHxW tensor, label)."""

    def __init__(self, images: np.ndarray, labels: np.ndarray):
        self.images = torch.from_numpy(images)
        self.labels = torch.from_numpy(labels.astype(np.int64))

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, index: int):
        return self.images[index].unsqueeze(0), self.labels[index]


def available_cpus() -> int:
    """CPU cores this process may use (its affinity mask where the OS has one)."""
    if hasattr(os, "sched_getaffinity"):
        return len(os.sched_getaffinity(0))
    return os.cpu_count() or 1


def loader_settings(num_workers: int | str, on_gpu: bool, devices: int = 1) -> tuple[int, bool]:
    """(worker processes, pin memory) for the DataLoaders.

    `auto` is 0 workers on CPU: a batch is a slice of an in-memory array, and worker processes
    would only take cores from the model. On a GPU it is one worker per spare core, shared by the
    devices of this machine, at most 8 each. Memory is pinned whenever batches go to a GPU.
    """
    if num_workers == "auto":
        num_workers = min(8, max(1, available_cpus() // max(1, devices) - 1)) if on_gpu else 0
    return int(num_workers), on_gpu


class CachedDataModule(L.LightningDataModule):
    """Train/val/test loaders; optional oversampling of rare classes in training."""

    def __init__(self, datasets: dict[str, CachedImageDataset], batch_size: int,
                 num_workers: int | str = "auto", oversample: bool = False, seed: int = 42):
        super().__init__()
        self.datasets = datasets
        self.batch_size = batch_size
        self.num_workers = num_workers
        self.oversample = oversample
        self.seed = seed

    def settings(self) -> tuple[int, bool]:
        """(workers, pin memory) for the device the attached Trainer trains on."""
        on_gpu = self.trainer is not None and self.trainer.strategy.root_device.type == "cuda"
        devices = self.trainer.num_devices if self.trainer is not None else 1
        return loader_settings(self.num_workers, on_gpu, devices)

    def _loader(self, split: str, train: bool) -> DataLoader:
        dataset = self.datasets[split]
        workers, pin_memory = self.settings()
        sampler = None
        if train and self.oversample:
            counts = torch.bincount(dataset.labels).double()
            weights = (1.0 / counts)[dataset.labels]
            generator = torch.Generator().manual_seed(self.seed)
            sampler = WeightedRandomSampler(weights, len(dataset), replacement=True, generator=generator)
        return DataLoader(
            dataset, batch_size=self.batch_size, shuffle=train and sampler is None, sampler=sampler,
            num_workers=workers, persistent_workers=workers > 0, pin_memory=pin_memory,
            drop_last=train and len(dataset) > self.batch_size,
        )

    def train_dataloader(self) -> DataLoader:
        return self._loader("train", train=True)

    def val_dataloader(self) -> DataLoader:
        return self._loader("val", train=False)

    def test_dataloader(self) -> DataLoader:
        return self._loader("test", train=False)
