"""Evaluation: metrics equal scikit-learn's, frozen operating points, external data, errors."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from sklearn import metrics as skm

from conftest import write_image
from cxrkit.cli import main
from cxrkit.data.preprocess import Preprocessing
from cxrkit.data.sources import parse_class_map
from cxrkit.errors import CxrkitError
from cxrkit.evaluation import evaluate_run
from cxrkit.evaluation.bootstrap import bootstrap_intervals, resample_weights, weighted_auc
from cxrkit.evaluation.calibration import apply_temperature, fit_temperature
from cxrkit.evaluation.external import match_classes
from cxrkit.evaluation.notes import collapsed_interval_notes
from cxrkit.evaluation.thresholds import choose_thresholds, is_tuberculosis
from cxrkit.models import build_model
from cxrkit.run import CHECKPOINT_FORMAT, positive_class_index

BINARY = ("Normal", "Tuberculosis")
VALUES = {"Normal": 0, "Tuberculosis": 150, "Pneumonia": 80}


def make_run(root: Path, classes=BINARY, sizes=None, nan_weights: bool = False,
             seed: int = 0) -> Path:
    """A run folder by hand: tiny PNGs, split.csv, and a random baseline_cnn model.ckpt."""
    sizes = sizes or {"train": 4, "val": 12, "test": 12}
    rows = []
    for split, per_class in sizes.items():
        for label in classes:
            for index in range(per_class):
                path = write_image(root / "data" / label / f"{split}_{index:02d}.png",
                                   VALUES[label] + (index * 7) % 60)
                rows.append((str(path), label, "", split))
    run = root / "run"
    run.mkdir(parents=True)
    pd.DataFrame(rows, columns=["path", "label", "group", "split"]).to_csv(run / "split.csv",
                                                                          index=False)
    torch.manual_seed(seed)
    spec = {"name": "baseline_cnn", "num_classes": len(classes), "in_channels": 1, "dropout": 0.0,
            "width": 4, "depth": 2}
    state = build_model(**spec).state_dict()
    if nan_weights:
        state = {k: v.float().fill_(float("nan")) if k.endswith("weight") else v
                 for k, v in state.items()}
    prep = Preprocessing(image_size=32, channels=1, mean=(0.3,), std=(0.2,))
    torch.save({"format": CHECKPOINT_FORMAT, "state_dict": state, "classes": list(classes),
                "preprocessing": prep.to_dict(), "model": spec, "single_logit": False,
                "info": {"model_name": "baseline_cnn"}}, run / "model.ckpt")
    return run


def evaluate(run: Path, **options) -> dict:
    """evaluate_run with 200 resamples and no Grad-CAM unless asked, to keep tests fast."""
    return evaluate_run(run, **{"n_bootstrap": 200, "gradcam": False, **options})


@pytest.fixture
def binary_run(tmp_path: Path) -> Path:
    return make_run(tmp_path)


def recompute(predictions: pd.DataFrame, classes: list[str]):
    labels = {name: i for i, name in enumerate(classes)}
    y_true = predictions["true_label"].map(labels).to_numpy()
    y_pred = predictions["predicted_label"].map(labels).to_numpy()
    probabilities = predictions[[f"prob_{c}" for c in classes]].to_numpy()
    return y_true, y_pred, probabilities


def test_binary_metrics_equal_sklearn_from_predictions_csv(binary_run: Path):
    evaluate(binary_run, gradcam=True)
    metrics = json.loads((binary_run / "metrics.json").read_text())
    test_metrics = json.loads((binary_run / "test_metrics.json").read_text())
    predictions = pd.read_csv(binary_run / "predictions.csv")
    y_true, y_pred, probabilities = recompute(predictions, list(BINARY))
    assert len(predictions) == 24
    for document in (metrics, test_metrics):
        assert document["accuracy"] == pytest.approx(skm.accuracy_score(y_true, y_pred))
        assert document["balanced_accuracy"] == pytest.approx(
            skm.balanced_accuracy_score(y_true, y_pred))
        assert document["roc_auc"] == pytest.approx(skm.roc_auc_score(y_true, probabilities[:, 1]))
        assert document["pr_auc"] == pytest.approx(
            skm.average_precision_score(y_true, probabilities[:, 1]))
        assert document["confusion_matrix"] == skm.confusion_matrix(y_true, y_pred).tolist()
        assert document["brier"] == pytest.approx(skm.brier_score_loss(y_true, probabilities[:, 1]))
        precision, recall, f1, _ = skm.precision_recall_fscore_support(y_true, y_pred,
                                                                       zero_division=0)
        for index, name in enumerate(BINARY):
            assert document["per_class"][name]["precision"] == pytest.approx(precision[index])
            assert document["per_class"][name]["recall"] == pytest.approx(recall[index])
            assert document["per_class"][name]["f1"] == pytest.approx(f1[index])
        tn, fp, fn, tp = skm.confusion_matrix(y_true, y_pred).ravel()
        assert document["sensitivity"] == pytest.approx(tp / (tp + fn))
        assert document["specificity"] == pytest.approx(tn / (tn + fp))
    low, high = metrics["confidence_intervals"]["roc_auc"]
    assert low <= metrics["roc_auc"] <= high
    report = (binary_run / "classification_report.txt").read_text()
    assert report == skm.classification_report(y_true, y_pred, target_names=list(BINARY),
                                               digits=4, zero_division=0)
    html = (binary_run / "report.html").read_text()
    gradcam = html.split('id="gradcam"')[1].split("</section>")[0]
    assert gradcam.count("<img") == len(list((binary_run / "gallery").glob("*.png"))) > 0


def test_operating_points_file_and_decisions(binary_run: Path):
    result = evaluate(binary_run, operating_point="youden", set_default=True)
    points = json.loads((binary_run / "operating_points.json").read_text())
    assert points["positive_class"] == "Tuberculosis" and points["positive_index"] == 1
    assert points["chosen_on"] == "val" and points["selected"] == "youden"
    assert set(points["points"]) == {"argmax", "youden", "max_f1", "sensitivity>=0.90"}
    assert points["points"]["argmax"]["threshold"] == 0.5
    threshold = points["points"]["youden"]["threshold"]
    predictions = pd.read_csv(binary_run / "predictions.csv")
    expected = np.where(predictions["prob_Tuberculosis"] >= threshold, "Tuberculosis", "Normal")
    assert (predictions["predicted_label"] == expected).all()
    assert result["operating_point"]["threshold"] == threshold
    assert result["who_tb_triage"]["met"] == (result["sensitivity"] >= 0.9
                                              and result["specificity"] >= 0.7)
    html = (binary_run / "report.html").read_text()
    assert f"{threshold:.4f}" in html and "validation split" in html


def test_multiclass_metrics_equal_sklearn(tmp_path: Path):
    classes = ("Normal", "Pneumonia", "Tuberculosis")
    run = make_run(tmp_path, classes=classes, sizes={"train": 2, "val": 6, "test": 8})
    result = evaluate(run)
    predictions = pd.read_csv(run / "predictions.csv")
    y_true, y_pred, probabilities = recompute(predictions, list(classes))
    assert result["roc_auc"] == pytest.approx(
        skm.roc_auc_score(y_true, probabilities, multi_class="ovr", average="macro"))
    assert result["pr_auc"] == pytest.approx(skm.average_precision_score(
        np.eye(3)[y_true], probabilities, average="macro"))
    assert result["brier"] == pytest.approx(skm.brier_score_loss(y_true, probabilities))
    assert (y_pred == probabilities.argmax(axis=1)).all()
    points = json.loads((run / "operating_points.json").read_text())
    assert points["selected"] == "argmax" and points["positive_index"] is None
    assert "who_tb_triage" not in result


@pytest.mark.parametrize(("name", "expected"), [
    ("Tuberculosis", True), ("TB", True), ("tb_positive", True), ("PNEUMONIA", False),
    ("Normal", False), ("stub", False)])
def test_who_tb_target_applies_to_tuberculosis_only(name, expected):
    assert is_tuberculosis(name) is expected


def test_weighted_auc_equals_sklearn_on_explicit_resamples():
    rng = np.random.default_rng(3)
    y = (rng.random(400) < 0.3).astype(int)
    scores = np.round(rng.normal(0.4 + 0.2 * y, 0.2), 1)  # many ties
    weights = resample_weights(y, 5, rng)
    assert (weights[:, y == 1].sum(axis=1) == (y == 1).sum()).all()  # stratified
    for row, auc in zip(weights, weighted_auc(scores, y == 1, weights), strict=True):
        index = np.repeat(np.arange(len(y)), row.astype(int))
        assert auc == pytest.approx(skm.roc_auc_score(y[index], scores[index]))


def test_bootstrap_intervals_bracket_estimate_and_repeat_with_seed():
    rng = np.random.default_rng(0)
    y = (rng.random(1000) < 0.25).astype(int)
    p1 = np.clip(rng.normal(0.35 + 0.3 * y, 0.15), 0, 1)
    probabilities = np.c_[1 - p1, p1]
    y_pred = (p1 >= 0.5).astype(int)
    first = bootstrap_intervals(y, probabilities, y_pred, list(BINARY), 1, 300, seed=1)
    again = bootstrap_intervals(y, probabilities, y_pred, list(BINARY), 1, 300, seed=1)
    other = bootstrap_intervals(y, probabilities, y_pred, list(BINARY), 1, 300, seed=2)
    assert first == again and first != other
    sensitivity = ((y_pred == 1) & (y == 1)).sum() / (y == 1).sum()
    assert first["sensitivity"][0] < sensitivity < first["sensitivity"][1]
    auc = skm.roc_auc_score(y, p1)
    assert first["roc_auc"][0] < auc < first["roc_auc"][1]
    assert first["roc_auc"][1] - first["roc_auc"][0] < 0.1


def test_collapsed_bootstrap_interval_gets_wilson_interval():
    y_true = np.array([0] * 208 + [1] * 69)
    document = {"accuracy": 0.98, "sensitivity": 0.94, "specificity": 1.0}
    notes = collapsed_interval_notes(document, y_true, positive_index=1)
    assert len(notes) == 1
    assert "Specificity is 1.000 (208 of 208)" in notes[0] and "0.982 to 1.000" in notes[0]


def test_thresholds_match_brute_force():
    rng = np.random.default_rng(5)
    positive = rng.random(300) < 0.3
    scores = np.clip(rng.normal(0.4 + 0.25 * positive, 0.15), 0, 1)
    points = choose_thresholds(positive, scores, 0.9)

    def rates(t):
        called = scores >= t
        return (called & positive).sum() / positive.sum(), (~called & ~positive).sum() / (
            ~positive).sum()

    candidates = np.unique(scores)
    youden = max(candidates, key=lambda t: sum(rates(t)) - 1)
    assert sum(rates(points["youden"]["threshold"])) == pytest.approx(sum(rates(youden)))
    target = points["sensitivity>=0.90"]["threshold"]
    assert rates(target)[0] >= 0.9
    assert all(rates(t)[0] < 0.9 for t in candidates[candidates > target])
    f1 = [skm.f1_score(positive, scores >= t) for t in candidates]
    assert skm.f1_score(positive, scores >= points["max_f1"]["threshold"]) == pytest.approx(max(f1))


@pytest.mark.parametrize(("classes", "expected"), [
    (["Normal", "Tuberculosis"], 1), (["NORMAL", "PNEUMONIA"], 1), (["PNEUMONIA", "NORMAL"], 0),
    (["abnormal", "normal"], 0), (["cat", "dog"], 1), (["a", "b", "c"], None)])
def test_positive_class_is_the_one_not_named_normal(classes, expected):
    assert positive_class_index(classes) == expected


def test_temperature_recovers_known_value_and_keeps_ranking():
    rng = np.random.default_rng(0)
    logits = rng.normal(0, 3, (20000, 2))
    true_probabilities = np.exp(logits / 2.0) / np.exp(logits / 2.0).sum(axis=1, keepdims=True)
    y = (rng.random(20000) < true_probabilities[:, 1]).astype(int)
    overconfident = np.exp(logits) / np.exp(logits).sum(axis=1, keepdims=True)
    temperature = fit_temperature(y, overconfident)
    assert temperature == pytest.approx(2.0, rel=0.1)
    scaled = apply_temperature(overconfident, temperature)
    assert (np.argsort(scaled[:, 1]) == np.argsort(overconfident[:, 1])).all()


def test_evaluation_is_frozen_and_never_overwritten_silently(binary_run: Path):
    evaluate(binary_run)
    frozen = json.loads((binary_run / "operating_points.json").read_text())
    with pytest.raises(CxrkitError, match="overwrite=True"):
        evaluate(binary_run)
    evaluate(binary_run, overwrite=True)
    assert json.loads((binary_run / "operating_points.json").read_text()) == frozen
    evaluate(binary_run, overwrite=True, operating_point="sensitivity",
             target_sensitivity=0.8, set_default=True)
    changed = json.loads((binary_run / "operating_points.json").read_text())
    assert changed["selected"] == "sensitivity>=0.80" and changed["target_sensitivity"] == 0.8


def test_val_split_report_warns_threshold_chosen_on_same_data(binary_run: Path):
    result = evaluate(binary_run, split="val", operating_point="youden")
    assert any("chosen on the data being reported" in w for w in result["warnings"])
    out = binary_run / "evaluation" / "val"
    assert "chosen on the data being reported" in (out / "report.html").read_text()
    assert not (binary_run / "metrics.json").exists()
    frozen = json.loads((binary_run / "operating_points.json").read_text())
    assert frozen["selected"] == "argmax"  # only the run's own test evaluation changes it


def test_external_data_matches_classes_skips_corrupt_images(binary_run: Path, tmp_path: Path):
    external = tmp_path / "hospital_b"
    for label, value in (("normal", 0), ("tb", 150)):
        for index in range(6):
            write_image(external / label / f"{label}_{index}.png", value + index * 9)
    (external / "tb" / "broken.png").write_bytes(b"not a png at all")
    with pytest.raises(CxrkitError, match="class_map=tb=Tuberculosis"):
        evaluate(binary_run, data=external)
    result = evaluate(binary_run, data=external, class_map={"tb": "Tuberculosis"},
                      operating_point="youden")
    out = binary_run / "external" / "hospital_b"
    assert result["evaluated"]["class_map"] == {"normal": "Normal", "tb": "Tuberculosis"}
    assert result["evaluated"]["n"] == 12 and result["evaluated"]["n_skipped"] == 1
    assert pd.read_csv(out / "skipped_images.csv")["path"].str.endswith("broken.png").all()
    assert "broken.png" in (out / "report.html").read_text()
    assert "not re-tuned on this external data" in (out / "report.html").read_text()
    frozen = json.loads((binary_run / "operating_points.json").read_text())
    assert frozen["selected"] == "argmax"  # an external evaluation never changes the run's choice
    assert result["operating_point"]["threshold"] == frozen["points"]["youden"]["threshold"]
    with pytest.raises(CxrkitError, match="overwrite=True"):
        evaluate(binary_run, data=external, class_map={"tb": "Tuberculosis"})


def test_external_data_overlapping_training_split_is_flagged(binary_run: Path):
    result = evaluate(binary_run, data=binary_run.parent / "data")
    assert any("also used to train or tune the run" in w for w in result["warnings"])


def test_class_map_parsing_and_matching():
    assert parse_class_map("normal=Normal, tb=Tuberculosis") == {"normal": "Normal",
                                                                 "tb": "Tuberculosis"}
    with pytest.raises(CxrkitError, match="DATA_CLASS=MODEL_CLASS"):
        parse_class_map("normal:Normal")
    assert match_classes(["NORMAL", "PNEUMONIA"], ["Normal", "Pneumonia"], {}, "x") == {
        "NORMAL": "Normal", "PNEUMONIA": "Pneumonia"}
    with pytest.raises(CxrkitError, match="does not have"):
        match_classes(["a"], ["Normal"], {"a": "Covid"}, "x")


def run_cli(args: list[str], capsys) -> tuple[int, str]:
    code = main(args)
    captured = capsys.readouterr()
    return code, captured.out + captured.err


def test_cli_single_class_test_set_is_a_clear_error(tmp_path: Path, capsys):
    run = make_run(tmp_path)
    table = pd.read_csv(run / "split.csv")
    table = table[(table["split"] != "test") | (table["label"] == "Normal")]
    table.to_csv(run / "split.csv", index=False)
    code, output = run_cli(["evaluate", str(run), "--bootstrap", "200", "--no-gradcam"], capsys)
    assert code == 2
    assert "one class only ('Normal'" in output and "Traceback" not in output


def test_cli_nan_probabilities_are_a_clear_error(tmp_path: Path, capsys):
    run = make_run(tmp_path, nan_weights=True)
    code, output = run_cli(["evaluate", str(run)], capsys)
    assert code == 2
    assert "NaN probabilities" in output and "Traceback" not in output


def test_cli_mismatched_class_names_suggest_class_map(binary_run: Path, tmp_path: Path, capsys):
    other = tmp_path / "other"
    for label in ("healthy", "sick"):
        for index in range(3):
            write_image(other / label / f"{index}.png", index * 40)
    code, output = run_cli(["evaluate", str(binary_run), "--data", str(other)], capsys)
    assert code == 2
    # no name resembles a model class, so nothing is guessed (issue 14: a guess can be wrong)
    assert "--class-map DATA_CLASS=MODEL_CLASS" in output and "healthy=" not in output


def test_cli_evaluate_prints_summary_and_compare_tables_runs(tmp_path: Path, capsys):
    first = make_run(tmp_path / "a")
    second = make_run(tmp_path / "b", seed=1)
    code, output = run_cli(["evaluate", str(first), "--bootstrap", "200", "--no-gradcam"], capsys)
    assert code == 0 and "roc_auc" in output and "report.html" in output
    evaluate(second)
    out = tmp_path / "cmp"
    code, output = run_cli(["compare", str(first), str(second), "--out", str(out)], capsys)
    assert code == 0
    table = pd.read_csv(out / "comparison.csv")
    metrics = json.loads((second / "metrics.json").read_text())
    assert table.loc[1, "roc_auc"] == pytest.approx(metrics["roc_auc"], abs=1e-4)
    assert (out / "roc_overlay.png").stat().st_size > 0
    assert "different test images" in (out / "comparison.md").read_text()
    code, output = run_cli(["compare", str(first), "--out", str(out)], capsys)
    assert code == 2 and "--overwrite" in output
