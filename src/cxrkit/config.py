"""Typed, validated configuration: a recipe YAML, a config file and overrides resolve into one.

Every field has a default; an unknown or invalid field raises CxrkitError naming it and the
allowed values. Overrides use dotted keys (`train.lr=0.001`, `model.name=resnet18`).
"""

from __future__ import annotations

import re
from importlib import resources
from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, ValidationInfo, field_validator, model_validator

from cxrkit.errors import CxrkitError


class Section(BaseModel):
    model_config = ConfigDict(extra="forbid", validate_assignment=True)


class DataSource(Section):
    """One data source of several: its path, site name and class renaming (data class -> class)."""

    path: str
    site: str | None = None
    class_map: dict[str, str] = {}


class DataConfig(Section):
    source: str | None = None
    site: str | None = None
    class_map: dict[str, str] = {}
    sources: list[DataSource] = []
    positive_class: str | None = None
    group_pattern: str | None = None
    split_file: str | None = None
    val_fraction: float = Field(0.1, gt=0, lt=0.5)
    test_fraction: float = Field(0.1, gt=0, lt=0.5)
    split_seed: int = 42
    group_near_duplicates: bool = True
    near_duplicate_distance: int = Field(4, ge=0, le=32)
    strict_split: bool = False
    cache_dir: str | None = None
    num_workers: Annotated[int, Field(ge=0)] | Literal["auto"] = "auto"

    @field_validator("group_pattern")
    @classmethod
    def _valid_regex(cls, pattern: str | None) -> str | None:
        if pattern is not None:
            try:
                re.compile(pattern)
            except re.error as error:
                raise ValueError(f"not a valid regular expression ({error})") from None
        return pattern

    def all_sources(self) -> list[DataSource]:
        """Every source: `sources`, or the single `source` with its `site` and `class_map`."""
        if self.sources:
            if self.source:
                raise CxrkitError("data.source and data.sources are both set; list every source "
                                  "under data.sources (or give `data` once per source)")
            return list(self.sources)
        if not self.source:
            return []
        return [DataSource(path=self.source, site=self.site, class_map=self.class_map)]


class PreprocessConfig(Section):
    image_size: int = Field(224, ge=16, le=2048)
    resize: Literal["pad", "stretch"] = "pad"
    channels: Literal[1, 3] = 3
    enhancement: Literal["none", "contrast_stretch", "histeq", "clahe"] = "none"
    clahe_clip_limit: float = Field(2.0, gt=0)
    clahe_tile_grid: int = Field(8, ge=1)
    normalization: Literal["auto", "imagenet", "dataset"] = "auto"
    lung_crop: bool = False
    lung_crop_margin: float = Field(0.1, ge=0, le=1)
    lung_mask_outside: bool = False
    lung_weights: str | None = None


class AugmentConfig(Section):
    """Training augmentation, applied per image on whole batches on the training device.

    Every step is off by default. Probabilities (`hflip`, `blur`, `sharpen`, `histogram_match`,
    `border_erase`) are per image; strengths are maxima that each image draws from.
    """

    hflip: float = Field(0.0, ge=0, le=1)
    rotation: float = Field(0.0, ge=0, le=180)
    translate: float = Field(0.0, ge=0, le=0.5)
    scale: float = Field(0.0, ge=0, le=0.5)
    shear: float = Field(0.0, ge=0, le=45)
    resized_crop_scale: float = Field(1.0, gt=0, le=1)
    brightness: float = Field(0.0, ge=0, le=1)
    contrast: float = Field(0.0, ge=0, le=1)
    gamma: float = Field(0.0, ge=0, le=2)
    blur: float = Field(0.0, ge=0, le=1)
    blur_sigma: float = Field(1.5, gt=0, le=5)
    sharpen: float = Field(0.0, ge=0, le=1)
    sharpen_amount: float = Field(2.0, gt=0, le=10)
    noise: float = Field(0.0, ge=0, le=0.2)
    histogram_match: float = Field(0.0, ge=0, le=1)
    border_erase: float = Field(0.0, ge=0, le=1)
    border_erase_size: float = Field(0.15, gt=0, le=0.5)


class ModelConfig(Section):
    """The architecture. `weights`: none, imagenet, a state dict file or a run folder to start
    from; `freeze`: none, backbone (all but the head) or a layer name (it and all before it)."""

    name: str = "resnet18"
    weights: str = "none"
    freeze: str = "none"
    dropout: float = Field(0.5, ge=0, lt=1)
    width: int = Field(32, ge=1)
    depth: int = Field(4, ge=1, le=8)
    kernel_size: int = Field(3, ge=1, le=15)
    stride: int = Field(1, ge=1, le=4)
    padding: str | int = "same"
    pooling: Literal["max", "avg"] = "max"

    @field_validator("name")
    @classmethod
    def _known_model(cls, name: str) -> str:
        from cxrkit.models.registry import MODELS

        if name not in MODELS:
            raise ValueError(f"unknown model {name!r}; choose one of {', '.join(MODELS)}")
        return name

    @field_validator("padding")
    @classmethod
    def _known_padding(cls, padding: str | int) -> str | int:
        if padding in ("same", "valid") or (isinstance(padding, int) and not isinstance(padding, bool)
                                             and padding >= 0):
            return padding
        raise ValueError("choose same, valid or a number of pixels (0 or more)")

    @field_validator("weights")
    @classmethod
    def _known_weights(cls, weights: str, info: ValidationInfo) -> str:
        if weights in ("none", "imagenet", "") or not (info.context or {}).get("check_paths"):
            return weights
        path = Path(weights).expanduser()
        if not (path.is_file() or (path / "model.ckpt").is_file()):
            raise ValueError("no such state dict file or run folder; choose none, imagenet, a state dict "
                             "file or a run folder")
        return weights

    @model_validator(mode="after")
    def _weights_and_freeze_fit_the_model(self) -> ModelConfig:
        from cxrkit.models.registry import MODELS

        if self.weights == "imagenet" and MODELS[self.name].torchvision_weights is None:
            raise CxrkitError(f"model.weights=imagenet: {self.name} has no ImageNet weights; choose none, "
                              "a state dict file or a run folder")
        if self.freeze not in ("none", "backbone", ""):
            _check_freeze_layer(self)
        return self


class TrainConfig(Section):
    epochs: int = Field(10, ge=1)
    batch_size: int = Field(32, ge=1)
    optimizer: Literal["adam", "adamw", "sgd", "rmsprop"] = "adam"
    lr: float = Field(1e-3, gt=0)
    weight_decay: float = Field(0.0, ge=0)
    momentum: float = Field(0.9, ge=0, lt=1)
    eps: float = Field(1e-8, gt=0)
    scheduler: Literal["none", "plateau", "cosine", "onecycle"] = "none"
    plateau_factor: float = Field(0.5, gt=0, lt=1)
    plateau_patience: int = Field(5, ge=0)
    early_stopping_patience: int = Field(0, ge=0)
    monitor: Literal["val_auroc", "val_loss", "val_acc", "val_balanced_acc"] = "val_auroc"
    loss: Literal["ce", "bce", "focal"] = "ce"
    focal_gamma: float = Field(2.0, ge=0)
    class_weights: Literal["balanced", "none"] = "balanced"
    sampler: Literal["none", "oversample"] = "none"
    accumulate_grad_batches: int = Field(1, ge=1)
    gradient_clip_val: float = Field(0.0, ge=0)
    precision: Literal["auto", "32", "bf16-mixed", "16-mixed"] = "auto"
    channels_last: bool = True
    seed: int = 42
    accelerator: Literal["auto", "cpu", "gpu", "cuda", "mps", "tpu"] = "auto"
    devices: str | int = "auto"
    num_nodes: int = Field(1, ge=1)
    strategy: str = "auto"
    limit_train_batches: float | int = 1.0
    max_steps: int = Field(0, ge=0)
    compile: bool = False


    @field_validator("strategy")
    @classmethod
    def _known_strategy(cls, strategy: str) -> str:
        if strategy == "auto":
            return strategy
        from lightning.pytorch.strategies import StrategyRegistry

        known = StrategyRegistry.available_strategies()
        if strategy not in known:
            raise ValueError(f"unknown Lightning strategy {strategy!r}; choose auto or one of {', '.join(known)}")
        return strategy

    @field_validator("devices")
    @classmethod
    def _known_devices(cls, devices: str | int) -> str | int:
        if devices == "auto" or (isinstance(devices, int) and devices not in (0, False) and devices >= -1) or (
                isinstance(devices, str) and re.fullmatch(r"\d+(,\d+)*,?", devices)):
            return devices
        raise ValueError("choose auto, -1 (every device), a number of devices or indices such as 0,1")

    @field_validator("limit_train_batches")
    @classmethod
    def _some_batches(cls, limit: float | int) -> float | int:
        if (isinstance(limit, float) and 0 < limit <= 1) or (isinstance(limit, int) and limit >= 1):
            return limit
        raise ValueError("choose a fraction of the batches (above 0, at most 1.0) or a number of batches")


def _check_freeze_layer(model: ModelConfig) -> None:
    """A layer name to freeze up to must be a layer of the model (built on the meta device)."""
    import torch

    from cxrkit.models.registry import build_model

    options = {key: getattr(model, key) for key in ("width", "depth", "kernel_size", "stride", "padding", "pooling")}
    with torch.device("meta"):
        build_model(model.name, num_classes=2, weights="none", freeze=model.freeze, dropout=model.dropout,
                    **options)


MONITOR_MODES = {"val_auroc": "max", "val_loss": "min", "val_acc": "max", "val_balanced_acc": "max"}


def monitor_mode(monitor: str) -> str:
    """"min" or "max": whether a lower or a higher value of the monitored metric is better."""
    return MONITOR_MODES[monitor]


class Config(Section):
    name: str | None = None
    recipe: str | None = None
    description: str = ""
    output_dir: str = "runs"
    data: DataConfig = DataConfig()
    preprocess: PreprocessConfig = PreprocessConfig()
    augment: AugmentConfig = AugmentConfig()
    model: ModelConfig = ModelConfig()
    train: TrainConfig = TrainConfig()


def recipe_names() -> list[str]:
    """Names of the built-in recipes."""
    folder = resources.files("cxrkit") / "recipes"
    return sorted(p.name[:-5] for p in folder.iterdir() if p.name.endswith(".yaml"))


def read_recipe(name: str) -> dict:
    """The raw dict of a built-in recipe, or of a YAML file given by path."""
    path = Path(name).expanduser()
    if path.suffix in (".yaml", ".yml") and path.is_file():
        text = path.read_text()
    elif name in recipe_names():
        text = (resources.files("cxrkit") / "recipes" / f"{name}.yaml").read_text()
    else:
        raise CxrkitError(f"unknown recipe {name!r}; choose one of {', '.join(recipe_names())} "
                          "(or give a path to a .yaml file); `cxrkit recipes` lists them")
    try:
        data = yaml.safe_load(text) or {}
    except yaml.YAMLError as error:
        raise CxrkitError(f"recipe {name}: invalid YAML ({error})") from error
    if not isinstance(data, dict):
        raise CxrkitError(f"recipe {name}: must be a mapping of sections")
    return data


def set_dotted(data: dict, key: str, value: Any) -> None:
    """Set data['a']['b'] for key 'a.b', creating sections as needed."""
    parts = key.split(".")
    target = data
    for part in parts[:-1]:
        target = target.setdefault(part, {})
        if not isinstance(target, dict):
            raise CxrkitError(f"option {key}: {part} is not a section")
    target[parts[-1]] = value


def parse_override(text: str) -> tuple[str, Any]:
    """'train.lr=0.001' -> ('train.lr', 0.001), values parsed as YAML scalars."""
    if "=" not in text:
        raise CxrkitError(f"overrides={text!r}: use KEY=VALUE, e.g. overrides=train.lr=0.001")
    key, value = text.split("=", 1)
    return key.strip(), yaml.safe_load(value) if value.strip() else None


def build_config(recipe: str | None = None, overrides: dict[str, Any] | None = None) -> Config:
    """Resolve recipe < dotted overrides into a validated Config; a `model.weights` path must exist."""
    data: dict = {}
    if recipe:
        data = read_recipe(recipe)
        data.setdefault("recipe", recipe)
    for key, value in (overrides or {}).items():
        if value is not None:
            set_dotted(data, key, value)
    return validate_config(data, check_paths=True)


def validate_config(data: dict, check_paths: bool = False) -> Config:
    """Validate a nested dict, turning pydantic's report into one line per problem.

    `check_paths` also checks that files the config names exist (a new config; a run's saved
    config.yaml stays readable after its starting weights moved)."""
    try:
        return Config.model_validate(data, context={"check_paths": check_paths})
    except ValidationError as error:
        problems = []
        for item in error.errors():
            where = ".".join(str(p) for p in item["loc"])
            if item["type"] == "extra_forbidden":
                section = item["loc"][0] if len(item["loc"]) > 1 else None
                known = list(_section_fields(section)) if section else list(Config.model_fields)
                problems.append(f"unknown option {where}; known: {', '.join(known)}")
            else:
                message = item["msg"].removeprefix("Value error, ")
                problems.append(f"{where}: {message} (got {item.get('input')!r})")
        raise CxrkitError("; ".join(problems)) from None


def _section_fields(section: str) -> dict:
    field = Config.model_fields.get(section)
    if field is None or not isinstance(field.annotation, type):
        return {}
    return field.annotation.model_fields


def config_to_yaml(config: Config) -> str:
    return yaml.safe_dump(config.model_dump(mode="json"), sort_keys=False)


def load_config_file(path: str | Path) -> Config:
    """Read a resolved config.yaml (as saved in a run folder)."""
    path = Path(path)
    if path.is_dir():
        path = path / "config.yaml"
    if not path.is_file():
        raise CxrkitError(f"{path}: no config.yaml")
    try:
        return validate_config(read_yaml_mapping(path))
    except CxrkitError as error:
        raise CxrkitError(f"{path}: {error}") from None


def read_yaml_mapping(path: str | Path) -> dict:
    """A YAML file that must hold a mapping (safe loader); CxrkitError naming the file if not."""
    path = Path(path)
    try:
        data = yaml.safe_load(path.read_text()) or {}
    except (OSError, UnicodeDecodeError) as error:
        raise CxrkitError(f"{path}: cannot read ({error})") from error
    except yaml.YAMLError as error:
        where = getattr(error, "problem_mark", None)
        line = f" at line {where.line + 1}" if where is not None else ""
        raise CxrkitError(f"{path}: invalid YAML{line} ({getattr(error, 'problem', None) or error}); "
                          "fix or restore the file") from error
    if not isinstance(data, dict):
        raise CxrkitError(f"{path}: expected a mapping of sections, got {type(data).__name__}")
    return data
