"""The `cxrkit` command: parse, call the library, print. Each verb lives in cxrkit.commands."""

from __future__ import annotations

import argparse
import importlib
import logging
import sys

from cxrkit import __version__
from cxrkit.errors import CxrkitError

COMMAND_MODULES = (
    "train", "predict", "recipes", "quickstart", "evaluate", "compare", "data",
    "explain", "export", "serve", "experiment", "tune", "ood", "segment", "calibrate",
    "monitor", "compare_deployment",
)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="cxrkit", description="Chest X-ray classifiers: train, evaluate, explain, serve.")
    parser.add_argument("--version", action="version", version=f"cxrkit {__version__}")
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name in COMMAND_MODULES:
        try:
            module = importlib.import_module(f"cxrkit.commands.{name}")
        except ModuleNotFoundError as error:
            if error.name == f"cxrkit.commands.{name}":
                continue
            raise
        module.register(subparsers)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Entry point: returns the exit code (0 ok, 1 failed check, 2 bad input, 130 interrupted)."""
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help()
        return 0
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    try:
        return int(args.func(args) or 0)
    except CxrkitError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
