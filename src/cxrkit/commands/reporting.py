"""Shared CLI output: quieter Lightning logs and the end-of-run summary."""

from __future__ import annotations

import json
import logging
import warnings
from pathlib import Path


def quiet_lightning() -> None:
    """Hide Lightning's start-up chatter and known-harmless warnings; keep the progress bar."""
    for name in ("lightning.pytorch", "lightning.fabric", "lightning"):
        logging.getLogger(name).setLevel(logging.WARNING)
    for pattern in (".*LeafSpec.*", ".*smaller than the logging interval.*", ".*litlogger.*",
                    ".*does not have many workers.*", ".*Experiment logs directory.*",
                    ".*Checkpoint directory .* exists and is not empty.*",
                    ".*overridden `on_after_batch_transfer` in `LightningModule`.*"):
        warnings.filterwarnings("ignore", message=pattern)


def print_run_summary(run_dir: Path) -> None:
    """Print where the run is and its headline test metrics."""
    run_dir = Path(run_dir)
    print(f"\nrun folder: {run_dir}")
    training = run_dir / "training.json"
    if training.is_file():
        info = json.loads(training.read_text())
        print(f"  trained {info['epochs_run']} epoch(s) in {info['wall_time_s']:.0f} s "
              f"({info['images_per_s']} img/s, {info['parameters']:,} parameters, {info['precision']})")
    metrics_file = run_dir / "test_metrics.json"
    if metrics_file.is_file():
        metrics = json.loads(metrics_file.read_text())
        shown = {k: metrics[k] for k in ("accuracy", "balanced_accuracy", "roc_auc") if k in metrics}
        print("  test: " + ", ".join(f"{k} {_fmt(v)}" for k, v in shown.items()))
    for name in ("report.html", "skipped.csv"):
        if (run_dir / name).is_file():
            print(f"  {name}: {run_dir / name}")


def _fmt(value) -> str:
    if isinstance(value, dict):
        value = value.get("value", value.get("estimate"))
    return f"{value:.4f}" if isinstance(value, float) else str(value)
