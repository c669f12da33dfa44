"""model.ckpt on disk: loaded with `weights_only=True` only, written atomically.

A checkpoint is a plain dict of tensors and values: `format`, `card` (the ModelCard's facts
fixed at training), `state_dict`, `ood` (the out-of-distribution reference's tensors, or None)
and, for runs that focus on the lungs, `segmenter` (the lung U-Net's weights). Checkpoints
written before the card existed hold `classes`, `preprocessing`, `model`, `single_logit` and
`info` instead; they still load (see ModelCard.from_checkpoint).
"""

from __future__ import annotations

import os
from pathlib import Path

from cxrkit.errors import CxrkitError

CHECKPOINT_NAME = "model.ckpt"
CHECKPOINT_FORMAT = "cxrkit-model-v1"


def safe_torch_load(path: str | Path, what: str = "checkpoint") -> dict:
    """`torch.load(path, weights_only=True)`: tensors and plain values only, never code.

    A file that holds anything else (e.g. a crafted pickle) is refused with one line; the
    reason never suggests turning the safe loader off.
    """
    import torch

    try:
        data = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:
        if type(error).__name__ == "UnpicklingError":
            raise CxrkitError(f"{path}: refused to load this {what}: it holds Python objects other "
                              "than tensors and plain values, which cxrkit never runs; use a file "
                              "written by cxrkit") from error
        reason = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
        raise CxrkitError(f"{path}: not a readable {what} ({reason}); it may be truncated or "
                          "corrupt: re-create it with `cxrkit train`") from error
    if not isinstance(data, dict):
        raise CxrkitError(f"{path}: not a cxrkit {what} (expected a dict of tensors)")
    return data


def resolve_checkpoint(path: str | Path) -> Path:
    """Path to model.ckpt given a run folder or the file itself."""
    path = Path(path).expanduser()
    if path.is_dir():
        path = path / CHECKPOINT_NAME
    if not path.is_file():
        raise CxrkitError(f"{path}: no model checkpoint; pass a run folder made by `cxrkit train`")
    return path


def read_checkpoint(path: str | Path) -> dict:
    """A cxrkit checkpoint dict (run folder or model.ckpt), loaded safely (weights_only=True)."""
    path = resolve_checkpoint(path)
    data = safe_torch_load(path, "cxrkit checkpoint")
    if data.get("format") != CHECKPOINT_FORMAT:
        raise CxrkitError(f"{path}: not a cxrkit model checkpoint (format {CHECKPOINT_FORMAT})")
    return data


def write_checkpoint(path: Path, checkpoint: dict) -> None:
    """Save through a temporary file next to `path`, so a crash never leaves half a checkpoint."""
    import torch

    temporary = path.with_name(f".{path.name}.tmp")
    try:
        torch.save({**checkpoint, "format": CHECKPOINT_FORMAT}, temporary)
        os.replace(temporary, path)
    finally:
        if temporary.exists():
            temporary.unlink()
