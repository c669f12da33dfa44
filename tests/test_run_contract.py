"""The run contract: one positive-class rule, one decision rule, the fingerprint checked on every
read of the frozen operating points, old checkpoints, and the model card's round trip."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

import cxrkit
from conftest import write_image
from cxrkit.cli import main
from cxrkit.config import build_config
from cxrkit.data.preprocess import Preprocessing
from cxrkit.errors import CxrkitError
from cxrkit.evaluation import evaluate_run
from cxrkit.evaluation.thresholds import build_operating_points
from cxrkit.explain.gallery import positive_classes
from cxrkit.export import export_model
from cxrkit.run import ModelCard, OperatingPoint, RunFolder, positive_class_index
from cxrkit.serve.model import load_served_model
from test_export import generated_images, make_run


@pytest.mark.parametrize(("classes", "declared", "expected"), [
    (["Effusion", "No Finding"], None, 0), (["No Finding", "Effusion"], None, 1),
    (["Normal", "Tuberculosis"], None, 1), (["PNEUMONIA", "NORMAL"], None, 0),
    (["abnormal", "normal"], None, 0), (["cat", "dog"], None, 1), (["a", "b", "c"], None, None),
    (["Normal", "Tuberculosis"], "Normal", 0)])
def test_positive_class_rule(classes, declared, expected):
    assert positive_class_index(classes, declared) == expected


def test_a_declared_positive_class_must_fit():
    with pytest.raises(CxrkitError, match="not one of the classes"):
        positive_class_index(["Normal", "Tuberculosis"], "TB")
    with pytest.raises(CxrkitError, match="two-class runs only"):
        positive_class_index(["a", "b", "c"], "a")


def test_every_consumer_reads_the_positive_class_from_the_card(tmp_path: Path):
    """["Effusion", "No Finding"]: the report's rule said Effusion, the gallery and the server
    said "No Finding"; now all read the card."""
    run = make_run(tmp_path / "run", classes=("Effusion", "No Finding"))
    card = RunFolder(run).card()
    assert card.positive_class == "Effusion" and card.positive_index == 0
    assert positive_classes(card) == ["Effusion"]
    served = load_served_model(run)
    assert served.point.positive_class == "Effusion"
    assert served.point.with_threshold(0.4, "test").labels(np.array([[0.45, 0.55]])) == ["Effusion"]
    y_val = np.array([0, 0, 1, 1])
    probabilities = np.array([[0.9, 0.1], [0.6, 0.4], [0.3, 0.7], [0.2, 0.8]])
    document = build_operating_points(list(card.classes), card.positive_index, y_val, probabilities)
    assert document["positive_class"] == "Effusion"
    RunFolder(run).write_operating_points(document)
    assert cxrkit.load(run).operating_point("youden").positive_class == "Effusion"


def test_operating_point_decides_by_threshold_or_argmax():
    classes = ("Normal", "Tuberculosis")
    probabilities = np.array([[0.8, 0.2], [0.65, 0.35], [0.3, 0.7]])
    at = OperatingPoint("youden", classes, 1, 0.3, "the validation split")
    assert at.decide(probabilities).tolist() == [0, 1, 1]
    assert at.labels(probabilities[0]) == ["Normal"]
    assert OperatingPoint("argmax", classes, 1).decide(probabilities).tolist() == [0, 0, 1]
    three = OperatingPoint("argmax", ("a", "b", "c"))
    assert three.decide(np.array([[0.2, 0.5, 0.3]])).tolist() == [1]
    rows = at.predictions(probabilities)
    assert rows[1] == {"probabilities": {"Normal": 0.65, "Tuberculosis": 0.35}, "decision": "Tuberculosis",
                       "threshold": 0.3, "positive_class": "Tuberculosis", "operating_point": "youden"}
    assert "chosen on the validation split" in at.describe()


def test_predict_follows_the_frozen_point_with_an_explicit_override(tmp_path: Path):
    run = make_run(tmp_path / "run", threshold=0.3)  # its frozen default is youden at 0.3
    predictor = cxrkit.load(run)
    images = generated_images(tmp_path / "images", 6)
    positive = predictor.predict_proba(images)[:, 1]
    assert predictor.operating_point().name == "youden"
    assert predictor.predict(images) == np.where(positive >= 0.3, "Tuberculosis", "Normal").tolist()
    assert predictor.predict(images, operating_point="argmax") == np.where(
        positive >= 0.5, "Tuberculosis", "Normal").tolist()
    assert predictor.predict(images, operating_point=0.9) == np.where(
        positive >= 0.9, "Tuberculosis", "Normal").tolist()
    with pytest.raises(CxrkitError, match="not one of this run's points"):
        predictor.predict(images, operating_point="max_f1")
    with pytest.raises(CxrkitError, match="between 0 and 1"):
        predictor.operating_point(1.5)


def test_predict_cli_writes_the_decision_and_where_its_point_was_chosen(tmp_path: Path, capsys):
    run = make_run(tmp_path / "run", threshold=0.3)
    folder = tmp_path / "images"
    generated_images(folder, 5)
    out = tmp_path / "preds.csv"
    assert main(["predict", str(run), str(folder), "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "operating point youden" in printed and "P(Tuberculosis) >= 0.3" in printed
    table = pd.read_csv(out)
    assert (table["decision"] == np.where(table["prob_Tuberculosis"] >= 0.3, "Tuberculosis", "Normal")).all()
    assert (table["operating_point"] == "youden").all() and (table["threshold"] == 0.3).all()
    assert table["chosen_on"].str.contains("validation split").all()
    assert main(["predict", str(run), str(folder), "--out", str(out), "--overwrite",
                 "--operating-point", "argmax"]) == 0
    assert (pd.read_csv(out)["operating_point"] == "argmax").all()


def tamper(run: Path) -> None:
    """Change model.ckpt (other weights) after its operating points were frozen."""
    checkpoint = torch.load(run / "model.ckpt", weights_only=True)
    checkpoint["state_dict"] = {k: v + 0.01 if v.is_floating_point() else v
                                for k, v in checkpoint["state_dict"].items()}
    torch.save(checkpoint, run / "model.ckpt")


def test_a_tampered_checkpoint_is_refused_on_every_read_of_the_points(tmp_path: Path, capsys):
    run = make_run(tmp_path / "run", threshold=0.3)
    image = str(generated_images(tmp_path / "images", 1)[0])
    tamper(run)
    for read in (lambda: cxrkit.load(run), lambda: load_served_model(run),
                 lambda: export_model(run), lambda: RunFolder(run).card()):
        with pytest.raises(CxrkitError, match="different model.ckpt"):
            read()
    assert main(["predict", str(run), image, "--out", str(tmp_path / "p.csv")]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "different model.ckpt" in err and "Traceback" not in err
    assert not (tmp_path / "p.csv").exists()


def test_a_malformed_or_foreign_points_file_is_one_line(tmp_path: Path, capsys):
    run = make_run(tmp_path / "run", threshold=0.3)
    points = json.loads((run / "operating_points.json").read_text())
    (run / "operating_points.json").write_text(json.dumps(points | {"positive_class": "Normal"}))
    with pytest.raises(CxrkitError, match="does not fit the model"):
        cxrkit.load(run)
    (run / "operating_points.json").write_text("{not json")
    image = str(generated_images(tmp_path / "images", 1)[0])
    assert main(["predict", str(run), image, "--out", str(tmp_path / "p.csv")]) == 2
    assert "operating_points.json: not readable JSON" in capsys.readouterr().err


def test_old_checkpoints_load_and_export_with_a_card(tmp_path: Path):
    """test_export.make_run writes the keys of checkpoints from before the card."""
    run = make_run(tmp_path / "run", threshold=0.3, test_metrics={"accuracy": 0.9})
    assert "card" not in torch.load(run / "model.ckpt", weights_only=True)
    predictor = cxrkit.load(run)
    card = predictor.card
    assert card.classes == ("Normal", "Tuberculosis") and card.positive_class == "Tuberculosis"
    assert card.model["name"] == "baseline_cnn" and card.test_metrics == {"accuracy": 0.9}
    assert card.model_id == RunFolder(run).model_id() and card.training_data is None
    onnx = cxrkit.load(export_model(run)["path"])
    assert onnx.card == card and onnx.predict(generated_images(tmp_path / "i", 3)) == predictor.predict(
        generated_images(tmp_path / "i", 3))


def test_model_card_round_trip_through_model_ckpt_and_onnx(tiny_folder, tiny_overrides, tmp_path: Path):
    run = cxrkit.train(build_config("tb-fast", tiny_overrides(tiny_folder)))
    checkpoint = torch.load(run / "model.ckpt", weights_only=True)
    folder = RunFolder(run)
    card = folder.card()
    assert checkpoint["card"] == card.training_facts().to_dict()
    assert ModelCard.from_dict(card.to_dict(), "x") == card
    assert sum(card.training_data["images"].values()) == 32
    assert card.training_data["sources"] == [str(tiny_folder)]
    assert card.operating_points is not None and card.test_metrics is not None  # train evaluates
    assert "classes" not in checkpoint  # one home: the card
    evaluate_run(run, operating_point="youden", set_default=True, overwrite=True, n_bootstrap=100,
                 gradcam=False)
    card = folder.card()
    assert card.operating_point().name == "youden"
    onnx = cxrkit.load(export_model(run)["path"])
    assert onnx.card == card
    assert onnx.card.to_dict() == card.to_dict()


def test_declared_positive_class_goes_into_the_card(tiny_folder, tiny_overrides):
    config = build_config("tb-fast", tiny_overrides(tiny_folder, **{"data.positive_class": "Normal"}))
    run = cxrkit.train(config)
    assert RunFolder(run).card().positive_class == "Normal"
    assert json.loads((run / "operating_points.json").read_text())["positive_class"] == "Normal"
    with pytest.raises(CxrkitError, match="not one of the classes"):
        cxrkit.train(build_config("tb-fast", tiny_overrides(
            tiny_folder, name="typo", **{"data.positive_class": "TB"})))


def test_in_memory_predictor_has_a_card(tmp_path: Path):
    from cxrkit.inference import Predictor
    from cxrkit.models import build_model

    predictor = Predictor(build_model("baseline_cnn", 2, in_channels=1, width=4, depth=2),
                          ["Effusion", "No Finding"],
                          Preprocessing(image_size=32, channels=1, mean=(0.5,), std=(0.25,)))
    assert predictor.card.positive_class == "Effusion" and predictor.operating_point().name == "argmax"
    image = write_image(tmp_path / "probe.png", 50)
    assert predictor.predict(str(image)) == [predictor.classes[int(predictor.predict_proba(str(image)).argmax())]]


def test_evaluate_writes_the_model_card_and_claim_checklist(tmp_path: Path):
    from test_evaluation import evaluate
    from test_evaluation import make_run as make_evaluated_run

    run = make_evaluated_run(tmp_path)
    evaluate(run)
    card = (run / "MODEL_CARD.md").read_text()
    assert "Not for clinical use" in card and "Cross-site caveat" in card
    assert "**argmax**" in card and "chosen on the validation split" in card
    metrics = json.loads((run / "metrics.json").read_text())
    low, high = metrics["confidence_intervals"]["roc_auc"]
    assert f"| ROC-AUC | {metrics['roc_auc']:.3f} ({low:.3f} to {high:.3f}) |" in card
    claim = (run / "CLAIM_checklist.md").read_text()
    assert claim.count("**[author]**") >= 15
    assert "| 29 | " in claim and "200 resamples" in claim
    assert "| 5 | Prospective or retrospective study | Retrospective" in claim

    evaluate(run, operating_point="youden", set_default=True, overwrite=True)
    threshold = json.loads((run / "operating_points.json").read_text())["points"]["youden"]["threshold"]
    card = (run / "MODEL_CARD.md").read_text()
    assert "**youden**" in card and f">= {threshold:.4f}" in card and "| youden (used) |" in card

    external = tmp_path / "hospital_b"
    for label, value in (("Normal", 0), ("Tuberculosis", 150)):
        for index in range(5):
            write_image(external / label / f"{index}.png", value + index * 9)
    evaluate(run, data=external)
    assert not (run / "external" / "hospital_b" / "MODEL_CARD.md").exists()
    evaluate(run, overwrite=True)
    assert "### External validation" in (run / "MODEL_CARD.md").read_text()
    assert "Internal validation only" not in (run / "MODEL_CARD.md").read_text()


def test_stale_points_are_rechosen_only_by_the_runs_own_evaluation_with_overwrite(tmp_path: Path):
    """A retrained model.ckpt (e.g. `train --resume RUN --overwrite`) makes the frozen points
    stale: every reader refuses them until the run's test evaluation re-chooses them."""
    from test_evaluation import evaluate
    from test_evaluation import make_run as make_evaluated_run

    run = make_evaluated_run(tmp_path)
    evaluate(run)
    tamper(run)
    with pytest.raises(CxrkitError, match="different model.ckpt"):
        cxrkit.load(run)
    with pytest.raises(CxrkitError, match="different model.ckpt"):
        evaluate(run, split="val")
    with pytest.raises(CxrkitError, match="pass overwrite=True"):
        evaluate(run)
    evaluate(run, overwrite=True)
    assert json.loads((run / "operating_points.json").read_text())["model_sha256"] == RunFolder(run).fingerprint()
    assert cxrkit.load(run).operating_point().name == "argmax"
