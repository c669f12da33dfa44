"""One self-contained report.html (plots embedded) that a clinical reader can follow."""

from __future__ import annotations

import base64
import html
import json
from pathlib import Path

NOTICE = ("Research use only. Not a medical device and not for clinical use: these figures come "
          "from retrospective data and do not show that the model is safe or effective for "
          "patients. Any clinical use needs prospective validation and regulatory approval.")

SECTIONS = [("summary", "Summary"), ("data", "Data"), ("metrics", "Metrics"),
            ("sites", "Per site"), ("operating-points", "Operating points"), ("curves", "ROC and precision-recall"),
            ("calibration", "Calibration"), ("samples", "Sample predictions"),
            ("gradcam", "Grad-CAM examples"), ("model", "Model and preprocessing")]

STYLE = """
body{font-family:system-ui,-apple-system,Segoe UI,sans-serif;max-width:1100px;margin:2em auto;
padding:0 1em;color:#222;line-height:1.45}
h1{font-size:1.6em}h2{border-bottom:2px solid #ddd;padding-bottom:.2em;margin-top:2em}
table{border-collapse:collapse;margin:.6em 0}td,th{border:1px solid #ccc;padding:.3em .6em;
text-align:right}th{background:#f3f3f3}td:first-child,th:first-child{text-align:left}
.notice{background:#fff4e5;border-left:6px solid #e67e00;padding:.8em 1em}
.warning{background:#fdecea;border-left:6px solid #c0392b;padding:.6em 1em;margin:.4em 0}
.ood-warning{background:#c0392b;color:#fff;font-size:1.2em;padding:.9em 1.1em;margin:.8em 0}
.note{color:#555;font-style:italic}img{max-width:100%;border:1px solid #eee}
.figures{display:flex;flex-wrap:wrap;gap:1em}.figures figure{margin:0;flex:1 1 420px}
.big{font-size:1.15em}pre{background:#f7f7f7;padding:.8em;overflow-x:auto}
"""


def write_report(path: Path, document: dict, figures: dict[str, Path], gallery: list[dict] | None,
                 classification_report: str) -> Path:
    """Render the metrics document, figures and optional Grad-CAM gallery into one HTML file."""
    evaluated = document["evaluated"]
    what = (f"external data {evaluated['source']}" if evaluated["kind"] == "external"
            else f"{evaluated['split']} split")
    title = f"cxrkit evaluation: {Path(document['run']).name}, {what}"
    body = [f"<h1>{_e(title)}</h1>",
            f'<div class="notice" id="notice"><strong>Not for clinical use.</strong> '
            f"{_e(NOTICE)}</div>",
            _ood_banner(document.get("out_of_distribution")),
            "<nav>" + " · ".join(f'<a href="#{key}">{name}</a>' for key, name in SECTIONS)
            + "</nav>"]
    renderers = {"summary": _summary, "data": _data, "metrics": _metrics, "sites": _sites,
                 "operating-points": _operating_points, "curves": _curves,
                 "calibration": _calibration, "samples": _samples, "gradcam": _gradcam,
                 "model": _model}
    context = {"figures": figures, "gallery": gallery, "report": classification_report}
    for key, name in SECTIONS:
        content = renderers[key](document, context)
        body.append(f'<section id="{key}"><h2>{name}</h2>{content}</section>')
    page = (f'<!DOCTYPE html><html lang="en"><head><meta charset="utf-8"><title>{_e(title)}</title>'
            f"<style>{STYLE}</style></head><body>{''.join(body)}"
            f'<footer class="note">Written by cxrkit {_e(document["cxrkit_version"])} on '
            f"{_e(document['created'])}.</footer></body></html>")
    path.write_text(page, encoding="utf-8")
    return path


def _ood_banner(ood: dict | None) -> str:
    """At the top of the report: how many images are unlike the training data; loud above 5%."""
    if ood is None:
        return ('<p class="note" id="ood">No out-of-distribution check: this run has no '
                "reference (add one with <code>cxrkit ood RUN</code>).</p>")
    method = (f"Method: {_e(ood['method'])}; threshold {ood['threshold']:.3f} = the "
              f"{ood['percentile']:g}th percentile of {ood['n_val']} validation images' scores. "
              "Per image: <code>ood_score</code> and <code>out_of_distribution</code> in "
              "predictions.csv.")
    if ood["warn"]:
        return (f'<div class="ood-warning" id="ood"><strong>Warning: out of distribution.</strong> '
                f"{_e(ood['message'])}<br><small>{method}</small></div>")
    return f'<p id="ood">Out-of-distribution check: {_e(ood["message"])} <small>{method}</small></p>'


def _e(value) -> str:
    return html.escape(str(value))


def _number(value, digits: int = 3) -> str:
    return "n/a" if value is None else f"{value:.{digits}f}"


def _with_ci(value, interval) -> str:
    if interval is None:
        return _number(value)
    return f"{_number(value)} <small>(95% CI {interval[0]:.3f} to {interval[1]:.3f})</small>"


def _table(header: list[str], rows: list[list]) -> str:
    head = "".join(f"<th>{_e(h)}</th>" for h in header)
    lines = "".join("<tr>" + "".join(f"<td>{cell}</td>" for cell in row) + "</tr>" for row in rows)
    return f"<table><thead><tr>{head}</tr></thead><tbody>{lines}</tbody></table>"


def _figure(path: Path | None, caption: str) -> str:
    if path is None or not Path(path).is_file():
        return f'<p class="note">{_e(caption)}: not available.</p>'
    data = base64.b64encode(Path(path).read_bytes()).decode("ascii")
    return (f'<figure><img alt="{_e(caption)}" src="data:image/png;base64,{data}">'
            f"<figcaption>{_e(caption)}</figcaption></figure>")


def _threshold_sentence(document: dict) -> str:
    return _point_sentence(document) + " " + _default_sentence(document["operating_point"])


def _default_sentence(point: dict) -> str:
    """Which point `cxrkit predict`, `Predictor.predict`, the API and the page decide at."""
    default = point.get("run_default", point["name"])
    where = "this one" if default == point["name"] else f"<strong>{_e(default)}</strong>"
    return (f"<code>cxrkit predict</code>, <code>Predictor.predict</code>, the REST API and the web "
            f"page decide at the run's default operating point, {where}.")


def _point_sentence(document: dict) -> str:
    point = document["operating_point"]
    if point["threshold"] is None:
        return "Each image is given the most probable class (argmax); no threshold is tuned."
    if point["name"] == "argmax":
        return (f"Operating point <strong>argmax</strong>: an image is called "
                f"{_e(document['positive_class'])} when its probability is at least 0.5 (the "
                "most probable class); no threshold was tuned. Thresholds tuned on the validation "
                'split are compared below under <a href="#operating-points">Operating points</a>.')
    source = (f"chosen on the run's validation split (n={point['n_val']}) on {point['chosen_at']} "
              f"and frozen in {point['file']}")
    if document["evaluated"]["kind"] == "external":
        source += "; it was not re-tuned on this external data"
    return (f"Operating point <strong>{_e(point['name'])}</strong> ({_e(point['rule'])}): an image "
            f"is called {_e(document['positive_class'])} when its probability is at least "
            f"<strong>{point['threshold']:.4f}</strong>, {_e(source)}.")


def _summary(document: dict, context: dict) -> str:
    intervals = document["confidence_intervals"]
    rows = [["Images evaluated", document["evaluated"]["n"]],
            ["ROC-AUC", _with_ci(document["roc_auc"], intervals["roc_auc"])],
            ["Accuracy", _with_ci(document["accuracy"], intervals["accuracy"])]]
    if "sensitivity" in document:
        rows.insert(2, ["Sensitivity", _with_ci(document["sensitivity"], intervals["sensitivity"])])
        rows.insert(3, ["Specificity", _with_ci(document["specificity"], intervals["specificity"])])
    parts = [f'<p class="big">{_threshold_sentence(document)}</p>', _table(["", "value"], rows)]
    if "who_tb_triage" in document:
        who = document["who_tb_triage"]
        verdict = "meets" if who["met"] else "does not meet"
        parts.append(f"<p>At this operating point the model <strong>{verdict}</strong> the WHO "
                     "triage target for TB (sensitivity &ge; 0.90 with specificity &ge; 0.70).</p>")
    parts += [f'<div class="warning">{_e(w)}</div>' for w in document["warnings"]]
    return "".join(parts)


def _data(document: dict, context: dict) -> str:
    evaluated = document["evaluated"]
    parts = [f"<p>Evaluated: {_e(evaluated['source'])}"
             + (f" (split <strong>{_e(evaluated['split'])}</strong>)" if evaluated["split"] else "")
             + f", {evaluated['n']} images; {evaluated['n_skipped']} unreadable images "
             "skipped.</p>"]
    supports = [[_e(name), values["support"]] for name, values in document["per_class"].items()]
    parts.append(_table(["class", "images evaluated"], supports))
    if evaluated.get("class_map"):
        parts.append("<p>Classes of the data matched to the model's: "
                     + ", ".join(f"{_e(k)} &rarr; {_e(v)}"
                                 for k, v in evaluated["class_map"].items())
                     + ".</p>")
    external = " and in the external data" if evaluated["kind"] == "external" else ""
    parts.append(_figure(context["figures"].get("class_distribution"),
                         "Images per class in each split of the run" + external))
    if document["skipped"]:
        items = "".join(f"<li>{_e(s['path'])}: {_e(s['reason'])}</li>"
                        for s in document["skipped"][:50])
        more = len(document["skipped"]) - 50
        parts.append(f"<details><summary>Skipped images</summary><ul>{items}</ul>"
                     + (f"<p>and {more} more (skipped_images.csv)</p>" if more > 0 else "")
                     + "</details>")
    return "".join(parts)


def _metrics(document: dict, context: dict) -> str:
    intervals = document["confidence_intervals"]
    overall = [["Accuracy", _with_ci(document["accuracy"], intervals["accuracy"])],
               ["Balanced accuracy", _number(document["balanced_accuracy"])],
               ["ROC-AUC" + (" (one-vs-rest macro)" if "sensitivity" not in document else ""),
                _with_ci(document["roc_auc"], intervals["roc_auc"])],
               ["PR-AUC (average precision)", _number(document["pr_auc"])],
               ["Brier score", _number(document["brier"])],
               ["Expected calibration error", _number(document["ece"])]]
    per_class_ci = intervals.get("per_class", {})
    rows = []
    for name, values in document["per_class"].items():
        ci = per_class_ci.get(name, {})
        if name == document.get("positive_class"):
            ci = {"sensitivity": intervals["sensitivity"], "specificity": intervals["specificity"]}
        rows.append([_e(name), _number(values["precision"]),
                     _with_ci(values["sensitivity"], ci.get("sensitivity")),
                     _with_ci(values["specificity"], ci.get("specificity")),
                     _number(values["f1"]), values["support"]])
    for label, key in (("macro average", "macro_avg"), ("weighted average", "weighted_avg")):
        average = document[key]
        rows.append([label, _number(average["precision"]), _number(average["recall"]),
                     _number(average["specificity"]), _number(average["f1"]), document["n"]])
    bootstrap = document["bootstrap"]
    return (_table(["metric", "value"], overall)
            + _table(["class", "precision (PPV)", "sensitivity (recall)", "specificity", "F1",
                      "images"], rows)
            + f'<p class="note">95% confidence intervals: {bootstrap["resamples"]} bootstrap '
              f'resamples ({_e(bootstrap["method"])}, seed {bootstrap["seed"]}).</p>'
            + _figure(context["figures"].get("confusion"), "Confusion matrix")
            + f"<details><summary>Classification report</summary><pre>{_e(context['report'])}</pre>"
              "</details>")


def _sites(document: dict, context: dict) -> str:
    block = document.get("per_site")
    if not block:
        return ('<p class="note">No site information: the data has no site column (runs trained '
                "before sites were recorded).</p>")
    positive = document.get("positive_class")
    metrics = [("roc_auc", "ROC-AUC")] + ([("sensitivity", f"sensitivity ({positive})"),
                                           ("specificity", "specificity")] if positive else [])
    metrics.append(("accuracy", "accuracy"))
    who = any("who_tb_triage_met" in entry for entry in block["sites"].values())
    rows, notes = [], []
    for name, entry in [*block["sites"].items(), ("overall", block["overall"])]:
        counts = ", ".join(f"{_e(k)} {v}" for k, v in entry["counts"].items())
        row = [f"<strong>{_e(name)}</strong>" if name == "overall" else _e(name),
               f"{entry['n']} <small>({counts})</small>"]
        row += [_with_ci(entry.get(key), entry["confidence_intervals"].get(key))
                for key, _ in metrics]
        if who:
            met = entry.get("who_tb_triage_met")
            row.append("n/a" if met is None else "yes" if met else "no")
        rows.append(row)
        if entry.get("note"):
            notes.append(f"{name}: {entry['note']}")
    header = ["site", "images"] + [label for _, label in metrics] + (["WHO triage target met"] if who else [])
    return ("<p>Every site on its own, at the operating point above (a model can do well overall "
            "and fail at one hospital).</p>" + _table(header, rows)
            + "".join(f'<p class="note">{_e(n)}</p>' for n in notes))


def _operating_points(document: dict, context: dict) -> str:
    points = document["operating_points"]
    if document.get("positive_class") is None:
        return ("<p>A multi-class model takes the most probable class (argmax); thresholds are "
                "chosen for binary runs only.</p>")
    rows = []
    for name, row in points.items():
        val, evaluated = row["val"], row["evaluated"]
        marker = " (used)" if name == document["operating_point"]["name"] else ""
        rows.append([f"<strong>{_e(name)}</strong>{marker}", _e(row["rule"]),
                     _number(row["threshold"], 4), _number(val["sensitivity"]),
                     _number(val["specificity"]),
                     _with_ci(evaluated["sensitivity"], evaluated["sensitivity_ci95"]),
                     _with_ci(evaluated["specificity"], evaluated["specificity_ci95"])])
    return ("<p>All thresholds were chosen on the validation split only; the columns on the "
            "right show how each does on the evaluated data.</p>"
            + _table(["point", "rule", "threshold", "val sensitivity", "val specificity",
                      "sensitivity here", "specificity here"], rows))


def _curves(document: dict, context: dict) -> str:
    return ('<div class="figures">' + _figure(context["figures"].get("roc"),
                                              "ROC curve with the operating points")
            + _figure(context["figures"].get("pr"), "Precision-recall curve") + "</div>")


def _calibration(document: dict, context: dict) -> str:
    calibration = document["calibration"]
    rows = [["model as trained", _number(calibration["model"]["brier"]),
             _number(calibration["model"]["ece"])]]
    text = "<p class=\"note\">Temperature scaling was not applied.</p>"
    if "temperature" in calibration:
        scaled = calibration["temperature_scaled"]
        rows.append([f"temperature-scaled (T = {calibration['temperature']:.3f}, fitted on val)",
                     _number(scaled["brier"]), _number(scaled["ece"])])
        text = f"<p class=\"note\">{_e(calibration['note'])}.</p>"
    return (_table(["probabilities", "Brier score", "ECE"], rows) + text
            + _figure(context["figures"].get("reliability"), "Reliability diagram"))


def _samples(document: dict, context: dict) -> str:
    return ("<p>The most confident errors first (red), then correct predictions (green).</p>"
            + _figure(context["figures"].get("samples"), "Sample predictions") + _lungs(document, context))


def _lungs(document: dict, context: dict) -> str:
    lungs = document.get("lungs")
    if not lungs:
        return ""
    focus = " and ".join(part for part, used in (("cropped to the lungs", lungs["lung_crop"]),
                                                  ("blanked outside them", lungs["lung_mask_outside"])) if used)
    return (f'<h3 id="lungs">Lung fields</h3><p>Images were {focus} (margin {lungs["lung_crop_margin"]}, '
            f'segmenter {_e(lungs["segmenter"])}). No plausible lung found, whole image used: '
            f'<strong>{lungs["no_lung_found"]} of {lungs["n"]}</strong> image(s) (marked NO LUNG; '
            "lung_found=false in predictions.csv).</p>"
            + _figure(context["figures"].get("lungs"), "Lung overlays: mask in green, crop box in yellow"))


def _gradcam(document: dict, context: dict) -> str:
    gallery = context["gallery"]
    if gallery is None:
        return ('<p class="note">Grad-CAM examples are not included (turned off with --no-gradcam, '
                "or the cxrkit.explain gallery is not installed).</p>")
    if not gallery:
        return '<p class="note">No Grad-CAM examples were produced for this data.</p>'
    parts = []
    for group in ("true positive", "false positive", "false negative"):
        items = [item for item in gallery if item["group"] == group]
        if items:
            parts.append(f"<h3>{_e(group.capitalize())}s</h3><div class=\"figures\">"
                         + "".join(_figure(item["image_path"], item["title"]) for item in items)
                         + "</div>")
    return "".join(parts)


def _model(document: dict, context: dict) -> str:
    model = document["model"]
    parts = [_table(["", "value"], [[_e(k), _e(v)] for k, v in model["summary"].items()])]
    if model["preprocessing"]:
        parts.append("<h3>Preprocessing (as saved with the weights)</h3>"
                     + _table(["setting", "value"],
                              [[_e(k), _e(v)] for k, v in model["preprocessing"].items()]))
    if model["training"]:
        parts.append("<h3>Training</h3>" + _table(
            ["", "value"], [[_e(k), _e(v)] for k, v in model["training"].items()]))
    if model["config"]:
        parts.append("<details><summary>Resolved configuration</summary><pre>"
                     + _e(json.dumps(model["config"], indent=2)) + "</pre></details>")
    parts.append(_figure(context["figures"].get("training_curves"), "Training curves"))
    return "".join(parts)
