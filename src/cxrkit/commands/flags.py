"""Library messages name Python parameters; the command line shows the flags the user typed.

The library writes a parameter as `name=VALUE` (e.g. `n_bootstrap=50`, `overwrite=True`) or, when
no value is meant, as `` `name` `` in backticks. `as_cli` turns those into `--bootstrap 50`,
`--overwrite` and `--name` for error lines and log lines on the console. This table is the one
place where parameter names meet flag names.
"""

from __future__ import annotations

import logging
import re

PARAMETER_FLAGS = {
    # data and runs
    "data": "--data",
    "site": "--site",
    "class_map": "--class-map",
    "group_pattern": "--group-pattern",
    "split_file": "--split-file",
    "data.split_file": "--split-file",
    "data.strict_split": "--strict",
    "name": "--name",
    "output_dir": "--output-dir",
    "resume": "--resume",
    "overwrite": "--overwrite",
    "out": "--out",
    "out_dir": "--out",
    "split": "--split",
    "recipe": "--recipe",
    "max_distance": "--max-distance",
    "jobs": "--jobs",
    "trials": "--trials",
    "storage": "--storage",
    "study_name": "--study-name",
    "overrides": "--set",
    # evaluation and operating points
    "n_bootstrap": "--bootstrap",
    "target_sensitivity": "--sensitivity",
    "operating_point": "--operating-point",
    "set_default": "--set-default",
    # explain, export, serve
    "method": "--method",
    "target": "--class",
    "layer": "--layer",
    "format": "--format",
    "examples": "--examples",
    "log": "--log",
    # at the site
    "select": "--select",
    "prevalence": "--prevalence",
    "cost_test": "--cost-test",
    "check_fraction": "--check-fraction",
    "by": "--by",
    "reference": "--reference",
    "outcomes": "--outcomes",
    "psi_max": "--psi-max",
    "ks_max": "--ks-max",
    "min_sensitivity": "--min-sensitivity",
    "sr_dir": "--sr-dir",
}

_NAMES = "|".join(re.escape(name) for name in sorted(PARAMETER_FLAGS, key=len, reverse=True))
_ASSIGNED = re.compile(rf"(?<![\w.`-])({_NAMES})=(True\b)?")
_QUOTED = re.compile(rf"`({_NAMES})`")


def _assigned(match: re.Match) -> str:
    flag = PARAMETER_FLAGS[match.group(1)]
    return flag if match.group(2) else flag + " "


def as_cli(message: str) -> str:
    """`message` with each `name=VALUE` and `` `name` `` of a known parameter shown as its flag."""
    return _QUOTED.sub(lambda match: PARAMETER_FLAGS[match.group(1)], _ASSIGNED.sub(_assigned, message))


class CliFormatter(logging.Formatter):
    """cxrkit's log lines on the console name flags, like its error lines."""

    def format(self, record: logging.LogRecord) -> str:
        text = super().format(record)
        return as_cli(text) if record.name.startswith("cxrkit") else text
