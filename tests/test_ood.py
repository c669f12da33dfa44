"""Out-of-distribution warning: reference in model.ckpt, scores in torch and ONNX, every command."""

from __future__ import annotations

import csv
import io
import json
from pathlib import Path

import numpy as np
import pytest
import torch
from fastapi.testclient import TestClient
from PIL import Image

import cxrkit
from conftest import TINY_TRAINING, write_image
from cxrkit.cli import main
from cxrkit.evaluation import evaluate_run
from cxrkit.export import export_model
from cxrkit.models import MODELS, build_model
from cxrkit.ood import flag_summary, ood_flag_rates, probe_images, warning_text
from cxrkit.ood.reference import OodScorer, trace_features
from cxrkit.ood.runs import add_reference
from cxrkit.run import RunFolder
from test_evaluation import make_run

FAR_AWAY = np.full((48, 48), 255, dtype=np.uint8)


@pytest.fixture(scope="module")
def trained(tmp_path_factory) -> Path:
    """A tiny run trained by `cxrkit.train`, 40 learnable images per class."""
    root = tmp_path_factory.mktemp("ood")
    for label, value in (("Normal", 0), ("Tuberculosis", 150)):
        for index in range(40):
            write_image(root / "data" / label / f"{label.lower()}_{index:02d}.png", value)
    return cxrkit.train(**{"data.source": str(root / "data"), "name": "run",
                           "output_dir": str(root / "runs"), "data.cache_dir": str(root / "cache"),
                           **TINY_TRAINING})


@pytest.fixture
def run(tmp_path: Path) -> Path:
    """A hand-made run (random weights, split.csv of generated images) with a reference added."""
    run = make_run(tmp_path, sizes={"train": 20, "val": 12, "test": 12})
    add_reference(run)
    return run


def test_training_stores_a_weights_only_reference(trained: Path):
    checkpoint = torch.load(trained / "model.ckpt", map_location="cpu", weights_only=True)
    ood = checkpoint["ood"]
    assert ood["format"] == "cxrkit-ood-v1" and len(ood["layers"]) >= 2
    assert [m.shape[1] for m in ood["means"]] == ood["feature_sizes"]
    assert all(p.shape == (m.shape[1], m.shape[1]) for m, p in zip(ood["means"], ood["precisions"], strict=True))
    assert ood["threshold"] > 0 and ood["n_val"] == 8
    predictor = cxrkit.load(trained)
    assert predictor.ood_threshold == pytest.approx(ood["threshold"])
    assert predictor.is_out_of_distribution([FAR_AWAY]).tolist() == [True]


def test_scores_match_a_direct_mahalanobis_computation(run: Path):
    predictor = cxrkit.load(run)
    images = [write_image(run / "extra" / f"x{i}.png", 30 * i) for i in range(4)] + [FAR_AWAY]
    probabilities, scores = predictor.predict_with_ood(images)
    np.testing.assert_allclose(probabilities, predictor.predict_proba(images), atol=1e-6)
    ood = predictor.ood
    traced, _ = trace_features(predictor.model, predictor.to_tensor(images[:2]), ood["layers"])
    with torch.no_grad():
        logits, features = traced(predictor.to_tensor(images))
        np.testing.assert_allclose(logits.numpy(), predictor.model(predictor.to_tensor(images)).numpy(),
                                   atol=1e-5)
    per_layer = []
    for feature, means, precision, scale in zip(features, ood["means"], ood["precisions"],
                                                ood["scales"], strict=True):
        x, mu, p = feature.double().numpy(), means.double().numpy(), precision.double().numpy()
        distances = np.stack([np.einsum("ni,ij,nj->n", x - m, p, x - m) for m in mu], axis=1)
        per_layer.append(distances.min(axis=1) / float(scale))
    np.testing.assert_allclose(scores, np.mean(per_layer, axis=0), rtol=1e-3)
    assert scores[-1] > predictor.ood_threshold > np.median(scores[:-1])


def test_grid_means_are_adaptive_average_pooling():
    from cxrkit.ood.reference import GridMean

    feature = torch.randn(3, 5, 7, 9)
    for grid in (1, 2, 4):
        expected = torch.nn.functional.adaptive_avg_pool2d(feature, grid).flatten(2).flatten(1)
        torch.testing.assert_close(GridMean(grid, 7, 9)(feature), expected)
        # the slice form an ONNX export traces gives the same bins (channels_last maps too)
        last = feature.contiguous(memory_format=torch.channels_last)
        torch.testing.assert_close(GridMean(grid, 7, 9).by_slices(last), expected)


@pytest.mark.parametrize("name", ["baseline_cnn", "cnn5", "resnet18", "mobilenet_v3_small"])
def test_feature_layers_are_found_generically(name: str):
    model = build_model(name, 2, in_channels=1).eval()
    example = torch.randn(2, 1, 64, 64)
    traced, layers = trace_features(model, example)
    with torch.no_grad():
        logits, features = traced(example)
        torch.testing.assert_close(logits, model(example))
    assert len(layers) >= 3 and all(f.ndim == 2 and len(f) == 2 for f in features)
    last_linear = [m for m in model.modules() if isinstance(m, torch.nn.Linear)][-1]
    assert features[-1].shape[1] == last_linear.in_features  # the penultimate features


@pytest.mark.parametrize("name", ["baseline_cnn", "resnet18"])
def test_prediction_scorer_folds_batchnorm_and_scores_as_the_plain_one(name: str):
    """Prediction runs the OOD scorer on the BatchNorm-folded channels_last model: same logits and
    scores as the scorer over the model as trained, to float rounding."""
    from cxrkit.data.preprocess import Preprocessing
    from cxrkit.inference import Predictor

    torch.manual_seed(0)
    model = build_model(name, 2, in_channels=1)
    with torch.no_grad():  # BatchNorm statistics far from their initial 0 / 1
        model(3 * torch.randn(8, 1, 64, 64) + 1)
    model.eval()
    example = torch.randn(4, 1, 64, 64)
    traced, layers = trace_features(model, example[:2])
    with torch.no_grad():
        sizes = [feature.shape[1] for feature in traced(example)[1]]
    reference = {"layers": layers, "means": [torch.randn(2, s) for s in sizes],
                 "precisions": [torch.eye(s) for s in sizes], "scales": torch.rand(len(sizes)) + 0.5,
                 "threshold": 1.0}
    predictor = Predictor(model, ["a", "b"], Preprocessing(image_size=64, channels=1), ood=reference)
    scorer = predictor.ood_scorer
    assert not any(isinstance(m, torch.nn.BatchNorm2d) for m in scorer.modules())
    with torch.no_grad():
        expected = OodScorer(model, reference, example[:2])(example)
        logits, scores = scorer(example.contiguous(memory_format=torch.channels_last))
    torch.testing.assert_close(logits, expected[0], atol=1e-4, rtol=1e-4)
    torch.testing.assert_close(scores, expected[1], atol=1e-4, rtol=1e-4)


@pytest.mark.slow
@pytest.mark.parametrize("name", sorted(MODELS))
def test_every_registry_model_gets_a_scorer(name: str):
    model = build_model(name, 3, in_channels=1).eval()
    example = torch.randn(2, 1, 96, 96)
    _, layers = trace_features(model, example)
    sizes = []
    with torch.no_grad():
        _, features = trace_features(model, example, layers)[0](example)
    sizes = [f.shape[1] for f in features]
    reference = {"layers": layers, "means": [torch.zeros(3, s) for s in sizes],
                 "precisions": [torch.eye(s) for s in sizes], "scales": torch.ones(len(sizes))}
    with torch.no_grad():
        logits, score = OodScorer(model, reference, example)(example)
    assert logits.shape == (2, 3) and score.shape == (2,) and torch.isfinite(score).all()


def test_reference_for_an_existing_run_keeps_its_operating_point(tmp_path: Path, capsys):
    run = make_run(tmp_path, sizes={"train": 20, "val": 12, "test": 12})
    evaluate_run(run, n_bootstrap=100, gradcam=False, calibrate=False)
    assert main(["ood", str(run)]) == 0
    assert "threshold" in capsys.readouterr().out
    points = json.loads((run / "operating_points.json").read_text())
    assert points["model_sha256"] == RunFolder(run).fingerprint()
    evaluate_run(run, data=run.parent / "data", n_bootstrap=100, gradcam=False, calibrate=False)
    assert main(["ood", str(run)]) == 2
    assert "already has an out-of-distribution reference" in capsys.readouterr().err


def test_onnx_scores_match_pytorch_and_flag_alike(run: Path, tmp_path: Path):
    result = export_model(run)
    assert result["ood_max_rel_diff"] < 1e-4
    onnx_predictor = cxrkit.load(result["path"])
    torch_predictor = cxrkit.load(run)
    images = [write_image(tmp_path / f"x{i}.png", 40 * i, size=40) for i in range(5)] + [FAR_AWAY]
    onnx_probabilities, onnx_scores = onnx_predictor.predict_with_ood(images)
    torch_probabilities, torch_scores = torch_predictor.predict_with_ood(images)
    np.testing.assert_allclose(onnx_scores, torch_scores, rtol=1e-4)
    np.testing.assert_allclose(onnx_probabilities, torch_probabilities, atol=1e-5)
    assert onnx_predictor.ood_threshold == pytest.approx(torch_predictor.ood_threshold)
    assert onnx_predictor.is_out_of_distribution(images).tolist() == \
        torch_predictor.is_out_of_distribution(images).tolist()
    assert ood_flag_rates(result["path"], [FAR_AWAY] * 3)["n_flagged"] == 3


@pytest.mark.parametrize("exported", [False, True])
def test_predict_cli_writes_score_and_flag(run: Path, tmp_path: Path, capsys, exported: bool):
    model = export_model(run)["path"] if exported else run
    folder = tmp_path / "images"
    write_image(folder / "a.png", 20)
    Image.fromarray(FAR_AWAY).save(folder / "white.png")
    out = tmp_path / "predictions.csv"
    assert main(["predict", str(model), str(folder), "--out", str(out)]) == 0
    rows = {Path(row["path"]).name: row for row in csv.DictReader(out.open())}
    assert rows["white.png"]["out_of_distribution"] == "True"
    assert float(rows["white.png"]["ood_score"]) > float(rows["a.png"]["ood_score"])
    assert "1 of 2 images (50.0%) are out of distribution" in capsys.readouterr().out


def test_evaluate_warns_in_console_and_at_the_top_of_the_report(run: Path, tmp_path: Path,
                                                                capsys):
    outside = tmp_path / "outside"
    for label in ("Normal", "Tuberculosis"):
        (outside / label).mkdir(parents=True)
        for index in range(6):
            Image.fromarray(np.full((40, 40), 250 - index, np.uint8)).save(outside / label / f"{index}.png")
    code = main(["evaluate", str(run), "--data", str(outside), "--bootstrap", "100",
                 "--no-gradcam", "--no-calibration"])
    assert code == 0
    console = capsys.readouterr().out
    assert console.splitlines()[1].startswith("WARNING: OUT OF DISTRIBUTION: 12 of 12 images")
    report_dir = run / "external" / "outside"
    report = (report_dir / "report.html").read_text()
    assert report.index('class="ood-warning"') < report.index("<nav>")
    metrics = json.loads((report_dir / "metrics.json").read_text())
    assert metrics["out_of_distribution"]["share_flagged"] == 1.0
    with open(report_dir / "predictions.csv") as handle:
        assert all(row["out_of_distribution"] == "True" for row in csv.DictReader(handle))


def test_serve_reply_and_model_card_carry_the_check(run: Path):
    from cxrkit.serve.app import build_app

    client = TestClient(build_app(run))
    files = []
    for name, array in (("white.png", FAR_AWAY), ("dark.png", np.full((48, 48), 20, np.uint8))):
        buffer = io.BytesIO()
        Image.fromarray(array).save(buffer, format="PNG")
        files.append(("images", (name, buffer.getvalue(), "image/png")))
    reply = client.post("/api/v1/predict", files=files).json()
    white = reply["predictions"][0]["out_of_distribution"]
    assert white["flagged"] is True and white["score"] > white["threshold"]
    assert "unlike the images the model was trained on" in white["message"]
    card = client.get("/api/v1/model").json()
    assert card["out_of_distribution"]["threshold"] == pytest.approx(white["threshold"])


def test_page_shows_a_notice_for_flagged_images(run: Path, tmp_path: Path):
    from cxrkit.serve.model import load_served_model
    from cxrkit.serve.page import _ood_text

    served = load_served_model(run)
    check = served.predict([FAR_AWAY])[0]["out_of_distribution"]
    assert "Out of distribution" in _ood_text(check)
    assert _ood_text({**check, "flagged": False}) == ""


def test_flag_summary_and_warning_wording():
    summary = flag_summary(np.array([0.5, 1.0, 3.0, 4.0]), threshold=2.0)
    assert summary == {"n": 4, "n_flagged": 2, "share_flagged": 0.5, "threshold": 2.0, "warn": True}
    assert warning_text(summary).startswith("OUT OF DISTRIBUTION: 2 of 4 images (50.0%)")
    quiet = flag_summary(np.ones(100), threshold=2.0)
    assert not quiet["warn"] and "about 1% is expected" in warning_text(quiet)


def test_probe_images_mix_photos_rotated_and_inverted_xrays(tmp_path: Path):
    xray = write_image(tmp_path / "xray.png", 100, size=40)
    probes = probe_images([xray], n=30, seed=1)
    kinds = [kind for kind, _ in probes]
    assert len(probes) == 30 and {kinds.count(k) for k in set(kinds)} == {10}
    inverted = next(image for kind, image in probes if kind == "inverted")
    np.testing.assert_array_equal(inverted, 255 - np.asarray(Image.open(xray)))
    assert all(image.dtype == np.uint8 and image.ndim == 2 for _, image in probes)
