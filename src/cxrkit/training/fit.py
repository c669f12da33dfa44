"""Train a classifier end to end and write its run folder.

Straight-line orchestration: manifest -> split -> cache -> datasets -> model -> Trainer.fit
-> model.ckpt. Lightning owns the loop, precision, accumulation, checkpoints and devices; this
module only wires them. Evaluation is not training's job: `cxrkit.pipeline` chains it after.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import time
import warnings
from collections.abc import Sequence
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import pandas as pd
import torch
import yaml

from cxrkit.config import Config, build_config, config_to_yaml, load_config_file, monitor_mode
from cxrkit.data.cache import CachedImages, Progress, load_cached_images
from cxrkit.data.datamodule import CachedDataModule, CachedImageDataset
from cxrkit.data.normalise import model_input
from cxrkit.data.preprocess import Preprocessing, channel_stats, imagenet_stats
from cxrkit.data.run_split import build_split
from cxrkit.data.transforms import train_augmentation
from cxrkit.errors import CxrkitError, TrainingInterrupted
from cxrkit.models import build_model, count_parameters
from cxrkit.models.registry import state_dict_from_path
from cxrkit.run import CHECKPOINT_NAME, ModelCard, RunFolder, positive_class_index, safe_torch_load
from cxrkit.run.folder import SPLIT_FILE, split_summary
from cxrkit.training.callbacks import SaveOnInterrupt, StartupTime, Throughput, WallClock, epoch_progress_bar
from cxrkit.training.curves import merge_epoch_logs, plot_training_curves
from cxrkit.training.precision import resolve_precision

log = logging.getLogger(__name__)
HARMLESS_WARNINGS = (".*LeafSpec.*", ".*smaller than the logging interval.*", ".*litlogger.*",
                     ".*does not have many workers.*", ".*Experiment logs directory.*",
                     ".*Checkpoint directory .* exists and is not empty.*")


def run_dir_for(config: Config) -> Path:
    """`output_dir / name`, where the name must be one plain folder name (no path, no '.' or '..')."""
    name = config.name or f"{config.recipe or config.model.name}"
    return Path(config.output_dir).expanduser() / check_run_name(name)


def check_run_name(name: str) -> str:
    """The run name if it is a single path component inside the output folder, else CxrkitError."""
    text = str(name)
    if (not text.strip() or text in (".", "..") or "/" in text or "\\" in text or "\0" in text
            or Path(text).is_absolute() or Path(text).name != text):
        raise CxrkitError(f"name={text!r}: a run name is one folder name inside `output_dir` "
                          "(letters, digits, '-', '_', '.'; no '/', '..' or absolute path); "
                          "use `output_dir` to choose where runs go")
    return text


def is_run_folder(path: Path) -> bool:
    """True for a folder cxrkit made: it holds a config.yaml that reads as a cxrkit config."""
    try:
        load_config_file(path / "config.yaml")
    except (CxrkitError, OSError, ValueError, yaml.YAMLError):
        return False
    return True


def is_finished_run(path: Path) -> bool:
    """A run whose training completed: model.ckpt and training.json exist."""
    return RunFolder(path).is_finished()


def _has_training_state(path: Path) -> bool:
    return (path / CHECKPOINT_NAME).is_file() or any((path / "checkpoints").glob("*.ckpt"))


def prepare_run_dir(run_dir: Path, overwrite: bool) -> None:
    """Create the run folder; refuse to replace an existing one unless overwrite is set.

    Only a cxrkit run folder is ever deleted; a run that failed before its first checkpoint
    (nothing but derived files) is replaced without --overwrite.
    """
    if run_dir.is_symlink() or (run_dir.exists() and not run_dir.is_dir()):
        raise CxrkitError(f"run folder {run_dir} is a link or a file; choose another `name`")
    if run_dir.exists() and any(run_dir.iterdir()):
        if not is_run_folder(run_dir):
            raise CxrkitError(f"{run_dir} exists and is not a cxrkit run folder (no config.yaml made "
                              "by cxrkit); refusing to touch it: choose another `name` or `output_dir`")
        if _has_training_state(run_dir) and not overwrite:
            raise CxrkitError(f"run folder {run_dir} already exists; pass overwrite=True to replace it, "
                              "`name` to pick another, or `resume` to continue it")
        if not _has_training_state(run_dir):
            log.info("replacing %s: an earlier attempt stopped before its first checkpoint", run_dir)
        shutil.rmtree(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)


def is_main_process() -> bool:
    """False in every process of a distributed run but global rank 0, read from the launchers'
    environment (torchrun's RANK, SLURM's SLURM_PROCID, Lightning's NODE_RANK and LOCAL_RANK)."""
    return all(int(os.environ.get(name) or 0) == 0
               for name in ("RANK", "SLURM_PROCID", "NODE_RANK", "LOCAL_RANK"))


def _load_split_images(manifest: pd.DataFrame, prep: Preprocessing, config: Config, use_test: bool,
                       progress: Progress | None, segmenter=None,
                       lung_fallbacks: list[str] | None = None):
    splits = ["train", "val"] + (["test"] if use_test else [])
    wanted = manifest[manifest["split"].isin(splits)].reset_index(drop=True)
    images, failures = load_cached_images(list(wanted["path"]), prep, config.data.cache_dir,
                                          progress=progress, segmenter=segmenter,
                                          lung_fallbacks=lung_fallbacks)
    readable = wanted[~wanted["path"].isin(failures)].reset_index(drop=True)
    return readable, images, failures


def _lung_segmenter(config: Config) -> tuple[dict | None, object | None]:
    """(weights, torch segmenter) when the preprocessing uses the lungs, else (None, None)."""
    if not (config.preprocess.lung_crop or config.preprocess.lung_mask_outside):
        return None, None
    from cxrkit.segment.weights import read_weights, torch_segmenter

    weights = read_weights(config.preprocess.lung_weights)
    return weights, torch_segmenter(weights)


def _class_weights(labels: np.ndarray, num_classes: int, mode: str) -> torch.Tensor | None:
    if mode == "none":
        return None
    counts = np.bincount(labels, minlength=num_classes).astype(np.float64)
    weights = counts.sum() / (num_classes * np.maximum(counts, 1))
    return torch.tensor(weights, dtype=torch.float32)


def _normalisation(config: Config, train_images: CachedImages):
    channels = config.preprocess.channels
    mode = config.preprocess.normalization
    if mode == "auto":
        mode = "imagenet" if config.model.weights == "imagenet" else "dataset"
    if mode == "imagenet":
        return imagenet_stats(channels)
    mean, std = train_images.mean_std(2000)
    return channel_stats(channels, mean, max(std, 1e-3))


def _trainer(config: Config, run_dir: Path, callbacks: Sequence, clock: WallClock):
    import lightning as L
    from lightning.pytorch.callbacks import EarlyStopping, ModelCheckpoint, ProgressBar
    from lightning.pytorch.loggers import CSVLogger

    train = config.train
    checkpoints = run_dir / "checkpoints"
    mode = monitor_mode(train.monitor)
    # best.ckpt follows the monitor; last.ckpt is refreshed after every epoch whatever the monitor
    # does (save_last on a monitored callback only saves when it improves), so a crash loses at
    # most the epoch in progress.
    all_callbacks = [
        ModelCheckpoint(dirpath=checkpoints, filename="best", monitor=train.monitor, mode=mode,
                        enable_version_counter=False),
        ModelCheckpoint(dirpath=checkpoints, filename="last", monitor=None, save_top_k=1,
                        every_n_epochs=1, enable_version_counter=False),
        SaveOnInterrupt(checkpoints / "interrupted.ckpt"),
        Throughput(),
        clock,
        *callbacks,
    ]
    bar = epoch_progress_bar()
    if bar is not None and not any(isinstance(c, ProgressBar) for c in callbacks):
        all_callbacks.append(bar)
    if train.early_stopping_patience:
        all_callbacks.append(EarlyStopping(monitor=train.monitor, mode=mode,
                                           patience=train.early_stopping_patience, check_finite=False))
    loggers = [CSVLogger(save_dir=run_dir, name="logs")]
    try:
        import tensorboard  # noqa: F401
        from lightning.pytorch.loggers import TensorBoardLogger

        loggers.append(TensorBoardLogger(save_dir=run_dir, name="tensorboard", version=""))
    except ImportError:
        pass
    return L.Trainer(
        max_epochs=train.epochs,
        accelerator=train.accelerator,
        devices=train.devices,
        num_nodes=train.num_nodes,
        strategy=train.strategy,
        precision=resolve_precision(train.precision, train.accelerator),
        accumulate_grad_batches=train.accumulate_grad_batches,
        gradient_clip_val=train.gradient_clip_val or None,
        limit_train_batches=train.limit_train_batches,
        max_steps=train.max_steps or -1,
        callbacks=all_callbacks,
        logger=loggers,
        default_root_dir=run_dir,
        log_every_n_steps=10,
        deterministic=False,
        enable_model_summary=False,
        num_sanity_val_steps=0,
    )


def train(config: Config | str | None = None, *, callbacks: Sequence = (), use_test: bool = True,
          overwrite: bool = False, resume: str | Path | None = None, progress: Progress | None = None,
          **overrides) -> Path:
    """Train per `config` (a Config, or a recipe name plus dotted overrides); return the run folder.

    `use_test=False` never decodes or predicts the test split (used by tuning); evaluating the
    run is `cxrkit.pipeline.train_and_evaluate`'s job (what `cxrkit.train` and the CLI call).
    `resume` continues an interrupted run folder from its last checkpoint. `progress(stage,
    done, total)` follows the image cache (see `cxrkit.data.cache`). Under DDP every rank
    runs this function; only rank 0 writes the run folder.
    """
    import lightning as L

    from cxrkit.training.module import Classifier

    writer = is_main_process()
    started = time.perf_counter()
    if resume is not None:
        run_dir = Path(resume).expanduser()
        config = load_config_file(run_dir)
        config.data.split_file = str(RunFolder(run_dir).file(SPLIT_FILE))
        checkpoint = _resume_checkpoint(run_dir, overwrite)
    else:
        if not isinstance(config, Config):
            config = build_config(config, overrides)
        _no_freezing_without_weights(config)
        if config.model.weights not in ("none", "imagenet", ""):
            state_dict_from_path(Path(config.model.weights).expanduser())  # refused before any decoding
        run_dir = run_dir_for(config)
        if writer:
            prepare_run_dir(run_dir, overwrite)
            (run_dir / "config.yaml").write_text(config_to_yaml(config))
        checkpoint = None
    L.seed_everything(config.train.seed, workers=True, verbose=False)

    manifest = build_split(config)
    classes = sorted(manifest["label"].unique())
    positive_index = positive_class_index(classes, config.data.positive_class)
    lung_weights, segmenter = _lung_segmenter(config)
    prep = Preprocessing(image_size=config.preprocess.image_size, resize=config.preprocess.resize,
                         channels=config.preprocess.channels, enhancement=config.preprocess.enhancement,
                         clahe_clip_limit=config.preprocess.clahe_clip_limit,
                         clahe_tile_grid=config.preprocess.clahe_tile_grid,
                         lung_crop=config.preprocess.lung_crop,
                         lung_crop_margin=config.preprocess.lung_crop_margin,
                         lung_mask_outside=config.preprocess.lung_mask_outside,
                         segmenter=segmenter.digest if segmenter else "")
    lung_fallbacks: list[str] = []
    readable, images, failures = _load_split_images(manifest, prep, config, use_test, progress,
                                                    segmenter, lung_fallbacks)
    used = manifest[~manifest["path"].isin(failures)]
    if writer:
        _write_lung_fallbacks(run_dir, lung_fallbacks)
        _write_skipped(run_dir, failures, manifest.attrs.get("ignored", []))
        RunFolder(run_dir).write_split(used)
        RunFolder(run_dir).write_classes(classes)
        (run_dir / "config.yaml").write_text(config_to_yaml(config))

    labels = readable["label"].map({c: i for i, c in enumerate(classes)}).to_numpy()
    masks = {s: (readable["split"] == s).to_numpy() for s in ("train", "val", "test")}
    for split in ("train", "val"):
        if not masks[split].any():
            raise CxrkitError(f"the {split} split has no readable images; check `data` and skipped.csv")
    mean, std = _normalisation(config, images.subset(masks["train"]))
    prep = Preprocessing(**{**prep.to_dict(), "mean": mean, "std": std})
    single_logit = config.train.loss == "bce"
    if single_logit and len(classes) != 2:
        raise CxrkitError(f"train.loss=bce needs exactly 2 classes, found {len(classes)}; use ce or focal")
    model_spec = {"name": config.model.name, "num_classes": 1 if single_logit else len(classes),
                  "in_channels": config.preprocess.channels, "dropout": config.model.dropout,
                  **{k: getattr(config.model, k) for k in
                     ("width", "depth", "kernel_size", "stride", "padding", "pooling")}}
    model = build_model(**model_spec, weights=config.model.weights, freeze=config.model.freeze)
    _check_forward(model, config)
    if config.train.channels_last:
        model = model.to(memory_format=torch.channels_last)

    datasets = {s: CachedImageDataset(images.subset(m), labels[m]) for s, m in masks.items() if m.any()}
    data = CachedDataModule(datasets, config.train.batch_size, config.data.num_workers,
                            oversample=config.train.sampler == "oversample", seed=config.train.seed)
    module = Classifier(model, len(classes), config.train, prep,
                        _class_weights(labels[masks["train"]], len(classes), config.train.class_weights),
                        single_logit, train_augmentation(config.augment))
    startup = StartupTime(started)
    clock = WallClock(started)
    try:
        with quiet_lightning():
            trainer = _trainer(config, run_dir, [*callbacks, startup], clock)
            trainer.fit(module, datamodule=data, ckpt_path=checkpoint, weights_only=True)
    except SystemExit as stop:
        raise TrainingInterrupted(
            f"training interrupted; checkpoint saved, continue with: `cxrkit train --resume {run_dir}`") from stop
    if trainer.interrupted:
        raise TrainingInterrupted(f"training interrupted; continue with: `cxrkit train --resume {run_dir}`")

    if not writer:
        return run_dir
    best = trainer.checkpoint_callback.best_model_path
    if best and Path(best).is_file():
        state = safe_torch_load(best, "Lightning checkpoint").get("state_dict")
        if not isinstance(state, dict):
            raise CxrkitError(f"{best}: no state_dict in this checkpoint; train the run again")
        module.load_state_dict(state)
    ood = _ood_reference(module.model, images, labels, masks, prep)
    card = ModelCard(tuple(classes), prep, None if positive_index is None else classes[positive_index],
                     single_logit, model_spec,
                     {"model_name": config.model.name, "recipe": config.recipe, "run": run_dir.name},
                     split_summary(used, [str(source.path) for source in config.data.all_sources()]))
    _save_model(RunFolder(run_dir), module.model, card, ood, lung_weights)
    info = {
        "wall_time_s": round(clock.elapsed_s(), 1),
        "startup_s": None if startup.seconds is None else round(startup.seconds, 1),
        "images_per_s": round(trainer.callback_metrics.get("img_per_s", torch.tensor(float("nan"))).item(), 1),
        "parameters": count_parameters(module.model),
        "trainable_parameters": count_parameters(module.model, trainable_only=True),
        "epochs_run": trainer.current_epoch,
        "best_val_metric": _as_float(trainer.checkpoint_callback.best_model_score),
        "monitor": config.train.monitor,
        "precision": str(trainer.precision),
        "device": str(trainer.strategy.root_device),
        "num_workers": data.settings()[0],
        "pin_memory": data.settings()[1],
        "split_sizes": {s: int(m.sum()) for s, m in masks.items()},
        "sites": site_counts(used),
        "skipped": len(failures),
        **({"lung_fallbacks": len(lung_fallbacks)} if segmenter else {}),
        "image_cache": images.fill,
        "split_leakage": manifest.attrs.get("split_leakage", {}),
    }
    (run_dir / "training.json").write_text(json.dumps(info, indent=2))
    merge_epoch_logs(run_dir / "logs", run_dir / "metrics.csv")
    plot_training_curves(run_dir / "metrics.csv", run_dir / "training_curves.png")
    return run_dir


def _no_freezing_without_weights(config: Config) -> None:
    """Random initial weights are never frozen: freezing them would train only the head."""
    if config.model.weights == "none" and config.model.freeze != "none":
        log.warning("model.freeze=%s ignored: with model.weights=none every layer starts random, so "
                    "nothing is frozen (recorded as freeze: none in config.yaml)", config.model.freeze)
        config.model.freeze = "none"


@contextmanager
def quiet_lightning():
    """Lightning's start-up notices (GPU/TPU available, tips) and known-harmless warnings hidden
    for the duration of a fit, whoever calls `train` (CLI, Python API, experiment workers)."""
    names = ("lightning.pytorch", "lightning.fabric", "lightning", "pytorch_lightning")
    previous = {name: logging.getLogger(name).level for name in names}
    for name in names:
        logging.getLogger(name).setLevel(logging.WARNING)
    try:
        with warnings.catch_warnings():
            for pattern in HARMLESS_WARNINGS:
                warnings.filterwarnings("ignore", message=pattern)
            yield
    finally:
        for name, level in previous.items():
            logging.getLogger(name).setLevel(level)


def site_counts(manifest: pd.DataFrame) -> dict[str, dict[str, int]]:
    """Images per site and split, e.g. {"Shenzhen": {"train": 530, "val": 66, "test": 66}}."""
    counts = manifest.groupby(["site", "split"]).size()
    return {site: {split: int(n) for split, n in counts[site].items()} for site in counts.index.levels[0]
            if site in counts.index.get_level_values(0)}


def _as_float(value) -> float | None:
    return None if value is None else float(value)


def _resume_checkpoint(run_dir: Path, overwrite: bool = False) -> str:
    """The newest of last.ckpt / interrupted.ckpt, checked to be a plain weights-only file."""
    checkpoints = [p for p in (run_dir / "checkpoints").glob("*.ckpt") if p.stem in ("last", "interrupted")]
    if not (run_dir / "config.yaml").is_file() or not checkpoints:
        raise CxrkitError(f"resume={run_dir}: no config.yaml or checkpoints/last.ckpt to resume from")
    if is_finished_run(run_dir) and not overwrite:
        raise CxrkitError(f"resume={run_dir}: this run already finished (model.ckpt, training.json); "
                          "nothing to resume. Use `cxrkit evaluate` on it, or add overwrite=True to "
                          "continue from its last checkpoint and replace its model and evaluation")
    newest = max(checkpoints, key=lambda p: p.stat().st_mtime)
    safe_torch_load(newest, "Lightning checkpoint")
    return str(newest)


def _check_forward(model, config: Config) -> None:
    size = config.preprocess.image_size
    try:
        model.eval()
        with torch.no_grad():
            model(torch.zeros(2, config.preprocess.channels, size, size))
        model.train()
    except RuntimeError as error:
        raise CxrkitError(f"model {config.model.name} cannot take {size}x{size} input with these "
                          f"settings ({str(error).splitlines()[0]}); raise preprocess.image_size or "
                          "reduce model.depth/stride") from error


def _ood_reference(model, images: np.ndarray, labels: np.ndarray, masks: dict,
                   prep: Preprocessing) -> dict | None:
    """The out-of-distribution reference (cxrkit.ood): train features, threshold on val."""
    from cxrkit.ood.reference import fit_reference

    try:
        return fit_reference(model, images[masks["train"]], labels[masks["train"]],
                             images[masks["val"]], lambda batch: model_input(batch, prep))
    except CxrkitError as error:
        log.warning("no out-of-distribution reference for this run: %s", error)
        return None


def _save_model(run: RunFolder, model, card: ModelCard, ood: dict | None = None,
                lung_weights: dict | None = None) -> None:
    """model.ckpt: the weights and the card (with the OOD reference's summary); with lungs in
    use also the segmenter's weights (the contract names their digest)."""
    from dataclasses import replace

    from cxrkit.ood.flags import reference_summary

    state = {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
    run.write_model(state, replace(card, ood=reference_summary(ood)), ood, lung_weights)


def _write_lung_fallbacks(run_dir: Path, paths: list[str]) -> None:
    """lung_fallbacks.csv: training images where no plausible lung was found (whole image used)."""
    if paths:
        pd.DataFrame({"path": paths}).to_csv(run_dir / "lung_fallbacks.csv", index=False)
        log.warning("no plausible lung found in %d image(s); the whole image was used (listed in %s)",
                    len(paths), run_dir / "lung_fallbacks.csv")


def _write_skipped(run_dir: Path, failures: dict[str, str], ignored: list[str]) -> None:
    rows = [(p, r) for p, r in failures.items()] + [(p, "not an image file (suffix)") for p in ignored]
    if rows:
        pd.DataFrame(rows, columns=["path", "reason"]).to_csv(run_dir / "skipped.csv", index=False)
        log.warning("skipped %d file(s) that could not be used; listed in %s", len(rows),
                    run_dir / "skipped.csv")

