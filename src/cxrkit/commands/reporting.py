"""Shared CLI output: quieter Lightning logs, progress bars with images/s, the end-of-run summary."""

from __future__ import annotations

import json
import logging
import sys
import time
import warnings
from pathlib import Path

STAGE_NAMES = {"hash": "hashing new files", "decode": "decoding into the cache", "predict": "predicting"}


class ProgressBars:
    """A `progress(stage, done, total)` callback: one tqdm bar per stage, then a summary line.

    The summary gives the stage's images/s, e.g. `decoding into the cache: 2,000 images in
    3.1 s (645 images/s)`. Bars and summary go to stderr, so stdout keeps only results.
    """

    def __init__(self, quiet: bool = False):
        self.quiet = quiet
        self._bar = None
        self._stage = None
        self._started = 0.0

    def __call__(self, stage: str, done: int, total: int) -> None:
        from tqdm import tqdm

        if stage != self._stage:
            self.close()
            self._stage, self._started = stage, time.perf_counter()
            self._bar = tqdm(total=total, unit="img", desc=STAGE_NAMES.get(stage, stage),
                             file=sys.stderr, disable=self.quiet, leave=False)
        self._bar.update(done - self._bar.n)
        if done >= total:
            self.close()

    def close(self) -> None:
        if self._bar is None:
            return
        done, elapsed = self._bar.n, time.perf_counter() - self._started
        self._bar.close()
        self._bar = None
        if not self.quiet:
            print(f"{STAGE_NAMES.get(self._stage, self._stage)}: {done:,} images in {elapsed:.1f} s "
                  f"({done / max(elapsed, 1e-9):,.0f} images/s)", file=sys.stderr, flush=True)
        self._stage = None


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
