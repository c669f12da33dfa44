"""monitor.html: drift, rates over time and running accuracy, in the style of report.html."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
from matplotlib.figure import Figure

from cxrkit.evaluation.plots import _save
from cxrkit.evaluation.report import NOTICE, STYLE, _e, _figure, _number, _table, _with_ci


def write_monitor_report(out_dir: Path, document: dict, log: pd.DataFrame,
                         reference: np.ndarray | None, over_time: pd.DataFrame,
                         curve: pd.DataFrame | None) -> Path:
    (out_dir / "plots").mkdir(exist_ok=True)
    figures = [
        (plot_scores(log["score"].to_numpy(), reference, out_dir / "plots" / "scores.png"),
         "Scores logged against the calibration reference"),
        (plot_rates(over_time, out_dir / "plots" / "rates.png"),
         "Requests, referral rate and OOD rate over time")]
    if curve is not None:
        figures.append((plot_running(curve, document["outcomes"]["min_sensitivity"],
                                     out_dir / "plots" / "running_sensitivity.png"),
                        "Running sensitivity as outcomes arrive"))
    summary = [["requests (images)", f"{document['n_requests']} ({document['n_images']})"],
               ["from / to", f"{_e(document['first'])} / {_e(document['last'])}"],
               ["models", _e(", ".join(f"{k} ({v})" for k, v in document["models"].items()))],
               ["operating points", _e(", ".join(f"{k} ({v})" for k, v in
                                                 document["operating_points"].items()))],
               ["referral rate", _number(document["referral_rate"])],
               ["OOD rate", _number(document["ood_rate"]) if document["ood_rate"] is not None
                else "not logged"]]
    found = document.get("drift")
    if found:
        summary += [["PSI against the reference", f"{found['psi']:.3f} ({found['level']}; alarm "
                                                  f"at {found['psi_max']})"],
                    ["KS D (p)", f"{found['ks_statistic']:.3f} ({found['ks_pvalue']:.2g}); alarm "
                                 f"at {found['ks_max']}"]]
    outcomes = document.get("outcomes")
    if outcomes:
        summary += [["outcomes attached (positive)",
                     f"{outcomes['n']} ({outcomes['n_positive']})"],
                    ["running sensitivity", _with_ci(outcomes["sensitivity"],
                                                     outcomes["sensitivity_ci95"])],
                    ["running specificity", _with_ci(outcomes["specificity"],
                                                     outcomes["specificity_ci95"])],
                    ["target sensitivity", f"{outcomes['min_sensitivity']:.2f}"]]
    verdict = ("".join(f'<div class="warning">Alarm: {_e(r)}.</div>'
                       for r in document["alarm_reasons"])
               or "<p class=\"big\">No alarm: no drift past the thresholds and no running "
                  "sensitivity below its target.</p>")
    title = f"cxrkit monitoring: {document['log']}"
    page = (f'<!DOCTYPE html><html lang="en"><head><meta charset="utf-8"><title>{_e(title)}'
            f"</title><style>{STYLE}</style></head><body><h1>{_e(title)}</h1>"
            f'<div class="notice"><strong>Not for clinical use.</strong> {_e(NOTICE)}</div>'
            f'<section id="summary"><h2>Summary</h2>{verdict}{_table(["", "value"], summary)}'
            f"</section><section id=\"plots\"><h2>Plots</h2><div class=\"figures\">"
            + "".join(_figure(path, caption) for path, caption in figures)
            + "</div></section>"
            f'<footer class="note">Written by cxrkit {_e(document["cxrkit_version"])} on '
            f"{_e(document['created'])}. Drift: PSI over the reference deciles and the "
            "two-sample KS statistic; intervals: Wilson 95%.</footer></body></html>")
    path = out_dir / "monitor.html"
    path.write_text(page, encoding="utf-8")
    return path


def plot_scores(scores: np.ndarray, reference: np.ndarray | None, path: Path) -> Path:
    figure = Figure(figsize=(5.5, 4))
    axes = figure.subplots()
    bins = np.linspace(0, 1, 41)
    axes.hist(scores, bins=bins, density=True, alpha=0.55, label=f"logged (n={len(scores)})")
    if reference is not None:
        axes.hist(reference, bins=bins, density=True, alpha=0.55,
                  label=f"calibration reference (n={len(reference)})")
    axes.set(xlabel="score", ylabel="density", title="Score distribution")
    axes.legend(fontsize=8)
    return _save(figure, path)


def plot_rates(over_time: pd.DataFrame, path: Path) -> Path:
    figure = Figure(figsize=(6, 4))
    axes = figure.subplots()
    axes.plot(over_time["time"], over_time["referral_rate"], "o-", label="referral rate")
    if over_time["ood_rate"].notna().any():
        axes.plot(over_time["time"], over_time["ood_rate"], "s-", label="OOD rate")
    axes.set(ylabel="rate", ylim=(-0.01, 1.01), title="Rates over time")
    counts = axes.twinx()
    counts.bar(over_time["time"], over_time["requests"], alpha=0.15, color="grey",
               width=0.03 if len(over_time) < 3 else 0.8 * (over_time["time"].diff().min()
                                                          / pd.Timedelta(days=1)))
    counts.set_ylabel("requests")
    axes.legend(fontsize=8, loc="upper left")
    figure.autofmt_xdate()
    return _save(figure, path)


def plot_running(curve: pd.DataFrame, target: float, path: Path) -> Path:
    figure = Figure(figsize=(5.5, 4))
    axes = figure.subplots()
    axes.plot(curve["positives"], curve["sensitivity"], label="running sensitivity")
    axes.axhline(target, linestyle="--", color="black", label=f"target {target:.2f}")
    axes.set(xlabel="confirmed positives so far", ylabel="sensitivity", ylim=(-0.01, 1.01),
             title="Running sensitivity")
    axes.legend(fontsize=8)
    return _save(figure, path)
