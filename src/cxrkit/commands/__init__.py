"""One module per CLI verb; each exposes `register(subparsers)` and sets `func` on its parser."""

import argparse


def positive_int(text: str) -> int:
    """argparse type: an integer of 1 or more (batch sizes, counts)."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"{value} is less than 1; give 1 or more")
    return value
