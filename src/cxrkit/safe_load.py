"""Load a torch file without ever running code from it.

A low-level helper with no cxrkit imports beyond errors, so that model building, training and
the Predictor can all use it without importing each other.
"""

from __future__ import annotations

from pathlib import Path

from cxrkit.errors import CxrkitError


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
