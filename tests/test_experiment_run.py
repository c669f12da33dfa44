"""`cxrkit experiment` on tiny images: shared split, ranking with CIs, failures, resume."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
import yaml

from conftest import TINY_TRAINING, shared_data
from cxrkit.cli import main
from cxrkit.experiments import load_spec, run_experiment


def tiny_spec(tmp_path: Path, **fields) -> Path:
    spec = {
        "recipe": "tb-fast",
        "set": {**TINY_TRAINING, "data.cache_dir": str(tmp_path / "cache")},
        **fields,
    }
    path = tmp_path / "tiny.yaml"
    path.write_text(yaml.safe_dump(spec))
    return path


def test_experiment_ranks_variants_records_a_failure_and_resumes(tmp_path, tiny_folder, capsys):
    spec_path = tiny_spec(
        tmp_path,
        axes={"train.optimizer": ["sgd", "adam"]},
        variants=[{"model.kernel_size": 15, "model.padding": "valid"}],
    )
    out = tmp_path / "out"
    code = main(["experiment", str(spec_path), "--data", str(tiny_folder), "--out", str(out)])
    assert code == 1, "a failed variant makes the exit code 1"
    assert "failed: kernel_size=15__padding=valid" in capsys.readouterr().out

    table = pd.read_csv(out / "results.csv")
    done = table[table["status"] == "done"]
    assert sorted(done["variant"]) == ["optimizer=adam", "optimizer=sgd"]
    assert list(done["rank"]) == [1, 2]
    assert (done["roc_auc"].diff().dropna() <= 0).all(), "ranked by roc_auc, best first"
    assert done[["roc_auc_ci_low", "roc_auc_ci_high", "wall_time_s", "parameters"]].notna().all().all()
    failed = table[table["status"] == "failed"].iloc[0]
    assert "cannot take 32x32 input" in failed["error"]
    assert (out / "runs" / failed["variant"] / "error.txt").is_file()

    shared = pd.read_csv(out / "split.csv")
    for run in done["run_dir"]:
        run_split = pd.read_csv(Path(run) / "split.csv")
        assert set(run_split.loc[run_split["split"] == "test", "path"]) == set(
            shared.loc[shared["split"] == "test", "path"]
        ), "every variant uses the one shared test set"

    markdown = (out / "results.md").read_text()
    assert "| 1 | `optimizer=" in markdown and " [" in markdown, "ranked rows with bracketed CIs"
    assert (out / "plots" / "roc_auc_vs_train.optimizer.png").is_file()
    assert (out / "comparison" / "roc_overlay.png").is_file()

    # A variant killed after its last epoch checkpoint: no model.ckpt / metrics.json yet.
    adam, sgd = out / "runs" / "optimizer=adam", out / "runs" / "optimizer=sgd"
    (adam / "model.ckpt").unlink()
    (adam / "metrics.json").unlink()
    (adam / "report.html").unlink()
    (adam / "test_metrics.json").unlink()
    sgd_stamp = (sgd / "model.ckpt").stat().st_mtime_ns
    table = run_experiment(load_spec(spec_path), out, data=str(tiny_folder))
    assert (sgd / "model.ckpt").stat().st_mtime_ns == sgd_stamp, "a finished variant is not redone"
    assert (adam / "model.ckpt").is_file() and (adam / "metrics.json").is_file()
    assert sorted(table.loc[table["status"] == "done", "variant"]) == [
        "optimizer=adam",
        "optimizer=sgd",
    ]


@pytest.mark.slow
def test_seed003_optimizers_on_real_tb_data(tmp_path):
    """Must-show 1: the optimizer experiment on the shared TB set, ranked with CIs, resumable."""
    data = shared_data("tb")
    spec = Path(__file__).resolve().parents[1] / "experiments" / "seed003" / "02-optimizers.yaml"
    out = tmp_path / "optimizers"
    command = [
        sys.executable,
        "-m",
        "cxrkit",
        "experiment",
        str(spec),
        "--data",
        str(data),
        "--out",
        str(out),
        "--jobs",
        "2",
        "--set",
        "train.epochs=2",
    ]
    subprocess.run(command, check=True, capture_output=True)
    table = pd.read_csv(out / "results.csv")
    assert list(table["status"]) == ["done"] * 4 and list(table["rank"]) == [1, 2, 3, 4]
    assert table[["roc_auc_ci_low", "roc_auc_ci_high"]].notna().all().all()
    stamps = {p: p.stat().st_mtime_ns for p in (out / "runs").glob("*/model.ckpt")}
    subprocess.run(command, check=True, capture_output=True)
    assert {p: p.stat().st_mtime_ns for p in stamps} == stamps, "re-run trains nothing"
