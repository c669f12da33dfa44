"""Flags from OOD scores, and the probe images every chest X-ray model must flag (no torch here).

The reference and the scores themselves come from cxrkit.ood.reference (PyTorch) or from the
exported ONNX graph's `ood_score` output, so this module serves both runtimes.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np

from cxrkit.errors import CxrkitError

OOD_FORMAT = "cxrkit-ood-v1"
EXPECTED_IN_DISTRIBUTION_MAX = 0.05


def check_reference(reference: object, source: str) -> dict:
    """The checkpoint's `ood` entry, validated; a clear error when it is malformed."""
    keys = ("layers", "means", "precisions", "scales", "threshold")
    if not isinstance(reference, dict) or reference.get("format") != OOD_FORMAT or any(
            key not in reference for key in keys):
        raise CxrkitError(f"{source}: the out-of-distribution reference is malformed; recompute "
                          "it with `cxrkit ood RUN --overwrite`")
    return reference


def reference_summary(reference: dict | None) -> dict | None:
    """The reference without its tensors: what metadata, reports and the API show."""
    if reference is None:
        return None
    keep = ("method", "layers", "feature_sizes", "threshold", "percentile", "n_train", "n_val",
            "val_flagged_share")
    return {key: reference[key] for key in keep if key in reference}


def flag_summary(scores: np.ndarray, threshold: float) -> dict:
    """How many images are flagged, their share, and whether that calls for a warning."""
    flagged = int((scores > threshold).sum())
    share = flagged / len(scores) if len(scores) else 0.0
    return {"n": int(len(scores)), "n_flagged": flagged, "share_flagged": share,
            "threshold": float(threshold), "warn": share > EXPECTED_IN_DISTRIBUTION_MAX}


def warning_text(summary: dict) -> str:
    """One line for the console and the report."""
    text = (f"{summary['n_flagged']} of {summary['n']} images ({summary['share_flagged']:.1%}) are "
            "out of distribution: unlike the training images in the model's feature space")
    if summary["warn"]:
        return (f"OUT OF DISTRIBUTION: {text}. Above {EXPECTED_IN_DISTRIBUTION_MAX:.0%}, these "
                "are probably not images this model was trained for (another kind of image, "
                "view, population or site); its outputs on them are not trustworthy.")
    return f"{text} (about 1% is expected for images like the training data)."


def probe_images(xray_paths: Sequence[str | Path], n: int = 200, seed: int = 0
                 ) -> list[tuple[str, np.ndarray]]:
    """`n` images a chest X-ray model must flag: (kind, uint8 grey image) pairs.

    A third each of: non-chest photos and drawings (scikit-image's bundled sample images,
    randomly cropped and flipped), lateral-like views (X-rays rotated 90 degrees either way)
    and inverted X-rays (negatives), the X-rays drawn from `xray_paths`.
    """
    from skimage import data as samples

    from cxrkit.data.io import read_gray, to_gray

    names = ["astronaut", "camera", "coffee", "chelsea", "rocket", "moon", "page", "text",
             "clock", "coins", "grass", "gravel", "brick", "checkerboard", "horse", "hubble_deep_field",
             "immunohistochemistry", "logo", "retina", "cell", "colorwheel", "microaneurysms"]
    photos = []
    for name in names:
        try:
            image = np.asarray(getattr(samples, name)())
        except Exception:  # a sample that needs a download (pooch) is left out
            continue
        photos.append(to_gray(image.astype(np.uint8) * 255 if image.dtype == bool else image))
    if not photos or not xray_paths:
        raise CxrkitError("probe images need scikit-image's sample images and some X-ray files")
    rng = np.random.default_rng(seed)
    xrays = [Path(p) for p in rng.choice(np.asarray(xray_paths, dtype=object),
                                         size=min(len(xray_paths), n), replace=False)]
    probes: list[tuple[str, np.ndarray]] = []
    for index in range(n):
        kind = ("non-chest", "rotated-90", "inverted")[index % 3]
        if kind == "non-chest":
            image = photos[index // 3 % len(photos)]
            height, width = image.shape
            crop = rng.uniform(0.6, 1.0)
            h, w = max(16, int(height * crop)), max(16, int(width * crop))
            top, left = rng.integers(0, height - h + 1), rng.integers(0, width - w + 1)
            image = image[top:top + h, left:left + w]
            image = image[:, ::-1] if rng.random() < 0.5 else image
        else:
            image = read_gray(xrays[index % len(xrays)])
            image = np.rot90(image, 1 if rng.random() < 0.5 else -1) if kind == "rotated-90" else 255 - image
        probes.append((kind, np.ascontiguousarray(image)))
    return probes
