"""Experiment spec files: a base recipe, fixed settings, and the config fields to vary.

A spec is YAML::

    name: 02-optimizers            # default: the file name
    kind: variants                 # variants (default) or leave-one-site-out
    recipe: tb-baseline-cnn        # base recipe (name or path)
    data: ../shared/data/tb        # data.source for every variant (--data overrides)
    sources:                       # or several sources, one site each (instead of data:)
      - ../shared/data/tb                              # site: the folder's name
      - {path: ../shared/data/tb-nlm.csv}              # sites: its site column
      - {path: other/, site: Lagos, class_map: {tb: Tuberculosis}}
    split: null                    # a split.csv to share; default: made once in the output folder
    set: {train.epochs: 10}        # fixed overrides for every variant
    axes:                          # config fields to vary
      train.optimizer: [sgd, adam, rmsprop]
    mode: grid                     # grid: every combination; one-at-a-time: each axis alone
    variants: []                   # extra variants, each a mapping of overrides
    metric: roc_auc                # test metric (metrics.json) that ranks the variants
    search:                        # ranges for `cxrkit tune` (default: the axes as choices)
      train.lr: {low: 1.0e-5, high: 1.0e-2, log: true}
"""

from __future__ import annotations

import itertools
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, ValidationError, model_validator

from cxrkit.config import Config, DataSource, build_config
from cxrkit.errors import CxrkitError

TEST_METRICS = (
    "roc_auc",
    "pr_auc",
    "accuracy",
    "balanced_accuracy",
    "sensitivity",
    "specificity",
    "macro_f1",
    "brier",
    "ece",
)
LOWER_IS_BETTER = ("brier", "ece")
PER_RUN_DATA_FIELDS = ("data.cache_dir", "data.num_workers")


class Range(BaseModel):
    """A numeric search range: integers when low and high are integers and no log scale."""

    model_config = ConfigDict(extra="forbid")
    low: int | float
    high: int | float
    log: bool = False
    step: int | float | None = None

    @model_validator(mode="after")
    def _ordered(self) -> Range:
        if self.low >= self.high:
            raise ValueError(f"low ({self.low}) must be below high ({self.high})")
        if self.log and self.low <= 0:
            raise ValueError("a log range needs low > 0")
        return self


class ExperimentSpec(BaseModel):
    """A validated experiment spec (see the module docstring for the file format)."""

    model_config = ConfigDict(extra="forbid")
    name: str
    description: str = ""
    kind: Literal["variants", "leave-one-site-out"] = "variants"
    recipe: str
    data: str | None = None
    sources: list[str | DataSource] = []
    split: str | None = None
    set: dict[str, Any] = {}
    axes: dict[str, list[Any]] = {}
    mode: Literal["grid", "one-at-a-time"] = "grid"
    variants: list[dict[str, Any]] = []
    metric: Literal[TEST_METRICS] = "roc_auc"
    search: dict[str, Range | list[Any]] = {}

    @model_validator(mode="after")
    def _something_to_vary(self) -> ExperimentSpec:
        empty = [key for key, values in self.axes.items() if not values]
        if empty:
            raise ValueError(f"axis {empty[0]} has no values")
        if self.data and self.sources:
            raise ValueError("give data: (one source) or sources: (several), not both")
        if self.kind == "leave-one-site-out" and (self.axes or self.variants):
            raise ValueError("a leave-one-site-out experiment varies the held-out site only; "
                             "remove axes: and variants: (set: still applies to every fold)")
        return self

    def data_sources(self) -> list[DataSource]:
        """`sources:` as DataSource entries (a plain string is a path)."""
        return [DataSource(path=s) if isinstance(s, str) else s for s in self.sources]

    def higher_is_better(self) -> bool:
        return self.metric not in LOWER_IS_BETTER

    def search_space(self) -> dict[str, Range | list[Any]]:
        """The tune ranges: `search`, or else every axis as a list of choices."""
        return dict(self.search) or {key: list(values) for key, values in self.axes.items()}


@dataclass(frozen=True)
class Variant:
    """One run of an experiment: its folder name, the overrides that make it, its config."""

    name: str
    overrides: dict[str, Any]
    config: Config


def load_spec(path: str | Path, recipe: str | None = None) -> ExperimentSpec:
    """Read and validate a spec file (`recipe` replaces its base recipe); problems name the file."""
    path = Path(path).expanduser()
    if not path.is_file():
        raise CxrkitError(f"{path}: no such experiment spec; give a .yaml file (examples in experiments/seed003/)")
    try:
        data = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as error:
        raise CxrkitError(f"{path}: invalid YAML ({error})") from error
    if not isinstance(data, dict):
        raise CxrkitError(f"{path}: an experiment spec must be a mapping (recipe, axes, ...)")
    data.setdefault("name", path.stem)
    if recipe:
        data["recipe"] = recipe
    try:
        spec = ExperimentSpec.model_validate(data)
    except ValidationError as error:
        problems = "; ".join(f"{'.'.join(str(p) for p in e['loc']) or 'spec'}: {e['msg']}" for e in error.errors())
        raise CxrkitError(f"{path}: {problems}") from None
    for key in ("data", "split"):
        value = getattr(spec, key)
        if value and not value.startswith(("hf:", "kaggle:")) and not Path(value).is_absolute():
            setattr(spec, key, str((path.parent / value).resolve()))
    spec.sources = [source.model_copy(update={"path": _relative_to(path.parent, source.path)})
                    for source in spec.data_sources()]
    return spec


def _relative_to(folder: Path, value: str) -> str:
    if value.startswith(("hf:", "kaggle:")) or Path(value).is_absolute():
        return value
    return str((folder / value).resolve())


def _absolute(data: str) -> str:
    """A local data path made absolute, so run folders stay valid from any working directory."""
    if data.startswith(("hf:", "kaggle:")):
        return data
    return str(Path(data).expanduser().resolve())


def get_dotted(config: Config, key: str) -> Any:
    """The value of a dotted field such as 'train.lr'."""
    value: Any = config
    for part in key.split("."):
        value = getattr(value, part)
    return value


def base_overrides(
    spec: ExperimentSpec, data: str | None = None, overrides: dict[str, Any] | None = None
) -> dict[str, Any]:
    """Settings shared by every variant: the spec's `set`, its data, then command-line overrides."""
    shared = dict(spec.set)
    if data or spec.data:
        shared["data.source"] = _absolute(data or spec.data)
    elif spec.sources:
        shared["data.sources"] = [source.model_dump() for source in spec.data_sources()]
    shared.update(overrides or {})
    return shared


def plan_variants(spec: ExperimentSpec, shared: dict[str, Any]) -> list[Variant]:
    """Every variant of the spec as a validated config, named after its varied values."""
    base = _build(spec, shared, {}, "the base")
    if spec.mode == "grid":
        grid = itertools.product(*spec.axes.values())
        combos = [dict(zip(spec.axes, values, strict=True)) for values in grid] if spec.axes else []
    else:
        combos = [{}] + [{key: value} for key, values in spec.axes.items() for value in values]
    combos += [dict(v) for v in spec.variants]
    varied = list(dict.fromkeys(key for combo in combos for key in combo))
    split_fields = [k for k in varied if k.startswith("data.") and k not in PER_RUN_DATA_FIELDS]
    if split_fields:
        raise CxrkitError(
            f"experiment {spec.name}: {split_fields[0]} cannot vary, as all variants share one "
            "data set and split; run one experiment per setting (`data`, or set: in the spec)"
        )
    labels = _short_labels(varied)
    plans: dict[str, Variant] = {}
    for combo in combos:
        config = _build(spec, shared, combo, str(combo))
        if spec.mode == "one-at-a-time":
            combo = {k: v for k, v in combo.items() if get_dotted(config, k) != get_dotted(base, k)}
        name = "__".join(f"{labels[k]}={_format(get_dotted(config, k))}" for k in combo) or "baseline"
        name = re.sub(r"[^A-Za-z0-9._=+-]", "_", name)
        if name in plans:
            continue
        plans[name] = Variant(name, combo, config.model_copy(update={"name": name}))
    if not plans:
        raise CxrkitError(f"experiment {spec.name}: nothing to run; give axes or variants")
    return list(plans.values())


def build_base(spec: ExperimentSpec, shared: dict[str, Any]) -> Config:
    """The shared config every variant (or fold) starts from."""
    return _build(spec, shared, {}, "the base")


def varied_keys(variants: list[Variant]) -> list[str]:
    """The dotted fields that some variant overrides, in first-seen order."""
    return list(dict.fromkeys(key for v in variants for key in v.overrides))


def _build(spec: ExperimentSpec, shared: dict, combo: dict, what: str) -> Config:
    try:
        return build_config(spec.recipe, {**shared, **combo})
    except CxrkitError as error:
        raise CxrkitError(f"experiment {spec.name}, variant {what}: {error}") from None


def _short_labels(keys: list[str]) -> dict[str, str]:
    """'train.lr' -> 'lr' unless two varied keys end the same way."""
    last = [key.rsplit(".", 1)[-1] for key in keys]
    pairs = zip(keys, last, strict=True)
    return {key: short if last.count(short) == 1 else key for key, short in pairs}


def _format(value: Any) -> str:
    return f"{value:g}" if isinstance(value, float) else str(value)
