"""`cxrkit compare RUN...`: the runs' test metrics in one table and their ROC curves overlaid."""

from __future__ import annotations

import argparse


def register(subparsers) -> None:
    parser = subparsers.add_parser(
        "compare", help="compare evaluated runs: Markdown/CSV table and overlaid ROC curves")
    parser.add_argument("runs", nargs="+", metavar="RUN", help="evaluated run folders")
    parser.add_argument("--out", default="comparison", help="output folder (default ./comparison)")
    parser.add_argument("--overwrite", action="store_true", help="replace an existing comparison")
    parser.set_defaults(func=handle)


def handle(args: argparse.Namespace) -> int:
    from cxrkit.evaluation import compare_runs

    result = compare_runs(args.runs, args.out, overwrite=args.overwrite)
    print(result["markdown"].rstrip())
    print(f"written: {', '.join(result['files'])}")
    return 0
