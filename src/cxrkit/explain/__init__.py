"""Explanations that are checked: heatmaps from six methods, pictures, and faithfulness tests.

from cxrkit.explain import explain, save_overlay
explanation = explain(cxrkit.load("runs/tb"), "image.png", method="gradcam")
"""

from cxrkit.explain.methods import METHODS, Explanation, explain, training_background
from cxrkit.explain.overlay import overlay, panel, save_overlay

__all__ = [
    "METHODS",
    "Explanation",
    "explain",
    "overlay",
    "panel",
    "save_overlay",
    "training_background",
]
