"""The upgrade guard: old and new model at the old site point; not ready without its own."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

import cxrkit
from cxrkit.cli import main
from cxrkit.deployment.calibrate import SiteAnalysis, calibrate_site
from test_calibrate import site_csv
from test_evaluation import make_run


def test_new_model_is_not_ready_until_it_has_its_own_site_point(tmp_path: Path, capsys):
    old, new = make_run(tmp_path / "old", seed=0), make_run(tmp_path / "new", seed=1)
    site = site_csv(tmp_path)
    point = calibrate_site(old, site, site="clinic",
                           analysis=SiteAnalysis(select="youden", n_bootstrap=200))["site_point"]
    out = tmp_path / "guard.json"
    args = ["compare-deployment", str(old), str(new), "--data", str(site), "--bootstrap", "200"]
    assert main([*args, "--out", str(out)]) == 1
    assert "NOT READY" in capsys.readouterr().out
    result = json.loads(out.read_text())
    scores = pd.read_csv(old / "sites" / "clinic" / "scores.csv")
    check = scores[scores["part"] == "check"]
    assert result["n"] == len(check) and result["excluded_calibration_images"] == 30
    paths = check["path"].tolist()
    positive = check["positive"].to_numpy(dtype=bool)
    for run, key in ((old, "old_at_old_point"), (new, "new_at_old_point")):
        called = cxrkit.load(run).predict_proba(paths)[:, 1] >= point["threshold"]
        assert result[key]["sensitivity"] == pytest.approx((called & positive).sum()
                                                           / positive.sum())
        assert result[key]["referral_rate"] == pytest.approx(np.mean(called))
    calibrate_site(new, site, site="clinic", analysis=SiteAnalysis(select="youden", n_bootstrap=200))
    assert main([*args, "--out", str(out)]) == 2  # never overwrites without asking
    assert main(args) == 0
    assert "ready: the new model has its own site point" in capsys.readouterr().out
