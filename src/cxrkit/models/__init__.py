"""Model registry: every architecture by name, with its head, freezing and Grad-CAM layer."""

from cxrkit.models.registry import MODELS, build_model, cam_layer_name, count_parameters

__all__ = ["MODELS", "build_model", "cam_layer_name", "count_parameters"]
