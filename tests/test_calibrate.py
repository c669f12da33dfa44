"""Site calibration: tables equal brute force, honest split, frozen site point, bad input."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from conftest import write_image
from cxrkit.cli import main
from cxrkit.deployment.calibrate import SiteAnalysis, calibrate_site, parse_selection
from cxrkit.deployment.tables import programme_figures, threshold_table, who_rows
from cxrkit.errors import CxrkitError
from cxrkit.evaluation.bootstrap import bootstrap_threshold_rates, resample_weights, weighted_auc
from test_evaluation import make_run


def site_csv(root: Path, per_class: int = 30, patients: bool = True) -> Path:
    """A site CSV: tiny images of both classes, two sites, two images per patient."""
    rows = []
    for label, value in (("Normal", 0), ("Tuberculosis", 150)):
        for index in range(per_class):
            name = f"{label}/s_{index:02d}.png"
            write_image(root / "site" / name, value + (index * 13) % 90)
            rows.append({"path": name, "label": label, "site": "AB"[(index // 2) % 2],
                         "patient": f"{label}-{index // 2}" if patients else ""})
    path = root / "site" / "site.csv"
    pd.DataFrame(rows).to_csv(path, index=False)
    return path


@pytest.fixture
def run_and_site(tmp_path: Path) -> tuple[Path, Path]:
    return make_run(tmp_path), site_csv(tmp_path)


def test_bootstrap_threshold_rates_equal_explicit_resamples():
    rng = np.random.default_rng(1)
    positive = rng.random(300) < 0.3
    scores = np.round(rng.random(300) * 0.5 + 0.4 * positive, 2)
    thresholds = np.array([0.5, 0.2, 0.7, 0.2001, 0.9, 0.0, 1.5])
    sensitivity, specificity, auc = bootstrap_threshold_rates(positive, scores, thresholds, 50, 3)
    weights = resample_weights(positive, 50, np.random.default_rng(3))
    for column, threshold in enumerate(thresholds):
        called = scores >= threshold
        np.testing.assert_allclose(sensitivity[:, column],
                                   weights @ (called & positive) / (weights @ positive))
        np.testing.assert_allclose(specificity[:, column],
                                   weights @ (~called & ~positive) / (weights @ ~positive))
    np.testing.assert_allclose(auc, weighted_auc(scores, positive, weights))


def test_threshold_table_equals_brute_force_and_intervals_bracket():
    rng = np.random.default_rng(0)
    positive = rng.random(400) < 0.25
    scores = rng.random(400) * 0.6 + 0.4 * positive
    thresholds = np.array([0.3, 0.5, 0.7])
    table, summary = threshold_table(positive, scores, thresholds, prevalence=0.05,
                                     cost_test=10.0, n_resamples=300)
    for _, row in table.iterrows():
        called = scores >= row["threshold"]
        sensitivity = (called & positive).sum() / positive.sum()
        specificity = (~called & ~positive).sum() / (~positive).sum()
        assert row["sensitivity"] == pytest.approx(sensitivity)
        assert row["specificity"] == pytest.approx(specificity)
        referred = 0.05 * sensitivity + 0.95 * (1 - specificity)
        assert row["referred_share"] == pytest.approx(referred)
        assert row["ppv"] == pytest.approx(0.05 * sensitivity / referred)
        assert row["tests_per_1000"] == pytest.approx(1000 * referred)
        assert row["missed_per_1000"] == pytest.approx(1000 * 0.05 * (1 - sensitivity))
        assert row["number_needed_to_test"] == pytest.approx(1 / row["ppv"])
        assert row["cost_per_case_found"] == pytest.approx(10 / row["ppv"])
        for name in ("sensitivity", "specificity", "ppv", "npv", "tests_per_1000"):
            assert row[f"{name}_low"] <= row[name] <= row[f"{name}_high"]
    low, high = summary["roc_auc_ci95"]
    assert low <= summary["roc_auc"] <= high


def test_who_rows_pick_best_specificity_at_target_sensitivity():
    table = pd.DataFrame({"threshold": [0.1, 0.2, 0.3], "sensitivity": [1.0, 0.96, 0.85],
                          "specificity": [0.5, 0.75, 0.9]})
    for name in ("sensitivity", "specificity", "referred_share", "ppv", "number_needed_to_test"):
        table[f"{name}_low"] = table[f"{name}_high"] = table.get(name, 0.0)
    table = table.assign(**programme_figures(table["sensitivity"], table["specificity"], 0.1, None))
    minimal, optimal = who_rows(table)
    assert minimal["threshold"] == 0.2 and minimal["met"] and minimal["n_thresholds_meeting"] == 1
    assert optimal["threshold"] == 0.2 and not optimal["met"]


@pytest.mark.parametrize("text, expected", [
    ("sensitivity>=0.90", ("sensitivity", 0.9)), ("sensitivity >= .95", ("sensitivity", 0.95)),
    ("youden", ("youden", None)), ("max_f1", ("max_f1", None)), ("0.35", ("fixed", 0.35))])
def test_selection_rules(text, expected):
    assert parse_selection(text) == expected


@pytest.mark.parametrize("text", ["sensitivity>=1.5", "best", "1.2", "specificity>=0.7"])
def test_bad_selection_rules(text):
    with pytest.raises(CxrkitError, match="select="):
        parse_selection(text)


def test_calibrate_freezes_site_point_checked_on_held_out_part(run_and_site, tmp_path, capsys):
    run, site = run_and_site
    result = calibrate_site(run, site, site="clinic", analysis=SiteAnalysis(
        select="sensitivity>=0.90", prevalence=0.1, cost_test=5, by=("site",), n_bootstrap=200))
    scores = pd.read_csv(run / "sites" / "clinic" / "scores.csv")
    patients = pd.read_csv(site).assign(path=lambda t: [str((site.parent / p).resolve())
                                                        for p in t["path"]])
    parts = scores.merge(patients[["path", "patient"]], on="path")
    assert parts.groupby("patient")["part"].nunique().max() == 1  # a patient stays in one part
    assert (parts.groupby("part")["label"].nunique() == 2).all()
    calibration = scores[scores["part"] == "calibration"]
    point = result["site_point"]
    called = calibration["score"] >= point["threshold"]
    positive = calibration["positive"].astype(bool)
    assert (called & positive).sum() / positive.sum() >= 0.9
    check = scores[scores["part"] == "check"]
    called = check["score"] >= point["threshold"]
    positive = check["positive"].astype(bool)
    assert point["check"]["sensitivity"] == pytest.approx((called & positive).sum()
                                                          / positive.sum())
    low, high = point["check"]["sensitivity_ci95"]
    assert low <= point["check"]["sensitivity"] <= high
    frozen = json.loads((run / "operating_points.json").read_text())["sites"]["clinic"]
    assert frozen["threshold"] == point["threshold"]
    assert frozen["data"]["n"] == 60 and len(frozen["data"]["sha256"]) == 64
    assert frozen["model_sha256"] == result["model_sha256"]
    assert {entry["value"] for entry in result["subgroups"]} == {"A", "B"}
    assert (run / "sites" / "clinic" / "calibration.html").read_text().count("WHO") >= 2
    assert (run / "sites" / "clinic" / "subgroups.csv").is_file()

    out = tmp_path / "preds.csv"
    assert main(["predict", str(run), str(site.parent / "Tuberculosis"), "--out", str(out),
                 "--site", "clinic"]) == 0
    assert "site:clinic" in capsys.readouterr().out
    predictions = pd.read_csv(out)
    expected = np.where(predictions["prob_Tuberculosis"] >= point["threshold"], "Tuberculosis",
                        "Normal")
    clear = (predictions["prob_Tuberculosis"] - point["threshold"]).abs() > 1e-6  # CSV rounding
    assert (predictions["decision"] == expected)[clear].all()
    assert (predictions["operating_point"] == "site:clinic").all()

    with pytest.raises(CxrkitError, match="already has a site operating point"):
        calibrate_site(run, site, site="clinic", analysis=SiteAnalysis(select="youden", n_bootstrap=200))
    state = torch.load(run / "model.ckpt", weights_only=True)
    state["info"]["retrained"] = True
    torch.save(state, run / "model.ckpt")
    assert main(["predict", str(run), str(site), "--out", str(tmp_path / "p2.csv"), "--site",
                 "clinic"]) == 2
    assert "for a different model.ckpt" in capsys.readouterr().err  # every read checks the fingerprint


def test_too_few_site_images_warn_that_the_ci_does_not_exclude_the_target(tmp_path: Path):
    run, site = make_run(tmp_path), site_csv(tmp_path, per_class=10, patients=False)
    result = calibrate_site(run, site, analysis=SiteAnalysis(select="sensitivity>=0.95", n_bootstrap=200))
    check = result["site_point"]["check"]
    assert check["n_positive"] == 5 and check["sensitivity_ci95"][0] < 0.95
    assert any("does not exclude" in w or "misses the target" in w for w in result["warnings"])


def cli_error(args: list[str], capsys) -> str:
    assert main(args) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: ") and "\n" not in err and "Traceback" not in err
    return err


def test_bad_input_is_one_line_and_writes_nothing(run_and_site, tmp_path: Path, capsys):
    run, site = run_and_site
    before = sorted(p.name for p in run.iterdir())
    one_class = tmp_path / "one.csv"
    pd.read_csv(site).query("label == 'Normal'").to_csv(one_class, index=False)
    (tmp_path / "Normal").symlink_to(site.parent / "Normal")
    base = ["calibrate", str(run), "--data"]
    assert "one class" in cli_error([*base, str(one_class)], capsys)
    for bad in ("0", "1", "1.5", "-0.1"):
        assert "--prevalence" in cli_error([*base, str(site), "--prevalence", bad], capsys)
    assert "--by sex: no such column" in cli_error([*base, str(site), "--by", "sex"], capsys)
    assert "--select" in cli_error([*base, str(site), "--select", "best"], capsys)
    assert sorted(p.name for p in run.iterdir()) == before
