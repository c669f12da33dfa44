"""Hyper-parameter search with Optuna: TPE over a spec's ranges, pruning on the validation metric.

Trials train with `use_test=False`, so the test split is never decoded, predicted or
evaluated. The study lives in an RDB storage (SQLite file or PostgreSQL URL): a killed
search resumes from it, and workers on one machine or many share it. `trials` is the
study's total: each worker stops when the study has that many finished or running trials (a
trial two workers start at once beyond that total is recorded as pruned, user attr `surplus`).
"""

from __future__ import annotations

import hashlib
import logging
import math
import os
import socket
import time
import warnings
from concurrent.futures import ProcessPoolExecutor
from multiprocessing import get_context
from pathlib import Path
from typing import Any

import yaml
from lightning.pytorch.callbacks import Callback

from cxrkit.config import Config, build_config, monitor_mode
from cxrkit.errors import CxrkitError, TrainingInterrupted
from cxrkit.experiments.runner import limit_threads, shared_split
from cxrkit.experiments.spec import ExperimentSpec, Range, base_overrides
from cxrkit.run import RunFolder
from cxrkit.run.folder import TRAINING_FILE

log = logging.getLogger(__name__)

HEARTBEAT_S = 30
OPEN_ATTEMPTS = 4
BEST_RECIPE = "best-recipe.yaml"


class PruneOnValidation(Callback):
    """Report the monitored validation metric to the trial each epoch; stop when Optuna prunes."""

    def __init__(self, trial, monitor: str) -> None:
        self.trial = trial
        self.monitor = monitor
        self.pruned_at: int | None = None

    def on_validation_end(self, trainer, pl_module) -> None:
        value = trainer.callback_metrics.get(self.monitor)
        if trainer.sanity_checking or value is None:
            return
        self.trial.report(float(value), step=trainer.current_epoch)
        if self.trial.should_prune():
            self.pruned_at = trainer.current_epoch
            trainer.should_stop = True


def open_storage(url: str):
    """An Optuna RDB storage with heartbeats, so trials of a killed worker are failed and redone."""
    import optuna

    if "://" not in url:
        raise CxrkitError(
            f"storage={url}: give a database URL such as sqlite:///study.db or postgresql://user:password@host/db"
        )
    engine_kwargs = {"connect_args": {"timeout": 60}} if url.startswith("sqlite") else {}
    if url.startswith("sqlite:///"):
        Path(url.removeprefix("sqlite:///")).expanduser().parent.mkdir(parents=True, exist_ok=True)
    for attempt in range(OPEN_ATTEMPTS):
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
                return optuna.storages.RDBStorage(
                    url,
                    engine_kwargs=engine_kwargs,
                    heartbeat_interval=HEARTBEAT_S,
                    grace_period=4 * HEARTBEAT_S,
                )
        except Exception as error:  # workers starting together race to create the tables
            if attempt == OPEN_ATTEMPTS - 1:
                raise CxrkitError(
                    f"storage={url}: cannot open the study database "
                    f"({type(error).__name__}: {str(error).splitlines()[0]})"
                ) from error
            time.sleep(1 + attempt)


def run_tune(
    spec: ExperimentSpec,
    trials: int,
    out_dir: str | Path,
    *,
    storage: str | None = None,
    study_name: str | None = None,
    data: str | None = None,
    jobs: int = 1,
    overrides: dict[str, Any] | None = None,
) -> dict:
    """Run (or join) the study until it has `trials` trials; write the best as a recipe."""
    if trials < 1 or jobs < 1:
        raise CxrkitError("`trials` and `jobs` must be at least 1")
    if spec.kind == "leave-one-site-out":
        raise CxrkitError(f"experiment {spec.name} is a leave-one-site-out spec; run it with "
                          "`cxrkit experiment`, and tune on a spec with search: or axes:")
    out_dir = Path(out_dir).expanduser()
    storage = storage or f"sqlite:///{(out_dir / 'study.db').resolve()}"
    study_name = study_name or spec.name
    shared = base_overrides(spec, data, overrides)
    base = build_config(spec.recipe, shared)
    check_search_space(spec, shared)
    shared_split(base, out_dir, spec.split)
    arguments = (spec, trials, out_dir, storage, study_name, shared)
    if jobs == 1:
        tune_worker(*arguments)
    else:
        threads = max(1, (os.cpu_count() or 1) // jobs)
        context = get_context("spawn")
        with ProcessPoolExecutor(jobs, mp_context=context, initializer=limit_threads, initargs=(threads,)) as pool:
            for future in [pool.submit(tune_worker, *arguments) for _ in range(jobs)]:
                future.result()
    return summarise(spec, out_dir, storage, study_name, shared)


def tune_worker(
    spec: ExperimentSpec,
    trials: int,
    out_dir: Path,
    storage: str,
    study_name: str,
    shared: dict[str, Any],
) -> None:
    """One worker: join the study and run trials until the study has `trials` of them."""
    import optuna

    base = build_config(spec.recipe, shared)
    split = shared_split(base, out_dir, spec.split)
    study = _load_study(storage, study_name, base.train.monitor, split)
    trials_dir = out_dir / "trials" / study_name
    if trials_dir.is_dir() and any(trials_dir.iterdir()) and not study.get_trials(deepcopy=False):
        raise CxrkitError(
            f"{trials_dir} holds trials of another study; give another `out_dir` "
            "or `study_name`, or the `storage` that made them"
        )

    def objective(trial: optuna.Trial) -> float:
        if _trials_before(study, trial.number) >= trials:
            trial.set_user_attr("surplus", True)
            raise optuna.TrialPruned(
                f"not run: another worker started the study's last trial ({trials}) at the same time"
            )
        params = suggest(trial, spec.search_space())
        config = build_config(
            spec.recipe,
            {
                **shared,
                **params,
                "name": f"trial-{trial.number:04d}",
                "output_dir": str(trials_dir),
                "data.split_file": str(split),
            },
        )
        return run_trial(trial, config)

    for _ in range(trials):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
            optuna.storages.fail_stale_trials(study)
        if _trials_before(study, None) >= trials:
            break
        study.optimize(objective, n_trials=1, catch=(Exception,))


def run_trial(trial, config: Config) -> float:
    """Train one trial on train/val only; return its best validation metric or raise TrialPruned."""
    import optuna

    from cxrkit.training.fit import train

    pruning = PruneOnValidation(trial, config.train.monitor)
    trial.set_user_attr("worker", f"{socket.gethostname()}:{os.getpid()}")
    try:
        run_dir = train(config, callbacks=[pruning], use_test=False)
    except TrainingInterrupted as error:
        raise KeyboardInterrupt from error
    trial.set_user_attr("run_dir", str(run_dir))
    if pruning.pruned_at is not None:
        raise optuna.TrialPruned(f"pruned after epoch {pruning.pruned_at}")
    value = (RunFolder(run_dir).read_json(TRAINING_FILE) or {}).get("best_val_metric")
    if value is None or not math.isfinite(value):
        raise CxrkitError(f"{run_dir}: no finite {config.train.monitor}; see metrics.csv")
    return float(value)


def check_search_space(spec: ExperimentSpec, shared: dict[str, Any]) -> None:
    """Build configs with every choice and both ends of every range: bad values fail up front."""
    space = spec.search_space()
    if not space:
        raise CxrkitError(f"experiment {spec.name}: nothing to tune; give search: ranges or axes:")
    for key, choice in space.items():
        for value in choice if isinstance(choice, list) else (choice.low, choice.high):
            try:
                build_config(spec.recipe, {**shared, key: value})
            except CxrkitError as error:
                raise CxrkitError(f"experiment {spec.name}, search {key}={value!r}: {error}") from None


def suggest(trial, space: dict[str, Range | list[Any]]) -> dict[str, Any]:
    """Sample one value per dotted field: a choice from a list, or a number in a range."""
    params = {}
    for key, choice in space.items():
        if isinstance(choice, list):
            params[key] = trial.suggest_categorical(key, choice)
        elif all(isinstance(v, int) for v in (choice.low, choice.high, choice.step or 1)):
            params[key] = trial.suggest_int(key, choice.low, choice.high, step=choice.step or 1, log=choice.log)
        else:
            params[key] = trial.suggest_float(key, choice.low, choice.high, step=choice.step, log=choice.log)
    return params


def summarise(spec: ExperimentSpec, out_dir: Path, storage: str, study_name: str, shared: dict[str, Any]) -> dict:
    """Write trials.csv and the best configuration as a recipe; return what the CLI prints."""
    import optuna

    study = optuna.load_study(study_name=study_name, storage=open_storage(storage))
    study.trials_dataframe().to_csv(out_dir / "trials.csv", index=False)
    states = [t.state.name.lower() for t in study.get_trials(deepcopy=False) if not t.user_attrs.get("surplus")]
    summary = {
        "study": study_name,
        "storage": storage,
        "trials": len(states),
        **{state: states.count(state) for state in ("complete", "pruned", "fail", "running")},
    }
    if not summary["complete"]:
        return summary
    best = study.best_trial
    config = build_config(spec.recipe, {**shared, **best.params})
    path = write_recipe(
        config,
        out_dir / BEST_RECIPE,
        f"tuned by cxrkit tune: study {study_name}, trial {best.number}, "
        f"validation {config.train.monitor}={best.value:.4f}",
    )
    return {
        **summary,
        "best_trial": best.number,
        "best_value": best.value,
        "monitor": config.train.monitor,
        "best_params": best.params,
        "recipe": str(path),
    }


def write_recipe(config: Config, path: Path, description: str) -> Path:
    """Save a config as a recipe YAML (no run name, output folder or split), atomically."""
    data = config.model_dump(mode="json")
    for key in ("name", "recipe", "output_dir"):
        data.pop(key)
    data["description"] = description
    data["data"].pop("split_file")
    temporary = path.with_suffix(f".{os.getpid()}.tmp")
    temporary.write_text(yaml.safe_dump(data, sort_keys=False))
    os.replace(temporary, path)
    return path


def _load_study(storage: str, study_name: str, monitor: str, split: Path):
    """Create or join the study; refuse one with another direction or another split."""
    import optuna

    direction = "minimize" if monitor_mode(monitor) == "min" else "maximize"
    study = optuna.create_study(
        study_name=study_name,
        storage=open_storage(storage),
        direction=direction,
        load_if_exists=True,
        sampler=optuna.samplers.TPESampler(constant_liar=True),
        pruner=optuna.pruners.MedianPruner(n_startup_trials=3, n_warmup_steps=1),
    )
    if study.direction.name.lower() != direction:
        raise CxrkitError(
            f"study {study_name} in {storage} is set to {study.direction.name.lower()}, "
            f"but train.monitor={monitor} needs {direction}; use another `study_name`"
        )
    digest = hashlib.sha1(split.read_bytes()).hexdigest()
    known = study.user_attrs.get("split_sha1")
    if known is None:
        study.set_user_attr("split_sha1", digest)
        study.set_user_attr("split", str(split))
    elif known != digest:
        raise CxrkitError(
            f"study {study_name} was run on another split ({study.user_attrs.get('split')}); "
            "give the same data and split, or another `study_name`"
        )
    return study


def _trials_before(study, number: int | None) -> int:
    """Trials that count toward the budget (not failed or surplus), numbered below `number`."""
    import optuna

    counted = (
        optuna.trial.TrialState.COMPLETE,
        optuna.trial.TrialState.PRUNED,
        optuna.trial.TrialState.RUNNING,
        optuna.trial.TrialState.WAITING,
    )
    return sum(
        1
        for t in study.get_trials(deepcopy=False, states=counted)
        if (number is None or t.number < number) and not t.user_attrs.get("surplus")
    )
