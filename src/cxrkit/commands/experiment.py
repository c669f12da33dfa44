"""`cxrkit experiment`: train every variant of a spec on one shared split and rank them."""

from __future__ import annotations

import argparse
from pathlib import Path

from cxrkit.config import parse_override


def register(subparsers) -> None:
    parser = subparsers.add_parser(
        "experiment",
        help="train the variants of an experiment spec and compare them",
        description="Train every variant of SPEC (one shared split; finished variants are "
        "skipped) and write results.csv, results.md and comparison plots. Example: "
        "cxrkit experiment experiments/seed003/02-optimizers.yaml --data ../shared/data/tb",
    )
    parser.add_argument("spec", help="experiment spec YAML (see experiments/README.md)")
    add_spec_options(parser, "runs/<spec name>", "variants trained at once, each in its own process", "variant")
    parser.set_defaults(func=run)


def add_spec_options(parser: argparse.ArgumentParser, default_out: str, jobs_help: str, unit: str) -> None:
    """--data, --recipe, --out, --jobs and --set, shared by `experiment` and `tune`."""
    parser.add_argument("--data", metavar="DIR|CSV", help="data source (overrides the spec's data:)")
    parser.add_argument("--recipe", metavar="NAME|YAML", help="base recipe instead of the spec's")
    parser.add_argument("--out", metavar="DIR", help=f"output folder (default: {default_out})")
    parser.add_argument("--jobs", type=int, default=1, metavar="N", help=f"{jobs_help} (default 1)")
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                        help=f"override a config field for every {unit}, e.g. --set train.epochs=2")


def run(args: argparse.Namespace) -> int:
    from cxrkit.commands.reporting import quiet_lightning
    from cxrkit.experiments import load_spec, run_experiment

    quiet_lightning()
    spec = load_spec(args.spec, recipe=args.recipe)
    overrides = dict(parse_override(text) for text in args.overrides)
    out_dir = Path(args.out) if args.out else Path("runs") / spec.name
    table = run_experiment(spec, out_dir, data=args.data, jobs=args.jobs, overrides=overrides)
    print((out_dir / "results.md").read_text())
    print(f"results: {out_dir / 'results.csv'}, {out_dir / 'results.md'}")
    failed = table[table["status"] == "failed"]
    for name, error in zip(failed["variant"], failed["error"], strict=True):
        print(f"failed: {name}: {error} (traceback in {out_dir / 'runs' / name / 'error.txt'})")
    return 1 if len(failed) else 0
