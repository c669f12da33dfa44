"""Run an exported ONNX model with onnxruntime: the Predictor surface without torch.

Everything besides the graph is read from the file's `cxrkit` metadata written by `cxrkit
export`: the model card (classes, positive class, preprocessing contract, frozen operating
points, test metrics, the OOD reference's summary), the same card the run's model.ckpt holds.
The OOD score is the graph's second output. A model that focuses on the lungs carries its lung
segmenter as a second ONNX graph in the metadata (key `cxrkit_lung_segmenter`). Images are
prepared by the same numpy code as in training and normalised inside the graph
(`cxrkit.data.normalise.Normaliser`, exported with the model), so nothing here imports torch.
Files exported before the graph normalised (cxrkit-onnx-v1 with a float32 input) still run:
for those the input is normalised here, by `_legacy_graph_input`; files exported before the
card get one built from their metadata keys.
"""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import numpy as np

from cxrkit.data.preprocess import PIXEL_MAX, Preprocessing
from cxrkit.errors import CxrkitError
from cxrkit.inference import BasePredictor
from cxrkit.run import ModelCard

METADATA_KEY = "cxrkit"
METADATA_FORMAT = "cxrkit-onnx-v1"


class OnnxPredictor(BasePredictor):
    """Probabilities and decisions for images from an exported ONNX model, like
    `cxrkit.inference.Predictor`."""

    def __init__(self, session, card: ModelCard, metadata: dict, path: Path, segmenter=None):
        self.session = session
        self.path = path
        self.card = card
        self.run_dir = None
        self._input = metadata.get("input", session.get_inputs()[0].name)
        self._output = metadata.get("output", session.get_outputs()[0].name)
        self.ood = card.ood
        self.ood_threshold = None if card.ood is None else float(card.ood["threshold"])
        ood_output = metadata.get("ood_output") or (metadata.get("ood") or {}).get("output")
        self._outputs_wanted = [self._output] + ([ood_output] if self.ood else [])
        self.segmenter = segmenter
        input_types = {node.name: node.type for node in session.get_inputs()}
        self.graph_normalises = input_types.get(self._input) == "tensor(uint8)"

    @property
    def test_metrics(self) -> dict | None:
        return self.card.test_metrics

    def _outputs(self, batch: np.ndarray) -> tuple[np.ndarray, np.ndarray | None]:
        feed = batch[:, None] if self.graph_normalises else _legacy_graph_input(batch, self.preprocessing)
        results = self.session.run(self._outputs_wanted, {self._input: feed})
        return results[0], results[1] if self.ood else None


def metadata_card(metadata: dict, path: Path) -> ModelCard:
    """The model card in the metadata; files exported before the card get one from their keys."""
    if "card" in metadata:
        return ModelCard.from_dict(metadata["card"], str(path))
    old = ModelCard.from_checkpoint(metadata, str(path))
    return replace(old, model_id=metadata.get("model_id", path.name),
                   operating_points=metadata.get("operating_point"),
                   test_metrics=metadata.get("test_metrics"))


def _legacy_graph_input(prepared: np.ndarray, prep: Preprocessing) -> np.ndarray:
    """Float32 (N, C, H, W) input for a graph exported before it normalised itself: what
    `cxrkit.data.normalise.Normaliser` computes, in numpy (tests/test_normalise.py pins the two)."""
    scaled = np.repeat(prepared[:, None].astype(np.float32) / PIXEL_MAX, prep.channels, axis=1)
    mean = np.asarray(prep.mean, dtype=np.float32)[None, :, None, None]
    std = np.asarray(prep.std, dtype=np.float32)[None, :, None, None]
    return (scaled - mean) / std


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
    try:
        card = metadata_card(metadata, path)
        card.points()  # a malformed frozen point is refused now, not at the first prediction
        segmenter = _segmenter(session, card, metadata, path, threads)
        return OnnxPredictor(session, card, metadata, path, segmenter)
    except (KeyError, TypeError, ValueError, AttributeError) as error:
        raise CxrkitError(f"{path}: the cxrkit metadata is malformed ({type(error).__name__}: {error}); "
                          "export the run again with `cxrkit export RUN`") from error
    except CxrkitError as error:
        reason = str(error).removeprefix(f"{path}: ")
        raise CxrkitError(f"{path}: the cxrkit metadata is malformed ({reason}); export the run "
                          "again with `cxrkit export RUN`") from error


def _segmenter(session, card: ModelCard, metadata: dict, path: Path, threads: int | None):
    """The embedded lung segmenter when the preprocessing uses the lungs, else None."""
    if not card.preprocessing.uses_lungs:
        return None
    from cxrkit.segment.onnx import METADATA_KEY as SEGMENTER_KEY
    from cxrkit.segment.onnx import onnx_segmenter

    encoded = session.get_modelmeta().custom_metadata_map.get(SEGMENTER_KEY)
    about = metadata.get("lung_segmenter") or {}
    if not encoded or "input_size" not in about:
        raise CxrkitError(f"{path}: the model focuses on the lungs but carries no lung segmenter; "
                          "re-export it with `cxrkit export RUN --format onnx`")
    try:
        return onnx_segmenter(encoded, int(about["input_size"]), about["digest"])
    except Exception as error:
        raise CxrkitError(f"{path}: its embedded lung segmenter does not load ({error}); "
                          "re-export it with `cxrkit export RUN --format onnx`") from error
