"""Results table of an experiment: ranking direction, statuses, Markdown and per-axis plots."""

from __future__ import annotations

import json
from pathlib import Path

from cxrkit.experiments.results import (
    _around_baseline,
    collect_results,
    plot_metric_vs_axis,
    results_markdown,
)
from cxrkit.experiments.runner import place_variant
from cxrkit.experiments.spec import load_spec, plan_variants

BRIER = {"baseline": 0.20, "lr=0.001": 0.10, "lr=0.01": 0.30, "width=8": 0.15}


def fake_runs(tmp_path: Path):
    """A one-at-a-time experiment whose runs have hand-written metrics (no training)."""
    spec_path = tmp_path / "spec.yaml"
    spec_path.write_text(
        "recipe: tb-fast\nmode: one-at-a-time\nmetric: brier\n"
        "set: {train.lr: 0.003, model.width: 16}\n"
        "axes: {train.lr: [0.001, 0.003, 0.01], model.width: [8, 16, 32]}\n"
    )
    spec = load_spec(spec_path)
    variants = [place_variant(v, tmp_path / "runs", tmp_path / "split.csv") for v in plan_variants(spec, {})]
    for variant in variants:
        run = tmp_path / "runs" / variant.name
        run.mkdir(parents=True)
        (run / "training.json").write_text(json.dumps({"wall_time_s": 12.5, "parameters": 98765}))
        if variant.name in BRIER:
            brier = BRIER[variant.name]
            metrics = {
                "n": 280,
                "roc_auc": 1 - brier,
                "brier": brier,
                "accuracy": 0.9,
                "confidence_intervals": {"roc_auc": [0.5, 0.99], "accuracy": [0.85, 0.95]},
            }
            (run / "metrics.json").write_text(json.dumps(metrics))
    return spec, variants


def test_lower_is_better_metric_ranks_ascending_and_failures_are_kept(tmp_path):
    spec, variants = fake_runs(tmp_path)
    table = collect_results(spec, variants, {"width=32": "CxrkitError: out of memory"})
    assert list(table["variant"]) == ["lr=0.001", "width=8", "baseline", "lr=0.01", "width=32"]
    assert list(table["rank"][:4]) == [1, 2, 3, 4] and table["rank"].isna().iloc[-1]
    assert list(table["status"]) == ["done"] * 4 + ["failed"]
    assert table.iloc[0]["train.lr"] == 0.001 and table.iloc[0]["model.width"] == 16

    markdown = results_markdown(spec, table, [], tmp_path)
    assert "ranked by test `brier` (lower is better)" in markdown
    assert "| 1 | `lr=0.001` | 0.001 | 16 | 0.100 |" in markdown
    assert "0.900 [0.500, 0.990]" in markdown, "roc_auc with its interval"
    assert "failed: CxrkitError: out of memory" in markdown
    assert "98,765" in markdown and "test images: 280" in markdown


def test_one_at_a_time_plots_move_one_field_around_the_baseline(tmp_path):
    spec, variants = fake_runs(tmp_path)
    table = collect_results(spec, variants, {})
    done = table[table["brier"].notna()]
    lr_rows = _around_baseline(done, "train.lr")
    assert sorted(lr_rows["variant"]) == ["baseline", "lr=0.001", "lr=0.01"]
    path = plot_metric_vs_axis(lr_rows, "brier", "train.lr", tmp_path / "brier_vs_lr.png")
    assert path.stat().st_size > 1000
