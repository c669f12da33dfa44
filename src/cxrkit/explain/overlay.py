"""Pictures of an explanation: a colour map over the X-ray, and an image | overlay panel."""

from __future__ import annotations

from pathlib import Path

import matplotlib
import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.cm import ScalarMappable
from matplotlib.colors import Normalize
from matplotlib.figure import Figure
from PIL import Image

from cxrkit.errors import CxrkitError
from cxrkit.explain.methods import Explanation

COLORMAP = "jet"
METHOD_LABELS = {
    "gradcam": "Grad-CAM",
    "gradcam++": "Grad-CAM++",
    "lime": "LIME",
    "shap": "GradientSHAP",
    "occlusion": "Occlusion",
    "integrated-gradients": "Integrated gradients",
}


def overlay(explanation: Explanation, alpha: float = 0.6) -> np.ndarray:
    """uint8 HxWx3: the heatmap's colours over the grey image, opaque where evidence is strong."""
    gray = explanation.prepared.astype(np.float32)[..., None] / 255.0
    heat = explanation.heatmap.astype(np.float32)
    colours = matplotlib.colormaps[COLORMAP](heat)[..., :3]
    weight = alpha * heat[..., None]
    blended = (1 - weight) * gray + weight * colours
    return np.round(np.clip(blended, 0, 1) * 255).astype(np.uint8)


def panel_title(explanation: Explanation) -> str:
    """e.g. 'Grad-CAM for Tuberculosis (p = 0.934)'."""
    label = METHOD_LABELS.get(explanation.method, explanation.method)
    return f"{label} for {explanation.target_class} (p = {explanation.probability:.3f})"


def panel(explanation: Explanation, subtitle: str | None = None) -> np.ndarray:
    """uint8 RGB: the image the model saw beside the overlay, titled with class and probability."""
    figure = Figure(figsize=(8.4, 4.4), dpi=100, layout="constrained")
    canvas = FigureCanvasAgg(figure)
    left, right = figure.subplots(1, 2)
    left.imshow(explanation.prepared, cmap="gray", vmin=0, vmax=255)
    left.set_title("model input", fontsize=10)
    right.imshow(overlay(explanation))
    right.set_title("evidence for " + explanation.target_class, fontsize=10)
    for axis in (left, right):
        axis.axis("off")
    colour_bar = figure.colorbar(ScalarMappable(Normalize(0, 1), COLORMAP), ax=[left, right], fraction=0.04)
    colour_bar.set_label("relative evidence", fontsize=9)
    figure.suptitle(panel_title(explanation) + (f"\n{subtitle}" if subtitle else ""), fontsize=11)
    canvas.draw()
    return np.asarray(canvas.buffer_rgba())[..., :3].copy()


def output_paths(out_dir: str | Path, stem: str) -> dict[str, Path]:
    """Where save_overlay writes: <stem>.heatmap.npy, <stem>.overlay.png, <stem>.panel.png."""
    out_dir = Path(out_dir)
    return {
        kind: out_dir / f"{stem}.{kind}.{suffix}"
        for kind, suffix in (("heatmap", "npy"), ("overlay", "png"), ("panel", "png"))
    }


def save_overlay(
    explanation: Explanation,
    out_dir: str | Path,
    stem: str,
    overwrite: bool = False,
    subtitle: str | None = None,
) -> dict[str, Path]:
    """Write the heatmap (.npy), overlay and panel PNGs; refuse to replace files unless told."""
    paths = output_paths(out_dir, stem)
    existing = [str(p) for p in paths.values() if p.exists()]
    if existing and not overwrite:
        raise CxrkitError(f"{existing[0]} already exists; pass overwrite=True to replace it or another "
                          "`out_dir` to write elsewhere")
    Path(out_dir).mkdir(parents=True, exist_ok=True)
    np.save(paths["heatmap"], explanation.heatmap)
    Image.fromarray(overlay(explanation)).save(paths["overlay"])
    Image.fromarray(panel(explanation, subtitle)).save(paths["panel"])
    return paths
