"""Which images an evaluation scores, their probabilities, and the decisions at its point."""

from __future__ import annotations

import logging

import numpy as np
import pandas as pd

from cxrkit.errors import CxrkitError
from cxrkit.evaluation.external import external_table
from cxrkit.evaluation.metrics import check_both_classes
from cxrkit.evaluation.options import EvaluateOptions
from cxrkit.evaluation.result import Evaluated, Scored
from cxrkit.run import OperatingPoint, RunFolder

logger = logging.getLogger(__name__)


def evaluation_set(run: RunFolder, classes: list[str],
                   options: EvaluateOptions) -> tuple[pd.DataFrame, dict, str]:
    """(rows with path and model-class label[, site], class mapping, a name for messages)."""
    if options.external:
        table, mapping = external_table(options.data, classes, options.class_map)
        return table, mapping, f"--data {options.data}"
    split = run.split()
    if options.split not in set(split["split"]):
        raise CxrkitError(f"split={options.split}: {run.path}/split.csv has no {options.split!r} rows "
                          f"(it has {', '.join(sorted(set(split['split'])))})")
    columns = ["path", "label"] + (["site"] if "site" in split.columns else [])
    return split.loc[split["split"] == options.split, columns], {}, f"the {options.split} split of {run.path}"


def score(predictor, options: EvaluateOptions, point: OperatingPoint,
          progress=None) -> tuple[Scored, Evaluated]:
    """Predict the evaluation set and decide at `point`: what the model did, and on what."""
    run = predictor.run
    classes = predictor.classes
    table, mapping, where = evaluation_set(run, classes, options)
    probabilities, table, skipped = predict_table(predictor, table, where, options.batch_size, progress)
    y_true = table["label"].map({name: i for i, name in enumerate(classes)}).to_numpy()
    check_both_classes(y_true, classes, where)
    scored = Scored(table, probabilities, y_true, point.decide(probabilities), classes,
                    predictor.card.positive_index, skipped)
    evaluated = Evaluated("external" if options.external else "split",
                          None if options.external else options.split,
                          str(options.data) if options.external else f"{run.path}/split.csv",
                          int(len(table)), len(skipped), mapping or None)
    return scored, evaluated


def predict_table(predictor, table: pd.DataFrame, where: str, batch_size: int,
                  progress=None) -> tuple[np.ndarray, pd.DataFrame, list[tuple[str, str]]]:
    """Probabilities for the rows of `table` (decoded in parallel processes); unreadable images
    are skipped and listed. `progress(stage, done, total)` follows the images.

    When the model has an out-of-distribution reference, the returned table has `ood_score`.
    """
    if batch_size < 1:
        raise CxrkitError(f"batch_size {batch_size}: give 1 or more")
    unknown = sorted(set(table["label"]) - set(predictor.classes))
    if unknown:
        raise CxrkitError(f"{where}: label(s) {unknown} are not classes of the model "
                          f"({', '.join(predictor.classes)})")
    paths = table["path"].tolist()
    logger.info("predicting %d images of %s", len(paths), where)
    probabilities, scores, lung_found, kept, failures = predictor.predict_files(
        paths, batch_size, progress=progress)
    skipped = list(failures.items())
    if not kept:
        raise CxrkitError(f"{where}: none of the {len(paths)} images could be read "
                          f"(e.g. {skipped[0][1] if skipped else 'no images'})")
    probabilities = probabilities.astype(np.float64)
    bad = ~np.isfinite(probabilities).all(axis=1)
    if bad.any():
        raise CxrkitError(f"{predictor.run_dir}/model.ckpt produced NaN probabilities for "
                          f"{int(bad.sum())} of {len(bad)} images of {where} (e.g. "
                          f"{kept[int(np.flatnonzero(bad)[0])]}); the model is broken (did "
                          "training diverge? retrain with a lower train.lr)")
    probabilities /= probabilities.sum(axis=1, keepdims=True)  # float32 softmax -> exact rows
    kept_set = set(kept)
    table = table[table["path"].isin(kept_set)].drop_duplicates("path")
    order = {path: i for i, path in enumerate(kept)}
    table = table.iloc[np.argsort(table["path"].map(order).to_numpy())].reset_index(drop=True)
    if predictor.preprocessing.uses_lungs and len(table) == len(lung_found):
        table = table.assign(lung_found=lung_found)
    if len(table) != len(probabilities):
        raise CxrkitError(f"{where}: some images are listed twice; remove the duplicate rows")
    if predictor.ood_threshold is not None:
        table = table.assign(ood_score=scores)
    return probabilities, table, skipped


def predictions_frame(scored: Scored, ood_threshold: float | None) -> pd.DataFrame:
    """predictions.csv: path, [site,] true_label, predicted_label (the decision at the
    evaluation's operating point), prob_<class> per image, and ood_score /
    out_of_distribution and lung_found when the model gives them."""
    table, classes = scored.table, scored.classes
    frame = pd.DataFrame({"path": table["path"].to_numpy(), "true_label": table["label"].to_numpy(),
                          "predicted_label": [classes[i] for i in scored.y_pred]})
    if "site" in table.columns:
        frame.insert(1, "site", table["site"].to_numpy())
    for index, name in enumerate(classes):
        frame[f"prob_{name}"] = scored.probabilities[:, index]
    if "ood_score" in table:
        frame["ood_score"] = table["ood_score"].to_numpy()
        frame["out_of_distribution"] = frame["ood_score"] > ood_threshold
    if "lung_found" in table.columns:
        frame["lung_found"] = table["lung_found"].to_numpy()
    return frame
