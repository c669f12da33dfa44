"""`cxrkit compare-deployment OLD_RUN NEW_RUN --data SITE.csv`: the upgrade guard."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from cxrkit.errors import CxrkitError


def register(subparsers) -> None:
    parser = subparsers.add_parser(
        "compare-deployment", help="upgrade guard: old and new model at the old site point",
        description="Score the site data with both runs; show how the referral rate, "
                    "sensitivity and specificity move at the old run's site operating point, "
                    "and mark the new run not ready (exit 1) until it has its own site point. "
                    "Images the old point was calibrated on are left out. Example: cxrkit "
                    "compare-deployment runs/tb-fast runs/tb-fast-v2 --data site.csv")
    parser.add_argument("old_run", help="the run in use, with a site operating point")
    parser.add_argument("new_run", help="the run that would replace it")
    parser.add_argument("--data", required=True, help="site images with labels (CSV or folders)")
    parser.add_argument("--site", help="site point to compare at (default: the old run's only one)")
    parser.add_argument("--class-map", metavar="DATA=MODEL,...")
    parser.add_argument("--out", help="write the comparison as JSON to this file")
    parser.add_argument("--bootstrap", type=int, default=1000, metavar="N")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--overwrite", action="store_true", help="replace an existing --out file")
    parser.set_defaults(func=handle)


def handle(args: argparse.Namespace) -> int:
    from cxrkit.data.sources import parse_class_map
    from cxrkit.deployment.upgrade import compare_deployment

    out = Path(args.out) if args.out else None
    if out is not None and out.exists() and not args.overwrite:
        raise CxrkitError(f"--out {out} already exists; pass --overwrite to replace it")
    if args.bootstrap < 100:
        raise CxrkitError(f"--bootstrap {args.bootstrap}: use at least 100 resamples")
    result = compare_deployment(args.old_run, args.new_run, args.data, site=args.site,
                                class_map=parse_class_map(args.class_map),
                                n_bootstrap=args.bootstrap, seed=args.seed)
    print(summary_text(result))
    if out is not None:
        out.write_text(json.dumps(result, indent=2) + "\n")
    return 0 if result["ready"] else 1


def summary_text(result: dict) -> str:
    lines = [f"site {result['site']}: {result['n']} images ({result['n_positive']} positive) of "
             f"{result['data']}, {result['excluded_calibration_images']} calibration images of "
             "the old point left out",
             f"{'':22}{'threshold':>10}{'referred':>10}{'sensitivity (95% CI)':>26}"
             f"{'specificity (95% CI)':>26}{'median score':>14}"]
    rows = [("old model, old point", "old_at_old_point"), ("new model, old point",
                                                           "new_at_old_point"),
            ("new model, own point", "new_at_new_point")]
    for label, key in rows:
        if key not in result:
            continue
        row = result[key]
        sensitivity, specificity = row["sensitivity_ci95"], row["specificity_ci95"]
        lines.append(f"{label:22}{row['threshold']:>10.4f}{row['referral_rate']:>10.3f}"
                     f"{row['sensitivity']:>8.3f} ({sensitivity[0]:.3f}-{sensitivity[1]:.3f})"
                     f"   {row['specificity']:>8.3f} ({specificity[0]:.3f}-{specificity[1]:.3f})"
                     f"   {row['median_score']:>10.3f}")
    lines.append(f"score distribution shift old -> new: PSI {result['score_psi']:.3f}")
    lines.append(result["verdict"])
    return "\n".join(lines)
