"""`cxrkit quickstart`: the whole pipeline on an embedded synthetic set (or --data), no download."""

from __future__ import annotations

import argparse
from pathlib import Path


def register(subparsers) -> None:
    parser = subparsers.add_parser(
        "quickstart", help="train, evaluate and report on a synthetic smoke-test set (or --data DIR)",
        description="Example: cxrkit quickstart; cxrkit quickstart --data ../shared/data/tb")
    parser.add_argument("--data", help="your own image folder/CSV instead of the synthetic smoke test")
    parser.add_argument("--recipe", default="tb-fast", help="recipe to train (default tb-fast)")
    parser.add_argument("--output-dir", default="runs", help="where the run folder goes (default runs)")
    parser.add_argument("--overwrite", action="store_true", help="replace an earlier quickstart run")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from cxrkit.commands.reporting import ProgressBars, print_run_summary, quiet_lightning
    from cxrkit.config import build_config
    from cxrkit.data.synthetic import make_synthetic_dataset
    from cxrkit.pipeline import train_and_evaluate

    quiet_lightning()
    overrides: dict = {"output_dir": args.output_dir}
    if args.data:
        overrides.update({"data.source": args.data, "name": f"quickstart-{Path(args.data).name}"})
    else:
        data = make_synthetic_dataset(Path(args.output_dir) / "quickstart-data", per_class=150, size=96)
        print(f"SMOKE TEST on synthetic images in {data} (not a medical result)")
        overrides.update({"data.source": str(data), "name": "quickstart", "preprocess.image_size": 64,
                          "train.epochs": 12, "model.width": 16, "model.depth": 4,
                          "train.monitor": "val_loss", "data.group_near_duplicates": False})
    run_dir = train_and_evaluate(build_config(args.recipe, overrides), overwrite=args.overwrite,
                                 progress=ProgressBars())
    print_run_summary(run_dir)
    print("\nnext steps:")
    print(f"  open {run_dir / 'report.html'}   # the test evaluation training already wrote")
    print(f"  cxrkit evaluate {run_dir} --split val   # the same report for the validation split")
    print(f"  cxrkit predict {run_dir} IMAGES... --out preds.csv")
    print(f"  cxrkit explain {run_dir} IMAGE --method gradcam")
    print(f"  cxrkit serve {run_dir}               # web app + REST API on http://127.0.0.1:7860")
    print("  cxrkit train --recipe tb-fast --data ../shared/data/tb   # a real dataset")
    return 0
