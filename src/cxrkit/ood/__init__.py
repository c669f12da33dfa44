"""Out-of-distribution warning: is an image unlike the images the model was trained on?

`cxrkit.ood.reference` computes and applies the reference (PyTorch); `cxrkit.ood.flags` turns
scores into flags and warnings and builds probe images (torch-free, for the ONNX runtime).
"""

from cxrkit.ood.flags import flag_summary, ood_flag_rates, probe_images, warning_text

__all__ = ["flag_summary", "ood_flag_rates", "probe_images", "warning_text"]
