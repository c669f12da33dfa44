"""An experiment's run folders as one ranked table (CSV and Markdown) and comparison plots."""

from __future__ import annotations

import math
from pathlib import Path

import pandas as pd

from cxrkit.errors import CxrkitError
from cxrkit.experiments.spec import TEST_METRICS, ExperimentSpec, Variant, get_dotted, varied_keys
from cxrkit.run import RunFolder
from cxrkit.run.folder import METRICS_FILE, TRAINING_FILE

HEADLINE = ("roc_auc", "accuracy", "balanced_accuracy", "sensitivity", "specificity")
TRAINING = ("wall_time_s", "parameters", "images_per_s", "epochs_run", "best_val_metric")
TRAINING_LABELS = {
    "wall_time_s": "train time (s)",
    "parameters": "parameters",
    "images_per_s": "images/s",
}


def collect_results(spec: ExperimentSpec, variants: list[Variant], errors: dict[str, str]) -> pd.DataFrame:
    """A row per variant: varied values, status, test metrics with CIs, training figures.

    Rows are ranked best first; the index keeps each variant's position in the spec.
    """
    keys = varied_keys(variants)
    metrics = list(dict.fromkeys((spec.metric, *HEADLINE)))
    rows = []
    for variant in variants:
        run_dir = Path(variant.config.output_dir) / variant.name
        row: dict = {
            "variant": variant.name,
            **{key: get_dotted(variant.config, key) for key in keys},
        }
        point, intervals, n_test = read_test_metrics(run_dir)
        if variant.name in errors:
            row["status"] = "failed"
        else:
            row["status"] = "done" if point else "no metrics"
        for name in metrics:
            low, high = intervals.get(name) or (None, None)
            row.update({name: point.get(name), f"{name}_ci_low": low, f"{name}_ci_high": high})
        row["n_test"] = n_test
        training = _read_json(run_dir, TRAINING_FILE)
        row.update({name: training.get(name) for name in TRAINING})
        row["error"] = errors.get(variant.name, "")
        row["run_dir"] = str(run_dir)
        rows.append(row)
    table = pd.DataFrame(rows).sort_values(
        spec.metric, ascending=not spec.higher_is_better(), na_position="last", kind="stable"
    )
    positions = pd.Series(range(1, len(table) + 1), index=table.index, dtype="Int64")
    table.insert(0, "rank", positions.where(table[spec.metric].notna()))
    return table


def read_test_metrics(run_dir: Path) -> tuple[dict[str, float], dict[str, list[float]], int | None]:
    """(point metrics, {metric: [low, high]} 95% bootstrap CIs, test-set size) of a run."""
    document = _read_json(run_dir, METRICS_FILE)
    if not document:
        return {}, {}, None
    point = {k: v for k, v in document.items() if k in TEST_METRICS and isinstance(v, (int, float))}
    if "macro_avg" in document:
        point["macro_f1"] = document["macro_avg"]["f1"]
    intervals = {k: v for k, v in document.get("confidence_intervals", {}).items() if isinstance(v, list)}
    return point, intervals, document.get("n")


def write_results(spec: ExperimentSpec, table: pd.DataFrame, out_dir: Path) -> None:
    """results.csv, results.md and the comparison plots under out_dir/plots."""
    table.to_csv(out_dir / "results.csv", index=False)
    plots = plot_comparisons(spec, table, out_dir / "plots")
    (out_dir / "results.md").write_text(results_markdown(spec, table, plots, out_dir))


def results_markdown(spec: ExperimentSpec, table: pd.DataFrame, plots: list[Path], out_dir: Path) -> str:
    """The ranked table as Markdown, with how to read the intervals."""
    keys = _axis_columns(table)
    metrics = [m for m in dict.fromkeys((spec.metric, *HEADLINE)) if table[m].notna().any()]
    direction = "higher is better" if spec.higher_is_better() else "lower is better"
    sizes = sorted({int(n) for n in table["n_test"].dropna()})
    lines = [f"# Experiment {spec.name}", ""]
    if spec.description:
        lines += [spec.description.strip(), ""]
    lines += [
        f"Base recipe `{spec.recipe}`; every variant trained on one shared split "
        f"(test images: {', '.join(map(str, sizes)) or 'none evaluated'}); ranked by test "
        f"`{spec.metric}` ({direction}). Brackets are 95% bootstrap confidence intervals on that "
        "test set: where two variants' intervals overlap, this test set does not show which is "
        "better.",
        "",
    ]
    header = ["rank", "variant", *keys, *metrics, *TRAINING_LABELS.values(), "status"]
    lines += ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for _, row in table.iterrows():
        cells = [
            "" if pd.isna(row["rank"]) else str(row["rank"]),
            f"`{row['variant']}`",
            *(_cell(row[key]) for key in keys),
            *(_with_interval(row, m) for m in metrics),
            *(_cell(row[name]) for name in TRAINING_LABELS),
            row["status"] if not row["error"] else f"{row['status']}: {row['error']}",
        ]
        lines.append("| " + " | ".join(c.replace("|", "\\|") for c in cells) + " |")
    if plots:
        lines += ["", "Plots: " + ", ".join(f"[{p.name}]({p.relative_to(out_dir)})" for p in plots)]
    return "\n".join(lines) + "\n"


def plot_comparisons(spec: ExperimentSpec, table: pd.DataFrame, folder: Path) -> list[Path]:
    """The ranking metric against each varied field; ROC overlay and table via compare_runs."""
    done = table[table[spec.metric].notna()]
    if done.empty:
        return []
    from cxrkit.evaluation import compare_runs

    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for key in _axis_columns(table):
        rows = _around_baseline(done, key) if spec.mode == "one-at-a-time" else done
        path = folder / f"{spec.metric}_vs_{key}.png"
        paths.append(plot_metric_vs_axis(rows, spec.metric, key, path))

    compared = compare_runs(done["run_dir"].tolist(), folder.parent / "comparison", overwrite=True)
    return paths + [Path(name) for name in compared["files"] if name.endswith(".png")]


def plot_metric_vs_axis(table: pd.DataFrame, metric: str, key: str, path: Path) -> Path:
    """Metric (with CI bars) against one field; one line per setting of the other varied fields."""
    from matplotlib.figure import Figure

    table = table.sort_index()
    others = [k for k in _axis_columns(table) if k != key]
    values = list(dict.fromkeys(table[key]))
    numeric = all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in values)
    figure = Figure(figsize=(6, 4.5))
    axes = figure.subplots()
    groups = table.groupby(others, sort=False, dropna=False) if others else [((), table)]
    for setting, group in groups:
        x = group[key].tolist() if numeric else [values.index(v) for v in group[key]]
        y = group[metric].to_numpy(dtype=float)
        low = group[f"{metric}_ci_low"].to_numpy(dtype=float)
        high = group[f"{metric}_ci_high"].to_numpy(dtype=float)
        order = sorted(range(len(x)), key=lambda i: x[i])
        label = ", ".join(f"{k}={v}" for k, v in zip(others, setting, strict=True)) or None
        axes.errorbar(
            [x[i] for i in order],
            y[order],
            capsize=4,
            marker="o",
            linestyle="-" if numeric else "none",
            label=label,
            yerr=[(y - low)[order], (high - y)[order]],
        )
    if numeric and min(values) > 0 and max(values) / min(values) >= 100:
        axes.set_xscale("log")
    if not numeric:
        axes.set_xticks(range(len(values)), [str(v) for v in values], rotation=20)
    axes.set(xlabel=key, ylabel=f"test {metric} (95% CI)", title=f"{metric} vs {key}")
    if others:
        axes.legend(fontsize=7)
    figure.tight_layout()
    figure.savefig(path, dpi=110)
    return path


def _around_baseline(table: pd.DataFrame, key: str) -> pd.DataFrame:
    """One-at-a-time rows where only `key` moves: every other varied field at its base value."""
    others = [k for k in _axis_columns(table) if k != key]
    base = table[table["variant"] == "baseline"]
    if base.empty or not others:
        return table
    return table[(table[others] == base[others].iloc[0]).all(axis=1)]


def _axis_columns(table: pd.DataFrame) -> list[str]:
    return [c for c in table.columns if "." in c]


def _with_interval(row: pd.Series, metric: str) -> str:
    value, low, high = row[metric], row[f"{metric}_ci_low"], row[f"{metric}_ci_high"]
    if pd.isna(value):
        return ""
    return f"{value:.3f} [{low:.3f}, {high:.3f}]" if pd.notna(low) else f"{value:.3f}"


def _cell(value) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return ""
    if isinstance(value, float):
        return f"{value:,.0f}" if abs(value) >= 100 else f"{value:.4g}"
    if isinstance(value, int) and not isinstance(value, bool) and value >= 10000:
        return f"{value:,}"
    return str(value)


def _read_json(run_dir: Path, name: str) -> dict:
    """A JSON file of a variant's run folder; {} when absent or unreadable (a failed variant)."""
    try:
        return RunFolder(run_dir).read_json(name) or {}
    except CxrkitError:
        return {}


def write_site_results(spec: ExperimentSpec, table: pd.DataFrame, out_dir: Path) -> None:
    """results.csv, results.md and plots/<metric>_by_site.png of a leave-one-site-out experiment."""
    table.to_csv(out_dir / "results.csv", index=False)
    plots = [plot_by_site(table, spec.metric, out_dir / "plots" / f"{spec.metric}_by_site.png")]
    (out_dir / "results.md").write_text(site_results_markdown(spec, table, [p for p in plots if p], out_dir))


def site_results_markdown(spec: ExperimentSpec, table: pd.DataFrame, plots: list[Path], out_dir: Path) -> str:
    """One row per held-out site: what trained it, its test images, metrics with 95% CIs."""
    metrics = [m for m in dict.fromkeys((spec.metric, *HEADLINE)) if table[m].notna().any()]
    lines = [f"# Experiment {spec.name}", ""]
    if spec.description:
        lines += [spec.description.strip(), ""]
    lines += [
        f"Leave-one-site-out with recipe `{spec.recipe}`: each row is a model trained on every "
        "site but one (train/val split within those sites; early stopping and the operating point "
        "chosen on their validation images only) and tested on the held-out site, which it never "
        "saw. Sensitivity and specificity are at each fold's frozen operating point (`argmax` by default; see "
        "the fold's operating_points.json). Brackets are 95% bootstrap confidence intervals on "
        "the held-out site's images. "
        f"`val (training sites)` is the best `{table['monitor'].iloc[0]}` on the training sites' "
        "validation images: the gap to the held-out ROC-AUC is what changing hospitals costs.",
        "",
    ]
    header = ["held-out site", "trained on", "test images", *metrics, "val (training sites)",
              "train time (s)", "status"]
    lines += ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for _, row in table.iterrows():
        cells = [
            f"**{row['held_out_site']}**",
            row["trained_on"],
            f"{_cell(row['n_test'])} ({row['test_classes']})",
            *(_with_interval(row, m) for m in metrics),
            _cell(row["best_val_metric"]),
            _cell(row["wall_time_s"]),
            row["status"] if not row["error"] else f"{row['status']}: {row['error']}",
        ]
        lines.append("| " + " | ".join(str(c).replace("|", "\\|") for c in cells) + " |")
    if plots:
        lines += ["", "Plots: " + ", ".join(f"[{p.name}]({p.relative_to(out_dir)})" for p in plots)]
    return "\n".join(lines) + "\n"


def plot_by_site(table: pd.DataFrame, metric: str, path: Path) -> Path | None:
    """The metric with its CI per held-out site."""
    done = table[table[metric].notna()]
    if done.empty:
        return None
    from matplotlib.figure import Figure

    path.parent.mkdir(parents=True, exist_ok=True)
    figure = Figure(figsize=(max(4.0, 1.4 * len(done) + 2), 4))
    axes = figure.subplots()
    y = done[metric].to_numpy(dtype=float)
    low = done[f"{metric}_ci_low"].to_numpy(dtype=float)
    high = done[f"{metric}_ci_high"].to_numpy(dtype=float)
    axes.errorbar(range(len(done)), y, yerr=[y - low, high - y], fmt="o", capsize=5)
    axes.set_xticks(range(len(done)), done["held_out_site"].tolist())
    axes.set(xlabel="held-out site", ylabel=f"{metric} (95% CI)", title=f"Leave-one-site-out: {metric}")
    figure.tight_layout()
    figure.savefig(path, dpi=110)
    return path
