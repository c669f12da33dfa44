"""`monitor_log`: what a silent-mode request log says about the model in operation.

Drift: the logged scores against the site's calibration-part scores (`--reference`), by the
population stability index (PSI, 10 bins at the reference deciles) and the two-sample
Kolmogorov-Smirnov statistic D. Referral and out-of-distribution rates per day (per hour
when the log spans under two days). Confirmed outcomes, attached by image sha256, give the
running sensitivity and specificity of the logged decisions (Wilson 95% CIs; an image
scored several times counts once, at its first request).

Alarms (exit code 1 of `cxrkit monitor`): drift when PSI >= `psi_max` (default 0.25, the
usual "major shift" line; 0.1-0.25 is a moderate shift, reported only) or KS D >= `ks_max`
(default 0.2); sensitivity when the upper end of its 95% CI falls below `min_sensitivity`
(default: the site point's target sensitivity, else 0.90, WHO's TB triage minimum), i.e.
the log shows the point is missing its target, not just that the data are few.
"""

from __future__ import annotations

import json
from datetime import datetime, timezone
from pathlib import Path

import numpy as np
import pandas as pd

from cxrkit.errors import CxrkitError
from cxrkit.version import __version__

PSI_BINS = 10
PSI_MAX = 0.25
KS_MAX = 0.2
DEFAULT_MIN_SENSITIVITY = 0.90
REFERRED = "CASE WHEN decision = positive_class THEN 1 ELSE 0 END"
OOD = "CASE WHEN ood_flag IS NULL THEN -1 WHEN ood_flag THEN 1 ELSE 0 END"


def _query(engine, sql: str, text: str) -> list[tuple]:
    """Rows of plain SQL through the DB-API cursor (tuples: fast for a million rows)."""
    from sqlalchemy.exc import DBAPIError

    try:
        raw = engine.raw_connection()
        try:
            cursor = raw.cursor()
            cursor.execute(sql)
            return cursor.fetchall()
        finally:
            raw.close()
    except (DBAPIError, engine.dialect.dbapi.Error) as error:
        raise CxrkitError(f"{text}: the request log cannot be read "
                          f"({str(getattr(error, 'orig', error)).splitlines()[0]}); restore it "
                          "from a backup or start a new one") from error


def _columns(rows: list[tuple], width: int) -> np.ndarray:
    from itertools import chain

    return np.fromiter(chain.from_iterable(rows), np.float64,
                       count=len(rows) * width).reshape(len(rows), width)


def read_log(text: str) -> tuple[pd.DataFrame, dict]:
    """The logged requests (time, score, referred, ood), oldest first, and counts per model,
    operating point and positive class."""
    from cxrkit.deployment.request_log import TABLE, connect

    engine, _ = connect(text)
    try:
        values = _columns(_query(engine, f"SELECT time, score, {REFERRED}, {OOD} FROM {TABLE} "
                                         "ORDER BY id", text), 4)
        counts = {column: dict(_query(engine, f"SELECT {column}, COUNT(*) FROM {TABLE} "
                                              f"GROUP BY {column}", text))
                  for column in ("model_id", "operating_point", "positive_class")}
        counts["n_images"] = _query(engine, f"SELECT COUNT(DISTINCT image_sha256) FROM {TABLE}",
                                    text)[0][0]
    finally:
        engine.dispose()
    if not len(values):
        raise CxrkitError(f"{text}: no requests logged yet")
    frame = pd.DataFrame({"time": pd.to_datetime(values[:, 0], unit="s", utc=True),
                          "score": values[:, 1], "referred": values[:, 2] > 0,
                          "ood": np.where(values[:, 3] < 0, np.nan, values[:, 3])})
    return frame, counts


def first_requests(text: str) -> pd.DataFrame:
    """image_sha256, time and referred of each image's first request (for outcomes)."""
    from cxrkit.deployment.request_log import TABLE, connect

    engine, _ = connect(text)
    try:
        rows = _query(engine, f"SELECT image_sha256, time, {REFERRED} FROM {TABLE} WHERE id IN "
                              f"(SELECT MIN(id) FROM {TABLE} GROUP BY image_sha256)", text)
    finally:
        engine.dispose()
    frame = pd.DataFrame(rows, columns=["image_sha256", "time", "referred"])
    frame["time"] = pd.to_datetime(frame["time"].astype(np.float64), unit="s", utc=True)
    frame["referred"] = frame["referred"].astype(bool)
    return frame


def psi(reference: np.ndarray, current: np.ndarray, bins: int = PSI_BINS) -> float:
    """Population stability index of `current` against `reference`, bins at reference deciles."""
    edges = np.unique(np.quantile(reference, np.linspace(0, 1, bins + 1)[1:-1]))
    expected = np.bincount(np.searchsorted(edges, reference, side="right"),
                           minlength=len(edges) + 1) / len(reference)
    actual = np.bincount(np.searchsorted(edges, current, side="right"),
                         minlength=len(edges) + 1) / len(current)
    expected, actual = np.clip(expected, 1e-4, None), np.clip(actual, 1e-4, None)
    return float(np.sum((actual - expected) * np.log(actual / expected)))


def drift(reference: np.ndarray, current: np.ndarray, psi_max: float, ks_max: float) -> dict:
    from scipy.stats import ks_2samp

    test = ks_2samp(reference, current)
    value = psi(reference, current)
    return {"psi": value, "ks_statistic": float(test.statistic), "ks_pvalue": float(test.pvalue),
            "n_reference": int(len(reference)), "n_current": int(len(current)),
            "psi_max": psi_max, "ks_max": ks_max,
            "drift": bool(value >= psi_max or test.statistic >= ks_max),
            "level": "major" if value >= 0.25 else "moderate" if value >= 0.1 else "none"}


def rates_over_time(log: pd.DataFrame) -> pd.DataFrame:
    """Requests, referral rate and OOD rate per day (per hour for logs under two days)."""
    span = log["time"].iloc[-1] - log["time"].iloc[0]
    frequency = "h" if span < pd.Timedelta(days=2) else "D"
    grouped = log.groupby(pd.Grouper(key="time", freq=frequency))
    table = pd.DataFrame({"requests": grouped.size(), "referral_rate": grouped["referred"].mean(),
                          "ood_rate": grouped["ood"].mean()})
    return table[table["requests"] > 0].reset_index()


def read_outcomes(path: str | Path, first: pd.DataFrame,
                  positive_name: str | None) -> pd.DataFrame:
    """outcomes.csv (image_sha256 or path, and outcome/label) joined to the first request of
    each image; positive outcome = the positive class name, 1, true or yes."""
    from cxrkit.run import file_sha256

    path = Path(path).expanduser()
    if not path.is_file():
        raise CxrkitError(f"outcomes={path}: no such file")
    try:
        table = pd.read_csv(path, dtype=str, keep_default_na=False)
    except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError) as error:
        raise CxrkitError(f"outcomes={path}: cannot parse CSV ({error})") from error
    table.columns = [c.strip().lower() for c in table.columns]
    outcome = next((c for c in ("outcome", "label") if c in table.columns), None)
    if outcome is None or not {"image_sha256", "path"} & set(table.columns):
        raise CxrkitError(f"outcomes={path}: needs an image_sha256 (or path) column and an "
                          "outcome (or label) column")
    if "image_sha256" not in table.columns:
        files = [path.parent / p for p in table["path"]]
        absent = [str(f) for f in files if not f.is_file()]
        if absent:
            raise CxrkitError(f"outcomes={path}: {len(absent)} listed image(s) do not exist "
                              f"(e.g. {absent[0]}); paths are relative to the CSV's folder")
        table["image_sha256"] = [file_sha256(f) for f in files]
    unknown = ~table["image_sha256"].isin(first["image_sha256"])
    if unknown.any():
        example = table.loc[unknown].iloc[0]
        raise CxrkitError(f"outcomes={path}: {int(unknown.sum())} of {len(table)} outcome(s) "
                          f"name images the log never scored (e.g. "
                          f"{example.get('path') or example['image_sha256']}); check that the "
                          "outcomes belong to this log, or remove those rows")
    values = table[outcome].str.strip().str.lower()
    table["positive"] = values.isin({"1", "true", "yes", "positive",
                                     str(positive_name).lower()})
    return first.merge(table[["image_sha256", "positive"]], on="image_sha256", how="inner")


def running_accuracy(joined: pd.DataFrame, min_sensitivity: float) -> dict:
    """Sensitivity and specificity of the logged decisions against confirmed outcomes."""
    from cxrkit.evaluation.metrics import wilson

    called = joined["referred"].to_numpy(dtype=bool)
    positive = joined["positive"].to_numpy(dtype=bool)
    true_positive, n_positive = int((called & positive).sum()), int(positive.sum())
    true_negative, n_negative = int((~called & ~positive).sum()), int((~positive).sum())
    sensitivity_ci = wilson(true_positive, n_positive)
    result = {"n": int(len(joined)), "n_positive": n_positive, "n_negative": n_negative,
              "sensitivity": true_positive / n_positive if n_positive else None,
              "sensitivity_ci95": sensitivity_ci,
              "specificity": true_negative / n_negative if n_negative else None,
              "specificity_ci95": wilson(true_negative, n_negative),
              "min_sensitivity": min_sensitivity}
    result["alarm"] = bool(sensitivity_ci is not None and sensitivity_ci[1] < min_sensitivity)
    order = np.argsort(joined["time"].to_numpy(), kind="stable")
    cumulative_tp = np.cumsum((called & positive)[order])
    cumulative_pos = np.cumsum(positive[order])
    with np.errstate(invalid="ignore", divide="ignore"):
        running = cumulative_tp / cumulative_pos
    result["curve"] = pd.DataFrame({"time": joined["time"].to_numpy()[order],
                                    "positives": cumulative_pos, "sensitivity": running})
    return result


def monitor_log(log_url: str, outcomes: str | Path | None = None,
                reference: str | Path | None = None, psi_max: float = PSI_MAX,
                ks_max: float = KS_MAX, min_sensitivity: float | None = None,
                out_dir: str | Path = "monitor") -> dict:
    """Read the log, compute drift, rates and running accuracy; write monitor.json and
    monitor.html into `out_dir`. The document's "alarm" says whether to exit 1."""
    from cxrkit.deployment.calibrate import read_reference_scores
    from cxrkit.deployment.monitor_report import write_monitor_report
    from cxrkit.serve.model import finite_json

    if psi_max <= 0:
        raise CxrkitError(f"psi_max={psi_max}: give a positive PSI (0.25 = major shift)")
    if not 0 < ks_max < 1:
        raise CxrkitError(f"ks_max={ks_max}: give a KS statistic between 0 and 1")
    if min_sensitivity is not None and not 0 < min_sensitivity < 1:
        raise CxrkitError(f"min_sensitivity={min_sensitivity}: give a value between 0 and 1")
    reference_scores, calibration = (read_reference_scores(reference) if reference is not None
                                     else (None, None))
    log, counts = read_log(log_url)
    joined = None
    if outcomes is not None:
        positive_names = [name for name in counts["positive_class"] if name]
        joined = read_outcomes(outcomes, first_requests(log_url),
                               positive_names[0] if positive_names else None)
    document = {
        "cxrkit_version": __version__,
        "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "log": log_url, "n_requests": int(len(log)), "n_images": int(counts["n_images"]),
        "first": log["time"].iloc[0].isoformat(), "last": log["time"].iloc[-1].isoformat(),
        "models": counts["model_id"],
        "operating_points": {name or "argmax": n for name, n in counts["operating_point"].items()},
        "referral_rate": float(log["referred"].mean()),
        "ood_rate": float(log["ood"].mean()) if log["ood"].notna().any() else None,
        "reference": str(reference) if reference is not None else None,
    }
    if reference_scores is not None:
        document["drift"] = drift(reference_scores, log["score"].to_numpy(), psi_max, ks_max)
        document["reference_site"] = calibration.get("site")
    target = min_sensitivity
    if target is None:
        target = ((calibration or {}).get("site_point") or {}).get("target_sensitivity") \
            or DEFAULT_MIN_SENSITIVITY
    running = running_accuracy(joined, target) if joined is not None else None
    if running is not None:
        document["outcomes"] = {k: v for k, v in running.items() if k != "curve"}
    over_time = rates_over_time(log)
    document["over_time"] = json.loads(over_time.assign(time=over_time["time"].astype(str))
                                       .to_json(orient="records"))
    reasons = []
    if document.get("drift", {}).get("drift"):
        found = document["drift"]
        reasons.append(f"score drift: PSI {found['psi']:.3f} (alarm at {psi_max}), KS D "
                       f"{found['ks_statistic']:.3f} (alarm at {ks_max})")
    if running is not None and running["alarm"]:
        low, high = running["sensitivity_ci95"]
        reasons.append(f"running sensitivity {running['sensitivity']:.3f} (95% CI {low:.3f} to "
                       f"{high:.3f}) is below the target {target:.2f}")
    document["alarm"] = bool(reasons)
    document["alarm_reasons"] = reasons
    out_dir = Path(out_dir).expanduser()
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / "monitor.json").write_text(json.dumps(finite_json(document), indent=2) + "\n")
    write_monitor_report(out_dir, document, log, reference_scores, over_time,
                         running["curve"] if running else None)
    document["outputs"] = {"dir": str(out_dir), "report": "monitor.html"}
    return document
