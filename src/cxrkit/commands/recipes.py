"""`cxrkit recipes`: list the built-in recipes (and, with --models, the model registry)."""

from __future__ import annotations

import argparse


def register(subparsers) -> None:
    parser = subparsers.add_parser("recipes", help="list built-in recipes",
                                   description="Example: cxrkit recipes; cxrkit recipes --show tb-fast")
    parser.add_argument("--show", metavar="NAME", help="print one recipe's YAML")
    parser.add_argument("--models", action="store_true", help="list the model registry instead")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from importlib import resources

    from cxrkit.config import read_recipe, recipe_names

    if args.models:
        from cxrkit.models import MODELS

        for name, spec in MODELS.items():
            print(f"{name:20s} {spec.description}")
        return 0
    if args.show:
        read_recipe(args.show)
        print((resources.files("cxrkit") / "recipes" / f"{args.show}.yaml").read_text(), end="")
        return 0
    for name in recipe_names():
        print(f"{name:20s} {read_recipe(name).get('description', '')}")
    return 0
