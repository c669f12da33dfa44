"""Training images/s of the real `cxrkit train` against the seeds' loop, same model, images, batch, epochs.

cxrkit: `cxrkit.train` (what the `train` command runs) with its defaults (cache, augmentation on
the device, auto precision and workers, channels_last) and seed 002's augmentation list set
through `augment.*`; its figure is training.json's images/s over the last training epoch.
Seeds' loop: torchvision ImageFolder, PIL decode and seed 002's augmentation list on every image
every epoch, ImageNet normalisation; fp32 on CPU, fp16 AMP on GPU; DataLoader workers as seed 002
(8, pinned, persistent, prefetch 4), capped at the cores there are on CPU. It trains on the same
training images (the cxrkit run's split.csv) and is timed over its last epoch the same way.
The two alternate, `--repeats` times each, back to back, so both see the same machine load.
Images per CPU-second (this process plus its DataLoader workers) are printed as well: on a
shared, busy machine they vary far less than images/s.

Run (CPU, and the GPU as well when there is one):
  python benchmarks/bench_train_throughput.py --data ../shared/data/tb --images 320 --epochs 2
GPU example (must-show 3 of issue 11):
  python benchmarks/bench_train_throughput.py --model densenet121 --images 2768 --batch-size 128 --epochs 3
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F
from lightning.pytorch.callbacks import Callback
from torch.utils.data import DataLoader
from torchvision import datasets, transforms

import cxrkit
from cxrkit.config import build_config
from cxrkit.data.datamodule import available_cpus
from cxrkit.models import build_model

DATA = Path(__file__).resolve().parents[2] / "shared" / "data" / "tb"
IMAGENET = ([0.485, 0.456, 0.406], [0.229, 0.224, 0.225])
# Seed 002's list (flip 0.5, rotation 15, translate 0.1, jitter 0.2/0.2, resized crop 0.8-1.0) as cxrkit options.
SEED_002_AUGMENT = {"hflip": 0.5, "rotation": 15, "translate": 0.1, "brightness": 0.2, "contrast": 0.2,
                    "resized_crop_scale": 0.8}


def seed_002_transform(size: int) -> transforms.Compose:
    return transforms.Compose([
        transforms.RandomResizedCrop(size, scale=(0.8, 1.0)),
        transforms.RandomHorizontalFlip(0.5),
        transforms.RandomRotation(15),
        transforms.RandomAffine(degrees=0, translate=(0.1, 0.1)),
        transforms.ColorJitter(brightness=0.2, contrast=0.2),
        transforms.ToTensor(),
        transforms.Normalize(*IMAGENET),
    ])


def pick_subset(data: Path, count: int, folder: Path) -> None:
    """Symlink a seeded random `count` of the class-folder images into folder/<class>/."""
    paths = sorted(p for p in data.rglob("*") if p.suffix.lower() in (".png", ".jpg", ".jpeg"))
    rng = np.random.default_rng(0)
    for path in rng.choice(paths, size=min(count, len(paths)), replace=False):
        link = folder / path.parent.name / path.name
        link.parent.mkdir(parents=True, exist_ok=True)
        link.symlink_to(path.resolve())


def children_cpu_seconds() -> float:
    """CPU seconds used so far by this process's live child processes (DataLoader workers)."""
    ticks, total, me = os.sysconf("SC_CLK_TCK"), 0, os.getpid()
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[1]) == me:
            total += int(fields[11]) + int(fields[12])
    return total / ticks


class Clock:
    """Images, wall seconds and CPU seconds (this process and its workers) since `start`."""

    def start(self) -> None:
        self.images, self.wall, self.cpu = 0, time.perf_counter(), time.process_time() + children_cpu_seconds()

    def add(self, images: int) -> None:
        self.images += images
        self.wall_s = time.perf_counter() - self.wall
        self.cpu_s = time.process_time() + children_cpu_seconds() - self.cpu

    def rates(self) -> tuple[float, float]:
        return self.images / self.wall_s, self.images / self.cpu_s


class EpochClock(Callback):
    """Times each training epoch of `cxrkit train` like its Throughput callback, CPU time besides."""

    def __init__(self):
        self.clock = Clock()

    def on_train_epoch_start(self, trainer, pl_module):
        self.clock.start()

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_index):
        self.clock.add(len(batch[1]))


def cxrkit_options(args, subset: Path, out: Path, name: str, accelerator: str) -> dict:
    """`cxrkit train` options: the model, size, batch, epochs and augmentation of the seeds' loop."""
    options = {"data.source": str(subset), "model.name": args.model, "model.weights": "none",
               "preprocess.image_size": args.size, "preprocess.channels": 3, "preprocess.enhancement": "none",
               "train.epochs": args.epochs, "train.batch_size": args.batch_size, "train.lr": 1e-4,
               "train.optimizer": "adam", "train.scheduler": "none", "train.accelerator": accelerator,
               "output_dir": str(out), "name": name, "data.group_near_duplicates": False}
    options.update({f"augment.{key}": value for key, value in SEED_002_AUGMENT.items()})
    return options


def cli_command(options: dict) -> str:
    """The `cxrkit train` command line that resolves to the same config."""
    flags = {"data.source": "--data", "model.name": "--model", "model.weights": "--weights",
             "preprocess.image_size": "--image-size", "preprocess.channels": "--channels",
             "preprocess.enhancement": "--enhancement", "train.epochs": "--epochs",
             "train.batch_size": "--batch-size", "train.lr": "--lr", "train.optimizer": "--optimizer",
             "train.scheduler": "--scheduler", "train.accelerator": "--accelerator",
             "output_dir": "--output-dir", "name": "--name"}
    parts = ["cxrkit train --recipe tb-fast"]
    for key, value in options.items():
        parts.append(f"{flags[key]} {value}" if key in flags else f"--set {key}={str(value).lower()}")
    return " ".join(parts) + " --overwrite"


def run_cxrkit(options: dict) -> tuple[float, float]:
    """The real training path (cxrkit.train, as the CLI calls it); rates over the last epoch."""
    clock = EpochClock()
    run = cxrkit.train(build_config("tb-fast", options), callbacks=[clock], use_test=False, overwrite=True)
    wall, cpu = clock.clock.rates()
    recorded = json.loads((run / "training.json").read_text())["images_per_s"]
    print(f"  cxrkit run: training.json images_per_s {recorded}, this clock {wall:.2f}", flush=True)
    return wall, cpu


def seed_training_folder(run_dir: Path, folder: Path) -> None:
    """The cxrkit run's training images, as an ImageFolder tree of symlinks."""
    split = pd.read_csv(run_dir / "split.csv")
    for path in split.loc[split["split"] == "train", "path"]:
        link = folder / Path(path).parent.name / Path(path).name
        link.parent.mkdir(parents=True, exist_ok=True)
        if not link.exists():
            link.symlink_to(Path(path).resolve())


def run_seeds(args, folder: Path, device: str) -> tuple[float, float]:
    """Seed 002's loop; rates over the last epoch (decode + augmentation + training step)."""
    on_gpu = device == "cuda"
    workers = 8 if on_gpu else min(8, available_cpus())
    loader = DataLoader(datasets.ImageFolder(str(folder), seed_002_transform(args.size)),
                        batch_size=args.batch_size, shuffle=True, num_workers=workers, pin_memory=on_gpu,
                        persistent_workers=True, prefetch_factor=4, drop_last=True)
    model = build_model(args.model, num_classes=2, in_channels=3).to(device)
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-4)
    scaler = torch.amp.GradScaler(enabled=on_gpu)
    model.train()
    clock = Clock()
    for _ in range(args.epochs):
        clock.start()
        for batch, labels in loader:
            batch, labels = batch.to(device, non_blocking=True), labels.to(device, non_blocking=True)
            optimizer.zero_grad(set_to_none=True)
            with torch.autocast(device, dtype=torch.float16, enabled=on_gpu):
                loss = F.cross_entropy(model(batch), labels)
            scaler.scale(loss).backward()
            scaler.step(optimizer)
            scaler.update()
            if on_gpu and len(labels) and clock.images + len(labels) >= len(loader) * args.batch_size:
                torch.cuda.synchronize()
            clock.add(len(labels))
    return clock.rates()


def gpu_ceiling(args) -> tuple[float, float]:
    """The model alone: random batches already on the GPU, bf16, channels_last; eager and compiled."""
    rates = []
    for compiled in (False, True):
        model = build_model(args.model, num_classes=2, in_channels=3).cuda().to(memory_format=torch.channels_last)
        step_model = torch.compile(model) if compiled else model
        optimizer = torch.optim.Adam(model.parameters(), lr=1e-4)
        batch = torch.randn(args.batch_size, 3, args.size, args.size, device="cuda").to(
            memory_format=torch.channels_last)
        labels = torch.randint(0, 2, (args.batch_size,), device="cuda")
        for step in range(60):
            if step == 20:
                torch.cuda.synchronize()
                started = time.perf_counter()
            optimizer.zero_grad(set_to_none=True)
            with torch.autocast("cuda", dtype=torch.bfloat16):
                loss = F.cross_entropy(step_model(batch), labels)
            loss.backward()
            optimizer.step()
        torch.cuda.synchronize()
        rates.append(40 * args.batch_size / (time.perf_counter() - started))
    return rates[0], rates[1]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=DATA, help="class-per-folder images (default ../shared/data/tb)")
    parser.add_argument("--model", default="resnet18")
    parser.add_argument("--size", type=int, default=224)
    parser.add_argument("--images", type=int, default=320, help="images drawn from --data (80%% train)")
    parser.add_argument("--epochs", type=int, default=2, help="epochs; the last one is timed")
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--repeats", type=int, default=1, help="alternating runs of each side")
    parser.add_argument("--devices", nargs="+", default=None,
                        help="cpu and/or cuda (default: cpu, plus cuda if present)")
    parser.add_argument("--threads", type=int, default=None,
                        help="torch CPU threads for both sides (default: torch's own choice)")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    if not args.data.is_dir():
        print(f"data folder {args.data} not found; pass --data", file=sys.stderr)
        return 2
    devices = args.devices or ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])
    rows = []
    with tempfile.TemporaryDirectory(prefix="cxrkit-bench-") as scratch:
        scratch = Path(scratch)
        os.environ["CXRKIT_CACHE_DIR"] = str(scratch / "cache")
        pick_subset(args.data, args.images, scratch / "subset")
        for device in devices:
            options = cxrkit_options(args, scratch / "subset", scratch / "runs", f"bench-{device}",
                                     "gpu" if device == "cuda" else "cpu")
            ours, theirs = [], []
            for repeat in range(args.repeats):
                ours.append(run_cxrkit(options))
                if repeat == 0:
                    seed_training_folder(scratch / "runs" / f"bench-{device}", scratch / f"seed-train-{device}")
                theirs.append(run_seeds(args, scratch / f"seed-train-{device}", device))
                print(f"[{device}] cxrkit train {ours[-1][0]:.2f} img/s ({ours[-1][1]:.2f} per CPU-s), "
                      f"seeds' loop {theirs[-1][0]:.2f} img/s ({theirs[-1][1]:.2f} per CPU-s)", flush=True)
            ceiling = gpu_ceiling(args) if device == "cuda" else None
            rows.append((device, np.median(ours, axis=0), np.median(theirs, axis=0), ceiling, cli_command(options)))
    print(f"\nmodel {args.model}, {args.size}px, batch {args.batch_size}, {args.images} images "
          f"(~80% train), {args.epochs} epochs (last one timed), median of {args.repeats} alternating "
          f"run(s) per side, {available_cpus()} CPU cores, {torch.get_num_threads()} torch thread(s), "
          f"torch {torch.__version__}")
    print("| device | cxrkit train img/s | seeds' loop img/s | speed-up | cxrkit img/CPU-s | seeds' img/CPU-s "
          "| speed-up per CPU-s | model-alone ceiling img/s (eager / compiled) |")
    print("|---|---|---|---|---|---|---|---|")
    for device, ours, theirs, ceiling, _ in rows:
        limit = f"{ceiling[0]:.0f} / {ceiling[1]:.0f}" if ceiling else "-"
        print(f"| {device} | {ours[0]:.2f} | {theirs[0]:.2f} | {ours[0] / theirs[0]:.2f}x | {ours[1]:.2f} | "
              f"{theirs[1]:.2f} | {ours[1] / theirs[1]:.2f}x | {limit} |")
    for device, *_, command in rows:
        print(f"cxrkit side ({device}), as a command: {command}")
    print("reproduce: python benchmarks/bench_train_throughput.py " + " ".join(sys.argv[1:]))
    return 0


if __name__ == "__main__":
    sys.exit(main())
