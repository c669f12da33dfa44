"""`cxrkit explain`: files written, never overwritten silently, one-line errors, the benchmark."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from PIL import Image

from cxrkit.cli import main
from cxrkit.data.preprocess import Preprocessing
from cxrkit.models import build_model
from cxrkit.run import CHECKPOINT_FORMAT
from test_explain_fixtures import SIZE, blobs_image


@pytest.fixture
def run_and_images(tmp_path: Path) -> tuple[Path, list[Path]]:
    """A hand-made run folder (tiny baseline CNN, split.csv) and three images in class folders."""
    images = []
    for index, label in enumerate(["Normal", "Tuberculosis", "Tuberculosis"]):
        path = tmp_path / "data" / label / f"xray{index}.png"
        path.parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(blobs_image(index)).save(path)
        images.append(path)
    run = tmp_path / "run"
    run.mkdir()
    torch.manual_seed(0)
    spec = {"name": "baseline_cnn", "num_classes": 2, "in_channels": 1, "width": 4, "depth": 2}
    torch.save(
        {
            "format": CHECKPOINT_FORMAT,
            "state_dict": build_model(**spec).state_dict(),
            "classes": ["Normal", "Tuberculosis"],
            "preprocessing": Preprocessing(image_size=SIZE, channels=1, mean=(0.3,), std=(0.2,)).to_dict(),
            "model": spec,
            "single_logit": False,
            "info": {"model_name": "baseline_cnn"},
        },
        run / "model.ckpt",
    )
    pd.DataFrame(
        {
            "path": [str(p) for p in images],
            "label": ["Normal", "Tuberculosis", "Tuberculosis"],
            "group": "",
            "split": ["train", "train", "test"],
        }
    ).to_csv(run / "split.csv", index=False)
    return run, images


def test_writes_heatmaps_overlays_and_panels(run_and_images, tmp_path, capsys):
    run, images = run_and_images
    out = tmp_path / "out"
    code = main(
        [
            "explain",
            str(run),
            str(images[0]),
            str(images[1]),
            "--method",
            "gradcam",
            "--method",
            "shap",
            "--samples",
            "4",
            "--out",
            str(out),
        ]
    )
    assert code == 0
    names = sorted(p.name for p in out.iterdir())
    assert len(names) == 12
    assert "xray0.gradcam.heatmap.npy" in names and "xray1.shap.panel.png" in names
    heatmap = np.load(out / "xray1.gradcam.heatmap.npy")
    assert heatmap.shape == (SIZE, SIZE) and 0 <= heatmap.min() <= heatmap.max() <= 1
    printed = capsys.readouterr().out
    assert "xray0.png: gradcam for" in printed and "wrote 4 heatmap(s)" in printed


def test_default_output_folder_is_inside_the_run_and_folders_expand(run_and_images):
    run, images = run_and_images
    assert main(["explain", str(run), str(images[0].parent.parent), "--class", "Tuberculosis"]) == 0
    written = sorted(p.name for p in (run / "explanations").iterdir())
    assert "xray2.gradcam.Tuberculosis.overlay.png" in written and len(written) == 9


def test_refuses_to_overwrite_without_the_flag(run_and_images, tmp_path, capsys):
    run, images = run_and_images
    out = tmp_path / "out"
    assert main(["explain", str(run), str(images[0]), "--out", str(out)]) == 0
    panel = out / "xray0.gradcam.panel.png"
    stamp = panel.stat().st_mtime_ns
    assert main(["explain", str(run), str(images[0]), "--out", str(out)]) == 2
    assert "already exists; pass --overwrite" in capsys.readouterr().err
    assert panel.stat().st_mtime_ns == stamp
    assert main(["explain", str(run), str(images[0]), "--out", str(out), "--overwrite"]) == 0


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (["--class", "Pneumonia"], "--class 'Pneumonia': not a class of this model"),
        (["--method", "saliency"], "--method 'saliency': choose one of"),
        (
            ["--method", "lime", "--layer", "features"],
            "--layer applies to gradcam and gradcam++ only",
        ),
        (["--layer", "nope"], "--layer 'nope': the model has no such layer"),
        (["--benchmark"], "--benchmark draws its images from --data"),
    ],
)
def test_bad_options_exit_2_with_one_line(run_and_images, tmp_path, capsys, extra, message):
    run, images = run_and_images
    assert main(["explain", str(run), str(images[0]), "--out", str(tmp_path / "o"), *extra]) == 2
    error = capsys.readouterr().err
    assert error.startswith("error: ") and message in error and error.count("\n") == 1


def test_missing_inputs_exit_2(run_and_images, tmp_path, capsys):
    run, _ = run_and_images
    assert main(["explain", str(run), str(tmp_path / "absent.png")]) == 2
    assert "absent.png: no such image file or folder" in capsys.readouterr().err
    assert main(["explain", str(tmp_path / "no-run"), str(tmp_path)]) == 2
    assert main(["explain", str(run)]) == 2
    assert "no IMAGE given" in capsys.readouterr().err


def test_benchmark_prints_the_faithfulness_table(run_and_images, capsys):
    run, images = run_and_images
    data = images[0].parent.parent
    assert (
        main(
            [
                "explain",
                str(run),
                "--data",
                str(data),
                "--n",
                "2",
                "--benchmark",
                "--method",
                "gradcam",
                "--method",
                "lime",
                "--samples",
                "20",
            ]
        )
        == 0
    )
    printed = capsys.readouterr().out
    assert "2 images of" in printed
    for text in (
        "deletion AUC",
        "insertion AUC",
        "randomisation Spearman",
        "seconds per image",
        "gradcam",
        "lime",
        "random map",
        f"reproduce: cxrkit explain {run} --data {data} --n 2",
    ):
        assert text in printed
