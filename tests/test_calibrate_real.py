"""Site calibration on the real data: a run trained on tb/ calibrated at the NLM sites (slow)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from conftest import shared_data, train_real_tb
from cxrkit.cli import main

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def tb_run(tmp_path_factory) -> Path:
    return train_real_tb(tmp_path_factory.mktemp("tb"), **{"train.epochs": 2})


def test_calibrate_at_the_nlm_sites_and_predict_with_the_site_point(tb_run: Path, tmp_path,
                                                                    capsys):
    site = shared_data("tb-nlm.csv")
    assert main(["calibrate", str(tb_run), "--data", str(site), "--prevalence", "0.05",
                 "--by", "site", "--select", "sensitivity>=0.90", "--bootstrap", "300"]) == 0
    printed = capsys.readouterr().out
    assert "WHO minimal" in printed and "site=Montgomery" in printed and "site=Shenzhen" in printed
    folder = tb_run / "sites" / "tb-nlm"
    result = json.loads((folder / "calibration.json").read_text())
    scores = pd.read_csv(folder / "scores.csv")
    assert len(scores) == 800 and set(scores["part"]) == {"calibration", "check"}
    point = result["site_point"]
    for part, key in (("calibration", None), ("check", "check")):
        rows = scores[scores["part"] == part]
        positive = rows["positive"].to_numpy(dtype=bool)
        called = rows["score"].to_numpy() >= point["threshold"]
        sensitivity = (called & positive).sum() / positive.sum()
        expected = point["sensitivity"] if key is None else point["check"]["sensitivity"]
        assert sensitivity == pytest.approx(expected)
    assert point["sensitivity"] >= 0.90
    low, high = point["check"]["sensitivity_ci95"]
    assert low <= point["check"]["sensitivity"] <= high
    assert {g["value"] for g in result["subgroups"]} == {"Montgomery", "Shenzhen"}

    out = tmp_path / "preds.csv"
    images = site.parent / "tb-nlm" / "Tuberculosis"
    assert main(["predict", str(tb_run), str(images), "--site", "tb-nlm", "--out", str(out)]) == 0
    assert "site:tb-nlm" in capsys.readouterr().out
    predictions = pd.read_csv(out)
    called = predictions["prob_Tuberculosis"].to_numpy() >= point["threshold"] - 1e-6
    assert np.mean(predictions["decision"] == "Tuberculosis") == pytest.approx(
        np.mean(called), abs=0.01)
