"""Export a run's model to ONNX or TorchScript, with its contract, and check it matches PyTorch.

The exported graph takes prepared uint8 images (N, 1, H, W: lung focus, enhancement and resize
done, `Predictor.prepare`) with a dynamic batch axis, normalises them itself (the same
`cxrkit.data.normalise.Normaliser` as in training) and returns class probabilities, and, when
the run has an out-of-distribution reference, a second output `ood_score` computed inside the
graph (see cxrkit.ood). The run's model card (classes, positive class, preprocessing contract,
frozen operating points, test metrics, OOD threshold; the same card the PyTorch Predictor
reads) travels inside the file (ONNX metadata_props key `cxrkit`, or the TorchScript extra file
`cxrkit.json`), so the exported file stands on its own.
A run that focuses on the lungs also carries its lung segmenter as ONNX (metadata_props key
`cxrkit_lung_segmenter`, or the TorchScript extra file `lung_segmenter.onnx`), so the ONNX
runtime path needs no torch.
"""

from __future__ import annotations

import json
import os
import tempfile
import warnings
from pathlib import Path

import numpy as np

from cxrkit.errors import CxrkitError
from cxrkit.inference import predictor_from_checkpoint
from cxrkit.onnx_predictor import METADATA_FORMAT, METADATA_KEY
from cxrkit.run import ModelCard, RunFolder
from cxrkit.version import __version__

FORMATS = ("onnx", "torchscript")
DEFAULT_NAMES = {"onnx": "model.onnx", "torchscript": "model.torchscript.pt"}
INPUT_NAME = "image"
OUTPUT_NAME = "probabilities"
OOD_OUTPUT_NAME = "ood_score"
CHECK_BATCH_SIZES = (1, 5)


def export_metadata(card: ModelCard, checkpoint: dict) -> dict:
    """Everything a runtime needs besides the graph: the run's model card (the same as the
    PyTorch Predictor reads), the graph's input and output names and the lung segmenter's id."""
    return {
        "format": METADATA_FORMAT,
        "card": card.to_dict(),
        "input": INPUT_NAME,
        "output": OUTPUT_NAME,
        "ood_output": OOD_OUTPUT_NAME if card.ood else None,
        "cxrkit_version": __version__,
        **({"lung_segmenter": _segmenter_summary(checkpoint["segmenter"])} if "segmenter" in checkpoint else {}),
    }


def _segmenter_summary(weights: dict) -> dict:
    from cxrkit.segment.weights import weights_digest

    return {"digest": weights_digest(weights), "input_size": int(weights["input_size"])}


def export_model(run_dir: str | Path, format: str = "onnx", out: str | Path | None = None,
                 overwrite: bool = False) -> dict:
    """Export the run's model; returns the path, format, model id and the check against PyTorch.

    `max_abs_diff` is the largest absolute difference in probabilities between the exported
    model and PyTorch on a few generated images, at batch sizes 1 and 5 (dynamic batch axis);
    `ood_max_rel_diff` the largest relative difference in OOD score (None without a reference).
    """
    if format not in FORMATS:
        raise CxrkitError(f"format={format}: choose one of {', '.join(FORMATS)}")
    run = RunFolder(run_dir)
    checkpoint = run.read_checkpoint()
    out = Path(out).expanduser() if out is not None else run.path / DEFAULT_NAMES[format]
    if out.exists() and not overwrite:
        raise CxrkitError(f"{out} already exists; pass overwrite=True to replace it "
                          "or give another `out`")
    if not out.parent.is_dir():
        raise CxrkitError(f"out={out}: folder {out.parent} does not exist; create it first")

    predictor = predictor_from_checkpoint(run, checkpoint)
    metadata = export_metadata(predictor.card, checkpoint)
    wrapped = _probability_model(predictor)
    output_names = [OUTPUT_NAME] + ([OOD_OUTPUT_NAME] if metadata["ood_output"] else [])
    check_inputs, described = _check_batches(predictor, run)
    writer = _write_onnx if format == "onnx" else _write_torchscript
    segmenter = _segmenter_onnx(checkpoint)
    _write_atomically(out, lambda path: writer(wrapped, check_inputs[0], metadata, path, segmenter))
    run_exported = _run_onnx if format == "onnx" else _run_torchscript
    pairs = [(run_exported(out, batch, output_names), _run_torch(wrapped, batch))
             for batch in check_inputs]
    max_abs_diff = max(float(np.abs(exported[0] - torch_[0]).max()) for exported, torch_ in pairs)
    ood_diff = None
    if metadata["ood_output"]:
        ood_diff = max(float((np.abs(exported[1] - torch_[1]) / np.maximum(np.abs(torch_[1]), 1e-6)
                              ).max()) for exported, torch_ in pairs)
    return {"path": out, "format": format, "model_id": predictor.model_id,
            "decision": predictor.operating_point().describe(),
            "max_abs_diff": max_abs_diff, "ood_max_rel_diff": ood_diff, "checked_on": described,
            "checked_batch_sizes": [len(batch) for batch in check_inputs]}


def _probability_model(predictor):
    """The normaliser, the model and softmax (or the single-logit sigmoid pair), as one module
    taking prepared uint8 images (N, 1, H, W); with an OOD reference it returns
    (probabilities, ood_score)."""
    from torch import nn

    from cxrkit.data.normalise import Normaliser
    from cxrkit.inference import probabilities_from_logits

    single_logit, scorer = predictor.single_logit, predictor.ood_scorer

    class ProbabilityModel(nn.Module):
        def __init__(self):
            super().__init__()
            self.normaliser = Normaliser.from_preprocessing(predictor.preprocessing)
            self.model = predictor.model if scorer is None else scorer

        def forward(self, image):
            if scorer is None:
                return probabilities_from_logits(self.model(self.normaliser(image)), single_logit)
            logits, score = self.model(self.normaliser(image))
            return probabilities_from_logits(logits, single_logit), score

    return ProbabilityModel().eval()


def _check_batches(predictor, run: RunFolder) -> tuple[list[np.ndarray], str]:
    """Two batches (sizes 1 and 5) of prepared uint8 images (N, 1, H, W): the run's own images
    when they are readable, else smooth random grey images; and a description of which."""
    needed = sum(CHECK_BATCH_SIZES)
    images = []
    for path in _split_images(run, needed * 4):
        try:
            images.append(predictor.prepare(path))
        except CxrkitError:
            continue
        if len(images) == needed:
            break
    if len(images) == needed:
        prepared = np.stack(images)
        described = f"{needed} images from split.csv"
    else:
        rng = np.random.default_rng(0)
        side = predictor.preprocessing.image_size
        ramp = np.linspace(0, 200, side, dtype=np.float32)
        noisy = ramp[None, None, :] + rng.normal(0, 25, (needed, side, side)).astype(np.float32)
        prepared = np.clip(noisy, 0, 255).astype(np.uint8)
        described = f"{needed} generated images (no readable images in {run.path}/split.csv)"
    batch = prepared[:, None]
    return [batch[:CHECK_BATCH_SIZES[0]], batch[CHECK_BATCH_SIZES[0]:]], described


def _split_images(run: RunFolder, count: int) -> list[Path]:
    """Up to `count` existing files listed in the run's split.csv (val and test rows first)."""
    try:
        table = run.split()
    except CxrkitError:
        return []
    rows = table.sort_values("split", key=lambda split: split == "train", kind="stable")
    files = [Path(path) for path in rows["path"].head(count) if path]
    return [path for path in files if path.is_file()]


def _write_atomically(out: Path, write) -> None:
    """Write through a temporary file next to `out`, so a failed export leaves nothing behind."""
    handle, temporary = tempfile.mkstemp(dir=out.parent, prefix=f".{out.name}.", suffix=".tmp")
    os.close(handle)
    try:
        write(Path(temporary))
        os.chmod(temporary, 0o644)
        os.replace(temporary, out)
    finally:
        if os.path.exists(temporary):
            os.remove(temporary)


def _segmenter_onnx(checkpoint: dict) -> bytes | None:
    """The run's lung segmenter as ONNX bytes, or None when the run uses no lungs."""
    if "segmenter" not in checkpoint:
        return None
    from cxrkit.segment.weights import onnx_bytes

    try:
        return onnx_bytes(checkpoint["segmenter"])
    except Exception as error:
        raise CxrkitError(f"ONNX export of the lung segmenter failed ({error})") from error


def _write_onnx(model, example: np.ndarray, metadata: dict, path: Path, segmenter: bytes | None = None) -> None:
    import onnx
    import torch

    batch = torch.export.Dim("batch", min=1)
    example_batch = torch.from_numpy(np.concatenate([example, example]))
    try:
        program = torch.onnx.export(
            model, (example_batch,), input_names=[INPUT_NAME],
            output_names=[OUTPUT_NAME] + ([OOD_OUTPUT_NAME] if metadata["ood_output"] else []),
            dynamic_shapes=({0: batch},), external_data=False, verbose=False)
    except Exception as error:
        raise CxrkitError(f"ONNX export of {metadata['card']['model'].get('name')} failed ({error}); "
                          "try format=torchscript") from error
    proto = program.model_proto
    proto.producer_name = "cxrkit"
    proto.producer_version = __version__
    card = metadata["card"]
    proto.doc_string = f"cxrkit {card['model_id']}: classes {', '.join(card['classes'])}"
    entry = proto.metadata_props.add()
    entry.key, entry.value = METADATA_KEY, json.dumps(metadata)
    if segmenter is not None:
        from cxrkit.segment.onnx import METADATA_KEY as SEGMENTER_KEY
        from cxrkit.segment.onnx import encode

        entry = proto.metadata_props.add()
        entry.key, entry.value = SEGMENTER_KEY, encode(segmenter)
    onnx.save(proto, path)


def _write_torchscript(model, example: np.ndarray, metadata: dict, path: Path,
                       segmenter: bytes | None = None) -> None:
    import torch

    extra = {"cxrkit.json": json.dumps(metadata), **({"lung_segmenter.onnx": segmenter} if segmenter else {})}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)  # TorchScript is deprecated upstream
        traced = torch.jit.trace(model, torch.from_numpy(example))
        torch.jit.save(traced, str(path), _extra_files=extra)


def _as_arrays(outputs) -> list[np.ndarray]:
    return [o.numpy() for o in outputs] if isinstance(outputs, (tuple, list)) else [outputs.numpy()]


def _run_torch(model, batch: np.ndarray) -> list[np.ndarray]:
    import torch

    with torch.inference_mode():
        return _as_arrays(model(torch.from_numpy(batch)))


def _run_onnx(path: Path, batch: np.ndarray, output_names: list[str]) -> list[np.ndarray]:
    import onnxruntime

    session = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    return session.run(output_names, {INPUT_NAME: batch})


def _run_torchscript(path: Path, batch: np.ndarray, output_names: list[str]) -> list[np.ndarray]:
    import torch

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)
        model = torch.jit.load(str(path), map_location="cpu")
    with torch.inference_mode():
        return _as_arrays(model(torch.from_numpy(batch)))
