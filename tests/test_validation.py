"""Bad input is refused up front with one line (issue 14): batch sizes, unreadable inputs,
corrupt run files, duplicate/conflicting rows, label typos, tiny classes, class-map hints."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from conftest import TINY_TRAINING, write_image
from cxrkit.cli import main
from cxrkit.data.cache import load_cached_images
from cxrkit.data.preprocess import Preprocessing
from cxrkit.errors import CxrkitError
from cxrkit.evaluation.external import match_classes
from test_export import make_run


def one_error_line(capsys) -> str:
    err = capsys.readouterr().err.strip()
    assert err.startswith("error:") and len(err.splitlines()) == 1, err
    return err


@pytest.mark.parametrize("command", ["predict", "evaluate"])
@pytest.mark.parametrize("size", ["0", "-1"])
def test_batch_sizes_below_one_are_refused(tmp_path, command, size, capsys):
    run = make_run(tmp_path / "run")
    write_image(tmp_path / "images" / "a.png", 0)
    extra = ["--out", str(tmp_path / "p.csv")] if command == "predict" else []
    argv = [command, str(run), *([str(tmp_path / "images")] if command == "predict" else []), *extra]
    with pytest.raises(SystemExit) as stop:
        main([*argv, "--batch-size", size])
    assert stop.value.code == 2 and "less than 1" in capsys.readouterr().err
    assert not (tmp_path / "p.csv").exists()


def test_library_refuses_batch_size_below_one(tmp_path):
    import cxrkit

    predictor = cxrkit.load(make_run(tmp_path / "run"))
    with pytest.raises(CxrkitError, match="batch_size 0"):
        predictor.predict_proba([np.zeros((32, 32), np.uint8)], batch_size=0)


def test_predict_fails_when_no_input_could_be_read(tmp_path, capsys):
    run = make_run(tmp_path / "run")
    for name in ("a.png", "b.png"):
        (tmp_path / "images" / name).parent.mkdir(exist_ok=True)
        (tmp_path / "images" / name).write_bytes(b"not a png")
    assert main(["predict", str(run), str(tmp_path / "images"), "--out", str(tmp_path / "p.csv")]) == 2
    assert "none of the 2 image(s)" in capsys.readouterr().err
    assert not (tmp_path / "p.csv").exists()


def test_predict_streams_a_batch_at_a_time(tmp_path, monkeypatch):
    from cxrkit.inference import Predictor

    run = make_run(tmp_path / "run")
    for index in range(10):
        write_image(tmp_path / "images" / f"{index}.png", 20 * index)
    seen = []
    original = Predictor._outputs

    def recording(self, batch):
        seen.append(len(batch))
        return original(self, batch)

    monkeypatch.setattr(Predictor, "_outputs", recording)
    out = tmp_path / "p.csv"
    assert main(["predict", str(run), str(tmp_path / "images"), "--out", str(out), "--batch-size", "4"]) == 0
    assert max(seen) <= 4 and sum(seen) == 10
    assert len(out.read_text().splitlines()) == 11


def test_emptied_cache_file_is_decoded_again(tmp_path):
    image = write_image(tmp_path / "a.png", 50)
    prep = Preprocessing(image_size=32, channels=1)
    first, _ = load_cached_images([str(image)], prep, tmp_path / "cache")
    first.pixels.write_bytes(b"")  # a zero-byte pixels file: its rows are decoded again
    images, failures = load_cached_images([str(image)], prep, tmp_path / "cache")
    assert failures == {} and len(images) == 1 and images[0].shape == (32, 32)
    assert images.fill["decoded"] == 1 and images.pixels.stat().st_size == 32 * 32
    np.testing.assert_array_equal(images[0], first[0])


def test_corrupt_config_yaml_is_one_line(tmp_path, capsys):
    run = make_run(tmp_path / "run")
    (run / "checkpoints").mkdir()
    torch.save({"epoch": 0}, run / "checkpoints" / "last.ckpt")
    (run / "config.yaml").write_text("data: [unclosed\n  model: {")
    assert main(["train", "--resume", str(run)]) == 2
    err = one_error_line(capsys)
    assert "config.yaml" in err and "invalid YAML" in err


def test_malformed_checkpoint_contents_are_one_line(tmp_path, capsys):
    run = tmp_path / "run"
    run.mkdir()
    torch.save({"format": "cxrkit-model-v1", "state_dict": {}, "classes": ["a", "b"]}, run / "model.ckpt")
    assert main(["predict", str(run), str(tmp_path), "--out", str(tmp_path / "p.csv")]) == 2
    assert "malformed" in one_error_line(capsys)


def test_crafted_onnx_metadata_is_one_line(tmp_path, capsys):
    onnx = pytest.importorskip("onnx")
    from cxrkit.export import export_model
    from cxrkit.onnx_predictor import METADATA_KEY

    path = export_model(make_run(tmp_path / "run"))["path"]
    model = onnx.load(path)
    entry = next(e for e in model.metadata_props if e.key == METADATA_KEY)
    metadata = json.loads(entry.value)
    metadata["card"]["preprocessing"] = {"image_size": "huge"}
    entry.value = json.dumps(metadata)
    onnx.save(model, path)
    write_image(tmp_path / "a.png", 0)
    assert main(["predict", str(path), str(tmp_path / "a.png"), "--out", str(tmp_path / "p.csv")]) == 2
    assert "metadata is malformed" in one_error_line(capsys)


def write_manifest(folder: Path, rows: list[tuple[str, str]]) -> Path:
    lines = ["path,label"] + [f"{path},{label}" for path, label in rows]
    (folder / "manifest.csv").write_text("\n".join(lines) + "\n")
    return folder / "manifest.csv"


def train_args(data: Path, tmp_path: Path) -> list[str]:
    sets = [item for key, value in TINY_TRAINING.items() for item in ("--set", f"{key}={value}")]
    return ["train", "--data", str(data), "--output-dir", str(tmp_path / "runs"), *sets]


@pytest.mark.parametrize("problem, message", [
    ("duplicate", "listed more than once"), ("conflict", "more than one label")])
def test_duplicate_and_conflicting_rows_are_refused_before_training(tiny_folder, tmp_path, problem,
                                                                    message, capsys):
    rows = [(str(p.relative_to(tiny_folder)), p.parent.name) for p in sorted(tiny_folder.rglob("*.png"))]
    first = rows[0]
    rows.append(first if problem == "duplicate" else (first[0], "Tuberculosis"))
    assert main(train_args(write_manifest(tiny_folder, rows), tmp_path)) == 2
    assert message in one_error_line(capsys)
    assert not (tmp_path / "runs" / "tb-fast" / "split.csv").exists()


def test_label_typo_and_tiny_class_are_refused(tiny_folder, tmp_path, capsys):
    for index in range(2):
        write_image(tiny_folder / "Tuberculoisis" / f"typo{index}.png", 150)
    assert main(train_args(tiny_folder, tmp_path)) == 2
    assert "'Tuberculoisis' (2 image(s)) looks like a typo of 'Tuberculosis'" in one_error_line(capsys)
    (tiny_folder / "Tuberculoisis").rename(tiny_folder / "Other")
    assert main(train_args(tiny_folder, tmp_path)) == 2
    assert "'Other' (2) have fewer than 10 images" in one_error_line(capsys)


def test_class_map_suggestions_only_for_plausible_matches():
    with pytest.raises(CxrkitError) as error:
        match_classes(["Normal", "Tuberculoisis", "covid"], ["Normal", "Tuberculosis"], {}, "ext")
    message = str(error.value)
    assert "class_map=Tuberculoisis=Tuberculosis" in message
    assert "covid=" not in message and "=Normal" not in message


def test_weights_none_never_freezes(tiny_folder, tiny_overrides, caplog):
    import yaml

    import cxrkit
    from cxrkit.config import build_config

    config = build_config("tb-fast", tiny_overrides(tiny_folder, **{"model.weights": "none",
                                                                    "model.freeze": "backbone"}))
    run = cxrkit.train(config, use_test=False)
    info = json.loads((run / "training.json").read_text())
    assert info["trainable_parameters"] == info["parameters"]
    assert yaml.safe_load((run / "config.yaml").read_text())["model"]["freeze"] == "none"
    assert any("model.freeze=backbone ignored" in r.getMessage() for r in caplog.records)


def test_operating_point_default_changes_only_with_set_default(tmp_path, capsys):
    from test_evaluation import make_run as make_binary_run

    run = make_binary_run(tmp_path)
    assert main(["evaluate", str(run), "--bootstrap", "100", "--no-gradcam"]) == 0
    assert "argmax" in capsys.readouterr().out
    argv = ["evaluate", str(run), "--operating-point", "youden", "--bootstrap", "100", "--no-gradcam",
            "--overwrite"]
    assert main(argv) == 2
    assert "--set-default" in one_error_line(capsys)
    assert main([*argv, "--out", str(tmp_path / "at-youden")]) == 0
    assert "this evaluation only; the run's default stays argmax" in capsys.readouterr().out
    assert json.loads((run / "operating_points.json").read_text())["selected"] == "argmax"
    assert main(["evaluate", str(run), "--data", str(tmp_path), "--set-default"]) == 2
    capsys.readouterr()
    assert main([*argv, "--set-default"]) == 0
    assert "youden" in capsys.readouterr().out
    assert json.loads((run / "operating_points.json").read_text())["selected"] == "youden"


def presplit_with_shared_patients(root: Path) -> Path:
    """train/ and test/ folders where patients 0 and 1 have images on both sides."""
    for split, patients in (("train", range(0, 8)), ("test", range(0, 3))):
        for label, value in (("Normal", 0), ("Tuberculosis", 150)):
            for patient in patients:
                for shot in range(2):
                    name = f"person{patient}{label[0]}_{split}{shot}.png"
                    write_image(root / split / label / name, value + 10 * shot)
    return root


def test_patient_groups_crossing_a_given_split_are_reported_and_strict_refuses(tmp_path, caplog, capsys):
    data = presplit_with_shared_patients(tmp_path / "data")
    argv = [*train_args(data, tmp_path), "--group-pattern", r"person(\d+\w)_", "--name", "leaky"]
    assert main([*argv, "--strict"]) == 2
    err = one_error_line(capsys)
    assert "--strict" in err and "6 patient group(s) (24 images)" in err
    assert main(argv) == 0
    run = tmp_path / "runs" / "leaky"
    leakage = json.loads((run / "training.json").read_text())["split_leakage"]
    assert leakage["patient_groups"] == 6 and leakage["patient_images"] == 24
    assert any("6 patient group(s)" in r.getMessage() for r in caplog.records)
    warnings = json.loads((run / "metrics.json").read_text())["warnings"]
    assert any("6 patient group(s)" in w for w in warnings)


def test_the_runs_own_test_images_are_not_called_external_validation(tmp_path):
    import pandas as pd

    from test_evaluation import evaluate
    from test_evaluation import make_run as make_binary_run

    run = make_binary_run(tmp_path)
    test = pd.read_csv(run / "split.csv").query("split == 'test'")[["path", "label"]]
    test.to_csv(tmp_path / "own-test.csv", index=False)
    result = evaluate(run, data=tmp_path / "own-test.csv")
    assert any("not external validation" in w for w in result["warnings"])
    assert not any("independent of training" in w for w in result["warnings"])


def test_explain_benchmark_announces_its_work_and_estimates_the_rest(tmp_path, capsys):
    pytest.importorskip("captum")
    run = make_run(tmp_path / "run")
    for label, value in (("Normal", 0), ("Tuberculosis", 150)):
        for index in range(2):
            write_image(tmp_path / "data" / label / f"{index}.png", value)
    argv = ["explain", str(run), "--data", str(tmp_path / "data"), "--n", "3", "--benchmark",
            "--method", "gradcam", "--method", "occlusion"]
    assert main(argv) == 0
    err = capsys.readouterr().err
    assert "benchmark: 3 image(s) x 2 method(s) (gradcam, occlusion)" in err
    assert "[2/2] occlusion: 3/3 images" in err and "s/image, about" in err and "left" in err
