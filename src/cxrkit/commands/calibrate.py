"""`cxrkit calibrate RUN --data SITE.csv`: local threshold calibration and a site operating point."""

from __future__ import annotations

import argparse

from cxrkit.commands.flags import as_cli
from cxrkit.deployment.calibrate import CHECK_FRACTION, SELECT_HELP


def register(subparsers) -> None:
    parser = subparsers.add_parser(
        "calibrate", help="calibrate a run's threshold on local site data (WHO TB screening style)",
        description="Split the site data into a calibration part and a check part; on the "
                    "calibration part tabulate sensitivity, specificity, PPV/NPV, referrals, "
                    "tests and missed cases per 1,000 and cost per case found over thresholds "
                    "(with 95% CIs), the WHO target product profile rows and per-subgroup "
                    "tables; with --select, freeze a site operating point reported on the check "
                    "part. Example: cxrkit calibrate runs/tb-fast --data ../shared/data/tb-nlm.csv "
                    "--prevalence 0.05 --by site --select 'sensitivity>=0.90'")
    parser.add_argument("run", help="run folder made by `cxrkit train` (binary)")
    parser.add_argument("--data", required=True,
                        help="site images with labels: CSV manifest (path,label[,patient],...) or "
                             "class folders")
    parser.add_argument("--site", help="name of the site (default: the data file's name)")
    parser.add_argument("--prevalence", type=float, metavar="P",
                        help="disease prevalence among the people screened, 0 < P < 1 "
                             "(default: the site data's own)")
    parser.add_argument("--cost-test", type=float, metavar="C",
                        help="cost of one confirmatory test (adds cost per case found)")
    parser.add_argument("--by", nargs="+", default=[], metavar="COLUMN",
                        help="subgroup tables by these CSV columns (e.g. site sex age_group hiv)")
    parser.add_argument("--select", metavar="RULE",
                        help=f"freeze a site operating point: {SELECT_HELP}")
    parser.add_argument("--check-fraction", type=float, default=CHECK_FRACTION, metavar="F",
                        help=f"share of the site data kept to check the chosen point "
                             f"(default {CHECK_FRACTION})")
    parser.add_argument("--class-map", metavar="DATA=MODEL,...",
                        help="rename classes of --data to the model's")
    parser.add_argument("--out", help="output folder (default RUN/sites/SITE)")
    parser.add_argument("--bootstrap", type=int, default=1000, metavar="N",
                        help="bootstrap resamples for the 95%% CIs (default 1000)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the split and bootstrap")
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--overwrite", action="store_true",
                        help="replace an existing calibration and site point of this name")
    parser.set_defaults(func=handle)


def handle(args: argparse.Namespace) -> int:
    from cxrkit.data.sources import parse_class_map
    from cxrkit.deployment.calibrate import SiteAnalysis, calibrate_site

    analysis = SiteAnalysis(select=args.select, prevalence=args.prevalence, cost_test=args.cost_test,
                            by=tuple(args.by or ()), check_fraction=args.check_fraction,
                            n_bootstrap=args.bootstrap, seed=args.seed)
    result = calibrate_site(args.run, args.data, site=args.site, analysis=analysis,
                            class_map=parse_class_map(args.class_map), out_dir=args.out,
                            overwrite=args.overwrite, batch_size=args.batch_size)
    print(summary_text(result))
    return 0


def _ci(interval) -> str:
    return f"(95% CI {interval[0]:.3f}-{interval[1]:.3f})" if interval else ""


def summary_text(result: dict) -> str:
    """The terminal summary: data, AUC, WHO rows, subgroups, the site point on the check part."""
    data = result["data"]
    part = result["calibration_part"]
    lines = [f"site {result['site']}: {data['n']} images ({data['n_positive']} "
             f"{result['positive_class']}), calibration part {data['n_calibration']}, check part "
             f"{data['n_check']}; prevalence {result['prevalence']:.3f} "
             f"({result['prevalence_source']})",
             f"ROC-AUC (calibration part) {part['roc_auc']:.3f} {_ci(part['roc_auc_ci95'])}"]
    for row in result["who_tpp"]:
        head = (f"WHO {row['profile']} ({row['target_sensitivity']:.2f}/"
                f"{row['target_specificity']:.2f}): ")
        if row["threshold"] is None:
            lines.append(head + "no threshold reaches the sensitivity")
            continue
        check = row.get("check", {})
        lines.append(head + f"threshold {row['threshold']:.4f} sens {row['sensitivity']:.3f} "
                     f"spec {row['specificity']:.3f} -> {'met' if row['met'] else 'not met'}; "
                     f"on check: sens {check.get('sensitivity', float('nan')):.3f} "
                     f"spec {check.get('specificity', float('nan')):.3f}")
    for entry in result["subgroups"]:
        text = f"  {entry['column']}={entry['value']}: n={entry['n']} ({entry['n_positive']} pos)"
        if "roc_auc" in entry:
            text += f", AUC {entry['roc_auc']:.3f} {_ci(entry['roc_auc_ci95'])}"
        if "check" in entry:
            check = entry["check"]
            text += (f", at site point on check: sens {check['sensitivity']:.3f} "
                     f"{_ci(check['sensitivity_ci95'])} spec {check['specificity']:.3f} "
                     f"{_ci(check['specificity_ci95'])}")
        lines.append(text + (f" [{entry['note']}]" if "note" in entry else ""))
    validation = result["validation_point"]
    lines.append(f"run's own point {validation['name']} (t={validation['threshold']:.4f}) on the "
                 f"check part: sens {validation['check_sensitivity']:.3f} spec "
                 f"{validation['check_specificity']:.3f}")
    point = result.get("site_point")
    if point:
        check = point["check"]
        lines.append(f"site point {result['site']} ({point['rule']}): threshold "
                     f"{point['threshold']:.4f}; calibration part sens {point['sensitivity']:.3f} "
                     f"spec {point['specificity']:.3f}")
        lines.append(f"  on the check part ({check['n']} images, {check['n_positive']} positive): "
                     f"sensitivity {check['sensitivity']:.3f} {_ci(check['sensitivity_ci95'])}, "
                     f"specificity {check['specificity']:.3f} {_ci(check['specificity_ci95'])}")
        lines.append(f"  frozen in {result['run']}/operating_points.json (sites.{result['site']});"
                     f" use it with --site {result['site']}")
    lines += [f"warning: {as_cli(w)}" for w in result["warnings"]]
    lines.append(f"report: {result['outputs']['dir']}/{result['outputs']['report']}")
    return "\n".join(lines)
