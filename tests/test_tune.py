"""`cxrkit tune`: a study shared by worker processes, resuming, pruning, no test-set reads."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import optuna
import pandas as pd
import pytest
import yaml

from conftest import TINY_TRAINING
from cxrkit.config import build_config
from cxrkit.data.sources import load_manifest
from cxrkit.data.splits import assign_splits, write_split_file
from cxrkit.errors import CxrkitError
from cxrkit.experiments import load_spec
from cxrkit.experiments.tune import PruneOnValidation, open_storage, run_tune

SEARCH = {
    "train.lr": {"low": 1.0e-4, "high": 1.0e-1, "log": True},
    "model.width": {"low": 2, "high": 6},
}


def tiny_spec(tmp_path: Path, **fields) -> Path:
    spec = {
        "recipe": "tb-fast",
        "set": {**TINY_TRAINING, "data.cache_dir": str(tmp_path / "cache")},
        "search": SEARCH,
        **fields,
    }
    path = tmp_path / "tune.yaml"
    path.write_text(yaml.safe_dump(spec))
    return path


def finished(storage: str, name: str) -> list[optuna.trial.FrozenTrial]:
    study = optuna.load_study(study_name=name, storage=storage)
    trials = study.get_trials(states=(optuna.trial.TrialState.COMPLETE, optuna.trial.TrialState.PRUNED))
    return [t for t in trials if not t.user_attrs.get("surplus")]


def test_two_worker_processes_share_one_sqlite_study(tmp_path, tiny_folder):
    spec = tiny_spec(tmp_path)
    storage = f"sqlite:///{tmp_path / 'study.db'}"
    out = tmp_path / "out"
    command = [
        sys.executable,
        "-m",
        "cxrkit",
        "tune",
        str(spec),
        "--trials",
        "4",
        "--storage",
        storage,
        "--study-name",
        "shared",
        "--data",
        str(tiny_folder),
        "--out",
        str(out),
    ]
    environment = {**os.environ, "OMP_NUM_THREADS": "1"}
    workers = [
        subprocess.Popen(command, env=environment, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        for _ in range(2)
    ]
    outputs = [worker.communicate(timeout=240)[0] for worker in workers]
    assert [worker.returncode for worker in workers] == [0, 0], outputs[0][-2000:] + outputs[1][-2000:]

    trials = finished(storage, "shared")
    assert len(trials) == 4 and len({t.number for t in trials}) == 4, "exactly 4 trials, each once"
    assert len({t.user_attrs["worker"] for t in trials}) == 2, "both processes ran trials"
    run_dirs = [t.user_attrs["run_dir"] for t in trials]
    assert len(set(run_dirs)) == 4 and all((Path(r) / "training.json").is_file() for r in run_dirs)
    assert len({tuple(sorted(t.params.items())) for t in trials}) == 4, "no configuration run twice"
    recipe = out / "best-recipe.yaml"
    best_value = max(t.value for t in trials if t.value is not None)
    best_rates = [t.params["train.lr"] for t in trials if t.value == best_value]
    assert build_config(str(recipe)).train.lr in best_rates

    # Resuming: the same budget runs nothing more; a larger one runs only the difference.
    summary = run_tune(load_spec(spec), 4, out, storage=storage, study_name="shared", data=str(tiny_folder))
    assert summary["trials"] == 4
    summary = run_tune(load_spec(spec), 5, out, storage=storage, study_name="shared", data=str(tiny_folder))
    assert summary["complete"] + summary["pruned"] == 5
    table = pd.read_csv(out / "trials.csv")
    surplus = table.get("user_attrs_surplus", pd.Series(False, index=table.index)).fillna(False).astype(bool)
    assert (~surplus).sum() == 5, "trials.csv lists every counted trial (a surplus race trial is marked)"


def test_tune_never_reads_the_test_split(tmp_path, tiny_folder, monkeypatch):
    import cxrkit.data.cache as cache

    manifest, _ = load_manifest(tiny_folder)
    split = assign_splits(manifest, 0.2, 0.2, seed=0)
    write_split_file(split, tmp_path / "split.csv")
    test_paths = set(split.loc[split["split"] == "test", "path"])
    for path in test_paths:
        Path(path).write_bytes(b"not an image: reading it would fail or be listed in skipped.csv")
    touched: list[str] = []
    original_hash, original_read = cache._hash_file, cache.read_gray
    monkeypatch.setattr(cache, "_hash_file", lambda path: touched.append(path) or original_hash(path))
    monkeypatch.setattr(cache, "read_gray", lambda path: touched.append(path) or original_read(path))

    spec = load_spec(tiny_spec(tmp_path, split=str(tmp_path / "split.csv")))
    summary = run_tune(spec, 2, tmp_path / "out", data=str(tiny_folder))

    assert summary["complete"] + summary["pruned"] == 2
    assert set(touched) >= set(split.loc[split["split"] != "test", "path"]), "train/val were read"
    assert not set(touched) & test_paths, "no test image was read"
    for trial in (tmp_path / "out" / "trials" / "tune").iterdir():
        assert (trial / "training.json").is_file()
        for name in ("metrics.json", "test_metrics.json", "predictions.csv", "skipped.csv"):
            assert not (trial / name).exists(), f"{trial.name}/{name}"


def test_pruning_callback_reports_the_monitored_metric_and_stops(tmp_path):
    reports = []
    trial = SimpleNamespace(
        report=lambda value, step: reports.append((step, value)),
        should_prune=lambda: len(reports) >= 2,
    )
    callback = PruneOnValidation(trial, "val_auroc")
    trainer = SimpleNamespace(
        sanity_checking=True,
        callback_metrics={"val_auroc": 0.5},
        current_epoch=0,
        should_stop=False,
    )
    callback.on_validation_end(trainer, None)
    assert reports == [], "the sanity check is not reported"
    trainer.sanity_checking = False
    callback.on_validation_end(trainer, None)
    assert not trainer.should_stop and callback.pruned_at is None
    trainer.current_epoch = 1
    callback.on_validation_end(trainer, None)
    assert reports == [(0, 0.5), (1, 0.5)] and trainer.should_stop and callback.pruned_at == 1


def test_bad_storage_and_search_values_are_clear_errors(tmp_path, tiny_folder):
    with pytest.raises(CxrkitError, match="database URL"):
        open_storage("study.db")
    spec = load_spec(tiny_spec(tmp_path, search={"train.optimizer": ["adam", "lion"]}))
    with pytest.raises(CxrkitError, match="search train.optimizer='lion'"):
        run_tune(spec, 2, tmp_path / "out", data=str(tiny_folder))
