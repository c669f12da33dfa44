"""Run the lung U-Net with onnxruntime (no torch): the segmenter of exported ONNX models."""

from __future__ import annotations

import base64
from dataclasses import dataclass

import numpy as np

from cxrkit.segment.lungs import LungSegmenter

METADATA_KEY = "cxrkit_lung_segmenter"


def encode(model_bytes: bytes) -> str:
    """The segmenter's ONNX bytes as text for an ONNX metadata_props value."""
    return base64.b64encode(model_bytes).decode("ascii")


@dataclass(frozen=True)
class OnnxSegmenterSpec:
    """An ONNX lung segmenter as plain data (its base64 model): what it pickles as, so predict's
    decode workers get it; each process builds the session once (`cxrkit.segment.lungs.rebuilt`)."""

    encoded: str
    input_size: int
    digest: str
    backend: str = "onnx"

    def build(self) -> LungSegmenter:
        return onnx_segmenter(self.encoded, self.input_size, self.digest)


def onnx_segmenter(encoded: str, input_size: int, digest: str) -> LungSegmenter:
    """A LungSegmenter from base64 ONNX bytes (as embedded by `cxrkit export`).

    The session runs on one thread, as the torch segmenter does, so its masks do not depend on
    the core count or on the process that computes them.
    """
    import onnxruntime

    options = onnxruntime.SessionOptions()
    options.graph_optimization_level = onnxruntime.GraphOptimizationLevel.ORT_ENABLE_ALL
    options.intra_op_num_threads = options.inter_op_num_threads = 1
    session = onnxruntime.InferenceSession(base64.b64decode(encoded), options,
                                           providers=["CPUExecutionProvider"])
    name, output = session.get_inputs()[0].name, session.get_outputs()[0].name

    def run(batch: np.ndarray) -> np.ndarray:
        return session.run([output], {name: batch})[0]

    return LungSegmenter(run, input_size, digest, "onnx", OnnxSegmenterSpec(encoded, input_size, digest))
