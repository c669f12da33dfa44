"""`cxrkit evaluate RUN`: metrics with CIs, frozen operating points, report.html."""

from __future__ import annotations

import argparse
from typing import TYPE_CHECKING

from cxrkit.commands import positive_int

if TYPE_CHECKING:
    from cxrkit.evaluation import EvaluationResult


def register(subparsers) -> None:
    parser = subparsers.add_parser(
        "evaluate", help="evaluate a run on its test split or on external data; write report.html",
        description="Evaluate a run folder. Without --data: its own test split (outputs in the run "
                    "folder). With --data: a whole external dataset, classes matched by name "
                    "(outputs in RUN/external/NAME/). Thresholds are chosen on the validation "
                    "split only and frozen in RUN/operating_points.json.")
    parser.add_argument("run", help="run folder made by `cxrkit train`")
    parser.add_argument("--data", help="external data: class-per-folder directory or CSV manifest")
    parser.add_argument("--split", default="test", choices=["test", "val", "train"],
                        help="which split of the run to evaluate without --data (default test)")
    parser.add_argument("--class-map", metavar="DATA=MODEL,...",
                        help="rename classes of --data to the model's, "
                             "e.g. normal=Normal,tb=Tuberculosis")
    parser.add_argument("--out", help="output folder (default: the run, or RUN/external/NAME)")
    parser.add_argument("--operating-point", metavar="NAME",
                        help="evaluate at argmax, youden, max_f1 or sensitivity (with --sensitivity); "
                             "default: the run's default point (argmax until --set-default)")
    parser.add_argument("--set-default", action="store_true",
                        help="make --operating-point the run's default, used by serve, export, "
                             "compare and later evaluations")
    parser.add_argument("--sensitivity", type=float, metavar="S",
                        help="target sensitivity of the 'sensitivity' point (default 0.90, the WHO "
                             "TB triage target)")
    parser.add_argument("--bootstrap", type=int, default=1000, metavar="N",
                        help="bootstrap resamples for 95%% confidence intervals (default 1000)")
    parser.add_argument("--seed", type=int, default=0, help="bootstrap seed (default 0)")
    parser.add_argument("--no-calibration", action="store_true",
                        help="skip the temperature-scaled reliability figures")
    parser.add_argument("--no-gradcam", action="store_true",
                        help="leave the Grad-CAM gallery out of the report (faster on CPU)")
    parser.add_argument("--batch-size", type=positive_int, default=32, help="images per batch (default 32)")
    parser.add_argument("--overwrite", action="store_true",
                        help="replace an existing evaluation (and re-choose changed "
                             "operating points)")
    parser.set_defaults(func=handle)


def handle(args: argparse.Namespace) -> int:
    from cxrkit.commands.reporting import ProgressBars
    from cxrkit.data.sources import parse_class_map
    from cxrkit.evaluation import EvaluateOptions, evaluate_run

    options = EvaluateOptions(
        data=args.data, split=args.split, class_map=parse_class_map(args.class_map),
        out_dir=args.out, n_bootstrap=args.bootstrap, seed=args.seed,
        operating_point=args.operating_point, target_sensitivity=args.sensitivity,
        calibrate=not args.no_calibration, overwrite=args.overwrite, batch_size=args.batch_size,
        gradcam=not args.no_gradcam, set_default=args.set_default)
    result = evaluate_run(args.run, options, progress=ProgressBars())
    print(summary_text(result))
    return 0


def summary_text(result: EvaluationResult) -> str:
    """A few lines for the terminal: size, headline metrics with CIs, threshold, report path."""
    intervals = result.confidence_intervals
    point = result.operating_point

    def with_ci(name: str) -> str:
        low, high = intervals[name] or (float("nan"), float("nan"))
        return f"{name:<12} {result.metrics[name]:.3f}  (95% CI {low:.3f}-{high:.3f})"

    evaluated = result.evaluated
    lines = [f"evaluated {evaluated.n} images of {evaluated.source}"
             + (f" [{evaluated.split}]" if evaluated.split else "")
             + (f"; {evaluated.n_skipped} unreadable, skipped" if evaluated.n_skipped else "")]
    where = ("the run's default, in operating_points.json" if point.name == point.run_default else
             f"this evaluation only; the run's default stays {point.run_default}")
    if point.threshold is None or point.name == "argmax":
        lines.append(f"operating point argmax: the most probable class, no tuned threshold ({where})")
    else:
        lines.append(f"operating point {point.name}: P({result.positive_class}) >= "
                     f"{point.threshold:.4f}, chosen on {point.source} ({where})")
    lines += [with_ci("roc_auc"), with_ci("accuracy")]
    if result.sensitivity is not None:
        lines += [with_ci("sensitivity"), with_ci("specificity")]
    if result.per_site is not None and len(result.per_site.get("sites", {})) > 1:
        from cxrkit.evaluation.sites import per_site_lines

        lines.append("per site (95% CI):")
        lines += ["  " + line for line in per_site_lines(result.per_site)]
    lines += [f"warning: {w}" for w in result.warnings]
    ood = result.out_of_distribution
    if ood is None:
        lines.append("no out-of-distribution check: the run has no reference (`cxrkit ood RUN`)")
    elif ood["warn"]:
        rule = "!" * 78
        lines = [rule, f"WARNING: {ood['message']}", rule, *lines]
    else:
        lines.append(f"out of distribution: {ood['message']}")
    lines.append(f"report: {result.outputs['dir']}/report.html")
    return "\n".join(lines)
