"""The lung U-Net's weight file: read it safely, name it by a digest, run it with torch, export it to ONNX.

A weight file is a plain dict saved with torch.save and read with `weights_only=True`:
`format`, `width`, `levels`, `input_size` and an fp16 `state_dict`.
"""

from __future__ import annotations

import hashlib
import io
import os
import threading
from contextlib import contextmanager
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

import numpy as np

from cxrkit.errors import CxrkitError
from cxrkit.segment.lungs import LungSegmenter

WEIGHTS_FORMAT = "cxrkit-lung-unet-v1"
WEIGHTS_NAME = "lung_unet.pt"
RETRAIN = ("cxrkit segment train --data ../shared/data/tb-nlm.csv --out runs/lung-unet, "
           "then copy runs/lung-unet/lung_unet.* to src/cxrkit/segment/weights/")


def default_weights_path() -> Path:
    """The weights shipped inside the package."""
    return Path(str(resources.files("cxrkit") / "segment" / "weights" / WEIGHTS_NAME))


def read_weights(path: str | Path | None = None) -> dict:
    """The weight dict at `path` (default: the shipped file), checked for format."""
    import torch

    path = Path(path).expanduser() if path is not None else default_weights_path()
    if not path.is_file():
        raise CxrkitError(f"{path}: lung segmenter weights missing; retrain them with {RETRAIN}")
    try:
        weights = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:
        raise CxrkitError(f"{path}: not a readable lung segmenter weight file ({error}); "
                          f"retrain it with {RETRAIN}") from error
    if not isinstance(weights, dict) or weights.get("format") != WEIGHTS_FORMAT:
        raise CxrkitError(f"{path}: not a cxrkit lung segmenter weight file (format {WEIGHTS_FORMAT})")
    return weights


def weights_digest(weights: dict) -> str:
    """16 hex digits of sha256 over the parameter names, shapes and values: names the weights."""
    digest = hashlib.sha256(f"{weights['width']}/{weights['levels']}/{weights['input_size']}".encode())
    for name in sorted(weights["state_dict"]):
        tensor = weights["state_dict"][name].detach().cpu().contiguous()
        digest.update(f"{name}:{tuple(tensor.shape)}:{tensor.dtype}".encode())
        digest.update(tensor.view(-1).view(dtype=__import__("torch").uint8).numpy().tobytes())
    return digest.hexdigest()[:16]


def build_network(weights: dict):
    """The LungUNet in float32 eval mode with the weights loaded."""
    from cxrkit.segment.unet import LungUNet

    network = LungUNet(weights["width"], weights["levels"])
    network.load_state_dict({name: tensor.float() if tensor.is_floating_point() else tensor
                             for name, tensor in weights["state_dict"].items()})
    return network.eval()


_ONE_THREAD = threading.Lock()
SHAPE_KEYS = ("format", "width", "levels", "input_size")


def _fresh_lock() -> None:
    global _ONE_THREAD
    _ONE_THREAD = threading.Lock()


os.register_at_fork(after_in_child=_fresh_lock)  # a forked worker never inherits a held lock


@contextmanager
def one_torch_thread():
    """Run torch on one intra-op thread inside the block (restored after).

    Float sums in a convolution depend on how many threads share them, so the lung network
    always runs on one: its masks are then the same bit for bit in this process and in any
    worker, whatever the core count (and one small image gains little from more threads).
    """
    import torch

    with _ONE_THREAD:
        threads = torch.get_num_threads()
        if threads != 1:
            torch.set_num_threads(1)
        try:
            yield
        finally:
            if threads != 1:
                torch.set_num_threads(threads)


@dataclass(frozen=True, eq=False)
class TorchSegmenterSpec:
    """A torch lung segmenter as plain data: the weight dict with numpy arrays (about 1 MB).

    A `torch_segmenter` pickles as this, so cache fills, predict's decode workers and spawned
    DataLoader workers get the segmenter; each process builds the network once
    (`cxrkit.segment.lungs.rebuilt`).
    """

    weights: dict
    digest: str
    backend: str = "torch"

    def build(self) -> LungSegmenter:
        import torch

        state = {name: torch.from_numpy(np.array(array)) for name, array in self.weights["state_dict"].items()}
        return torch_segmenter({**self.weights, "state_dict": state})


def torch_segmenter(weights: dict | str | Path | None = None) -> LungSegmenter:
    """A LungSegmenter running the weights with torch (a dict, a file, or None for the shipped file)."""
    import torch

    if not isinstance(weights, dict):
        weights = read_weights(weights)
    network = build_network(weights)

    def run(batch: np.ndarray) -> np.ndarray:
        with one_torch_thread(), torch.inference_mode():
            return network(torch.from_numpy(batch)).numpy()

    digest = weights_digest(weights)
    spec = TorchSegmenterSpec({**{key: weights[key] for key in SHAPE_KEYS if key in weights},
                               "state_dict": {name: tensor.detach().cpu().numpy()
                                              for name, tensor in weights["state_dict"].items()}}, digest)
    return LungSegmenter(run, int(weights["input_size"]), digest, "torch", spec)


def onnx_bytes(weights: dict) -> bytes:
    """The network as a serialised ONNX model (dynamic batch axis, input `image`, output `lung_logit`)."""
    import torch

    network = build_network(weights)
    size = int(weights["input_size"])
    example = torch.zeros(2, 1, size, size)
    program = torch.onnx.export(network, (example,), input_names=["image"], output_names=["lung_logit"],
                                dynamic_shapes=({0: torch.export.Dim("batch", min=1)},),
                                external_data=False, verbose=False)
    buffer = io.BytesIO()
    import onnx

    onnx.save(program.model_proto, buffer)
    return buffer.getvalue()
