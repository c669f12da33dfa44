"""Training images/s: cxrkit's cache + bf16 autocast + channels_last vs a plain fp32 loop that
re-decodes every image each epoch. Same model, data, batch size and optimiser.

Run: .venv/bin/python benchmarks/bench_train_throughput.py [--data ../shared/data/tb] [--model resnet18]
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image
from torch.utils.data import DataLoader, Dataset

from cxrkit.data.cache import load_cached_images
from cxrkit.data.datamodule import CachedImageDataset
from cxrkit.data.preprocess import Preprocessing, imagenet_stats
from cxrkit.models import build_model
from cxrkit.training.precision import cpu_supports_bf16

DATA = Path(__file__).resolve().parents[2] / "shared" / "data" / "tb"


class DecodeEveryTime(Dataset):
    """The seeds' way: open, convert and resize the file on every access."""

    def __init__(self, paths, labels, size):
        self.paths, self.labels, self.size = paths, labels, size
        mean, std = imagenet_stats(3)
        self.mean = torch.tensor(mean).view(3, 1, 1)
        self.std = torch.tensor(std).view(3, 1, 1)

    def __len__(self):
        return len(self.paths)

    def __getitem__(self, index):
        image = Image.open(self.paths[index]).convert("RGB").resize((self.size, self.size))
        tensor = torch.from_numpy(np.asarray(image).copy()).permute(2, 0, 1).float() / 255
        return (tensor - self.mean) / self.std, self.labels[index]


def timed_epochs(model, loader, epochs, step) -> float:
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-4)
    model.train()
    images, started = 0, None
    for epoch in range(epochs + 1):  # the first epoch warms up (and fills the cache) and is not timed
        if epoch == 1:
            started = time.perf_counter()
        for batch, labels in loader:
            optimizer.zero_grad(set_to_none=True)
            loss = step(model, batch, labels)
            loss.backward()
            optimizer.step()
            if epoch:
                images += len(labels)
    return images / (time.perf_counter() - started)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=DATA)
    parser.add_argument("--model", default="resnet18")
    parser.add_argument("--size", type=int, default=224)
    parser.add_argument("--images", type=int, default=256)
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--batch-size", type=int, default=32)
    args = parser.parse_args()
    if not args.data.is_dir():
        print(f"data folder {args.data} not found; pass --data", file=sys.stderr)
        return 2
    torch.manual_seed(0)
    paths = sorted(str(p) for p in args.data.rglob("*.png"))
    rng = np.random.default_rng(0)
    paths = list(rng.choice(paths, size=min(args.images, len(paths)), replace=False))
    labels = torch.tensor([int("Tuberculosis" in p) for p in paths])

    plain_loader = DataLoader(DecodeEveryTime(paths, labels, args.size), batch_size=args.batch_size, shuffle=True)
    plain_model = build_model(args.model, num_classes=2, in_channels=3)

    def plain_step(model, batch, targets):
        return F.cross_entropy(model(batch), targets)

    plain = timed_epochs(plain_model, plain_loader, args.epochs, plain_step)

    prep = Preprocessing(image_size=args.size, channels=3)
    cached, _ = load_cached_images(paths, prep)
    fast_loader = DataLoader(CachedImageDataset(cached, labels.numpy()), batch_size=args.batch_size, shuffle=True)
    fast_model = build_model(args.model, num_classes=2, in_channels=3).to(memory_format=torch.channels_last)
    mean = torch.tensor(prep.mean).view(1, 3, 1, 1)
    std = torch.tensor(prep.std).view(1, 3, 1, 1)
    use_bf16 = cpu_supports_bf16()

    def fast_step(model, batch, targets):
        batch = ((batch.float() / 255).expand(-1, 3, -1, -1) - mean) / std
        batch = batch.contiguous(memory_format=torch.channels_last)
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=use_bf16):
            logits = model(batch)
        return F.cross_entropy(logits.float(), targets)

    fast = timed_epochs(fast_model, fast_loader, args.epochs, fast_step)
    print(f"model {args.model}, {len(paths)} images at {args.size}px, batch {args.batch_size}, "
          f"{args.epochs} timed epoch(s), {torch.get_num_threads()} threads")
    print("| pipeline | images/s |")
    print("|---|---|")
    print(f"| plain fp32, decode every epoch | {plain:.1f} |")
    print(f"| cxrkit cache + {'bf16' if use_bf16 else 'fp32 (no bf16 on this CPU)'} + channels_last | {fast:.1f} |")
    print(f"speed-up: {fast / plain:.2f}x")
    print("reproduce: .venv/bin/python benchmarks/bench_train_throughput.py " + " ".join(sys.argv[1:]))
    return 0


if __name__ == "__main__":
    sys.exit(main())
