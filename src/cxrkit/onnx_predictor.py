"""Run an exported ONNX model with onnxruntime: the Predictor surface without torch.

Everything besides the graph (classes, preprocessing contract, operating point, test
metrics) is read from the file's `cxrkit` metadata written by `cxrkit export`. Images are
prepared by the same numpy code as in training, so nothing here imports torch.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from cxrkit.data.io import to_gray
from cxrkit.data.preprocess import Preprocessing, normalise, prepare
from cxrkit.errors import CxrkitError
from cxrkit.inference import _as_list

METADATA_KEY = "cxrkit"
METADATA_FORMAT = "cxrkit-onnx-v1"


class OnnxPredictor:
    """Probabilities for images from an exported ONNX model, like `cxrkit.inference.Predictor`."""

    def __init__(self, session, metadata: dict, path: Path):
        self.session = session
        self.path = path
        self.classes = list(metadata["classes"])
        self.preprocessing = Preprocessing.from_dict(metadata["preprocessing"])
        self.single_logit = bool(metadata["single_logit"])
        self.info = dict(metadata.get("info", {}))
        self.model_id = metadata.get("model_id", path.name)
        self.operating_point = metadata.get("operating_point")
        self.test_metrics = metadata.get("test_metrics")
        self.run_dir = None
        self._input = metadata.get("input", session.get_inputs()[0].name)
        self._output = metadata.get("output", session.get_outputs()[0].name)

    def prepare(self, image) -> np.ndarray:
        """Decode, enhance and resize one input to the uint8 image the model sees."""
        return prepare(to_gray(image), self.preprocessing)

    def to_array(self, images) -> np.ndarray:
        """Model input batch (N, C, H, W) float32 for a list of inputs."""
        return normalise(np.stack([self.prepare(image) for image in images]), self.preprocessing)

    def predict_proba(self, images, batch_size: int = 32, progress=None) -> np.ndarray:
        """An (N, n_classes) array of probabilities; `progress` is called with each batch size."""
        images = _as_list(images)
        outputs = []
        for start in range(0, len(images), batch_size):
            batch = self.to_array(images[start:start + batch_size])
            outputs.append(self.session.run([self._output], {self._input: batch})[0])
            if progress is not None:
                progress(len(batch))
        if not outputs:
            return np.zeros((0, len(self.classes)), dtype=np.float32)
        return np.concatenate(outputs).astype(np.float32)

    def predict(self, images, batch_size: int = 32) -> list[str]:
        """The most probable class name for each input."""
        probabilities = self.predict_proba(images, batch_size)
        return [self.classes[i] for i in probabilities.argmax(axis=1)]


def session_options(threads: int | None = None):
    """onnxruntime options: all graph optimisations; `threads` intra-op threads (None: ORT's)."""
    import onnxruntime

    options = onnxruntime.SessionOptions()
    options.graph_optimization_level = onnxruntime.GraphOptimizationLevel.ORT_ENABLE_ALL
    if threads:
        options.intra_op_num_threads = threads
    return options


def load_onnx_predictor(path: str | Path, threads: int | None = None) -> OnnxPredictor:
    """An OnnxPredictor for a `.onnx` file written by `cxrkit export`."""
    import onnxruntime

    path = Path(path).expanduser()
    if not path.is_file():
        raise CxrkitError(f"{path}: no such ONNX file; make one with `cxrkit export RUN`")
    try:
        session = onnxruntime.InferenceSession(
            str(path), session_options(threads), providers=["CPUExecutionProvider"])
    except Exception as error:
        raise CxrkitError(f"{path}: not a loadable ONNX model ({error})") from error
    raw = session.get_modelmeta().custom_metadata_map.get(METADATA_KEY)
    try:
        metadata = json.loads(raw) if raw else None
    except ValueError:
        metadata = None
    if not isinstance(metadata, dict) or metadata.get("format") != METADATA_FORMAT:
        raise CxrkitError(f"{path}: no cxrkit metadata (classes, preprocessing); "
                          "export it with `cxrkit export RUN --format onnx`")
    return OnnxPredictor(session, metadata, path)
