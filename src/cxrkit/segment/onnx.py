"""Run the lung U-Net with onnxruntime (no torch): the segmenter of exported ONNX models."""

from __future__ import annotations

import base64

import numpy as np

from cxrkit.segment.lungs import LungSegmenter

METADATA_KEY = "cxrkit_lung_segmenter"


def encode(model_bytes: bytes) -> str:
    """The segmenter's ONNX bytes as text for an ONNX metadata_props value."""
    return base64.b64encode(model_bytes).decode("ascii")


def onnx_segmenter(encoded: str, input_size: int, digest: str, options=None) -> LungSegmenter:
    """A LungSegmenter from base64 ONNX bytes (as embedded by `cxrkit export`)."""
    import onnxruntime

    session = onnxruntime.InferenceSession(base64.b64decode(encoded), options,
                                           providers=["CPUExecutionProvider"])
    name, output = session.get_inputs()[0].name, session.get_outputs()[0].name

    def run(batch: np.ndarray) -> np.ndarray:
        return session.run([output], {name: batch})[0]

    return LungSegmenter(run, input_size, digest, "onnx")
