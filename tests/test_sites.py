"""Sites as data: where the site comes from, several sources, splits within sites, per-site metrics."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from conftest import TINY_TRAINING, shared_data, write_image
from cxrkit.cli import main
from cxrkit.commands.train import source_overrides
from cxrkit.config import DataSource, build_config
from cxrkit.data.sources import default_site_name, load_manifest, load_sources
from cxrkit.data.splits import assign_splits, effective_groups, leave_site_out, write_split_file
from cxrkit.errors import CxrkitError
from cxrkit.evaluation.metrics import compute_metrics
from cxrkit.evaluation.sites import per_site_metrics


def site_csv(tmp_path: Path, sites: dict[str, int], name: str = "multi.csv", patients: bool = True) -> Path:
    """A CSV manifest: per site, n Normal and n TB images (patient ids repeat across sites)."""
    rows = []
    for site, n in sites.items():
        for label, value in (("Normal", 0), ("TB", 150)):
            for index in range(n):
                file = f"img/{site}_{label}_{index}.png"
                write_image(tmp_path / file, value)
                rows.append((file, label, site, f"p{index % (n // 2 or 1)}-{label}"))
    table = pd.DataFrame(rows, columns=["path", "label", "site", "patient"])
    if not patients:
        table = table.drop(columns="patient")
    path = tmp_path / name
    table.to_csv(path, index=False)
    return path


def test_site_comes_from_the_csv_column_or_the_source_name(tmp_path, tiny_folder):
    manifest, _ = load_manifest(site_csv(tmp_path, {"A": 4, "B": 4}))
    assert sorted(manifest["site"].unique()) == ["A", "B"]
    folder, _ = load_manifest(tiny_folder)
    assert set(folder["site"]) == {f"{tiny_folder.parent.name}-data"}, \
        "a folder source is named after its folder (and its parent for generic names like data/)"
    named, _ = load_manifest(tiny_folder, site="Lagos")
    assert set(named["site"]) == {"Lagos"}
    assert default_site_name("/x/pneumonia/test") == "pneumonia-test"
    assert default_site_name("../shared/data/tb-nlm.csv") == "tb-nlm"


def test_empty_site_values_are_a_one_line_error_naming_the_csv_and_rows(tmp_path):
    csv = site_csv(tmp_path, {"A": 3})
    table = pd.read_csv(csv, dtype=str)
    table.loc[[1, 4], "site"] = ""
    table.to_csv(csv, index=False)
    with pytest.raises(CxrkitError) as error:
        load_manifest(csv)
    message = str(error.value)
    assert str(csv) in message and "line(s) 3, 6" in message and "\n" not in message


def test_site_option_for_a_csv_with_its_own_sites_is_refused(tmp_path):
    with pytest.raises(CxrkitError, match="has its own site column"):
        load_manifest(site_csv(tmp_path, {"A": 3}), site="X")


def test_several_sources_each_with_its_site_and_class_map(tmp_path, tiny_folder):
    other = tmp_path / "other"
    for label, value in (("normal", 0), ("tb", 150)):
        for index in range(6):
            write_image(other / label / f"{label}{index}.png", value)
    sources = [DataSource(path=str(tiny_folder), site="Here"),
               DataSource(path=str(other), class_map={"normal": "Normal", "tb": "Tuberculosis"})]
    manifest, _ = load_sources(sources)
    assert manifest.groupby("site").size().to_dict() == {"Here": 32, "other": 12}
    assert sorted(manifest["label"].unique()) == ["Normal", "Tuberculosis"]
    with pytest.raises(CxrkitError, match=r"names \['pneumonia'\]"):
        load_sources([DataSource(path=str(other), class_map={"pneumonia": "X"})])
    with pytest.raises(CxrkitError, match="more than one `data` source"):
        load_sources([DataSource(path=str(tiny_folder)), DataSource(path=str(tiny_folder), site="again")])


def test_train_options_give_site_and_class_map_per_source_in_order(tmp_path, tiny_folder, capsys):
    overrides = source_overrides(["a", "b.csv"], ["A", "-"], ["-", "normal=Normal"])
    config = build_config("tb-fast", overrides)
    assert [(s.path, s.site, s.class_map) for s in config.data.all_sources()] == [
        ("a", "A", {}), ("b.csv", None, {"normal": "Normal"})]
    single = build_config("tb-fast", source_overrides(["a"], ["Lagos"], []))
    assert single.data.source == "a" and single.data.all_sources()[0].site == "Lagos"
    code = main(["train", "--data", str(tiny_folder), "--data", str(tiny_folder), "--site", "X",
                 "--output-dir", str(tmp_path / "runs")])
    err = capsys.readouterr().err
    assert code == 2 and "--site is given 1 time(s) for 2 --data source(s)" in err
    assert len(err.strip().splitlines()) == 1
    assert not (tmp_path / "runs").exists()


def test_splits_are_stratified_by_site_and_grouped_within_sites(tmp_path):
    manifest, _ = load_manifest(site_csv(tmp_path, {"A": 20, "B": 10}))
    split = assign_splits(manifest, 0.2, 0.2, seed=3)
    counts = split.groupby(["site", "label", "split"]).size()
    for site in ("A", "B"):
        for label in ("Normal", "TB"):
            assert {"train", "val", "test"} <= set(counts[site][label].index), (site, label)
    groups = effective_groups(split)
    for group in set(groups):
        assert split.loc[groups == group, "split"].nunique() == 1, "a patient never crosses splits"
    assert "A/p0-Normal" in set(groups) and "B/p0-Normal" in set(groups), \
        "the same patient id at two sites is two patients"
    write_split_file(split, tmp_path / "split.csv")
    assert "site" in pd.read_csv(tmp_path / "split.csv").columns


def test_leave_site_out_tests_on_the_site_and_validates_on_the_others(tmp_path):
    manifest, _ = load_manifest(site_csv(tmp_path, {"A": 10, "B": 10, "C": 6}))
    fold = leave_site_out(manifest, "C", val_fraction=0.2, seed=1)
    assert set(fold.loc[fold["site"] == "C", "split"]) == {"test"}
    assert set(fold.loc[fold["site"] != "C", "split"]) == {"train", "val"}
    assert set(fold.loc[fold["split"] == "val", "site"]) == {"A", "B"}
    with pytest.raises(CxrkitError, match="not in the data"):
        leave_site_out(manifest, "Z")


def test_per_site_metrics_match_whole_set_metrics_and_explain_a_one_class_site():
    rng = np.random.default_rng(0)
    y_true = np.array([0] * 30 + [1] * 30 + [0] * 20)
    sites = np.array(["A"] * 60 + ["Normals"] * 20)
    scores = np.clip(0.5 * y_true + rng.uniform(0, 0.6, len(y_true)), 0, 1)
    probabilities = np.column_stack([1 - scores, scores])
    y_pred = (scores >= 0.5).astype(int)
    classes = ["Normal", "Tuberculosis"]
    block = per_site_metrics(sites, y_true, probabilities, y_pred, classes, 1, 200, 0)
    a = block["sites"]["A"]
    expected = compute_metrics(y_true[:60], probabilities[:60], y_pred[:60], classes, 1)
    assert a["roc_auc"] == pytest.approx(expected["roc_auc"])
    assert a["sensitivity"] == pytest.approx(expected["sensitivity"])
    low, high = a["confidence_intervals"]["roc_auc"]
    assert low <= a["roc_auc"] <= high
    normals = block["sites"]["Normals"]
    assert normals["roc_auc"] is None and normals["sensitivity"] is None
    assert normals["specificity"] == pytest.approx(float((y_pred[60:] == 0).mean()))
    assert normals["confidence_intervals"]["roc_auc"] is None
    assert "every image of this site is Normal" in normals["note"]
    assert normals["who_tb_triage_met"] is None
    assert block["overall"]["n"] == 80 and block["overall"]["counts"] == {"Normal": 50, "Tuberculosis": 30}


def test_per_site_metrics_of_a_one_class_site_in_a_multi_class_run():
    y_true = np.array([0, 1, 2, 0, 1, 2, 2, 2])
    probabilities = np.eye(3)[[0, 1, 2, 1, 1, 2, 2, 0]] * 0.8 + 0.2 / 3
    block = per_site_metrics(np.array(["x"] * 6 + ["y"] * 2), y_true, probabilities,
                             probabilities.argmax(axis=1), ["a", "b", "c"], None, 100, 0)
    assert block["sites"]["y"]["roc_auc"] is None and block["sites"]["y"]["accuracy"] == 0.5
    assert block["sites"]["x"]["roc_auc"] is not None


@pytest.mark.slow
def test_evaluate_reports_each_real_nlm_site_for_the_run_split_and_for_data(tmp_path, capsys):
    from cxrkit.evaluation import evaluate_run
    from cxrkit.training.fit import train

    csv = shared_data("tb-nlm.csv")
    run = train(build_config("tb-fast", {**TINY_TRAINING, "data.source": str(csv), "name": "nlm",
                                         "output_dir": str(tmp_path), "train.epochs": 2}))
    own = json.loads((run / "metrics.json").read_text())["per_site"]
    assert set(own["sites"]) == {"Shenzhen", "Montgomery"}, "the test split keeps both sites"
    assert set(pd.read_csv(run / "split.csv")["site"]) == {"Shenzhen", "Montgomery"}
    external = evaluate_run(run, data=csv, n_bootstrap=200, gradcam=False)["per_site"]
    assert {name: entry["n"] for name, entry in external["sites"].items()} == {"Shenzhen": 662,
                                                                              "Montgomery": 138}
    assert external["overall"]["n"] == 800
    for entry in [*external["sites"].values(), external["overall"]]:
        assert entry["confidence_intervals"]["roc_auc"] is not None
    code = main(["evaluate", str(run), "--data", str(csv), "--no-gradcam", "--bootstrap", "200",
                 "--overwrite"])
    out = capsys.readouterr().out
    assert code == 0 and "Shenzhen" in out and "Montgomery" in out and "overall" in out
    assert "Per site" in (run / "external" / "tb-nlm" / "report.html").read_text()
