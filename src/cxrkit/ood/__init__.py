"""Out-of-distribution warning: is an image unlike the images the model was trained on?

`cxrkit.ood.reference` computes and applies the reference (PyTorch); `cxrkit.ood.flags` turns
scores into flags and warnings and builds probe images (torch-free, for the ONNX runtime);
`cxrkit.ood.runs` adds a reference to a run folder and measures a run's flag rates.
"""

from cxrkit.ood.flags import flag_summary, probe_images, warning_text
from cxrkit.ood.runs import ood_flag_rates

__all__ = ["flag_summary", "ood_flag_rates", "probe_images", "warning_text"]
