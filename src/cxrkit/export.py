"""Export a run's model to ONNX or TorchScript, with its contract, and check it matches PyTorch.

The exported graph takes prepared uint8 images (N, 1, H, W: lung focus, enhancement and resize
done, `Predictor.prepare`) with a dynamic batch axis, normalises them itself (the same
`cxrkit.data.normalise.Normaliser` as in training) and returns class probabilities, and, when
the run has an out-of-distribution reference, a second output `ood_score` computed inside the
graph (see cxrkit.ood). The preprocessing contract, class names,
single-logit flag, the OOD threshold, the run's operating point and test metrics travel inside
the file (ONNX metadata_props key `cxrkit`, or the TorchScript extra file `cxrkit.json`), so the
exported file stands on its own.
A run that focuses on the lungs also carries its lung segmenter as ONNX (metadata_props key
`cxrkit_lung_segmenter`, or the TorchScript extra file `lung_segmenter.onnx`), so the ONNX
runtime path needs no torch.
"""

from __future__ import annotations

import csv
import hashlib
import json
import os
import tempfile
import warnings
from pathlib import Path

import numpy as np

from cxrkit import __version__
from cxrkit.errors import CxrkitError
from cxrkit.inference import load_torch_predictor, read_checkpoint, resolve_checkpoint
from cxrkit.onnx_predictor import METADATA_FORMAT, METADATA_KEY
from cxrkit.ood.flags import reference_summary

FORMATS = ("onnx", "torchscript")
DEFAULT_NAMES = {"onnx": "model.onnx", "torchscript": "model.torchscript.pt"}
INPUT_NAME = "image"
OUTPUT_NAME = "probabilities"
OOD_OUTPUT_NAME = "ood_score"
CHECK_BATCH_SIZES = (1, 5)


def file_sha256(path: Path) -> str:
    """sha256 hex digest of a file."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def run_model_id(run_dir: Path) -> str:
    """Id naming the exact weights: run name, `@`, 12 hex digits of model.ckpt's sha256."""
    return f"{run_dir.name}@{file_sha256(run_dir / 'model.ckpt')[:12]}"


def frozen_operating_point(run_dir: Path) -> dict | None:
    """The run's operating_points.json, refused if it was chosen for other weights."""
    points = read_run_json(run_dir, "operating_points.json")
    fingerprint = (points or {}).get("model_sha256")
    if fingerprint and fingerprint != file_sha256(run_dir / "model.ckpt"):
        raise CxrkitError(f"{run_dir}/operating_points.json was chosen for a different model.ckpt; "
                          f"re-evaluate the run first (`cxrkit evaluate {run_dir} --overwrite`)")
    return points


def read_run_json(run_dir: Path, name: str) -> dict | None:
    """A JSON file of the run (operating_points.json, test_metrics.json), or None if absent."""
    path = run_dir / name
    if not path.is_file():
        return None
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError) as error:
        raise CxrkitError(f"{path}: not readable JSON ({error}); "
                          "re-run `cxrkit evaluate`") from error


def export_metadata(run_dir: Path, checkpoint: dict) -> dict:
    """Everything a runtime needs besides the graph: contract, classes, operating point, metrics."""
    ood = reference_summary(checkpoint.get("ood"))
    return {
        "format": METADATA_FORMAT,
        "model_id": run_model_id(run_dir),
        "classes": list(checkpoint["classes"]),
        "preprocessing": checkpoint["preprocessing"],
        "single_logit": bool(checkpoint.get("single_logit", False)),
        "model": checkpoint["model"],
        "info": {"model_name": checkpoint["model"]["name"], **checkpoint.get("info", {})},
        "operating_point": frozen_operating_point(run_dir),
        "test_metrics": read_run_json(run_dir, "test_metrics.json"),
        "input": INPUT_NAME,
        "output": OUTPUT_NAME,
        "ood": None if ood is None else {**ood, "output": OOD_OUTPUT_NAME},
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
        raise CxrkitError(f"--format {format}: choose one of {', '.join(FORMATS)}")
    checkpoint_path = resolve_checkpoint(run_dir)
    run_dir = checkpoint_path.parent
    out = Path(out).expanduser() if out is not None else run_dir / DEFAULT_NAMES[format]
    if out.exists() and not overwrite:
        raise CxrkitError(f"{out} already exists; pass --overwrite to replace it "
                          "or --out another file")
    if not out.parent.is_dir():
        raise CxrkitError(f"--out {out}: folder {out.parent} does not exist; create it first")

    predictor = load_torch_predictor(checkpoint_path)
    checkpoint = read_checkpoint(checkpoint_path)
    metadata = export_metadata(run_dir, checkpoint)
    wrapped = _probability_model(predictor)
    output_names = [OUTPUT_NAME] + ([OOD_OUTPUT_NAME] if metadata["ood"] else [])
    check_inputs, described = _check_batches(predictor, run_dir / "split.csv")
    writer = _write_onnx if format == "onnx" else _write_torchscript
    segmenter = _segmenter_onnx(checkpoint)
    _write_atomically(out, lambda path: writer(wrapped, check_inputs[0], metadata, path, segmenter))
    run_exported = _run_onnx if format == "onnx" else _run_torchscript
    pairs = [(run_exported(out, batch, output_names), _run_torch(wrapped, batch))
             for batch in check_inputs]
    max_abs_diff = max(float(np.abs(exported[0] - torch_[0]).max()) for exported, torch_ in pairs)
    ood_diff = None
    if metadata["ood"]:
        ood_diff = max(float((np.abs(exported[1] - torch_[1]) / np.maximum(np.abs(torch_[1]), 1e-6)
                              ).max()) for exported, torch_ in pairs)
    return {"path": out, "format": format, "model_id": metadata["model_id"],
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


def _check_batches(predictor, split_file: Path) -> tuple[list[np.ndarray], str]:
    """Two batches (sizes 1 and 5) of prepared uint8 images (N, 1, H, W): the run's own images
    when they are readable, else smooth random grey images; and a description of which."""
    needed = sum(CHECK_BATCH_SIZES)
    images = []
    for path in _split_images(split_file, needed * 4):
        try:
            images.append(predictor.prepare(path))
        except CxrkitError:
            continue
        if len(images) == needed:
            break
    if len(images) == needed:
        prepared = np.stack(images)
        described = f"{needed} images from {split_file.name}"
    else:
        rng = np.random.default_rng(0)
        side = predictor.preprocessing.image_size
        ramp = np.linspace(0, 200, side, dtype=np.float32)
        noisy = ramp[None, None, :] + rng.normal(0, 25, (needed, side, side)).astype(np.float32)
        prepared = np.clip(noisy, 0, 255).astype(np.uint8)
        described = f"{needed} generated images (no readable images in {split_file})"
    batch = prepared[:, None]
    return [batch[:CHECK_BATCH_SIZES[0]], batch[CHECK_BATCH_SIZES[0]:]], described


def _split_images(split_file: Path, count: int) -> list[Path]:
    """Up to `count` existing files listed in the run's split.csv (val and test rows first)."""
    if not split_file.is_file():
        return []
    with open(split_file, newline="") as handle:
        rows = sorted(csv.DictReader(handle), key=lambda row: row.get("split") == "train")
    files = [Path(row["path"]) for row in rows[:count] if row.get("path")]
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
            output_names=[OUTPUT_NAME] + ([OOD_OUTPUT_NAME] if metadata["ood"] else []),
            dynamic_shapes=({0: batch},), external_data=False, verbose=False)
    except Exception as error:
        raise CxrkitError(f"ONNX export of {metadata['info']['model_name']} failed ({error}); "
                          "try --format torchscript") from error
    proto = program.model_proto
    proto.producer_name = "cxrkit"
    proto.producer_version = __version__
    proto.doc_string = f"cxrkit {metadata['model_id']}: classes {', '.join(metadata['classes'])}"
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
