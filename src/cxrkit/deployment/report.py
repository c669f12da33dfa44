"""calibration.html: the site calibration on one page, in the style of the run's report.html."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
from matplotlib.figure import Figure

from cxrkit.deployment.tables import WHO_TPP
from cxrkit.evaluation.plots import _save
from cxrkit.evaluation.report import NOTICE, STYLE, _e, _figure, _number, _table, _with_ci

TABLE_COLUMNS = [("threshold", "threshold"), ("sensitivity", "sensitivity"),
                 ("specificity", "specificity"), ("ppv", "PPV"), ("npv", "NPV"),
                 ("referred_share", "referred"), ("tests_per_1000", "tests / 1,000"),
                 ("number_needed_to_test", "NNT"), ("missed_per_1000", "missed / 1,000"),
                 ("cost_per_case_found", "cost / case found")]
SHOWN_ROWS = 21


def write_calibration_report(out_dir: Path, document: dict, scores: pd.DataFrame,
                             thresholds: pd.DataFrame) -> Path:
    """Render calibration.html (plots embedded) into `out_dir`."""
    point = document.get("site_point")
    figures = {"rates": plot_rates(thresholds, point, out_dir / "plots" / "rates.png"),
               "roc": plot_site_roc(scores, point, out_dir / "plots" / "roc_who.png"),
               "tradeoff": plot_tradeoff(thresholds, point, out_dir / "plots" / "tradeoff.png"),
               "scores": plot_score_histogram(scores, point, out_dir / "plots" / "scores.png")}
    title = f"cxrkit site calibration: {Path(document['run']).name} at {document['site']}"
    sections = [("summary", "Summary", _summary(document)),
                ("who", "WHO target product profile", _who(document)),
                ("thresholds", "Thresholds", _thresholds(document, thresholds)),
                ("curves", "Curves", '<div class="figures">' + "".join(
                    _figure(figures[key], caption) for key, caption in (
                        ("rates", "Sensitivity and specificity by threshold (calibration part, "
                                  "95% CI bands)"),
                        ("roc", "ROC with the WHO target boxes (calibration and check parts)"),
                        ("tradeoff", "Confirmatory tests and missed cases per 1,000 screened"),
                        ("scores", "Scores of the site images by class"))) + "</div>"),
                ("subgroups", "Subgroups", _subgroups(document)),
                ("data", "Data and method", _data(document))]
    nav = " · ".join(f'<a href="#{key}">{name}</a>' for key, name, _ in sections)
    body = "".join(f'<section id="{key}"><h2>{name}</h2>{content}</section>'
                   for key, name, content in sections)
    page = (f'<!DOCTYPE html><html lang="en"><head><meta charset="utf-8"><title>{_e(title)}'
            f"</title><style>{STYLE}</style></head><body><h1>{_e(title)}</h1>"
            f'<div class="notice" id="notice"><strong>Not for clinical use.</strong> {_e(NOTICE)}'
            f"</div><nav>{nav}</nav>{body}"
            f'<footer class="note">Written by cxrkit {_e(document["cxrkit_version"])} on '
            f"{_e(document['created'])}.</footer></body></html>")
    path = out_dir / "calibration.html"
    path.write_text(page, encoding="utf-8")
    return path


def _summary(document: dict) -> str:
    data, point = document["data"], document.get("site_point")
    auc = document["calibration_part"]
    parts = [f"<p>{data['n']} site images from {_e(data['source'])}: a calibration part of "
             f"{data['n_calibration']} images, where every table is computed and the threshold is "
             f"chosen, and a check part of {data['n_check']} images, where the chosen point is "
             f"reported. ROC-AUC on the calibration part: "
             f"{_with_ci(auc['roc_auc'], auc['roc_auc_ci95'])}.</p>"]
    if point:
        check = point["check"]
        parts.append(
            f'<p class="big">Site operating point <strong>{_e(document["site"])}</strong> '
            f"({_e(point['rule'])}): {_e(document['positive_class'])} when P &ge; "
            f"<strong>{point['threshold']:.4f}</strong>, frozen in the run's "
            "operating_points.json.</p>"
            + _table(["", "calibration part", "check part"], [
                ["Sensitivity", _number(point["sensitivity"]),
                 _with_ci(check["sensitivity"], check["sensitivity_ci95"])],
                ["Specificity", _number(point["specificity"]),
                 _with_ci(check["specificity"], check["specificity_ci95"])],
                ["Images (positive)", f"{data['n_calibration']}", f"{check['n']} "
                 f"({check['n_positive']})"]]))
    else:
        parts.append("<p>No site operating point was frozen (use <code>--select</code>).</p>")
    validation = document["validation_point"]
    parts.append(f"<p>For comparison, the run's own point <strong>{_e(validation['name'])}"
                 f"</strong> (threshold {_number(validation['threshold'], 4)}, chosen on the "
                 f"training sites' validation split) gives sensitivity "
                 f"{_number(validation['check_sensitivity'])} and specificity "
                 f"{_number(validation['check_specificity'])} on the check part.</p>")
    parts += [f'<div class="warning">{_e(w)}</div>' for w in document["warnings"]]
    return "".join(parts)


def _who_rows_html(rows: list[dict], with_check: bool) -> str:
    header = ["profile", "target", "thresholds meeting it", "best-specificity threshold at the "
              "target sensitivity", "sensitivity", "specificity", "met"]
    if with_check:
        header += ["check sensitivity", "check specificity"]
    lines = []
    for row in rows:
        span = row["thresholds_meeting"]
        line = [_e(row["profile"]), f"{row['target_sensitivity']:.2f} / "
                f"{row['target_specificity']:.2f}",
                f"{row['n_thresholds_meeting']}" + (f" ({span[0]:.4f} to {span[1]:.4f})"
                                                    if span else ""),
                _number(row["threshold"], 4)]
        if row["threshold"] is None:
            line += ["n/a", "n/a", "no"]
        else:
            line += [_with_ci(row["sensitivity"], [row["sensitivity_low"], row["sensitivity_high"]]),
                     _with_ci(row["specificity"], [row["specificity_low"], row["specificity_high"]]),
                     "<strong>yes</strong>" if row["met"] else "no"]
        if with_check:
            check = row.get("check")
            line += ([_with_ci(check["sensitivity"], check["sensitivity_ci95"]),
                      _with_ci(check["specificity"], check["specificity_ci95"])]
                     if check else ["n/a", "n/a"])
        lines.append(line)
    return _table(header, lines)


def _who(document: dict) -> str:
    return ("<p>WHO's target product profile for TB screening tests: minimal sensitivity "
            f"{WHO_TPP['minimal']['sensitivity']:.2f} with specificity "
            f"{WHO_TPP['minimal']['specificity']:.2f}, optimal "
            f"{WHO_TPP['optimal']['sensitivity']:.2f} with {WHO_TPP['optimal']['specificity']:.2f}."
            " Thresholds are on the calibration part; the last columns show the same threshold "
            "on the check part.</p>" + _who_rows_html(document["who_tpp"], with_check=True))


def _rows_html(thresholds: pd.DataFrame, limit: int | None = SHOWN_ROWS) -> tuple[list, list]:
    columns = [(key, name) for key, name in TABLE_COLUMNS if key in thresholds.columns]
    shown = thresholds
    if limit and len(thresholds) > limit:
        shown = thresholds.iloc[np.unique(np.linspace(0, len(thresholds) - 1, limit).round()
                                          .astype(int))]
    rows = []
    for _, row in shown.iterrows():
        cells = []
        for key, _name in columns:
            digits = 4 if key == "threshold" else 1 if "1000" in key or key.startswith("cost") \
                else 3
            value = _cell(row[key])
            if f"{key}_low" in row and value is not None and np.isfinite(row[f"{key}_low"]):
                cells.append(f"{value:.{digits}f} <small>({row[f'{key}_low']:.{digits}f}&ndash;"
                             f"{row[f'{key}_high']:.{digits}f})</small>")
            else:
                cells.append(_number(value, digits))
        rows.append(cells)
    return [name for _, name in columns], rows


def _cell(value) -> float | None:
    value = float(value)
    return value if np.isfinite(value) else None


def _thresholds(document: dict, thresholds: pd.DataFrame) -> str:
    header, rows = _rows_html(thresholds)
    cost = (f", cost per case found at {document['cost_test']:g} per confirmatory test"
            if document.get("cost_test") else "")
    return (f"<p>At prevalence {document['prevalence']:.3f} ({_e(document['prevalence_source'])})"
            f"{cost}; an image is referred when P &ge; threshold. 95% CIs in brackets "
            f"({document['bootstrap']['resamples']} bootstrap resamples, stratified by class). "
            f"{len(rows)} of {len(thresholds)} thresholds shown; all are in thresholds.csv.</p>"
            + _table(header, rows))


def _subgroups(document: dict) -> str:
    if not document["subgroups"]:
        return '<p class="note">No subgroups asked for (use <code>--by COLUMN</code>).</p>'
    parts = []
    for entry in document["subgroups"]:
        title = f"{entry['column']} = {entry['value'] or '(empty)'}"
        head = f"<h3>{_e(title)}</h3><p>{entry['n']} images, {entry['n_positive']} positive."
        if "note" in entry:
            parts.append(head + f" {_e(entry['note'])}.</p>")
            continue
        head += f" ROC-AUC (calibration part) {_with_ci(entry['roc_auc'], entry['roc_auc_ci95'])}."
        check = entry.get("check")
        if check:
            head += (f" At the site point on the check part: sensitivity "
                     f"{_with_ci(check['sensitivity'], check['sensitivity_ci95'])}, specificity "
                     f"{_with_ci(check['specificity'], check['specificity_ci95'])}.")
        header, rows = _rows_html(entry["table"], limit=11)
        parts.append(head + "</p>" + _who_rows_html(entry["who_tpp"], with_check=False)
                     + "<details><summary>Thresholds</summary>" + _table(header, rows)
                     + "</details>")
    return "".join(parts)


def _data(document: dict) -> str:
    data = document["data"]
    rows = [["source", _e(data["source"])], ["sha256 of images and labels", data["sha256"]],
            ["images (positive)", f"{data['n']} ({data['n_positive']})"],
            ["unreadable, skipped", data["n_skipped"]],
            ["calibration / check", f"{data['n_calibration']} / {data['n_check']} (check fraction "
                                    f"{data['check_fraction']}, seed {data['split_seed']})"],
            ["split grouped by patient", "yes" if data["grouped_by_patient"] else
             "no (no patient column)"],
            ["model.ckpt sha256", document["model_sha256"]]]
    return (_table(["", "value"], rows)
            + "<p>The split is stratified by class and keeps a patient's images together. Tables "
              "and the threshold choice use the calibration part only; the check part is touched "
              "once, to report the chosen point.</p>")


def plot_rates(thresholds: pd.DataFrame, point: dict | None, path: Path) -> Path:
    figure = Figure(figsize=(6, 4.5))
    axes = figure.subplots()
    for name in ("sensitivity", "specificity"):
        line = axes.plot(thresholds["threshold"], thresholds[name], label=name)[0]
        axes.fill_between(thresholds["threshold"], thresholds[f"{name}_low"],
                          thresholds[f"{name}_high"], color=line.get_color(), alpha=0.2)
    axes.plot(thresholds["threshold"], thresholds["referred_share"], ":", label="referred share")
    if point:
        axes.axvline(point["threshold"], color="black", linestyle="--",
                     label=f"site point ({point['threshold']:.3f})")
    axes.set(xlabel="threshold on P(positive)", ylabel="rate", ylim=(-0.01, 1.01),
             title="Rates by threshold (calibration part)")
    axes.legend(fontsize=8)
    return _save(figure, path)


def plot_site_roc(scores: pd.DataFrame, point: dict | None, path: Path) -> Path:
    from sklearn.metrics import roc_curve

    figure = Figure(figsize=(5.5, 5))
    axes = figure.subplots()
    colours = {"minimal": "#f5cba7", "optimal": "#abebc6"}
    for profile, target in WHO_TPP.items():
        axes.fill_between([0, 1 - target["specificity"]], target["sensitivity"], 1,
                          color=colours[profile], alpha=0.6, label=f"WHO {profile}")
    for part, members in scores.groupby("part"):
        fpr, tpr, _ = roc_curve(members["positive"], members["score"])
        axes.plot(fpr, tpr, label=f"{part} part")
        if point:
            called = members["score"] >= point["threshold"]
            positive = members["positive"].astype(bool)
            axes.plot((called & ~positive).sum() / (~positive).sum(),
                      (called & positive).sum() / positive.sum(), "*", markersize=12,
                      color=axes.lines[-1].get_color())
    axes.plot([0, 1], [0, 1], ":", color="grey")
    axes.set(xlabel="1 - specificity", ylabel="sensitivity", xlim=(-0.01, 1.01),
             ylim=(-0.01, 1.01), title="ROC (star: site point)")
    axes.legend(loc="lower right", fontsize=8)
    return _save(figure, path)


def plot_tradeoff(thresholds: pd.DataFrame, point: dict | None, path: Path) -> Path:
    figure = Figure(figsize=(5.5, 4.5))
    axes = figure.subplots()
    axes.plot(thresholds["tests_per_1000"], thresholds["missed_per_1000"], "o-", markersize=3)
    if point:
        at = thresholds.iloc[(thresholds["threshold"] - point["threshold"]).abs().argmin()]
        axes.plot(at["tests_per_1000"], at["missed_per_1000"], "*", markersize=14, color="black",
                  label="site point")
        axes.legend(fontsize=8)
    axes.set(xlabel="confirmatory tests per 1,000 screened", ylabel="cases missed per 1,000",
             title="Tests against missed cases")
    return _save(figure, path)


def plot_score_histogram(scores: pd.DataFrame, point: dict | None, path: Path) -> Path:
    figure = Figure(figsize=(5.5, 4))
    axes = figure.subplots()
    bins = np.linspace(0, 1, 41)
    for label, members in scores.groupby("label"):
        axes.hist(members["score"], bins=bins, alpha=0.55, label=str(label))
    if point:
        axes.axvline(point["threshold"], color="black", linestyle="--", label="site point")
    axes.set(xlabel="P(positive)", ylabel="images", title="Site scores by class")
    axes.legend(fontsize=8)
    return _save(figure, path)
