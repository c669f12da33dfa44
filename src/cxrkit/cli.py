"""The `cxrkit` command: parse, call the library, print. Each verb lives in cxrkit.commands."""

from __future__ import annotations

import argparse
import importlib
import logging
import signal
import sys
import threading

from cxrkit.commands.flags import CliFormatter, as_cli
from cxrkit.errors import CxrkitError, TrainingInterrupted
from cxrkit.extras import install_hint
from cxrkit.version import __version__

RESUMABLE = ("tune", "experiment")  # they continue where they stopped when run again
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
    for name in COMMAND_MODULES:  # a missing or broken command module fails loudly here
        importlib.import_module(f"cxrkit.commands.{name}").register(subparsers)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Entry point: returns the exit code (0 ok, 1 failed check, 2 bad input, 130 interrupted)."""
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help()
        return 0
    handler = logging.StreamHandler()
    handler.setFormatter(CliFormatter("%(message)s"))
    logging.basicConfig(level=logging.INFO, handlers=[handler])
    in_main_thread = threading.current_thread() is threading.main_thread()
    previous = signal.signal(signal.SIGTERM, _terminate) if in_main_thread else None
    again = args.command in RESUMABLE
    try:
        return int(args.func(args) or 0)
    except TrainingInterrupted as error:
        print("interrupted: run the same command again to continue" if again
              else f"interrupted: {error}", file=sys.stderr)
        return 130
    except CxrkitError as error:
        print(f"error: {as_cli(str(error))}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted: run the same command again to continue" if again else "interrupted",
              file=sys.stderr)
        return 130
    except ModuleNotFoundError as error:
        hint = install_hint(error, args.command)
        if hint is None:
            raise
        print(f"error: {hint}", file=sys.stderr)
        return 2
    finally:
        if in_main_thread:
            signal.signal(signal.SIGTERM, previous)


def _terminate(signum, frame) -> None:
    """SIGTERM stops a command the way Ctrl-C does: checkpoints saved, one line, exit 130."""
    raise KeyboardInterrupt


if __name__ == "__main__":
    sys.exit(main())
