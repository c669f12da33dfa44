"""`cxrkit tune`: Optuna search over a spec's ranges on the validation split; best as a recipe."""

from __future__ import annotations

import argparse
from pathlib import Path

from cxrkit.commands.experiment import add_spec_options
from cxrkit.config import parse_override


def register(subparsers) -> None:
    parser = subparsers.add_parser(
        "tune",
        help="search hyper-parameters (Optuna) on the validation split",
        description="Optuna TPE search over the spec's search: ranges (or its axes as choices), "
        "pruning on the validation metric; the test split is never read. Run the same command "
        "on several machines with one --storage URL to share the study. Example: cxrkit tune "
        "experiments/seed003/05-hyperparameters.yaml --data ../shared/data/tb --trials 20",
    )
    parser.add_argument("spec", help="experiment spec YAML with search: ranges (see experiments/README.md)")
    parser.add_argument(
        "--trials",
        type=int,
        required=True,
        metavar="N",
        help="trials the study should have in total (shared by all workers)",
    )
    parser.add_argument(
        "--storage",
        metavar="URL",
        help="study database: sqlite:///study.db or postgresql://user:pw@host/db "
        "(default: sqlite in the output folder)",
    )
    parser.add_argument("--study-name", metavar="NAME", help="study name (default: the spec name)")
    add_spec_options(parser, "runs/tune-<spec name>", "worker processes on this machine", "trial")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from cxrkit.commands.reporting import quiet_lightning
    from cxrkit.experiments import load_spec
    from cxrkit.experiments.tune import run_tune
    from cxrkit.extras import require

    require("optuna")
    quiet_lightning()
    spec = load_spec(args.spec, recipe=args.recipe)
    overrides = dict(parse_override(text) for text in args.overrides)
    out_dir = Path(args.out) if args.out else Path("runs") / f"tune-{spec.name}"
    summary = run_tune(
        spec,
        args.trials,
        out_dir,
        storage=args.storage,
        study_name=args.study_name,
        data=args.data,
        jobs=args.jobs,
        overrides=overrides,
    )
    print(
        f"study {summary['study']} ({summary['storage']}): {summary['trials']} trial(s), "
        f"{summary['complete']} complete, {summary['pruned']} pruned, {summary['fail']} failed, "
        f"{summary['running']} running"
    )
    print(f"trials: {out_dir / 'trials.csv'}")
    if "best_trial" not in summary:
        print("no trial completed yet; nothing to recommend")
        return 1
    params = ", ".join(f"{k}={v}" for k, v in summary["best_params"].items())
    print(
        f"best: trial {summary['best_trial']}, validation {summary['monitor']} {summary['best_value']:.4f} ({params})"
    )
    print(
        f"best configuration as a recipe: {summary['recipe']}\n"
        f"train it and measure it on the test split with: cxrkit train --recipe {summary['recipe']}"
    )
    return 0
