"""Experiment specs: validation, variant planning and the shipped seed 002/003 specs."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from cxrkit.errors import CxrkitError
from cxrkit.experiments import run_experiment
from cxrkit.experiments.runner import claim_out_dir, experiment_settings
from cxrkit.experiments.spec import base_overrides, build_base, load_spec, plan_variants

EXPERIMENTS = Path(__file__).resolve().parents[1] / "experiments"


def write_spec(tmp_path: Path, text: str, name: str = "spec.yaml") -> Path:
    path = tmp_path / name
    path.write_text(text)
    return path


def test_grid_plans_every_combination_with_names_from_the_values(tmp_path):
    spec = load_spec(
        write_spec(
            tmp_path,
            """
recipe: tb-fast
axes:
  train.optimizer: [sgd, adam]
  model.pooling: [max, avg]
""",
        )
    )
    variants = plan_variants(spec, {})
    assert [v.name for v in variants] == [
        "optimizer=sgd__pooling=max",
        "optimizer=sgd__pooling=avg",
        "optimizer=adam__pooling=max",
        "optimizer=adam__pooling=avg",
    ]
    last = variants[-1].config
    assert (last.train.optimizer, last.model.pooling, last.name) == (
        "adam",
        "avg",
        variants[-1].name,
    )
    assert spec.name == "spec" and spec.metric == "roc_auc"


def test_one_at_a_time_varies_each_axis_alone_around_the_base(tmp_path):
    spec = load_spec(
        write_spec(
            tmp_path,
            """
recipe: tb-fast
mode: one-at-a-time
set: {train.lr: 0.003, model.width: 16}
axes:
  train.lr: [1e-3, 0.003, 1.0e-2]
  model.width: [8, 16]
""",
        )
    )
    variants = plan_variants(spec, base_overrides(spec))
    assert [v.name for v in variants] == ["baseline", "lr=0.001", "lr=0.01", "width=8"]
    by_name = {v.name: v.config for v in variants}
    assert by_name["lr=0.01"].train.lr == 0.01 and by_name["lr=0.01"].model.width == 16
    assert by_name["width=8"].train.lr == 0.003


def test_data_and_overrides_apply_to_every_variant(tmp_path):
    spec = load_spec(write_spec(tmp_path, "recipe: tb-fast\ndata: images\naxes: {model.width: [4, 8]}\n"))
    assert spec.data == str(tmp_path / "images")
    shared = base_overrides(spec, overrides={"train.epochs": 2})
    assert all(
        v.config.data.source == str(tmp_path / "images") and v.config.train.epochs == 2
        for v in plan_variants(spec, shared)
    )
    other = base_overrides(spec, data="elsewhere")
    assert other["data.source"] == str(Path("elsewhere").resolve())


@pytest.mark.parametrize(
    "text, expected",
    [
        ("recipe: tb-fast\naxes: {train.optimiser: [sgd]}\n", "unknown option train.optimiser"),
        ("recipe: tb-fast\naxes: {train.optimizer: [nesterov]}\n", "train.optimizer"),
        ("recipe: tb-fast\naxes: {train.lr: []}\n", "train.lr has no values"),
        ("recipe: tb-fast\nmetric: auroc\naxes: {train.lr: [0.1]}\n", "metric"),
        ("recipe: tb-fast\naxis: {train.lr: [0.1]}\n", "axis"),
        ("recipe: no-such-recipe\naxes: {train.lr: [0.1]}\n", "unknown recipe"),
        ("recipe: tb-fast\n", "nothing to run"),
        ("recipe: tb-fast\naxes: {data.split_seed: [1, 2]}\n", "data.split_seed cannot vary"),
        ("recipe: tb-fast\nsearch: {train.lr: {low: 0.1, high: 0.01}}\n", "must be below high"),
    ],
)
def test_spec_problems_name_the_field(tmp_path, text, expected):
    path = write_spec(tmp_path, text)
    with pytest.raises(CxrkitError, match=expected) as error:
        plan_variants(load_spec(path), {})
    assert "spec" in str(error.value)


def test_missing_spec_file_is_a_clear_error(tmp_path):
    with pytest.raises(CxrkitError, match="no such experiment spec"):
        load_spec(tmp_path / "nope.yaml")


def test_out_folder_of_another_experiment_is_refused(tmp_path):
    spec = load_spec(write_spec(tmp_path, "recipe: tb-fast\naxes: {model.width: [4, 8]}\n"))
    out = tmp_path / "out"
    with pytest.raises(CxrkitError, match="no such file or folder"):
        run_experiment(spec, out, data=str(tmp_path / "typo"))
    assert claim_out_dir(out, spec, {"train.epochs": 1}), "a failed start claims nothing"
    (out / "experiment.yaml").write_text(yaml.safe_dump(experiment_settings(spec, {"train.epochs": 1})))
    assert not claim_out_dir(out, spec, {"train.epochs": 1})
    with pytest.raises(CxrkitError, match="other settings"):
        claim_out_dir(out, spec, {"train.epochs": 2})
    foreign = tmp_path / "foreign"
    foreign.mkdir()
    (foreign / "notes.txt").write_text("mine")
    with pytest.raises(CxrkitError, match="not an experiment folder"):
        claim_out_dir(foreign, spec, {})


def test_shipped_specs_plan_and_have_valid_search_spaces():
    from cxrkit.experiments.tune import check_search_space

    seed003 = sorted(p.name for p in (EXPERIMENTS / "seed003").glob("*.yaml"))
    assert [name[:2] for name in seed003] == ["01", "02", "03", "04", "05", "06", "07", "08"]
    for path in sorted(EXPERIMENTS.rglob("*.yaml")):
        spec = load_spec(path)
        shared = base_overrides(spec, data="some/data")
        if spec.kind == "leave-one-site-out":  # folds are planned from the data's sites
            assert build_base(spec, base_overrides(spec)).data.all_sources(), path
            continue
        assert plan_variants(spec, shared), path
        if spec.search_space():
            check_search_space(spec, shared)
