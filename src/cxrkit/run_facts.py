"""Facts about a run folder that several commands read: the model's fingerprint and id, its
frozen operating point and its other JSON files.

A neutral home below evaluation, export, serve and deployment, so that none of them reaches
into another for these facts.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

from cxrkit.errors import CxrkitError


def file_sha256(path: Path) -> str:
    """sha256 hex digest of a file."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def model_fingerprint(run_dir: Path) -> str:
    """sha256 of model.ckpt, so frozen operating points are never used with another model."""
    return file_sha256(Path(run_dir) / "model.ckpt")


def run_model_id(run_dir: Path) -> str:
    """Id naming the exact weights: run name, `@`, 12 hex digits of model.ckpt's sha256."""
    return f"{run_dir.name}@{model_fingerprint(run_dir)[:12]}"


def frozen_operating_point(run_dir: Path) -> dict | None:
    """The run's operating_points.json, refused if it was chosen for other weights."""
    points = read_run_json(run_dir, "operating_points.json")
    fingerprint = (points or {}).get("model_sha256")
    if fingerprint and fingerprint != model_fingerprint(run_dir):
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
