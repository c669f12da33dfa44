"""`load(path)`: the right predictor for a run folder, a model.ckpt or an exported ONNX file.

It sits above both runtimes (`cxrkit.inference` for PyTorch, `cxrkit.onnx_predictor` for
onnxruntime), so neither has to import the other.
"""

from __future__ import annotations

from pathlib import Path

from cxrkit.inference import BasePredictor, load_torch_predictor


def load(path: str | Path) -> BasePredictor:
    """A Predictor for a run folder or model.ckpt; an ONNX file gets the torch-free runtime."""
    path = Path(path).expanduser()
    if path.suffix.lower() == ".onnx":
        from cxrkit.onnx_predictor import load_onnx_predictor

        return load_onnx_predictor(path)
    return load_torch_predictor(path)
