"""Run every variant of an experiment as an ordinary run folder on one shared split.

A leave-one-site-out spec runs one fold per site instead (see cxrkit.experiments.loso).

Resumable: a variant whose folder has `model.ckpt` and `metrics.json` is done and skipped;
a partial one continues from its last checkpoint. A failed variant is recorded and the
others go on. `jobs` > 1 trains that many variants at once in separate processes.
"""

from __future__ import annotations

import logging
import os
import traceback
from concurrent.futures import ProcessPoolExecutor, as_completed
from multiprocessing import get_context
from pathlib import Path
from typing import Any

import pandas as pd
import yaml

from cxrkit.config import Config
from cxrkit.errors import CxrkitError, TrainingInterrupted
from cxrkit.experiments.results import collect_results, write_results
from cxrkit.experiments.spec import ExperimentSpec, Variant, base_overrides, plan_variants

log = logging.getLogger(__name__)

SETTINGS_FILE = "experiment.yaml"
SPLIT_FILE = "split.csv"


def run_experiment(
    spec: ExperimentSpec,
    out_dir: str | Path,
    *,
    data: str | None = None,
    jobs: int = 1,
    overrides: dict[str, Any] | None = None,
) -> pd.DataFrame:
    """Train the variants not yet done, write results.csv/.md and plots; return the table."""
    if jobs < 1:
        raise CxrkitError(f"jobs={jobs}: give 1 or more parallel trainings")
    out_dir = Path(out_dir).expanduser()
    shared = base_overrides(spec, data, overrides)
    if spec.kind == "leave-one-site-out":
        return run_leave_one_site_out(spec, out_dir, shared, jobs)
    variants = plan_variants(spec, shared)
    new = claim_out_dir(out_dir, spec, shared)
    split = shared_split(variants[0].config, out_dir, spec.split)
    if new:
        (out_dir / SETTINGS_FILE).write_text(yaml.safe_dump(experiment_settings(spec, shared), sort_keys=False))
    variants = [place_variant(v, out_dir / "runs", split) for v in variants]
    todo = [v for v in variants if not is_finished(run_dir_of(v))]
    log.info(
        "experiment %s: %d variant(s), %d done, %d to train",
        spec.name,
        len(variants),
        len(variants) - len(todo),
        len(todo),
    )
    errors = train_all(todo, jobs)
    table = collect_results(spec, variants, errors)
    write_results(spec, table, out_dir)
    return table


def run_leave_one_site_out(spec: ExperimentSpec, out_dir: Path, shared: dict[str, Any],
                           jobs: int) -> pd.DataFrame:
    """Train the folds not yet done (one per held-out site), write the per-site results table."""
    from cxrkit.experiments import loso
    from cxrkit.experiments.results import write_site_results
    from cxrkit.experiments.spec import build_base

    base = build_base(spec, shared)
    sites = loso.site_names(base)
    loso.check_sites(spec, sites)
    if claim_out_dir(out_dir, spec, shared):
        out_dir.mkdir(parents=True, exist_ok=True)
        (out_dir / SETTINGS_FILE).write_text(yaml.safe_dump(experiment_settings(spec, shared), sort_keys=False))
    splits = loso.fold_splits(base, out_dir, sites)
    folds = [place_variant(v, out_dir / "runs", splits[site])
             for v, site in zip(loso.plan_folds(base, sites), sites, strict=True)]
    todo = [v for v in folds if not is_finished(run_dir_of(v))]
    log.info("experiment %s: %d site(s), %d fold(s) done, %d to train", spec.name, len(folds),
             len(folds) - len(todo), len(todo))
    errors = train_all(todo, jobs)
    table = loso.fold_table(collect_results(spec, folds, errors), sites, splits, base.train.monitor)
    write_site_results(spec, table, out_dir)
    return table


def claim_out_dir(out_dir: Path, spec: ExperimentSpec, shared: dict[str, Any]) -> bool:
    """Refuse a folder holding other files or an experiment with other settings.

    Returns True when the folder is new to this experiment (its settings still to be recorded).
    """
    settings = experiment_settings(spec, shared)
    path = out_dir / SETTINGS_FILE
    if path.is_file():
        before = yaml.safe_load(path.read_text()) or {}
        if before != settings:
            changed = sorted(k for k in set(before) | set(settings) if before.get(k) != settings.get(k))
            raise CxrkitError(
                f"{out_dir} holds an experiment with other settings ({', '.join(changed)} "
                f"differ, see {path}); give another `out_dir` to keep both"
            )
        return False
    if out_dir.exists() and any(out_dir.iterdir()):
        raise CxrkitError(f"{out_dir} exists and is not an experiment folder; give another `out_dir`")
    return True


def experiment_settings(spec: ExperimentSpec, shared: dict[str, Any]) -> dict[str, Any]:
    """What every variant shares; a later run into the same folder must share it too."""
    return {"experiment": spec.name, "recipe": spec.recipe, "split": spec.split, "set": shared}


def shared_split(base: Config, out_dir: Path, given: str | None) -> Path:
    """The split.csv every variant uses: the given one, or one made once from the base config."""
    given = given or base.data.split_file
    if given:
        return Path(given)
    path = out_dir / SPLIT_FILE
    out_dir.mkdir(parents=True, exist_ok=True)
    if not path.is_file():
        from cxrkit.data.run_split import build_split
        from cxrkit.data.splits import write_split_file

        manifest = build_split(base)
        temporary = path.with_suffix(f".{os.getpid()}.tmp")
        write_split_file(manifest, temporary)
        os.replace(temporary, path)
        log.info("wrote the shared split %s", path)
    return path


def place_variant(variant: Variant, runs_dir: Path, split: Path) -> Variant:
    """The variant with its run folder under `runs_dir` and the shared split."""
    config = variant.config.model_copy(deep=True)
    config.output_dir = str(runs_dir)
    config.data.split_file = str(split)
    return Variant(variant.name, variant.overrides, config)


def run_dir_of(variant: Variant) -> Path:
    return Path(variant.config.output_dir) / variant.name


def is_finished(run_dir: Path) -> bool:
    """Trained and evaluated (model.ckpt and metrics.json)."""
    from cxrkit.run import RunFolder

    return RunFolder(run_dir).is_evaluated()


def train_all(variants: list[Variant], jobs: int) -> dict[str, str]:
    """Train each variant (in `jobs` processes); return {name: error} of the failed ones."""
    if jobs == 1 or len(variants) <= 1:
        results = {v.name: train_variant(v.config) for v in variants}
    else:
        threads = max(1, (os.cpu_count() or 1) // jobs)
        with ProcessPoolExecutor(
            max_workers=jobs,
            mp_context=get_context("spawn"),
            initializer=limit_threads,
            initargs=(threads,),
        ) as pool:
            futures = {pool.submit(train_variant, v.config): v.name for v in variants}
            results = {futures[f]: f.result() for f in as_completed(futures)}
    return {name: error for name, error in results.items() if error}


def train_variant(config: Config) -> str | None:
    """Train one variant, continuing a partial run folder; return an error message or None."""
    from cxrkit.pipeline import train_and_evaluate
    from cxrkit.training.fit import run_dir_for

    run_dir = run_dir_for(config)
    try:
        if list((run_dir / "checkpoints").glob("*.ckpt")):
            clear_evaluation(run_dir)
            train_and_evaluate(resume=run_dir)
        else:
            train_and_evaluate(config, overwrite=True)
    except TrainingInterrupted:
        raise
    except Exception as error:  # a failed variant is recorded and the others go on
        run_dir.mkdir(parents=True, exist_ok=True)
        (run_dir / "error.txt").write_text(traceback.format_exc())
        message = str(error).splitlines()[0] if str(error) else ""
        log.warning("variant %s failed: %s: %s", config.name, type(error).__name__, message)
        return f"{type(error).__name__}: {message}"
    (run_dir / "error.txt").unlink(missing_ok=True)
    return None


def clear_evaluation(run_dir: Path) -> None:
    """Remove what an interrupted evaluation left, so the resumed run evaluates its final model."""
    from cxrkit.evaluation.outputs import RUN_OUTPUTS
    from cxrkit.run.folder import OPERATING_POINTS_FILE

    for name in (*RUN_OUTPUTS, OPERATING_POINTS_FILE):
        (run_dir / name).unlink(missing_ok=True)


def limit_threads(threads: int) -> None:
    """Give each of several training processes its share of the CPU cores."""
    import torch

    torch.set_num_threads(threads)
