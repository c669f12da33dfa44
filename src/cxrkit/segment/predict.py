"""Lung masks and overlays for image files: what `cxrkit segment predict` writes."""

from __future__ import annotations

import csv
from pathlib import Path

import cv2
import numpy as np

from cxrkit.data.io import read_gray
from cxrkit.errors import CxrkitError
from cxrkit.segment.lungs import LungResult, LungSegmenter

OVERLAY_MARGIN = 0.1


def overlay(gray: np.ndarray, lungs: LungResult, margin: float = OVERLAY_MARGIN) -> np.ndarray:
    """An RGB picture: the X-ray, the lungs tinted green with their outline, the crop box in yellow.

    Where no plausible lung was found, a red frame says the whole image is used.
    """
    rgb = cv2.cvtColor(gray, cv2.COLOR_GRAY2RGB)
    thickness = max(1, round(max(gray.shape) / 256))
    if not lungs.found:
        cv2.rectangle(rgb, (0, 0), (gray.shape[1] - 1, gray.shape[0] - 1), (220, 40, 40), 3 * thickness)
        return rgb
    tint = rgb.copy()
    tint[lungs.mask] = (0.6 * tint[lungs.mask] + 0.4 * np.array([40, 200, 80])).astype(np.uint8)
    contours, _ = cv2.findContours(lungs.mask.astype(np.uint8), cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_SIMPLE)
    cv2.drawContours(tint, contours, -1, (40, 220, 80), thickness)
    top, bottom, left, right = lungs.box(margin)
    cv2.rectangle(tint, (left, top), (right - 1, bottom - 1), (240, 200, 40), thickness)
    return tint


def output_names(paths: list[str]) -> list[str]:
    """A unique file stem per input (the file name, numbered when two inputs share it)."""
    seen: dict[str, int] = {}
    names = []
    for path in paths:
        stem = Path(path).stem
        seen[stem] = seen.get(stem, 0) + 1
        names.append(stem if seen[stem] == 1 else f"{stem}-{seen[stem]}")
    return names


def predict_masks(segmenter: LungSegmenter, paths: list[str], out: Path, overwrite: bool = False,
                  margin: float = OVERLAY_MARGIN) -> dict:
    """Write <name>_mask.png (0/255), <name>_overlay.png and lungs.csv; refuse to replace files unasked."""
    names = output_names(paths)
    targets = [out / "lungs.csv"] + [out / f"{n}_{kind}.png" for n in names for kind in ("mask", "overlay")]
    existing = [t for t in targets if t.exists()]
    if existing and not overwrite:
        raise CxrkitError(f"{existing[0]} already exists ({len(existing)} file(s) would be replaced); "
                          "pass overwrite=True or choose another `out`")
    out.mkdir(parents=True, exist_ok=True)
    rows, failed = [], []
    for path, name in zip(paths, names, strict=True):
        try:
            gray = read_gray(path)
        except CxrkitError as error:
            failed.append(str(error))
            continue
        lungs = segmenter.segment(gray)
        mask = lungs.mask if lungs.found else np.zeros(gray.shape, dtype=bool)
        cv2.imwrite(str(out / f"{name}_mask.png"), mask.astype(np.uint8) * 255)
        cv2.imwrite(str(out / f"{name}_overlay.png"), cv2.cvtColor(overlay(gray, lungs, margin), cv2.COLOR_RGB2BGR))
        top, bottom, left, right = lungs.box(margin)
        rows.append({"path": path, "mask": f"{name}_mask.png", "overlay": f"{name}_overlay.png",
                     "lung_found": lungs.found, "certainty": lungs.certainty,
                     "lung_fraction": round(float(mask.mean()), 4),
                     "crop_top": top, "crop_bottom": bottom, "crop_left": left, "crop_right": right})
    with open(out / "lungs.csv", "w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(rows[0]) if rows else ["path"])
        writer.writeheader()
        writer.writerows(rows)
    fallback = [row["path"] for row in rows if not row["lung_found"]]
    return {"written": len(rows), "failed": failed, "fallback": len(fallback),
            "fallback_example": fallback[0] if fallback else None}


def overlay_grid(segmenter: LungSegmenter, paths: list[str], out: Path, margin: float = OVERLAY_MARGIN,
                 tile: int = 200, columns: int = 4) -> list[bool]:
    """Write one PNG of lung overlays (file name, `NO LUNG` where the whole image is used) to `out`.

    Returns lung_found for each image drawn; nothing is written when no image could be read.
    """
    tiles, found = [], []
    for path in paths:
        try:
            gray = read_gray(path)
        except CxrkitError:
            continue
        lungs = segmenter.segment(gray)
        found.append(lungs.found)
        picture = cv2.resize(overlay(gray, lungs, margin), (tile, tile), interpolation=cv2.INTER_AREA)
        caption = Path(path).name[:26] + ("" if lungs.found else "  NO LUNG")
        cv2.rectangle(picture, (0, tile - 18), (tile, tile), (0, 0, 0), -1)
        cv2.putText(picture, caption, (4, tile - 5), cv2.FONT_HERSHEY_SIMPLEX, 0.38,
                    (255, 255, 255) if lungs.found else (255, 90, 90), 1, cv2.LINE_AA)
        tiles.append(picture)
    if not tiles:
        return found
    tiles += [np.zeros_like(tiles[0])] * (-len(tiles) % columns)
    rows = [np.hstack(tiles[i:i + columns]) for i in range(0, len(tiles), columns)]
    out.parent.mkdir(parents=True, exist_ok=True)
    cv2.imwrite(str(out), cv2.cvtColor(np.vstack(rows), cv2.COLOR_RGB2BGR))
    return found


def overlay_examples(paths: list[str], found: list[bool | None], count: int = 8) -> list[str]:
    """Images to show: those without a plausible lung first, then evenly spread others."""
    missing = [p for p, f in zip(paths, found, strict=True) if f is False]
    others = [p for p, f in zip(paths, found, strict=True) if f is not False]
    chosen = missing[:count // 2]
    step = max(1, len(others) // max(1, count - len(chosen)))
    return chosen + others[::step][:count - len(chosen)]
