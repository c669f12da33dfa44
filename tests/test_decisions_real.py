"""Must-show (issue 12): on 300 real tb images, `cxrkit predict`, `Predictor.predict`,
`POST /api/v1/predict` and the report's predictions.csv decide alike at the run's frozen
operating point, and all change together when `cxrkit evaluate --set-default` moves it."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

import cxrkit
from conftest import shared_data, train_real_tb
from cxrkit.cli import main
from cxrkit.run import RunFolder

PER_CLASS = 150
REQUEST_SIZE = 16


@pytest.fixture(scope="module")
def run(tmp_path_factory) -> Path:
    """A small tb-fast run trained here on 150 Normal + 150 Tuberculosis real images."""
    data = shared_data("tb")
    root = tmp_path_factory.mktemp("decisions")
    rows = [(str(path), label) for label in ("Normal", "Tuberculosis")
            for path in sorted((data / label).glob("*.png"))[:PER_CLASS]]
    manifest = root / "tb300.csv"
    pd.DataFrame(rows, columns=["path", "label"]).to_csv(manifest, index=False)
    return train_real_tb(root, **{"data.source": str(manifest), "data.val_fraction": 0.2,
                                  "data.test_fraction": 0.2, "train.epochs": 3})


def decisions_everywhere(run: Path, tmp_path: Path, capsys) -> dict[str, list[str]]:
    """The decision for every test image from the four consumers, in the test split's order."""
    from fastapi.testclient import TestClient

    from cxrkit.serve.app import build_app

    report = pd.read_csv(run / "predictions.csv").set_index("path")
    paths = report.index.tolist()
    out = tmp_path / "predict.csv"
    assert main(["predict", str(run), *paths, "--out", str(out), "--overwrite"]) == 0
    printed = capsys.readouterr().out
    predicted = pd.read_csv(out).set_index("path").loc[paths]
    client = TestClient(build_app(run))
    api = []
    for start in range(0, len(paths), REQUEST_SIZE):
        files = [("images", (Path(p).name, Path(p).read_bytes(), "image/png"))
                 for p in paths[start:start + REQUEST_SIZE]]
        response = client.post("/api/v1/predict", files=files)
        assert response.status_code == 200, response.text
        api += [item["decision"] for item in response.json()["predictions"]]
    point = cxrkit.load(run).operating_point()
    assert f"operating point {point.name}" in printed or point.name == "argmax"
    assert (predicted["operating_point"] == point.name).all()
    return {"report": report["predicted_label"].tolist(), "cli": predicted["decision"].tolist(),
            "python": cxrkit.load(run).predict(paths), "api": api}


def set_default(run: Path, *options: str) -> dict:
    assert main(["evaluate", str(run), *options, "--set-default", "--overwrite", "--bootstrap",
                 "200", "--no-gradcam"]) == 0
    return json.loads((run / "operating_points.json").read_text())


@pytest.mark.slow
def test_every_consumer_decides_at_the_frozen_point_and_follows_it(run: Path, tmp_path: Path, capsys):
    assert len(RunFolder(run).split()) == 2 * PER_CLASS
    seen = {}
    for options in (["--operating-point", "youden"],
                    ["--operating-point", "sensitivity", "--sensitivity", "0.99"],
                    ["--operating-point", "argmax"]):
        points = set_default(run, *options)
        name = points["selected"]
        threshold = points["points"][name]["threshold"]
        decisions = decisions_everywhere(run, tmp_path, capsys)
        assert decisions["cli"] == decisions["report"], name
        assert decisions["python"] == decisions["report"], name
        assert decisions["api"] == decisions["report"], name
        report = pd.read_csv(run / "predictions.csv")
        expected = np.where(report["prob_Tuberculosis"] >= threshold, "Tuberculosis", "Normal")
        assert (report["predicted_label"] == expected).all(), name
        assert f"**{name}**" in (run / "MODEL_CARD.md").read_text()  # the card follows the point
        seen[name] = decisions["report"]
    assert len({tuple(labels) for labels in seen.values()}) >= 2  # moving the point moved them all
