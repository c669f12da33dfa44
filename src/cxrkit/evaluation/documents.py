"""MODEL_CARD.md and CLAIM_checklist.md of a run, rendered (jinja2) from the model card and
the run's own evaluation.

Written by the run's test evaluation (so again whenever `--set-default` moves the operating
point) and refreshed when `cxrkit calibrate --select` freezes a site point. The checklist fills
the CLAIM 2024 items a run can answer and marks the rest `[author]`.
"""

from __future__ import annotations

import platform
from importlib import metadata, resources
from pathlib import Path

from cxrkit.run import RunFolder
from cxrkit.version import __version__

MODEL_CARD_FILE = "MODEL_CARD.md"
CLAIM_FILE = "CLAIM_checklist.md"
AUTHOR = "[author]"
HEADLINE = (("roc_auc", "ROC-AUC"), ("sensitivity", "Sensitivity"), ("specificity", "Specificity"),
            ("accuracy", "Accuracy"), ("balanced_accuracy", "Balanced accuracy"))
SMALL_TEST_SET = 200


def write_run_documents(run: RunFolder) -> list[Path]:
    """Render MODEL_CARD.md and CLAIM_checklist.md into the run folder; [] before the run's test
    evaluation exists (the documents report its figures)."""
    metrics = run.read_json("metrics.json")
    if metrics is None:
        return []
    context = document_context(run, metrics)
    environment = _environment()
    written = []
    for name, template in ((MODEL_CARD_FILE, "model_card.md.j2"), (CLAIM_FILE, "claim_checklist.md.j2")):
        path = run.file(name)
        path.write_text(environment.get_template(template).render(**context))
        written.append(path)
    return written


def _environment():
    import jinja2

    folder = resources.files("cxrkit.evaluation") / "templates"
    environment = jinja2.Environment(loader=jinja2.FileSystemLoader(str(folder)), autoescape=False,
                                     trim_blocks=True, lstrip_blocks=True,
                                     undefined=jinja2.StrictUndefined, keep_trailing_newline=True)
    environment.filters["cell"] = lambda value: str(value).replace("|", "\\|").replace("\n", " ")
    environment.filters["number"] = _number
    return environment


def _number(value, digits: int = 3) -> str:
    return "n/a" if value is None else f"{value:.{digits}f}"


def _with_ci(value, interval) -> str:
    if value is None:
        return "n/a"
    if not interval:
        return f"{value:.3f}"
    return f"{value:.3f} ({interval[0]:.3f} to {interval[1]:.3f})"


def document_context(run: RunFolder, metrics: dict) -> dict:
    """Every fact the two documents show, from the card, config, training record and metrics."""
    card = run.card()
    config, training = run.config(), run.read_json("training.json") or {}
    intervals = metrics.get("confidence_intervals", {})
    point = metrics["operating_point"]
    headline = [(label, _with_ci(metrics.get(key), intervals.get(key))) for key, label in HEADLINE
                if key in metrics]
    externals = external_evaluations(run)
    context = {
        "run": run.name, "model_id": card.model_id, "sha256": card.model_sha256,
        "cxrkit_version": __version__, "created": metrics.get("created"), "card": card,
        "summary": metrics.get("model", {}).get("summary", {}),
        "preprocessing": card.preprocessing.to_dict(),
        "data": {"sources": [], "images": {}, "classes": {}, "sites": {}, **(card.training_data or {})},
        "config": config, "training": training, "metrics": metrics, "headline": headline,
        "point": point, "points": _point_rows(metrics), "sites": _site_points(card),
        "per_site": _per_site_rows(metrics), "externals": externals,
        "calibration": metrics.get("calibration", {}), "ood": metrics.get("out_of_distribution"),
        "who": metrics.get("who_tb_triage"), "warnings": metrics.get("warnings", []),
        "n_test": metrics.get("evaluated", {}).get("n"),
        "gallery": any(run.file("gallery").glob("*.png")),
    }
    context["limitations"] = limitations(context)
    context["claim"] = claim_items(context)
    return context


def _point_rows(metrics: dict) -> list[dict]:
    rows = []
    for name, entry in (metrics.get("operating_points") or {}).items():
        evaluated, val = entry.get("evaluated") or {}, entry.get("val") or {}
        rows.append({"name": name, "rule": entry.get("rule") or "", "threshold": entry.get("threshold"),
                     "val": f"{_number(val.get('sensitivity'))} / {_number(val.get('specificity'))}",
                     "test": (f"{_with_ci(evaluated.get('sensitivity'), evaluated.get('sensitivity_ci95'))}"
                              f" / {_with_ci(evaluated.get('specificity'), evaluated.get('specificity_ci95'))}")
                     if evaluated else "n/a"})
    return rows


def _site_points(card) -> list[dict]:
    rows = []
    for name, point in ((card.operating_points or {}).get("sites") or {}).items():
        data = point.get("data") or {}
        rows.append({"name": name, "threshold": point.get("threshold"), "select": point.get("select"),
                     "source": data.get("source"), "n": data.get("n_calibration"),
                     "current": point.get("model_sha256") == card.model_sha256,
                     "created": point.get("created")})
    return rows


def _per_site_rows(metrics: dict) -> list[dict]:
    block = metrics.get("per_site") or {}
    rows = []
    for name, entry in (block.get("sites") or {}).items():
        intervals = entry.get("confidence_intervals", {})
        rows.append({"name": name, "n": entry["n"],
                     **{key: _with_ci(entry.get(key), intervals.get(key))
                        for key in ("roc_auc", "sensitivity", "specificity", "accuracy")},
                     "note": entry.get("note", "")})
    return rows


def external_evaluations(run: RunFolder) -> list[dict]:
    """One row per `cxrkit evaluate RUN --data OTHER` result in RUN/external/."""
    rows = []
    for path in sorted(run.file("external").glob("*/metrics.json")):
        try:
            document = RunFolder(path.parent).read_json("metrics.json") or {}
            intervals = document.get("confidence_intervals", {})
            rows.append({"name": path.parent.name, "source": document["evaluated"]["source"],
                         "n": document["evaluated"]["n"],
                         "point": document["operating_point"]["name"],
                         **{key: _with_ci(document.get(key), intervals.get(key))
                            for key in ("roc_auc", "sensitivity", "specificity", "accuracy")}})
        except Exception:  # another tool's or a half-written folder: leave it out of the card
            continue
    return rows


def limitations(context: dict) -> list[str]:
    """What a reader must know before trusting the figures."""
    data, metrics = context["data"], context["metrics"]
    sources = data.get("sources") or []
    items = []
    if not context["externals"]:
        items.append("Internal validation only: the test split comes from the same source(s) as the "
                     f"training data ({', '.join(sources) or 'see config.yaml'}). Figures on another "
                     "hospital, scanner or population can be much lower; evaluate on outside data "
                     "(`cxrkit evaluate RUN --data OTHER`) before any use there.")
    items.append("Cross-site caveat: models trained on one collection often learn its acquisition "
                 "and population (shortcuts), and their ROC-AUC can drop sharply at another site; "
                 "a threshold chosen here does not carry over. Calibrate a site operating point on "
                 "local data (`cxrkit calibrate RUN --data SITE.csv --select ...`).")
    n_test = context["n_test"] or 0
    if n_test < SMALL_TEST_SET:
        items.append(f"Small test set ({n_test} images): the 95% confidence intervals are wide; read "
                     "them, not the point estimates.")
    counts = (data.get("classes") or {}).get("train") or {}
    if counts and max(counts.values()) > 2 * min(counts.values()):
        items.append("Imbalanced classes in training (" + ", ".join(f"{k} {v}" for k, v in counts.items())
                     + "): predictive values depend on the prevalence where the model is used.")
    if context["point"].get("name") != "argmax":
        items.append(f"The operating point '{context['point']['name']}' was chosen on "
                     f"{context['point'].get('source') or 'the validation split'}; sensitivity and "
                     "specificity elsewhere differ.")
    items += [f"From the evaluation: {warning}" for warning in metrics.get("warnings", [])]
    items.append("Labels are as given by the data sources; their reference standard, annotators "
                 "and label noise are not known to cxrkit.")
    return items


def _versions() -> str:
    names = ("torch", "torchvision", "lightning", "scikit-learn", "numpy")
    found = []
    for name in names:
        try:
            found.append(f"{name} {metadata.version(name)}")
        except metadata.PackageNotFoundError:
            continue
    return f"cxrkit {__version__}, Python {platform.python_version()}, " + ", ".join(found)


def claim_items(context: dict) -> list[dict]:
    """The CLAIM 2024 items with the run's answer where it has one (None: for the author)."""
    card, config, training, metrics = context["card"], context["config"], context["training"], context["metrics"]
    data, summary, prep = context["data"], context["summary"], context["preprocessing"]
    train, model, split_config = config.get("train", {}), config.get("model", {}), config.get("data", {})
    augment = {k: v for k, v in (config.get("augment") or {}).items() if v}
    images = data.get("images") or {}
    leakage = training.get("split_leakage") or {}
    ci = context["headline"]
    point = context["point"]
    answers = {
        1: f"Deep learning: a convolutional neural network ({card.model_name}) classifying chest "
           f"radiographs as {', '.join(card.classes)}.",
        5: "Retrospective: images from existing collections.",
        6: "Model creation with internal validation"
           + (" and external validation" if context["externals"] else "") + ".",
        7: ", ".join(data.get("sources") or []) or None,
        9: ", ".join(f"{k}={v}" for k, v in prep.items() if k not in ("mean", "std"))
           + f"; normalised with mean {prep['mean']} and std {prep['std']}.",
        10: f"Every readable image of the sources; {training.get('skipped', 0)} file(s) could not be "
            "used and are listed in skipped.csv.",
        13: f"Unreadable images ({training.get('skipped', 0)}) were left out and listed; no imputation.",
        20: f"Images per partition: {', '.join(f'{k} {v}' for k, v in images.items())}; stratified by "
            f"class (val fraction {split_config.get('val_fraction')}, test fraction "
            f"{split_config.get('test_fraction')}, seed {split_config.get('split_seed')}), or the split "
            "the data gave.",
        21: "Patient groups" + (f" (file-name pattern {split_config['group_pattern']!r})"
                                if split_config.get("group_pattern") else "")
            + (" and near-duplicate groups" if split_config.get("group_near_duplicates") else "")
            + " are kept within one partition"
            + (f"; the given split put {leakage.get('patient_groups', 0)} patient group(s) and "
               f"{leakage.get('near_duplicate_groups', 0)} near-duplicate group(s) in more than one "
               "partition" if leakage.get("patient_groups") or leakage.get("near_duplicate_groups") else "")
            + ".",
        22: f"{card.model_name} ({summary.get('parameters', 'n/a')} parameters); input "
            f"{prep['image_size']}x{prep['image_size']} px, {prep['channels']} channel(s); output "
            + ("one logit (sigmoid)" if card.single_logit else f"softmax over {len(card.classes)} classes")
            + f"; model spec {card.model}.",
        23: _versions() + ".",
        24: f"Initial weights: {model.get('weights', 'none')}; frozen layers: {model.get('freeze', 'none')}.",
        25: f"Optimizer {train.get('optimizer')}, learning rate {train.get('lr')}, schedule "
            f"{train.get('scheduler')}, batch size {train.get('batch_size')}, up to {train.get('epochs')} "
            f"epochs ({training.get('epochs_run', 'n/a')} run), loss {train.get('loss')}, class weights "
            f"{train.get('class_weights')}, sampler {train.get('sampler')}, precision "
            f"{training.get('precision', train.get('precision'))}; augmentation "
            + (", ".join(f"{k}={v}" for k, v in augment.items()) or "none") + "; one model trained.",
        26: f"The checkpoint with the best {training.get('monitor', train.get('monitor'))} on the validation "
            "partition"
            + (f", early stopping after {train['early_stopping_patience']} epochs without improvement"
               if train.get("early_stopping_patience") else "") + ".",
        27: "None.",
        28: "ROC-AUC, PR-AUC, accuracy, balanced accuracy, sensitivity, specificity, per-class "
            "precision/recall/F1, Brier score and expected calibration error.",
        29: f"95% bootstrap confidence intervals ({metrics['bootstrap']['resamples']} resamples, "
            f"{metrics['bootstrap']['method']}).",
        30: ("Per-site metrics; " if context["per_site"] else "")
            + ("out-of-distribution share on the test images; " if context["ood"] else "")
            + "operating points compared on the test partition." if context["per_site"] or context["ood"]
            else None,
        31: "Grad-CAM panels of the most confident true positives, false positives and false negatives "
            "(report.html); not validated against annotations.",
        32: ("; ".join(f"{row['name']} ({row['n']} images): ROC-AUC {row['roc_auc']}"
                       for row in context["externals"]) or None),
        33: f"{sum(images.values())} images used ({', '.join(f'{k} {v}' for k, v in images.items())}); "
            f"{training.get('skipped', 0)} excluded as unreadable; "
            f"{metrics['evaluated']['n']} test images evaluated, {metrics['evaluated']['n_skipped']} unreadable.",
        35: "Test partition: " + "; ".join(f"{label} {value}" for label, value in ci) + ".",
        36: (f"At operating point '{point['name']}' (threshold {_number(point.get('threshold'), 4)}, "
             f"chosen on {point.get('source') or point.get('chosen_on')}): "
             + "; ".join(f"{label} {value}" for label, value in ci if label in ("Sensitivity", "Specificity"))
             + ".") if card.positive_class else None,
        38: f"{AUTHOR}: starting points in MODEL_CARD.md (Limitations).",
        37: "The report's sample grid shows the most confident errors and the Grad-CAM gallery the "
            "most confident false positives and negatives; their review is for the author.",
        41: "The run folder holds the resolved config.yaml, split.csv and model.ckpt; published at "
            "[author].",
    }
    if not train:  # no config.yaml: how the run was split and trained is not known here
        for number in (20, 21, 25, 26):
            answers[number] = None
    if not context["gallery"]:
        answers[31] = None
    return [{"number": number, "section": section, "item": text, "answer": answers.get(number)}
            for number, (section, text) in enumerate(CLAIM_ITEMS, start=1)]


CLAIM_ITEMS = [
    ("Title and abstract", "Identification as a study of AI methodology, specifying the category of "
     "technology used (e.g., deep learning)"),
    ("Title and abstract", "Structured summary of study design, methods, results and conclusions"),
    ("Introduction", "Scientific and clinical background, including the intended use and role of the "
     "AI approach"),
    ("Introduction", "Study objectives and hypotheses"),
    ("Methods: study design", "Prospective or retrospective study"),
    ("Methods: study design", "Study goal (e.g., model creation, exploratory study, feasibility study, "
     "non-inferiority trial)"),
    ("Methods: data", "Data sources"),
    ("Methods: data", "Eligibility criteria: how, where and when potentially eligible participants or "
     "studies were identified"),
    ("Methods: data", "Data preprocessing steps"),
    ("Methods: data", "Selection of data subsets, if applicable"),
    ("Methods: data", "Definitions of data elements, with references to common data elements"),
    ("Methods: data", "De-identification methods"),
    ("Methods: data", "How missing data were handled"),
    ("Methods: reference standard", "Definition of the reference standard, in enough detail to allow "
     "replication"),
    ("Methods: reference standard", "Rationale for choosing the reference standard (if alternatives exist)"),
    ("Methods: reference standard", "Source of reference-standard annotations; qualifications and "
     "preparation of annotators"),
    ("Methods: reference standard", "Annotation tools"),
    ("Methods: reference standard", "Measurement of inter- and intrarater variability; methods to "
     "mitigate variability and resolve discrepancies"),
    ("Methods: data partitions", "Intended sample size and how it was determined"),
    ("Methods: data partitions", "How data were assigned to partitions; proportions"),
    ("Methods: data partitions", "Level at which partitions are disjoint (e.g., image, study, patient, "
     "institution)"),
    ("Methods: model", "Detailed description of the model, including inputs, outputs and intermediate "
     "layers"),
    ("Methods: model", "Software libraries, frameworks and packages"),
    ("Methods: model", "Initialization of model parameters (e.g., randomization, transfer learning)"),
    ("Methods: training", "Details of the training approach, including data augmentation, "
     "hyperparameters and number of models trained"),
    ("Methods: training", "Method of selecting the final model"),
    ("Methods: training", "Ensembling techniques, if applicable"),
    ("Methods: evaluation", "Metrics of model performance"),
    ("Methods: evaluation", "Statistical measures of significance and uncertainty (e.g., confidence "
     "intervals)"),
    ("Methods: evaluation", "Robustness or sensitivity analysis"),
    ("Methods: evaluation", "Methods for explainability or interpretability (e.g., saliency maps) and "
     "how they were validated"),
    ("Methods: evaluation", "Validation or testing on external data"),
    ("Results: data", "Flow of participants or cases (inclusion and exclusion)"),
    ("Results: data", "Demographic and clinical characteristics of cases in each partition"),
    ("Results: model performance", "Performance metrics of the final model on all data partitions"),
    ("Results: model performance", "Estimates of diagnostic accuracy and their precision (e.g., 95% "
     "confidence intervals)"),
    ("Results: model performance", "Failure analysis of incorrectly classified cases"),
    ("Discussion", "Study limitations, including potential bias, statistical uncertainty and "
     "generalizability"),
    ("Discussion", "Implications for practice, including the intended use and clinical role"),
    ("Other information", "Registration number and name of registry"),
    ("Other information", "Where the full study protocol, code and data can be accessed"),
    ("Other information", "Sources of funding and other support; role of funders"),
]
