"""`cxrkit train`: train a recipe on a data folder and write a run folder."""

from __future__ import annotations

import argparse

from cxrkit.config import parse_override

# CLI flag -> dotted config key; every other field is reachable with --set KEY=VALUE.
FLAGS = {
    "name": ("name", str, "NAME", "run folder name (default: the recipe name)"),
    "output_dir": ("output_dir", str, "DIR", "where run folders go (default: runs)"),
    "split_file": ("data.split_file", str, "CSV|RUN", "reuse a split.csv (or a run's) for identical test sets"),
    "positive_class": ("data.positive_class", str, "CLASS", "the class thresholds are put on (default: of two "
                       "classes, the one not named like normal/healthy/negative/No Finding)"),
    "group_pattern": ("data.group_pattern", str, "REGEX", r"patient id from file names, e.g. 'person(\d+)_'"),
    "val_fraction": ("data.val_fraction", float, "F", "validation fraction (default 0.1)"),
    "test_fraction": ("data.test_fraction", float, "F", "test fraction when no test split is given (0.1)"),
    "split_seed": ("data.split_seed", int, "N", "seed of the split"),
    "strict": ("data.strict_split", bool, None, "refuse a given split (pre-split folders, CSV or "
               "--split-file) whose patient or near-duplicate groups cross splits"),
    "model": ("model.name", str, "NAME", "architecture (see `cxrkit recipes --models`)"),
    "weights": ("model.weights", str, "none|imagenet|PATH", "initial weights: none, imagenet, a state dict "
                "or a run to fine-tune"),
    "freeze": ("model.freeze", str, "none|backbone|LAYER", "freeze nothing, all but the head, or up to LAYER"),
    "image_size": ("preprocess.image_size", int, "PX", "input size"),
    "channels": ("preprocess.channels", int, "1|3", "input channels"),
    "enhancement": ("preprocess.enhancement", str, "none|contrast_stretch|histeq|clahe", "contrast enhancement"),
    "epochs": ("train.epochs", int, "N", "maximum epochs"),
    "batch_size": ("train.batch_size", int, "N", "batch size"),
    "lr": ("train.lr", float, "LR", "learning rate"),
    "optimizer": ("train.optimizer", str, "adam|adamw|sgd|rmsprop", "optimizer"),
    "scheduler": ("train.scheduler", str, "none|plateau|cosine|onecycle", "learning-rate schedule"),
    "loss": ("train.loss", str, "ce|bce|focal", "loss (bce = single-logit binary head)"),
    "sampler": ("train.sampler", str, "none|oversample", "oversample rare classes"),
    "early_stopping": ("train.early_stopping_patience", int, "EPOCHS", "stop after N epochs without improvement"),
    "accumulate": ("train.accumulate_grad_batches", int, "N", "gradient accumulation steps"),
    "precision": ("train.precision", str, "auto|32|bf16-mixed|16-mixed", "numeric precision"),
    "devices": ("train.devices", str, "N|auto", "devices per node (Lightning)"),
    "num_nodes": ("train.num_nodes", int, "N", "nodes (Lightning strategies, e.g. ddp)"),
    "accelerator": ("train.accelerator", str, "auto|cpu|gpu", "accelerator"),
    "strategy": ("train.strategy", str, "auto|ddp|...", "Lightning strategy"),
    "seed": ("train.seed", int, "N", "training seed"),
    "workers": ("data.num_workers", lambda v: v if v == "auto" else int(v), "N|auto",
                "data-loader worker processes (auto: 0 on CPU, up to 8 per GPU)"),
    "max_steps": ("train.max_steps", int, "N", "stop after N optimizer steps (0: no limit)"),
}


def add_config_flags(parser: argparse.ArgumentParser, skip: tuple[str, ...] = ()) -> None:
    """Add --data/--site/--class-map, the common config flags and --set to a parser."""
    parser.add_argument("--data", action="append", default=[], metavar="DIR|CSV|hf:NAME|kaggle:HANDLE",
                        help="images: class folders, train/val/test folders or a CSV manifest; repeat "
                             "for several sources (sites)")
    parser.add_argument("--site", action="append", default=[], metavar="NAME",
                        help="site (hospital) of each --data source, in order (default: the source's "
                             "name; a CSV's own site column wins)")
    parser.add_argument("--class-map", action="append", default=[], metavar="DATA=CLASS,...",
                        help="rename classes of each --data source, in order, e.g. "
                             "normal=Normal,tb=Tuberculosis ('-' for none)")
    for flag, (_, kind, metavar, text) in FLAGS.items():
        if flag in skip:
            continue
        if kind is bool:
            parser.add_argument("--" + flag.replace("_", "-"), dest=flag, action="store_const", const=True,
                                help=text)
        else:
            parser.add_argument("--" + flag.replace("_", "-"), dest=flag, type=kind, metavar=metavar, help=text)
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                        help="any config field, e.g. --set augment.hflip=0.5 (repeatable)")


def source_overrides(data: list[str], sites: list[str], class_maps: list[str]) -> dict:
    """Config fields of the --data sources; --site and --class-map apply to them in order."""
    from cxrkit.data.sources import parse_class_map
    from cxrkit.errors import CxrkitError

    for option, values in (("--site", sites), ("--class-map", class_maps)):
        if values and len(values) != len(data):
            raise CxrkitError(f"{option} is given {len(values)} time(s) for {len(data)} --data "
                              f"source(s); give it once per --data, in the same order ('-' for none)")
    sites = [None if s in ("", "-") else s for s in sites] or [None] * len(data)
    maps = [parse_class_map(text) for text in class_maps] or [{}] * len(data)
    if len(data) == 1:
        return {"data.source": data[0], "data.site": sites[0], "data.class_map": maps[0] or None}
    if len(data) > 1:
        return {"data.sources": [{"path": path, "site": site, "class_map": mapping}
                                 for path, site, mapping in zip(data, sites, maps, strict=True)]}
    return {}


def overrides_from_args(args: argparse.Namespace) -> dict:
    overrides = {key: getattr(args, flag, None) for flag, (key, *_) in FLAGS.items()}
    overrides.update(source_overrides(args.data, args.site, args.class_map))
    for text in args.overrides:
        key, value = parse_override(text)
        overrides[key] = value
    if overrides.get("train.devices") not in (None, "auto"):
        devices = overrides["train.devices"]
        overrides["train.devices"] = int(devices) if str(devices).isdigit() else devices
    return overrides


def register(subparsers) -> None:
    parser = subparsers.add_parser(
        "train", help="train a model and write a run folder",
        description="Train a classifier. Example: cxrkit train --recipe tb-fast --data ../shared/data/tb; "
                    "several sites: --data ../shared/data/tb --data ../shared/data/tb-nlm.csv",
    )
    parser.add_argument("--recipe", default="tb-fast", help="built-in recipe name or a YAML file "
                        "(default tb-fast; `cxrkit recipes` lists them)")
    add_config_flags(parser)
    parser.add_argument("--overwrite", action="store_true", help="replace an existing run folder")
    parser.add_argument("--resume", metavar="RUN", help="continue an interrupted run from its last checkpoint "
                        "(a finished run only with --overwrite)")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from cxrkit.commands.reporting import ProgressBars, print_run_summary, quiet_lightning
    from cxrkit.config import build_config
    from cxrkit.pipeline import train_and_evaluate
    from cxrkit.training.fit import is_main_process

    quiet_lightning()
    progress = ProgressBars(quiet=not is_main_process())
    if args.resume:
        run_dir = train_and_evaluate(resume=args.resume, overwrite=args.overwrite, progress=progress)
    else:
        config = build_config(args.recipe, overrides_from_args(args))
        run_dir = train_and_evaluate(config, overwrite=args.overwrite, progress=progress)
    if is_main_process():
        print_run_summary(run_dir)
    return 0
