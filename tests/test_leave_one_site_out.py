"""Leave-one-site-out experiments: spec checks, folds, the per-site table, resume; real data (slow)."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest
import yaml

from conftest import TINY_TRAINING, shared_data, write_image
from cxrkit.cli import main
from cxrkit.errors import CxrkitError
from cxrkit.experiments import load_spec, loso, run_experiment
from cxrkit.experiments.results import collect_results, site_results_markdown
from cxrkit.experiments.runner import place_variant
from cxrkit.experiments.spec import base_overrides, build_base

REPO = Path(__file__).resolve().parents[1]


def two_sites(tmp_path: Path) -> tuple[Path, Path]:
    """Two folder sources (sites 'north' and 'south'), 10 Normal and 10 TB images each."""
    roots = []
    for site, shift in (("north", 0), ("south", 20)):
        for label, value in (("Normal", 0), ("Tuberculosis", 150)):
            for index in range(10):
                write_image(tmp_path / site / label / f"{site}{label}{index}.png", value + shift)
        roots.append(tmp_path / site)
    return roots[0], roots[1]


def loso_spec(tmp_path: Path, sources: list, **fields) -> Path:
    spec = {"kind": "leave-one-site-out", "recipe": "tb-fast", "sources": sources,
            "set": {**TINY_TRAINING, "data.cache_dir": str(tmp_path / "cache")}, **fields}
    path = tmp_path / "loso.yaml"
    path.write_text(yaml.safe_dump(spec))
    return path


def test_a_single_site_spec_is_a_one_line_error_and_writes_nothing(tmp_path, tiny_folder, capsys):
    out = tmp_path / "out"
    code = main(["experiment", str(loso_spec(tmp_path, [str(tiny_folder)])), "--out", str(out)])
    err = capsys.readouterr().err
    assert code == 2 and "needs data from at least two sites" in err and "'data'" not in err
    assert len(err.strip().splitlines()) == 1
    assert not out.exists()


def test_axes_with_leave_one_site_out_are_refused(tmp_path, tiny_folder):
    path = loso_spec(tmp_path, [str(tiny_folder)], axes={"train.lr": [0.1, 0.01]})
    with pytest.raises(CxrkitError, match="varies the held-out site only"):
        load_spec(path)


def test_sources_are_relative_to_the_spec_and_take_site_and_class_map(tmp_path):
    path = loso_spec(tmp_path, ["north", {"path": "south", "site": "S", "class_map": {"tb": "Tuberculosis"}}])
    spec = load_spec(path)
    sources = spec.data_sources()
    assert sources[0].path == str(tmp_path / "north") and sources[0].site is None
    assert (sources[1].path, sources[1].site, sources[1].class_map) == (str(tmp_path / "south"), "S",
                                                                        {"tb": "Tuberculosis"})


def test_folds_hold_each_site_out_and_the_table_lists_every_site(tmp_path):
    north, south = two_sites(tmp_path)
    spec = load_spec(loso_spec(tmp_path, [str(north), {"path": str(south), "site": "South"}]))
    base = build_base(spec, base_overrides(spec))
    sites = loso.site_names(base)
    assert sites == ["north", "South"]
    splits = loso.fold_splits(base, tmp_path / "out", sites)
    for site, path in splits.items():
        split = pd.read_csv(path)
        assert set(split.loc[split["split"] == "test", "site"]) == {site}
        assert set(split.loc[split["site"] != site, "split"]) == {"train", "val"}
    folds = [place_variant(v, tmp_path / "out" / "runs", splits[s])
             for v, s in zip(loso.plan_folds(base, sites), sites, strict=True)]
    assert [f.name for f in folds] == ["heldout=north", "heldout=South"]
    table = loso.fold_table(collect_results(spec, folds, {}), sites, splits, "val_auroc")
    assert list(table["trained_on"]) == ["South", "north"]
    assert list(table["test_classes"]) == ["Normal 10, Tuberculosis 10"] * 2
    markdown = site_results_markdown(spec, table, [], tmp_path)
    assert "| **north** | South | " in markdown and "| **South** | north | " in markdown


@pytest.mark.slow
def test_every_site_is_held_out_once_in_one_table_and_a_rerun_resumes(tmp_path):
    north, south = two_sites(tmp_path)
    spec = load_spec(loso_spec(tmp_path, [str(north), {"path": str(south), "site": "South"}]))
    out = tmp_path / "out"
    table = run_experiment(spec, out)
    assert list(table["held_out_site"]) == ["north", "South"]
    assert list(table["trained_on"]) == ["South", "north"]
    assert (table["status"] == "done").all()
    assert table[["roc_auc", "roc_auc_ci_low", "roc_auc_ci_high", "sensitivity_ci_low"]].notna().all().all()
    for site, run_dir in zip(table["held_out_site"], table["run_dir"], strict=True):
        split = pd.read_csv(Path(run_dir) / "split.csv")
        assert set(split.loc[split["split"] == "test", "site"]) == {site}
        assert site not in set(split.loc[split["split"] != "test", "site"])
    markdown = (out / "results.md").read_text()
    assert "| **north** | South | 20 (Normal 10, Tuberculosis 10) |" in markdown
    assert "| **South** |" in markdown and " [" in markdown, "every site with bracketed CIs"
    assert (out / "plots" / "roc_auc_by_site.png").is_file()

    model = Path(table["run_dir"].iloc[0]) / "model.ckpt"
    stamp = model.stat().st_mtime
    again = run_experiment(spec, out)
    assert model.stat().st_mtime == stamp, "finished folds are not trained again"
    assert list(again["roc_auc"]) == list(table["roc_auc"])


def test_shipped_spec_names_three_sites():
    spec = load_spec(REPO / "experiments" / "leave-one-site-out-tb.yaml")
    assert spec.kind == "leave-one-site-out" and spec.recipe == "tb-fast"
    assert [Path(s.path).name for s in spec.data_sources()] == ["tb", "tb-nlm.csv"]


@pytest.mark.slow
def test_leave_one_site_out_on_the_real_nlm_sites(tmp_path):
    csv = shared_data("tb-nlm.csv")
    spec = load_spec(loso_spec(tmp_path, [str(csv)], set={**TINY_TRAINING, "preprocess.image_size": 64}))
    table = run_experiment(spec, tmp_path / "out")
    assert list(table["held_out_site"]) == ["Shenzhen", "Montgomery"]
    assert list(table["n_test"]) == [662, 138]
    assert table[["roc_auc_ci_low", "roc_auc_ci_high"]].notna().all().all()
    markdown = (tmp_path / "out" / "results.md").read_text()
    assert "| **Shenzhen** | Montgomery |" in markdown and "| **Montgomery** | Shenzhen |" in markdown
