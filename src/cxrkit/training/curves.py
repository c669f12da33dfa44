"""Training-curve PNG from Lightning's metrics.csv (loss and validation metrics per epoch)."""

from __future__ import annotations

from pathlib import Path

import pandas as pd


def merge_epoch_logs(logs_dir: Path, out_csv: Path) -> None:
    """Join the CSVLogger files of every attempt (a resumed run adds a version) into one metrics.csv."""
    files = sorted(Path(logs_dir).glob("version_*/metrics.csv"), key=lambda p: _version(p.parent))
    parts = [pd.read_csv(p) for p in files if p.stat().st_size]
    if not parts:
        return
    kept: list[pd.DataFrame] = []
    for part in parts:
        # A resumed attempt restarts at the epoch after its checkpoint: rows an earlier attempt
        # logged for that epoch or later belong to work lost in the crash.
        first = part["epoch"].min() if "epoch" in part and part["epoch"].notna().any() else None
        if first is not None:
            kept = [k[~(k["epoch"] >= first)] for k in kept]
        kept.append(part)
    table = pd.concat(kept, ignore_index=True)
    table.to_csv(out_csv, index=False)


def _version(folder: Path) -> int:
    suffix = folder.name.removeprefix("version_")
    return int(suffix) if suffix.isdigit() else -1


def epoch_metrics(metrics_csv: Path) -> pd.DataFrame:
    """One row per epoch with the mean of each logged column (CSVLogger rows are sparse)."""
    table = pd.read_csv(metrics_csv)
    return table.groupby("epoch").mean(numeric_only=True).reset_index()


def plot_training_curves(metrics_csv: Path, out_png: Path) -> Path | None:
    """Plot loss (train/val) and validation accuracy/AUC per epoch; None if nothing was logged."""
    if not Path(metrics_csv).is_file():
        return None
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    table = epoch_metrics(metrics_csv)
    figure, (loss_axis, metric_axis) = plt.subplots(1, 2, figsize=(10, 4))
    for column in ("train_loss", "val_loss"):
        if column in table:
            loss_axis.plot(table["epoch"] + 1, table[column], marker="o", label=column)
    loss_axis.set(xlabel="epoch", ylabel="loss", title="Loss")
    _legend_or_note(loss_axis)
    for column in ("val_acc", "val_balanced_acc", "val_auroc"):
        if column in table:
            metric_axis.plot(table["epoch"] + 1, table[column], marker="o", label=column)
    metric_axis.set(xlabel="epoch", ylabel="value", title="Validation metrics", ylim=(0, 1.02))
    _legend_or_note(metric_axis)
    figure.tight_layout()
    figure.savefig(out_png, dpi=100)
    plt.close(figure)
    return Path(out_png)


def _legend_or_note(axis) -> None:
    """A legend, or a note that the run logged nothing for this panel (e.g. no validation epoch)."""
    if axis.get_lines():
        axis.legend()
    else:
        axis.text(0.5, 0.5, "nothing logged", ha="center", va="center", transform=axis.transAxes)
