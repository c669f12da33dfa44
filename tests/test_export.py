"""Export to ONNX and TorchScript, and the torch-free ONNX Predictor."""

from __future__ import annotations

import hashlib
import json
import subprocess
import sys
import warnings
from pathlib import Path

import numpy as np
import onnx
import pytest
import torch

import cxrkit
from conftest import shared_data, write_image
from cxrkit.cli import main
from cxrkit.data.preprocess import Preprocessing
from cxrkit.errors import CxrkitError
from cxrkit.export import export_model
from cxrkit.models import build_model
from cxrkit.onnx_predictor import load_onnx_predictor
from cxrkit.run import CHECKPOINT_FORMAT

CLASSES = ("Normal", "Tuberculosis")


def make_run(run_dir: Path, classes=CLASSES, single_logit: bool = False, image_size: int = 32,
             threshold: float | None = None, test_metrics: dict | None = None,
             model_name: str = "baseline_cnn", channels: int = 1) -> Path:
    """A hand-made run folder: model.ckpt, and operating_points.json when `threshold` is given."""
    torch.manual_seed(0)
    spec = {"name": model_name, "num_classes": 1 if single_logit else len(classes),
            "in_channels": channels, "dropout": 0.0}
    if model_name == "baseline_cnn":
        spec |= {"width": 4, "depth": 2}
    model = build_model(**spec)
    run_dir.mkdir(parents=True, exist_ok=True)
    mean, std = (0.5,) * channels, (0.25,) * channels
    preprocessing = Preprocessing(image_size=image_size, channels=channels, mean=mean, std=std)
    torch.save({"format": CHECKPOINT_FORMAT, "state_dict": model.state_dict(),
                "classes": list(classes), "preprocessing": preprocessing.to_dict(),
                "model": spec, "single_logit": single_logit,
                "info": {"model_name": model_name, "run": run_dir.name}}, run_dir / "model.ckpt")
    if threshold is not None:
        fingerprint = hashlib.sha256((run_dir / "model.ckpt").read_bytes()).hexdigest()
        points = {"positive_class": classes[1], "selected": "youden", "model_sha256": fingerprint,
                  "points": {"youden": {"threshold": threshold}, "argmax": {"threshold": 0.5}}}
        (run_dir / "operating_points.json").write_text(json.dumps(points))
    if test_metrics is not None:
        (run_dir / "test_metrics.json").write_text(json.dumps(test_metrics))
    return run_dir


def generated_images(folder: Path, count: int = 6) -> list[Path]:
    return [write_image(folder / f"image_{i}.png", 40 * i, size=48) for i in range(count)]


@pytest.fixture
def run(tmp_path: Path) -> Path:
    metrics = {"accuracy": 0.9, "roc_auc": 0.95}
    return make_run(tmp_path / "run", threshold=0.3, test_metrics=metrics)


def test_onnx_export_carries_contract_and_matches_pytorch(run: Path, tmp_path: Path):
    result = export_model(run)
    assert result["path"] == run / "model.onnx" and result["max_abs_diff"] < 1e-5
    onnx_predictor = cxrkit.load(result["path"])
    torch_predictor = cxrkit.load(run)
    assert onnx_predictor.classes == list(CLASSES)
    assert onnx_predictor.preprocessing == torch_predictor.preprocessing
    assert onnx_predictor.operating_point("youden").threshold == 0.3
    assert onnx_predictor.card == torch_predictor.card  # one card, in model.ckpt and the ONNX file
    assert onnx_predictor.test_metrics == {"accuracy": 0.9, "roc_auc": 0.95}
    assert onnx_predictor.info["model_name"] == "baseline_cnn"
    assert onnx_predictor.model_id == result["model_id"] and result["model_id"].startswith("run@")
    images = generated_images(tmp_path / "images", 7)
    expected = torch_predictor.predict_proba(images)
    for batch_size in (1, 3, 32):  # dynamic batch axis
        got = onnx_predictor.predict_proba(images, batch_size=batch_size)
        np.testing.assert_allclose(got, expected, atol=1e-5)
    assert onnx_predictor.predict(images) == torch_predictor.predict(images)


def test_single_logit_model_exports_two_probabilities(tmp_path: Path):
    run = make_run(tmp_path / "bce", single_logit=True)
    path = export_model(run, out=tmp_path / "bce.onnx")["path"]
    images = generated_images(tmp_path / "images", 3)
    probabilities = cxrkit.load(path).predict_proba(images)
    assert probabilities.shape == (3, 2)
    np.testing.assert_allclose(probabilities, cxrkit.load(run).predict_proba(images), atol=1e-5)


def test_torchscript_export_matches_pytorch(run: Path, tmp_path: Path):
    result = export_model(run, format="torchscript")
    assert result["path"] == run / "model.torchscript.pt" and result["max_abs_diff"] < 1e-5
    extra = {"cxrkit.json": ""}
    with warnings.catch_warnings():  # TorchScript is deprecated upstream (newer torch warns); the file still loads
        warnings.simplefilter("ignore", FutureWarning)
        module = torch.jit.load(str(result["path"]), _extra_files=extra)
    assert json.loads(extra["cxrkit.json"])["card"]["classes"] == list(CLASSES)
    assert module(torch.zeros(4, 1, 32, 32, dtype=torch.uint8)).shape == (4, 2)


def test_export_never_overwrites_without_asking(run: Path):
    existing = run / "model.onnx"
    existing.write_bytes(b"the user's file")
    with pytest.raises(CxrkitError, match="already exists; pass overwrite=True"):
        export_model(run)
    assert existing.read_bytes() == b"the user's file"
    export_model(run, overwrite=True)
    assert cxrkit.load(existing).classes == list(CLASSES)


def test_export_refuses_operating_point_of_other_weights(run: Path):
    points = json.loads((run / "operating_points.json").read_text())
    (run / "operating_points.json").write_text(json.dumps(points | {"model_sha256": "0" * 64}))
    with pytest.raises(CxrkitError, match="different model.ckpt"):
        export_model(run)
    assert not (run / "model.onnx").exists()


def test_cli_export_prints_the_check(run: Path, tmp_path: Path, capsys):
    out = tmp_path / "deploy.onnx"
    assert main(["export", str(run), "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    assert f"wrote {out}" in printed and "max abs difference" in printed and "ok" in printed
    assert main(["export", str(run), "--out", str(out)]) == 2
    assert "already exists" in capsys.readouterr().err
    assert main(["export", str(tmp_path / "missing")]) == 2


def test_onnx_predictor_does_not_import_torch(run: Path, tmp_path: Path):
    path = export_model(run)["path"]
    image = write_image(tmp_path / "x.png", 100)
    code = ("import sys, cxrkit, cxrkit.onnx_predictor\n"
            f"p = cxrkit.load({str(path)!r})\n"
            f"print(p.predict([{str(image)!r}])[0])\n"
            "assert 'torch' not in sys.modules, 'torch was imported'\n")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() in CLASSES


def test_bad_onnx_files_give_clear_errors(tmp_path: Path):
    junk = tmp_path / "junk.onnx"
    junk.write_bytes(b"not a model")
    with pytest.raises(CxrkitError, match="not a loadable ONNX model"):
        load_onnx_predictor(junk)
    with pytest.raises(CxrkitError, match="no such ONNX file"):
        load_onnx_predictor(tmp_path / "missing.onnx")
    plain = tmp_path / "plain.onnx"
    tensor = onnx.helper.make_tensor_value_info
    graph = onnx.helper.make_graph([onnx.helper.make_node("Identity", ["x"], ["y"])], "plain",
                                   [tensor("x", onnx.TensorProto.FLOAT, [1])],
                                   [tensor("y", onnx.TensorProto.FLOAT, [1])])
    opset = [onnx.helper.make_opsetid("", 17)]
    onnx.save(onnx.helper.make_model(graph, ir_version=9, opset_imports=opset), plain)
    with pytest.raises(CxrkitError, match="no cxrkit metadata"):
        load_onnx_predictor(plain)


@pytest.mark.slow
def test_onnx_matches_pytorch_on_100_real_images(tmp_path: Path):
    """ResNet-18 (BN statistics fitted on real X-rays) through the full predict path."""
    files = sorted(shared_data("tb", "Normal").glob("*.png"))[:50]
    files += sorted(shared_data("tb", "Tuberculosis").glob("*.png"))[:50]
    run = make_run(tmp_path / "resnet", image_size=224, model_name="resnet18", channels=3)
    fit_batchnorm_statistics(run, files[::5])
    path = export_model(run)["path"]
    expected = cxrkit.load(run).predict_proba(files)
    got = cxrkit.load(path).predict_proba(files)
    assert len(files) == 100 and expected.std() > 0.01, "outputs saturated: an empty check"
    assert float(np.abs(got - expected).max()) <= 1e-4


def fit_batchnorm_statistics(run: Path, files: list[Path]) -> None:
    """Set BatchNorm running statistics from real images, so activations look like a trained net."""
    predictor = cxrkit.load(run)
    checkpoint = torch.load(run / "model.ckpt", weights_only=True)
    model = predictor.model.train()
    with torch.no_grad():
        for _ in range(3):
            model(predictor.to_tensor(files))
    checkpoint["state_dict"] = model.state_dict()
    torch.save(checkpoint, run / "model.ckpt")
