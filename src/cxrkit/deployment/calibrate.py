"""`calibrate_site`: choose a run's threshold on local site data, honestly.

The site data are split into a calibration part and a check part (stratified by class,
grouped by patient when the data name patients, seeded). Every table is computed on the
calibration part, a threshold is chosen there, and the chosen point is reported on the check
part with a 95% CI. With a selection rule the point is frozen in the run's
operating_points.json under `sites`, fingerprinted against model.ckpt and recorded with the
site data's hash, size and date.
"""

from __future__ import annotations

import hashlib
import json
import re
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path

import numpy as np
import pandas as pd

from cxrkit.errors import CxrkitError
from cxrkit.run import OperatingPoint, file_sha256
from cxrkit.version import __version__

CHECK_FRACTION = 0.5
SCORES_FILE = "scores.csv"
RESULT_FILE = "calibration.json"
SELECT_HELP = "'sensitivity>=0.90', youden, max_f1 or a threshold such as 0.35"
_SENSITIVITY_RULE = re.compile(r"^sensitivity\s*>=\s*(0?\.\d+|1(\.0*)?)$")


def parse_selection(text: str) -> tuple[str, float | None]:
    """('sensitivity', S) | ('youden', None) | ('max_f1', None) | ('fixed', threshold)."""
    text = text.strip()
    if text in ("youden", "max_f1"):
        return text, None
    match = _SENSITIVITY_RULE.match(text)
    if match:
        target = float(match.group(1))
        if 0 < target < 1:
            return "sensitivity", target
    try:
        threshold = float(text)
    except ValueError:
        threshold = None
    if threshold is not None and 0 <= threshold <= 1:
        return "fixed", threshold
    raise CxrkitError(f"select={text!r}: use {SELECT_HELP}")


def check_options(prevalence: float | None, cost_test: float | None,
                  check_fraction: float, n_bootstrap: int) -> None:
    """Refuse impossible settings before any image is read."""
    if prevalence is not None and not 0 < prevalence < 1:
        raise CxrkitError(f"prevalence={prevalence}: give the share of people screened who have "
                          "the disease, strictly between 0 and 1 (e.g. 0.05 for 5%)")
    if cost_test is not None and not cost_test > 0:
        raise CxrkitError(f"cost_test={cost_test}: give the cost of one confirmatory test, "
                          "a positive number")
    if not 0.1 <= check_fraction <= 0.9:
        raise CxrkitError(f"check_fraction={check_fraction}: keep between 0.1 and 0.9 of the site "
                          "data for the check part (default 0.5)")
    if n_bootstrap < 100:
        raise CxrkitError(f"n_bootstrap={n_bootstrap}: use at least 100 resamples "
                          "(1000 recommended)")


def site_table(data: str | Path, classes: list[str], positive_class: str, by: list[str],
               class_map: dict[str, str] | None = None) -> pd.DataFrame:
    """path, label (model class), positive, group and the --by columns of the site data."""
    from cxrkit.data.sources import load_manifest
    from cxrkit.evaluation.external import match_classes

    manifest, _ = load_manifest(data)
    mapping = match_classes(sorted(manifest["label"].unique()), classes, class_map or {},
                            str(data))
    table = pd.DataFrame({"path": manifest["path"], "label": manifest["label"].map(mapping),
                          "group": manifest["group"]})
    if "site" in manifest.columns and manifest["site"].notna().any():
        table["site"] = manifest["site"]
    if by:
        columns = extra_columns(Path(data))
        unknown = [name for name in by if name not in columns.columns]
        if unknown:
            known = ", ".join(c for c in columns.columns if c != "path") or "none"
            raise CxrkitError(f"by={unknown[0]}: no such column in data={data} (its columns: "
                              f"{known})")
        extra = [name for name in by if name not in table.columns]
        table = table.merge(columns[["path", *extra]], on="path", how="left")
    labels = set(table["label"])
    if len(labels) < 2:
        raise CxrkitError(f"data={data}: every image is {labels.pop()!r}; calibrating a "
                          "threshold needs images of both classes from the site")
    table["positive"] = table["label"] == positive_class
    return table


def extra_columns(data: Path) -> pd.DataFrame:
    """The site CSV with paths resolved as the manifest resolves them (for --by columns)."""
    if not (data.is_file() and data.suffix.lower() == ".csv"):
        raise CxrkitError(f"`by` needs `data` to be a CSV with those columns; {data} is a folder")
    table = pd.read_csv(data, dtype=str, keep_default_na=False)
    table.columns = [c.strip().lower() for c in table.columns]
    table["path"] = [str((data.parent / p).resolve()) for p in table["path"]]
    return table.drop(columns=["label"])


def data_fingerprint(table: pd.DataFrame) -> tuple[str, list[str]]:
    """sha256 over (image sha256, label) of every image in path order; and each image's sha256."""
    hashes = [file_sha256(Path(path)) for path in table["path"]]
    digest = hashlib.sha256()
    for path, image_hash, label in sorted(zip(table["path"], hashes, table["label"],
                                              strict=True)):
        digest.update(f"{Path(path).name}\t{image_hash}\t{label}\n".encode())
    return digest.hexdigest(), hashes


def split_parts(table: pd.DataFrame, check_fraction: float, seed: int) -> np.ndarray:
    """Boolean mask of the check part: stratified by class (site x class when the data name
    several sites), grouped by patient within a site, seeded."""
    from cxrkit.data.splits import held_out_part

    check = held_out_part(table, check_fraction, seed)
    for name, mask in (("calibration", ~check), ("check", check)):
        present = set(table.loc[mask, "label"])
        if len(present) < 2:
            raise CxrkitError(f"the {name} part of the site data has no images of "
                              f"{sorted(set(table['label']) - present)}; add site images of "
                              "that class")
    return check


def choose_site_threshold(positive: np.ndarray, scores: np.ndarray, rule: str,
                          value: float | None) -> dict:
    """The point chosen on the calibration part, with its rule and calibration-part rates;
    the threshold sits midway between the chosen score and the next lower one."""
    from cxrkit.evaluation.thresholds import (
        DEFAULT_TARGET_SENSITIVITY,
        _rates,
        choose_thresholds,
        sensitivity_point_name,
    )

    if rule == "fixed":
        return _rates(positive, scores, value) | {"rule": f"fixed threshold {value:g}"}
    points = choose_thresholds(positive, scores, value or DEFAULT_TARGET_SENSITIVITY)
    name = sensitivity_point_name(value) if rule == "sensitivity" else rule
    point = points[name]
    # The chosen threshold is some image's score; recomputing that score elsewhere (another
    # batch size, float32 in the server) can land a hair below it and flip the decision. The
    # midpoint to the next lower score makes the same decisions here and is robust to that.
    below = scores[scores < point["threshold"]]
    if len(below):
        midpoint = (point["threshold"] + below.max()) / 2
        point |= _rates(positive, scores, midpoint)
    point["rule"] = point["rule"] + " on the site calibration part"
    return point


def check_point(positive: np.ndarray, scores: np.ndarray, threshold: float,
                n_resamples: int, seed: int) -> dict:
    """Sensitivity and specificity at `threshold` on the check part, with bootstrap 95% CIs
    (Wilson's when the bootstrap interval collapses to a point at 0 or 100%)."""
    from cxrkit.deployment.tables import rates_at
    from cxrkit.evaluation.bootstrap import bootstrap_threshold_rates
    from cxrkit.evaluation.metrics import wilson

    sensitivity, specificity = rates_at(positive, scores, np.array([threshold]))
    boot_sensitivity, boot_specificity, _ = bootstrap_threshold_rates(
        positive, scores, np.array([threshold]), n_resamples, seed)

    positive = np.asarray(positive, dtype=bool)

    def interval(values: np.ndarray, rate: float, n: int) -> list[float]:
        low, high = (float(v) for v in np.percentile(values[:, 0], [2.5, 97.5]))
        if low == high:  # no errors (or all): the bootstrap collapses; Wilson does not
            return wilson(round(rate * n), n)
        return [low, high]

    return {"n": int(len(positive)), "n_positive": int(positive.sum()),
            "sensitivity": float(sensitivity[0]), "specificity": float(specificity[0]),
            "sensitivity_ci95": interval(boot_sensitivity, sensitivity[0], int(positive.sum())),
            "specificity_ci95": interval(boot_specificity, specificity[0],
                                         int((~positive).sum()))}


def target_warning(check: dict, rule: str, value: float | None) -> str | None:
    """A warning when the check part is too small for its CI to exclude missing the target."""
    if rule != "sensitivity":
        return None
    low, high = check["sensitivity_ci95"]
    if high < value:
        return (f"On the check part the sensitivity is {check['sensitivity']:.3f} (95% CI "
                f"{low:.3f} to {high:.3f}): this threshold misses the target {value:.2f} at "
                "this site.")
    if low < value:
        return (f"The check part has only {check['n_positive']} positive images: the 95% CI of "
                f"the sensitivity ({low:.3f} to {high:.3f}) does not exclude values below the "
                f"target {value:.2f}; calibrate on more site data before relying on it.")
    return None


@dataclass(frozen=True)
class SiteAnalysis:
    """How site data are analysed; impossible settings are refused when this is made, before
    any image is read.

    `select` freezes a site operating point by that rule (see SELECT_HELP; None: tables only);
    `prevalence` is the share of people screened who have the disease (None: the site data's
    own) and `cost_test` the cost of one confirmatory test, for the programme figures; `by`
    names columns of the site CSV to break the tables down by; `check_fraction` of the site data
    is held out to check the chosen threshold; `n_bootstrap` resamples (seeded by `seed`, which
    also draws the check part) give the 95% CIs.
    """

    select: str | None = None
    prevalence: float | None = None
    cost_test: float | None = None
    by: tuple[str, ...] = ()
    check_fraction: float = CHECK_FRACTION
    n_bootstrap: int = 1000
    seed: int = 0

    def __post_init__(self) -> None:
        check_options(self.prevalence, self.cost_test, self.check_fraction, self.n_bootstrap)
        if self.select is not None:
            parse_selection(self.select)
        object.__setattr__(self, "by", tuple(self.by or ()))


def calibrate_site(run_dir: str | Path, data: str | Path, site: str | None = None,
                   analysis: SiteAnalysis = SiteAnalysis(), class_map: dict[str, str] | None = None,
                   out_dir: str | Path | None = None, overwrite: bool = False,
                   batch_size: int = 32) -> dict:
    """Calibrate a run on site data; write tables, calibration.html and (with `analysis.select`)
    the site operating point. Returns the calibration.json document."""
    from cxrkit.deployment.tables import threshold_grid, threshold_table, who_rows
    from cxrkit.evaluation.operating_points import frozen_points
    from cxrkit.evaluation.prediction import predict_table
    from cxrkit.evaluation.thresholds import add_site_point
    from cxrkit.inference import load_torch_predictor

    by, select, prevalence, cost_test = list(analysis.by), analysis.select, analysis.prevalence, analysis.cost_test
    check_fraction, n_bootstrap, seed = analysis.check_fraction, analysis.n_bootstrap, analysis.seed
    selection = parse_selection(select) if select is not None else None
    run_dir = Path(run_dir).expanduser()
    site = site or Path(str(data)).stem
    if not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9._-]*", site):
        raise CxrkitError(f"site={site!r}: use letters, digits, '.', '_' or '-'")
    predictor = load_torch_predictor(run_dir)
    run = predictor.run
    positive_class = predictor.card.positive_class
    if positive_class is None:
        raise CxrkitError(f"{run_dir}: calibrating a threshold needs a binary run (this one has "
                          f"classes {', '.join(predictor.classes)})")
    table = site_table(data, predictor.classes, positive_class, by, class_map)
    points = frozen_points(predictor)
    if selection is not None and site in points.sites and not overwrite:
        add_site_point(dict(points.document), site, {}, overwrite=False)  # raises the one-line refusal
    out_dir = Path(out_dir).expanduser() if out_dir else run_dir / "sites" / site
    if out_dir.exists() and any(out_dir.iterdir()) and not overwrite:
        raise CxrkitError(f"{out_dir} already has a calibration; pass overwrite=True to replace it, "
                          "or out_dir=DIR to write elsewhere")

    probabilities, table, skipped = predict_table(predictor, table, f"--data {data}", batch_size)
    table["score"] = probabilities[:, points.positive_index]
    data_hash, table["image_sha256"] = data_fingerprint(table)
    check = split_parts(table, check_fraction, seed)
    table["part"] = np.where(check, "check", "calibration")
    calibration, checking = table[~check], table[check]
    prevalence_source = "given" if prevalence is not None else "the site data"
    if prevalence is None:
        prevalence = float(table["positive"].mean())

    chosen = (choose_site_threshold(calibration["positive"].to_numpy(),
                                    calibration["score"].to_numpy(), *selection)
              if selection else None)
    extra = [chosen["threshold"]] if chosen else []
    grid = threshold_grid(calibration["score"], extra)
    thresholds, summary = threshold_table(calibration["positive"], calibration["score"], grid,
                                          prevalence, cost_test, n_bootstrap, seed)
    who = who_rows(thresholds)
    for row in who:
        if row["threshold"] is not None:
            row["check"] = check_point(checking["positive"].to_numpy(),
                                       checking["score"].to_numpy(), row["threshold"],
                                       n_bootstrap, seed)
    subgroups = subgroup_tables(table, by, grid, prevalence, cost_test, n_bootstrap, seed,
                                chosen["threshold"] if chosen else None)

    document = {
        "cxrkit_version": __version__,
        "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "run": str(run_dir.resolve()), "site": site, "model_sha256": run.fingerprint(),
        "positive_class": positive_class,
        "data": {"source": str(data), "sha256": data_hash, "n": int(len(table)),
                 "n_positive": int(table["positive"].sum()), "n_skipped": len(skipped),
                 "n_calibration": int((~check).sum()), "n_check": int(check.sum()),
                 "check_fraction": check_fraction, "split_seed": seed,
                 "grouped_by_patient": bool(table["group"].notna().any())},
        "prevalence": prevalence, "prevalence_source": prevalence_source,
        "cost_test": cost_test,
        "bootstrap": {"resamples": n_bootstrap, "seed": seed, "level": 0.95,
                      "method": "stratified by class, percentile interval"},
        "calibration_part": summary | {
            "n": int((~check).sum()), "n_positive": int(calibration["positive"].sum())},
        "who_tpp": who,
        "subgroups": subgroups,
        "validation_point": _validation_point(points.default(), checking),
        "warnings": [],
        "outputs": {"dir": str(out_dir), "report": "calibration.html"},
    }
    if skipped:
        document["warnings"].append(f"{len(skipped)} image(s) could not be read and were left "
                                    "out (listed in skipped_images.csv).")
    if prevalence_source != "given":
        document["warnings"].append(
            f"No `prevalence` given: PPV, NPV and the programme figures use the site data's own "
            f"prevalence ({prevalence:.3f}), which is rarely the screened population's.")
    if chosen:
        result = check_point(checking["positive"].to_numpy(), checking["score"].to_numpy(),
                             chosen["threshold"], n_bootstrap, seed)
        warning = target_warning(result, *selection)
        if warning:
            document["warnings"].append(warning)
        site_point = {**chosen, "select": select, "created": document["created"],
                      "model_sha256": document["model_sha256"], "data": document["data"],
                      "check": result, "prevalence": prevalence,
                      "calibration_dir": str(out_dir.resolve())}
        document["site_point"] = site_point
    write_outputs(out_dir, document, table, thresholds, skipped, by)
    if chosen:
        frozen = dict(run.operating_points().document)
        run.write_operating_points(add_site_point(frozen, site, document["site_point"], overwrite))
        from cxrkit.evaluation.documents import write_run_documents

        write_run_documents(run)  # the model card lists the site points
    return document


def _validation_point(point: OperatingPoint, checking: pd.DataFrame) -> dict:
    """How the run's own val-chosen point does on the check part (what calibration fixes)."""
    from cxrkit.deployment.tables import rates_at

    threshold = 0.5 if point.threshold is None else point.threshold
    sensitivity, specificity = rates_at(checking["positive"], checking["score"],
                                        np.array([threshold]))
    return {"name": point.name, "threshold": threshold,
            "check_sensitivity": float(sensitivity[0]),
            "check_specificity": float(specificity[0])}


def subgroup_tables(table: pd.DataFrame, by: list[str], grid: np.ndarray, prevalence: float,
                    cost_test: float | None, n_bootstrap: int, seed: int,
                    threshold: float | None) -> list[dict]:
    """Per value of each --by column: the calibration-part table and WHO rows, and the chosen
    point on the check part, each with CIs (a subgroup lacking a class is listed, not scored)."""
    from cxrkit.deployment.tables import threshold_table, who_rows

    results = []
    for column in by:
        for value, members in table.groupby(table[column].fillna(""), sort=True):
            calibration = members[members["part"] == "calibration"]
            checking = members[members["part"] == "check"]
            entry = {"column": column, "value": str(value), "n": int(len(members)),
                     "n_positive": int(members["positive"].sum())}
            if calibration["positive"].nunique() < 2:
                entry["note"] = "the calibration part has images of one class only: not scored"
                results.append(entry)
                continue
            rows, summary = threshold_table(calibration["positive"], calibration["score"], grid,
                                            prevalence, cost_test, n_bootstrap, seed)
            entry |= summary | {"who_tpp": who_rows(rows), "table": rows}
            if threshold is not None and checking["positive"].nunique() == 2:
                entry["check"] = check_point(checking["positive"].to_numpy(),
                                             checking["score"].to_numpy(), threshold,
                                             n_bootstrap, seed)
            results.append(entry)
    return results


def write_outputs(out_dir: Path, document: dict, table: pd.DataFrame, thresholds: pd.DataFrame,
                  skipped: list, by: list[str]) -> None:
    """calibration.json, thresholds.csv, subgroups.csv, scores.csv, plots and calibration.html."""
    from cxrkit.deployment.report import write_calibration_report

    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / "plots").mkdir(exist_ok=True)
    table[["path", "image_sha256", "label", "positive", "score", "part", *by]].to_csv(
        out_dir / SCORES_FILE, index=False)
    thresholds.to_csv(out_dir / "thresholds.csv", index=False)
    frames = [entry["table"].assign(column=entry["column"], value=entry["value"])
              for entry in document["subgroups"] if "table" in entry]
    if frames:
        pd.concat(frames).to_csv(out_dir / "subgroups.csv", index=False)
    if skipped:
        pd.DataFrame(skipped, columns=["path", "reason"]).to_csv(out_dir / "skipped_images.csv",
                                                                 index=False)
    serialisable = {**document, "subgroups": [
        {k: v for k, v in entry.items() if k != "table"} for entry in document["subgroups"]]}
    (out_dir / RESULT_FILE).write_text(json.dumps(_finite(serialisable), indent=2) + "\n")
    write_calibration_report(out_dir, document, table, thresholds)


def _finite(value):
    from cxrkit.serve.model import finite_json

    return finite_json(value)


def read_reference_scores(path: str | Path) -> tuple[np.ndarray, dict]:
    """Scores of the calibration part and calibration.json from a calibration folder or a
    run with one site calibrated (the monitor's drift reference)."""
    path = Path(path).expanduser()
    if (path / "sites").is_dir() and not (path / SCORES_FILE).is_file():
        folders = sorted(p for p in (path / "sites").iterdir() if (p / SCORES_FILE).is_file())
        if len(folders) != 1:
            names = ", ".join(p.name for p in folders) or "none"
            raise CxrkitError(f"reference={path}: give one calibration folder "
                              f"({path}/sites/NAME; this run has: {names})")
        path = folders[0]
    scores_file, result_file = path / SCORES_FILE, path / RESULT_FILE
    if not (scores_file.is_file() and result_file.is_file()):
        raise CxrkitError(f"reference={path}: not a calibration folder (no {SCORES_FILE} and "
                          f"{RESULT_FILE}); give RUN/sites/NAME made by `cxrkit calibrate`")
    scores = pd.read_csv(scores_file)
    return (scores.loc[scores["part"] == "calibration", "score"].to_numpy(dtype=np.float64),
            json.loads(result_file.read_text()))
