"""Train the lung U-Net on a CSV of images and lung masks; split by patient, stratified by site.

Held-out patients (the test split) are never used for training or model selection: the
epoch kept is the one with the best Dice on the validation patients, and test Dice is
measured once at the end, on the masks' own resolution, through the same numpy code that
`cxrkit segment predict` and `preprocess.lung_crop` use.
"""

from __future__ import annotations

import copy
import hashlib
import json
import time
from collections.abc import Callable
from importlib import resources
from pathlib import Path

import numpy as np
import pandas as pd
import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from cxrkit.data.io import read_gray
from cxrkit.data.splits import split_by_patient
from cxrkit.errors import CxrkitError
from cxrkit.segment.lungs import dice, network_input
from cxrkit.segment.weights import WEIGHTS_FORMAT, WEIGHTS_NAME, torch_segmenter, weights_digest

RECIPE = "lung-unet"
OUTPUT_FILES = (WEIGHTS_NAME, "lung_unet.json", "lung_unet.md", "split.csv", "metrics.csv", "test_dice.csv")


class SegmentConfig(BaseModel):
    """Settings of `cxrkit segment train` (the `lung-unet` recipe holds the shipped values)."""

    model_config = ConfigDict(extra="forbid")

    image_size: int = Field(128, ge=32, le=512)
    width: int = Field(8, ge=2, le=64)
    levels: int = Field(4, ge=1, le=6)
    epochs: int = Field(24, ge=1)
    batch_size: int = Field(16, ge=1)
    lr: float = Field(3e-3, gt=0)
    weight_decay: float = Field(1e-4, ge=0)
    val_fraction: float = Field(0.1, gt=0, lt=0.5)
    test_fraction: float = Field(0.15, gt=0, lt=0.5)
    seed: int = 42
    threads: int = Field(0, ge=0, description="torch threads (0: torch's default)")
    rotation: float = Field(10.0, ge=0, le=45)
    scale: float = Field(0.15, ge=0, lt=0.5)
    translate: float = Field(0.08, ge=0, lt=0.5)
    gamma: float = Field(0.4, ge=0, lt=1)


def read_segment_recipe(name: str = RECIPE, overrides: dict | None = None) -> SegmentConfig:
    """The recipe (a name of a built-in or a YAML path) with dotted-free KEY=VALUE overrides applied."""
    path = Path(name)
    if path.suffix in (".yaml", ".yml") and path.is_file():
        text = path.read_text()
    elif name == RECIPE:
        text = (resources.files("cxrkit") / "segment" / f"{RECIPE}.yaml").read_text()
    else:
        raise CxrkitError(f"recipe={name}: unknown segmentation recipe; use {RECIPE} or a .yaml file")
    data = {**(yaml.safe_load(text) or {}), **(overrides or {})}
    try:
        return SegmentConfig.model_validate(data)
    except ValidationError as error:
        problems = [f"{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in error.errors()]
        raise CxrkitError(f"segmentation settings: {'; '.join(problems)}; known: "
                          f"{', '.join(SegmentConfig.model_fields)}") from None


def read_mask_table(csv_path: str | Path) -> pd.DataFrame:
    """Rows of the CSV that have a mask: absolute `path`, `mask`, and `patient`, `site` (defaults filled)."""
    csv_path = Path(csv_path).expanduser()
    if not csv_path.is_file() or csv_path.suffix.lower() != ".csv":
        raise CxrkitError(f"data={csv_path}: give a CSV with columns path,mask[,patient][,site]")
    table = pd.read_csv(csv_path, dtype=str, keep_default_na=False)
    table.columns = [c.strip().lower() for c in table.columns]
    missing = {"path", "mask"} - set(table.columns)
    if missing:
        raise CxrkitError(f"{csv_path}: missing column(s) {', '.join(sorted(missing))}; "
                          "segmentation needs path,mask[,patient][,site]")
    table = table[table["mask"].str.strip() != ""].copy()
    if len(table) < 10:
        raise CxrkitError(f"{csv_path}: only {len(table)} row(s) with a mask; need at least 10")
    root = csv_path.parent
    table["path"] = [str((root / p).resolve()) for p in table["path"]]
    table["mask"] = [str((root / p.strip()).resolve()) for p in table["mask"]]
    table["patient"] = table["patient"] if "patient" in table.columns else [Path(p).stem for p in table["path"]]
    table["site"] = table["site"].replace("", "unknown") if "site" in table.columns else "all"
    for column in ("path", "mask"):
        absent = [p for p in table[column] if not Path(p).is_file()]
        if absent:
            raise CxrkitError(f"{csv_path}: {len(absent)} {column} file(s) do not exist, e.g. {absent[0]}")
    return table[["path", "mask", "patient", "site"]].reset_index(drop=True)


def load_pairs(table: pd.DataFrame) -> tuple[list[np.ndarray], list[np.ndarray]]:
    """Grey images and boolean masks; a mask whose size differs from its image is an error naming it."""
    images, masks = [], []
    for path, mask_path in zip(table["path"], table["mask"], strict=True):
        image, mask = read_gray(path), read_gray(mask_path)
        if image.shape != mask.shape:
            raise CxrkitError(f"{mask_path}: mask is {mask.shape[1]}x{mask.shape[0]} but its image {path} is "
                              f"{image.shape[1]}x{image.shape[0]}; masks must match their image's size")
        images.append(image)
        masks.append(mask > 127)
    return images, masks


def data_digest(table: pd.DataFrame) -> str:
    """sha256 (16 hex) over the images' and masks' bytes in table order: names the training data."""
    digest = hashlib.sha256()
    for path, mask in zip(table["path"], table["mask"], strict=True):
        digest.update(Path(path).read_bytes())
        digest.update(Path(mask).read_bytes())
    return digest.hexdigest()[:16]


def _augment(images, masks, config: SegmentConfig, generator):
    """Random rotation/scale/shift (image and mask together) and gamma, on (N,1,S,S) tensors in [0, 1]."""
    import math

    import torch
    import torch.nn.functional as F

    count = images.shape[0]
    uniform = lambda: torch.rand(count, generator=generator) * 2 - 1  # noqa: E731
    angle = uniform() * math.radians(config.rotation)
    scale = 1 + uniform() * config.scale
    shift = torch.stack([uniform(), uniform()], dim=1) * config.translate * 2
    theta = torch.zeros(count, 2, 3)
    theta[:, 0, 0], theta[:, 0, 1] = torch.cos(angle) / scale, -torch.sin(angle) / scale
    theta[:, 1, 0], theta[:, 1, 1] = torch.sin(angle) / scale, torch.cos(angle) / scale
    theta[:, :, 2] = shift
    grid = F.affine_grid(theta, list(images.shape), align_corners=False)
    images = F.grid_sample(images, grid, align_corners=False, padding_mode="zeros")
    masks = (F.grid_sample(masks, grid, align_corners=False, padding_mode="zeros") > 0.5).float()
    gamma = torch.exp(uniform() * math.log(1 + config.gamma))[:, None, None, None]
    return images.clamp(0, 1) ** gamma, masks


def _standardise(images):
    mean = images.mean(dim=(1, 2, 3), keepdim=True)
    std = images.std(dim=(1, 2, 3), keepdim=True, correction=0)
    return (images - mean) / (std + 1e-6)


def _loss(logits, target):
    import torch.nn.functional as F

    probability = logits.sigmoid()
    overlap = (probability * target).sum(dim=(1, 2, 3))
    soft_dice = (2 * overlap + 1) / (probability.sum(dim=(1, 2, 3)) + target.sum(dim=(1, 2, 3)) + 1)
    return F.binary_cross_entropy_with_logits(logits, target) + (1 - soft_dice).mean()


def _small(images: list[np.ndarray], size: int, interpolation) -> np.ndarray:
    import cv2

    return np.stack([cv2.resize(image.astype(np.float32), (size, size), interpolation=interpolation)
                     for image in images])


def train_segmenter(data: str | Path, out: str | Path, config: SegmentConfig | None = None,
                    command: str = "", progress: Callable[[dict], None] | None = None) -> dict:
    """Train, pick the best validation epoch, score held-out patients; write weights, card, split, log.

    Returns the card dict. Writes OUTPUT_FILES into `out`, replacing them (the caller asks first).
    """
    import cv2
    import torch

    config = config or read_segment_recipe()
    out = Path(out).expanduser()
    started = time.perf_counter()
    if config.threads:
        torch.set_num_threads(config.threads)
    torch.manual_seed(config.seed)
    generator = torch.Generator().manual_seed(config.seed)

    table = read_mask_table(data)
    table["split"] = split_by_patient(table, config.val_fraction, config.test_fraction, config.seed)
    images, masks = load_pairs(table)
    size = config.image_size
    part = {name: np.flatnonzero(table["split"].to_numpy() == name) for name in ("train", "val", "test")}
    train_images = torch.from_numpy(_small([images[i] for i in part["train"]], size, cv2.INTER_AREA) / 255)[:, None]
    train_masks = torch.from_numpy(_small([masks[i] for i in part["train"]], size, cv2.INTER_AREA) > 0.5)[:, None]
    val_input = torch.from_numpy(np.stack([network_input(images[i], size) for i in part["val"]]))
    val_masks = torch.from_numpy(_small([masks[i] for i in part["val"]], size, cv2.INTER_AREA) > 0.5)

    from cxrkit.segment.unet import LungUNet

    network = LungUNet(config.width, config.levels)
    optimizer = torch.optim.AdamW(network.parameters(), lr=config.lr, weight_decay=config.weight_decay)
    steps = config.epochs * -(-len(part["train"]) // config.batch_size)
    schedule = torch.optim.lr_scheduler.OneCycleLR(optimizer, config.lr, total_steps=steps, pct_start=0.15)
    best = {"val_dice": -1.0}
    history = []
    for epoch in range(1, config.epochs + 1):
        network.train()
        order = torch.randperm(len(part["train"]), generator=generator)
        losses = []
        for start in range(0, len(order), config.batch_size):
            chosen = order[start:start + config.batch_size]
            batch, target = _augment(train_images[chosen].float(), train_masks[chosen].float(), config, generator)
            loss = _loss(network(_standardise(batch)), target)
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            schedule.step()
            losses.append(loss.item())
        network.eval()
        with torch.inference_mode():
            predicted = network(val_input)[:, 0] > 0
        val_dice = float(np.mean([dice(p.numpy(), t.numpy()) for p, t in zip(predicted, val_masks, strict=True)]))
        row = {"epoch": epoch, "train_loss": round(float(np.mean(losses)), 5), "val_dice": round(val_dice, 5)}
        history.append(row)
        if val_dice > best["val_dice"]:
            best = {"val_dice": val_dice, "epoch": epoch, "state": copy.deepcopy(network.state_dict())}
        if progress is not None:
            progress(row)

    weights = {"format": WEIGHTS_FORMAT, "width": config.width, "levels": config.levels, "input_size": size,
               "state_dict": {name: tensor.half() if tensor.is_floating_point() else tensor
                              for name, tensor in best["state"].items()}}
    segmenter = torch_segmenter(weights)
    test_rows = part["test"]
    results = segmenter.segment_many([images[i] for i in test_rows])
    test_dice = [dice(result.mask if result.found else np.zeros_like(result.mask), masks[i])
                 for result, i in zip(results, test_rows, strict=True)]
    per_site = {site: round(float(np.mean([d for d, i in zip(test_dice, test_rows, strict=True)
                                           if table["site"][i] == site])), 4)
                for site in sorted(table["site"][test_rows].unique())}
    card = {
        "weights": WEIGHTS_NAME,
        "weights_digest": weights_digest(weights),
        "architecture": f"U-Net, {config.levels} poolings, width {config.width}, "
                        f"{sum(t.numel() for t in best['state'].values() if t.is_floating_point()):,} "
                        f"parameters, fp16, input {size}x{size} grey, z-scored per image",
        "data": str(data),
        "data_sha256_16": data_digest(table),
        "images": {name: int(len(rows)) for name, rows in part.items()},
        "sites": {site: int(count) for site, count in table["site"].value_counts().sort_index().items()},
        "split": "by patient, stratified by site; test patients never used for training or model selection",
        "best_epoch": best["epoch"],
        "val_dice": round(best["val_dice"], 4),
        "test_dice_mean": round(float(np.mean(test_dice)), 4),
        "test_dice_median": round(float(np.median(test_dice)), 4),
        "test_dice_min": round(float(np.min(test_dice)), 4),
        "test_dice_by_site": per_site,
        "test_fallbacks": int(sum(not r.found for r in results)),
        "test_dice_measured": "at each mask's own resolution, after upsampling and clean-up (as in prediction)",
        "config": config.model_dump(),
        "command": command,
        "torch_version": torch.__version__,
        "wall_time_s": round(time.perf_counter() - started, 1),
    }
    out.mkdir(parents=True, exist_ok=True)
    torch.save(weights, out / WEIGHTS_NAME)
    stem = WEIGHTS_NAME.rsplit(".", 1)[0]
    (out / f"{stem}.json").write_text(json.dumps(card, indent=2) + "\n")
    (out / f"{stem}.md").write_text(card_markdown(card))
    table.to_csv(out / "split.csv", index=False)
    pd.DataFrame(history).to_csv(out / "metrics.csv", index=False)
    pd.DataFrame({"path": table["path"][test_rows].to_numpy(), "site": table["site"][test_rows].to_numpy(),
                  "dice": np.round(test_dice, 4), "lung_found": [r.found for r in results]}
                 ).to_csv(out / "test_dice.csv", index=False)
    return card


def card_markdown(card: dict) -> str:
    """The model card as markdown (written next to the weights)."""
    sites = ", ".join(f"{site} {count}" for site, count in card["sites"].items())
    by_site = ", ".join(f"{site} {value:.4f}" for site, value in card["test_dice_by_site"].items())
    return f"""# Lung segmenter `{card['weights']}` (digest `{card['weights_digest']}`)

{card['architecture']}.

## Data
`{card['data']}` (sha256 of images + masks, first 16 hex: `{card['data_sha256_16']}`): images with a lung
mask, {sites}. Montgomery masks are manual; Shenzhen masks are by Stirenko et al. 2018 (CC BY-NC-SA 4.0).
Split {card['split']}: train {card['images']['train']}, validation {card['images']['val']},
test {card['images']['test']} patients (one image per patient).

## Held-out patients
Dice on the {card['images']['test']} test patients, {card['test_dice_measured']}:
**mean {card['test_dice_mean']:.4f}**, median {card['test_dice_median']:.4f}, min {card['test_dice_min']:.4f};
by site: {by_site}. No plausible lung found (whole-image fallback): {card['test_fallbacks']}.
Validation Dice {card['val_dice']:.4f} at epoch {card['best_epoch']} (the epoch kept).

## Reproduce
```
{card['command']}
```
Seed {card['config']['seed']}; settings: {json.dumps(card['config'])}; torch {card['torch_version']};
{card['wall_time_s']:.0f} s on the machine that trained it. Then copy `lung_unet.pt`, `lung_unet.json`
and `lung_unet.md` from the output folder to `src/cxrkit/segment/weights/`.

## Limits
Trained on adult frontal (PA/AP) radiographs from two sites; lateral views, children and other
images get a mask that may be wrong. Masks that are implausible (under 5% or over 80% of the image,
or spanning less than a quarter of it) fall back to the whole image, and cxrkit says so per image.
"""
