"""The upgrade guard: what happens at a site when a new model replaces the old one.

Both models score the same site data. At the old model's site operating point, the guard
shows how the referral rate, sensitivity and specificity move, and how far the score
distribution moved (PSI, median). A new model is ready only once it has its own site point
for that site, calibrated for its own weights: scores of a new version are not on the old
version's scale, so the old threshold must not be carried over.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from cxrkit.errors import CxrkitError


def _figures(positive: np.ndarray, scores: np.ndarray, threshold: float, n_bootstrap: int,
             seed: int) -> dict:
    from cxrkit.deployment.calibrate import check_point

    result = check_point(positive, scores, threshold, n_bootstrap, seed)
    return result | {"threshold": float(threshold),
                     "referral_rate": float(np.mean(scores >= threshold)),
                     "median_score": float(np.median(scores))}


def calibration_images(point: dict) -> set[str]:
    """Paths the site point was chosen on (its calibration part), left out of the comparison."""
    from cxrkit.deployment.calibrate import SCORES_FILE

    scores = Path(point.get("calibration_dir", "")) / SCORES_FILE
    if not point.get("calibration_dir") or not scores.is_file():
        return set()
    table = pd.read_csv(scores, usecols=["path", "part"])
    return set(table.loc[table["part"] == "calibration", "path"])


def only_site(sites: dict, run_dir: Path) -> str:
    if len(sites) != 1:
        raise CxrkitError(f"{run_dir} has site operating points {list(sites) or 'none'}; name the "
                          "one to compare at with site=NAME (made by `cxrkit calibrate "
                          "--select`)")
    return next(iter(sites))


def compare_deployment(old_run: str | Path, new_run: str | Path, data: str | Path,
                       site: str | None = None, class_map: dict[str, str] | None = None,
                       n_bootstrap: int = 1000, seed: int = 0, batch_size: int = 32) -> dict:
    """Both runs on the site data at the old site point, and the new one at its own, if any."""
    from cxrkit.deployment.calibrate import site_table
    from cxrkit.deployment.monitor import psi
    from cxrkit.evaluation.prediction import predict_table
    from cxrkit.inference import load_torch_predictor

    old_run, new_run = Path(old_run).expanduser(), Path(new_run).expanduser()
    old, new = load_torch_predictor(old_run), load_torch_predictor(new_run)
    if old.classes != new.classes:
        raise CxrkitError(f"{old_run} and {new_run} have different classes ({old.classes} and "
                          f"{new.classes}); the guard compares two versions of one model")
    positive_index = old.card.positive_index
    if positive_index is None or new.card.positive_index != positive_index:
        raise CxrkitError(f"{old_run}: the upgrade guard needs binary runs with one positive class")
    old_frozen = old.run.operating_points()
    old_sites = old_frozen.sites if old_frozen is not None else {}
    site = site or only_site(old_sites, old_run)
    old_point = old.operating_point(f"site:{site}")
    table = site_table(data, old.classes, old.card.positive_class, [], class_map)
    used = calibration_images(old_sites[site])
    excluded = int(table["path"].isin(used).sum())
    table = table[~table["path"].isin(used)]
    if table["positive"].nunique() < 2:
        raise CxrkitError(f"data={data}: after leaving out the {excluded} images the old site "
                          "point was calibrated on, images of both classes are needed")
    scores = {}
    for name, predictor in (("old", old), ("new", new)):
        probabilities, kept, _ = predict_table(predictor, table, f"data={data}", batch_size)
        scores[name] = pd.Series(probabilities[:, positive_index], index=kept["path"])
    common = scores["old"].index.intersection(scores["new"].index)
    positive = table.set_index("path").loc[common, "positive"].to_numpy(dtype=bool)
    old_scores, new_scores = scores["old"][common].to_numpy(), scores["new"][common].to_numpy()
    threshold = old_point.threshold
    document = {
        "site": site, "data": str(data), "n": int(len(common)),
        "n_positive": int(positive.sum()),
        "old": {"run": str(old_run), "model_id": old.model_id},
        "new": {"run": str(new_run), "model_id": new.model_id},
        "old_at_old_point": _figures(positive, old_scores, threshold, n_bootstrap, seed),
        "new_at_old_point": _figures(positive, new_scores, threshold, n_bootstrap, seed),
        "score_psi": psi(old_scores, new_scores),
        "excluded_calibration_images": excluded,
    }
    new_frozen = new.run.operating_points()
    new_sites = new_frozen.sites if new_frozen is not None else {}
    if site in new_sites and new_sites[site].get("model_sha256") == new.run.fingerprint():
        new_threshold = new_sites[site]["threshold"]
        document["new_at_new_point"] = _figures(positive, new_scores, new_threshold, n_bootstrap,
                                                seed)
        document["ready"] = True
        document["verdict"] = (f"ready: the new model has its own site point {site!r} "
                               f"(threshold {new_threshold:.4f}, calibrated "
                               f"{new_sites[site].get('created')})")
    else:
        reason = ("was calibrated for other weights" if site in new_sites
                  else "has no site point for this site")
        document["ready"] = False
        document["verdict"] = (f"NOT READY: the new model {reason}; its scores are not on the "
                               f"old model's scale. Calibrate it first: cxrkit calibrate "
                               f"{new_run} --data {data} --site {site} --select "
                               f"'{old_sites[site].get('select')}'")
    return document
