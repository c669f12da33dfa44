"""`cxrkit monitor LOG`: drift, referral/OOD rates and running accuracy of a silent-mode log."""

from __future__ import annotations

import argparse

from cxrkit.deployment.monitor import KS_MAX, PSI_MAX


def register(subparsers) -> None:
    parser = subparsers.add_parser(
        "monitor", help="read a `serve --log` request log: drift, rates, running sensitivity",
        description="Score drift against the site's calibration data (PSI, KS), referral and "
                    "OOD rates over time and, with --outcomes, running sensitivity and "
                    "specificity of the logged decisions. Exit code 1 on an alarm (for cron/CI): "
                    f"PSI >= --psi-max (default {PSI_MAX}), KS D >= --ks-max (default {KS_MAX}), "
                    "or a running sensitivity whose 95% CI lies below --min-sensitivity. "
                    "Example: cxrkit monitor requests.sqlite --reference runs/tb-fast/sites/tb-nlm "
                    "--outcomes outcomes.csv")
    parser.add_argument("log", help="SQLite file or database URL given to `cxrkit serve --log`")
    parser.add_argument("--reference", metavar="RUN_OR_CALIBRATION",
                        help="calibration folder (RUN/sites/NAME) or a run with one site: the "
                             "score distribution drift is measured against")
    parser.add_argument("--outcomes", metavar="CSV",
                        help="confirmed outcomes: image_sha256 (or path) and outcome columns")
    parser.add_argument("--psi-max", type=float, default=PSI_MAX,
                        help=f"PSI that counts as drift (default {PSI_MAX})")
    parser.add_argument("--ks-max", type=float, default=KS_MAX,
                        help=f"KS statistic that counts as drift (default {KS_MAX})")
    parser.add_argument("--min-sensitivity", type=float, metavar="S",
                        help="target sensitivity (default: the site point's target, else 0.90)")
    parser.add_argument("--out", default="monitor",
                        help="folder for monitor.json and monitor.html (default ./monitor; "
                             "those two files are replaced on each run)")
    parser.set_defaults(func=handle)


def handle(args: argparse.Namespace) -> int:
    from cxrkit.deployment.monitor import monitor_log

    result = monitor_log(args.log, outcomes=args.outcomes, reference=args.reference,
                         psi_max=args.psi_max, ks_max=args.ks_max,
                         min_sensitivity=args.min_sensitivity, out_dir=args.out)
    print(summary_text(result))
    return 1 if result["alarm"] else 0


def summary_text(result: dict) -> str:
    lines = [f"{result['n_requests']} requests ({result['n_images']} images) from "
             f"{result['first']} to {result['last']}; referral rate {result['referral_rate']:.3f}"
             + (f", OOD rate {result['ood_rate']:.3f}" if result["ood_rate"] is not None else "")]
    found = result.get("drift")
    if found:
        lines.append(f"drift against {result['reference']}: PSI {found['psi']:.3f} "
                     f"({found['level']}), KS D {found['ks_statistic']:.3f} "
                     f"(p {found['ks_pvalue']:.2g})")
    outcomes = result.get("outcomes")
    if outcomes:
        def ci(name: str) -> str:
            value, interval = outcomes[name], outcomes[f"{name}_ci95"]
            return "n/a" if value is None else (f"{value:.3f} (95% CI {interval[0]:.3f}-"
                                                f"{interval[1]:.3f})")

        lines.append(f"outcomes for {outcomes['n']} images ({outcomes['n_positive']} positive): "
                     f"sensitivity {ci('sensitivity')}, specificity {ci('specificity')}")
    lines += [f"ALARM: {reason}" for reason in result["alarm_reasons"]]
    lines.append(f"report: {result['outputs']['dir']}/{result['outputs']['report']}")
    return "\n".join(lines)
