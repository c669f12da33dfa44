"""What an evaluation is asked to do: one typed set of options, checked before any work."""

from __future__ import annotations

from dataclasses import dataclass, fields
from pathlib import Path

from cxrkit.errors import CxrkitError

SPLITS = ("test", "val", "train")


@dataclass(frozen=True)
class EvaluateOptions:
    """Options of `evaluate_run` (the CLI flags of `cxrkit evaluate` in brackets).

    data: external data, a folder or CSV (--data); split: the run's split without data
    (--split); class_map: data class -> model class (--class-map); out_dir (--out);
    n_bootstrap, seed: resamples and seed of the 95% CIs (--bootstrap, --seed);
    operating_point: the point to report at (--operating-point); target_sensitivity: of the
    'sensitivity' point (--sensitivity); calibrate: temperature-scaled reliability figures;
    overwrite: replace an evaluation and re-choose changed points; batch_size; gradcam: the
    Grad-CAM gallery; set_default: make `operating_point` the run's default (--set-default).
    """

    data: str | Path | None = None
    split: str = "test"
    class_map: dict[str, str] | None = None
    out_dir: str | Path | None = None
    n_bootstrap: int = 1000
    seed: int = 0
    operating_point: str | None = None
    target_sensitivity: float | None = None
    calibrate: bool = True
    overwrite: bool = False
    batch_size: int = 32
    gradcam: bool = True
    set_default: bool = False

    @classmethod
    def of(cls, options: EvaluateOptions | None, settings: dict) -> EvaluateOptions:
        """`options` with `settings` (keyword arguments) applied, checked."""
        known = {item.name for item in fields(cls)}
        unknown = sorted(set(settings) - known)
        if unknown:
            raise CxrkitError(f"evaluate_run got unknown option(s) {', '.join(unknown)}; "
                              f"it takes {', '.join(sorted(known))}")
        base = options or cls()
        chosen = cls(**{**{name: getattr(base, name) for name in known}, **settings})
        chosen.check()
        return chosen

    @property
    def external(self) -> bool:
        return self.data is not None

    def check(self) -> None:
        """One-line CxrkitError for a bad combination, naming the option."""
        if self.split not in SPLITS:
            raise CxrkitError(f"split {self.split!r}: choose one of {', '.join(SPLITS)}")
        if self.external and self.split != "test":
            raise CxrkitError(f"split={self.split} applies to the run's own data; with `data` the "
                              "whole dataset is evaluated, so leave `split` out")
        if self.n_bootstrap < 100:
            raise CxrkitError(f"n_bootstrap={self.n_bootstrap}: use at least 100 resamples "
                              "(1000 recommended)")
        if self.batch_size < 1:
            raise CxrkitError(f"batch_size {self.batch_size}: give 1 or more")

    def out_dir_for(self, run_dir: Path) -> Path:
        """--out, else the run folder (its test split), RUN/evaluation/<split> or
        RUN/external/<name>."""
        from cxrkit.evaluation.external import external_name

        if self.out_dir:
            return Path(self.out_dir).expanduser()
        if self.external:
            return run_dir / "external" / external_name(self.data)
        return run_dir if self.split == "test" else run_dir / "evaluation" / self.split
