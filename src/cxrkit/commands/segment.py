"""`cxrkit segment train|predict`: the lung segmenter behind `preprocess.lung_crop`."""

from __future__ import annotations

import argparse
import shlex
from pathlib import Path

from cxrkit.config import parse_override
from cxrkit.errors import CxrkitError


def register(subparsers) -> None:
    parser = subparsers.add_parser("segment", help="train the lung segmenter or draw lung masks",
                                   description="Lung fields for preprocess.lung_crop.")
    verbs = parser.add_subparsers(dest="segment_command", metavar="VERB")

    train = verbs.add_parser(
        "train", help="train the lung U-Net on images with lung masks",
        description="Example: cxrkit segment train --data ../shared/data/tb-nlm.csv --out runs/lung-unet")
    train.add_argument("--data", required=True, metavar="CSV", help="CSV with columns path,mask[,patient][,site]")
    train.add_argument("--out", required=True, metavar="DIR", help="folder for lung_unet.pt, its card and logs")
    train.add_argument("--recipe", default="lung-unet", help="lung-unet (default) or a .yaml file")
    train.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                       help="any recipe field, e.g. --set epochs=5 (repeatable)")
    train.add_argument("--overwrite", action="store_true", help="replace weights already in --out")
    train.set_defaults(func=run_train)

    predict = verbs.add_parser(
        "predict", help="write lung masks and overlays for images",
        description="Example: cxrkit segment predict ../shared/data/tb/Normal --out runs/lungs")
    predict.add_argument("images", nargs="+", help="image files and/or folders (searched recursively)")
    predict.add_argument("--out", required=True, metavar="DIR", help="folder for <name>_mask.png, "
                         "<name>_overlay.png and lungs.csv")
    predict.add_argument("--weights", metavar="PT", help="weight file (default: the shipped lung_unet.pt)")
    predict.add_argument("--overwrite", action="store_true", help="replace files already in --out")
    predict.set_defaults(func=run_predict)
    parser.set_defaults(func=lambda args: parser.print_help())


def run_train(args: argparse.Namespace) -> int:
    from cxrkit.segment.train import OUTPUT_FILES, read_segment_recipe, train_segmenter
    from cxrkit.segment.weights import WEIGHTS_NAME

    overrides = dict(parse_override(text) for text in args.overrides)
    config = read_segment_recipe(args.recipe, overrides)
    out = Path(args.out)
    existing = [out / name for name in OUTPUT_FILES if (out / name).exists()]
    if existing and not args.overwrite:
        raise CxrkitError(f"{existing[0]} already exists; pass --overwrite to replace it "
                          "or --out another folder")

    def show(row: dict) -> None:
        print(f"epoch {row['epoch']:>3}/{config.epochs}  loss {row['train_loss']:.4f}  val Dice {row['val_dice']:.4f}",
              flush=True)

    card = train_segmenter(args.data, out, config, command=_command(args), progress=show)
    print(f"best epoch {card['best_epoch']} (val Dice {card['val_dice']:.4f}); held-out patients "
          f"({card['images']['test']}): Dice mean {card['test_dice_mean']:.4f}, "
          f"min {card['test_dice_min']:.4f}; by site {card['test_dice_by_site']}")
    print(f"wrote {out / WEIGHTS_NAME} (+ {', '.join(OUTPUT_FILES[1:])})")
    return 0


def _command(args: argparse.Namespace) -> str:
    """The training command as it can be typed again (recorded in the card)."""
    words = ["cxrkit", "segment", "train", "--data", args.data, "--out", args.out]
    if args.recipe != "lung-unet":
        words += ["--recipe", args.recipe]
    for text in args.overrides:
        words += ["--set", text]
    return " ".join(shlex.quote(word) for word in words)


def run_predict(args: argparse.Namespace) -> int:
    from cxrkit.commands.predict import collect_images
    from cxrkit.segment.predict import predict_masks
    from cxrkit.segment.weights import torch_segmenter

    segmenter = torch_segmenter(args.weights)
    paths, ignored = collect_images(args.images)
    summary = predict_masks(segmenter, paths, Path(args.out), overwrite=args.overwrite)
    print(f"wrote masks and overlays of {summary['written']} image(s) to {args.out} (lungs.csv lists them)")
    if summary["fallback"]:
        print(f"no plausible lung found in {summary['fallback']} image(s) (lung_found=false in lungs.csv), "
              f"e.g. {summary['fallback_example']}")
    for reason in summary["failed"]:
        print(f"skipped: {reason}")
    if ignored:
        print(f"ignored {len(ignored)} non-image file(s), e.g. {ignored[0]}")
    return 0
