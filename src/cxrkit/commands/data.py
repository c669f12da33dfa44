"""`cxrkit data audit`: check a dataset for duplicates, leakage and shortcuts before training."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path


def register(subparsers) -> None:
    parser = subparsers.add_parser("data", help="inspect datasets (audit for leakage)",
                                   description="Inspect datasets before training.")
    verbs = parser.add_subparsers(dest="data_command", metavar="ACTION", required=True)
    audit = verbs.add_parser(
        "audit", help="duplicates, leakage, unreadable files and shortcut hints",
        description="Audit a dataset: class balance, image properties, unreadable files, exact "
                    "and near duplicates, duplicates and patients shared across splits or with "
                    "another dataset, and shortcut hints. Writes audit.json, audit.html, "
                    "images.csv and figures.")
    audit.add_argument("data", help="class-per-folder or train/val/test folder, CSV manifest, "
                                    "hf:NAME[:CONFIG] or kaggle:HANDLE")
    audit.add_argument("--split-file", help="split.csv (or a run folder) giving each image's split")
    audit.add_argument("--against", help="a second dataset to check for shared images "
                                         "(e.g. an external test set)")
    audit.add_argument("--out", help="report folder (default: audit-<data name>)")
    audit.add_argument("--group-pattern",
                       help="regex on file names whose first group is the patient id, e.g. "
                            "'person(\\d+)_'; known schemes are detected when not given")
    audit.add_argument("--max-distance", type=int, default=4,
                       help="near-duplicate threshold: differing perceptual-hash bits per 64 "
                            "(default 4; 0 = visually identical)")
    audit.add_argument("--strict", action="store_true",
                       help="exit with status 1 when leakage is found")
    audit.add_argument("--workers", type=int, help="threads (default: all cores)")
    audit.add_argument("--overwrite", action="store_true", help="replace an existing report")
    audit.set_defaults(func=run_audit)


def _default_out(data: str) -> Path:
    name = Path(data.split(":", 1)[1] if data.startswith(("hf:", "kaggle:")) else data).name
    return Path(f"audit-{name or 'data'}")


def summary_lines(report: dict) -> list[str]:
    """The printed summary of an audit report."""
    lines = [f"{report['images']} images, classes "
             + ", ".join(f"{k} {v}" for k, v in report["classes"].items())
             + f" (imbalance {report['imbalance_ratio']}:1)"]
    for split, counts in report["splits"].items():
        lines.append(f"  {split}: " + ", ".join(f"{k} {v}" for k, v in counts.items()))
    problems = {kind: len(items) for kind, items in report["problems"].items() if items}
    if problems:
        lines.append("unreadable files: " + ", ".join(f"{n} {k}" for k, n in problems.items()))
    if report["ignored_files"]:
        lines.append(f"ignored {len(report['ignored_files'])} non-image file(s)")
    duplicates = report["duplicates"]
    lines.append(f"exact duplicates: {len(duplicates['exact_groups'])} groups; near duplicates "
                 f"(distance <= {duplicates['max_distance']}): {len(duplicates['near_groups'])} "
                 f"groups, {duplicates['images_in_near_groups']} images")
    if duplicates["label_conflicts"]:
        lines.append(f"  {len(duplicates['label_conflicts'])} duplicate groups carry different "
                     "labels: check them")
    grouping = report["grouping"]
    if grouping["source"] == "auto-detected":
        lines.append(f"patient ids auto-detected: {grouping['description']} "
                     f"(pattern {grouping['pattern']!r}; override with --group-pattern)")
    leakage = report["leakage"]
    patients = leakage["patients_across_splits"]
    if patients:
        lines.append(f"patients across splits: {patients['shared_groups']} of "
                     f"{patients['groups']} groups ({patients['shared_images']} images)"
                     + (f" {patients['by_splits']}" if patients["by_splits"] else ""))
    elif report["splits"]:
        lines.append("patients across splits: unknown (no patient ids; give --group-pattern)")
    if report["splits"]:
        lines.append(f"duplicate groups across splits: "
                     f"{len(leakage['duplicates_across_splits'])}")
    if leakage["against"]:
        other = leakage["against"]
        lines.append(f"against {other['source']}: {other['images_shared']} images shared "
                     f"({other['exact_duplicates']} exact, {other['near_duplicate_pairs']} "
                     "near-duplicate pairs)")
    for hint in report["shortcuts"]:
        lines.append(f"shortcut hint: {hint['message']}")
    lines.append("LEAKAGE FOUND" if leakage["found"] else "no leakage found")
    return lines


def run_audit(args: argparse.Namespace) -> int:
    from tqdm import tqdm

    from cxrkit.data.audit import ImageReading, audit_dataset

    out = Path(args.out) if args.out else _default_out(args.data)
    with tqdm(desc="reading images", unit="img", disable=None, leave=False) as bar:

        def progress(done: int, total: int) -> None:
            bar.total = total
            bar.update(done - bar.n)

        report = audit_dataset(args.data, split_file=args.split_file, against=args.against,
                               group_pattern=args.group_pattern,
                               max_distance=args.max_distance, out_dir=out,
                               overwrite=args.overwrite,
                               reading=ImageReading(workers=args.workers, progress=progress))
    for line in summary_lines(report):
        print(line)
    print(f"report: {out / report['outputs']['html']} ({report['seconds']} s)")
    if args.strict and report["leakage"]["found"]:
        print("error: leakage found (--strict)", file=sys.stderr)
        return 1
    return 0
