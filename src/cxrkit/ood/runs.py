"""The out-of-distribution reference of a run folder: add one to an existing run, and measure how
many images a run (or exported model) flags.

Above both runtimes and `cxrkit.ood.reference`: the Predictor imports the reference and the
flags, never this module. torch is imported only by `add_reference`, so the ONNX path that
imports `cxrkit.ood` stays torch-free.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np

from cxrkit.errors import CxrkitError
from cxrkit.inference import load_torch_predictor
from cxrkit.loader import load
from cxrkit.ood.flags import flag_summary, reference_summary


def ood_flag_rates(run, images: Sequence, batch_size: int = 32) -> dict:
    """Share of `images` (paths or arrays) flagged by a run folder, model.ckpt or .onnx file.

    Returns flag_summary's dict plus the scores; `run` may also be a loaded predictor.
    """
    predictor = load(run) if isinstance(run, (str, Path)) else run
    if predictor.ood_threshold is None:
        raise CxrkitError(f"{run}: no out-of-distribution reference; add one with `cxrkit ood RUN`")
    _, scores = predictor.predict_with_ood(list(images), batch_size)
    return {**flag_summary(scores, predictor.ood_threshold), "scores": scores}


def add_reference(run_dir: str | Path, overwrite: bool = False, batch_size: int = 64) -> dict:
    """Compute the OOD reference of an existing run from its split.csv and store it in model.ckpt.

    The weights are unchanged, so a frozen operating_points.json of this model is re-stamped
    with the new file's fingerprint. Returns the reference summary.
    """
    from cxrkit.data.normalise import model_input
    from cxrkit.ood.reference import fit_reference
    from cxrkit.run import RunFolder

    run = RunFolder(run_dir)
    predictor = load_torch_predictor(run.checkpoint_path, operating_points=False)
    if predictor.ood is not None and not overwrite:
        raise CxrkitError(f"{run.checkpoint_path} already has an out-of-distribution reference; pass "
                          "overwrite=True to recompute it")
    table = run.split()
    classes = {name: index for index, name in enumerate(predictor.classes)}
    prepared = {}
    for split in ("train", "val"):
        rows = table[table["split"] == split]
        images, labels = [], []
        for image_path, label in zip(rows["path"], rows["label"], strict=True):
            try:
                images.append(predictor.prepare(image_path))
                labels.append(classes[label])
            except (CxrkitError, KeyError):
                continue
        if not images:
            raise CxrkitError(f"{run.path}/split.csv: no readable {split} images; the reference needs them")
        prepared[split] = (np.stack(images), np.asarray(labels))
    reference = fit_reference(predictor.model, *prepared["train"], prepared["val"][0],
                              lambda batch: model_input(batch, predictor.preprocessing),
                              batch_size=batch_size)
    run.replace_ood_reference(reference, reference_summary(reference))
    return reference_summary(reference)
