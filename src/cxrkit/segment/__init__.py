"""Lung fields: a compact U-Net trained by `cxrkit segment train`, shipped weights, numpy pre/post-processing."""

from cxrkit.segment.lungs import LungResult, LungSegmenter

__all__ = ["LungResult", "LungSegmenter"]
